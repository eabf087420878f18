# shellcheck shell=dash
# A VM_SCRIPT (tests/vm/README.md): what `dataplane serve` itself costs
# the guest's vCPUs, idle and under a queue-depth-1 stream: the CPU time of
# each of its threads (utime + stime from /proc, in clock ticks), the
# guest's interrupts, and the system calls of an idle serve (the host's
# strace, run through the host's loader). The probe behind the control
# loop's wait (dataplane/src/wait.rs) and the one-write stats file.
#
#   VM_SCRIPT=tests/vm/scripts/serve-load.sh VM_NO_BUILD=1 VM_RESULTS=/tmp/vm-load tests/vm/run.sh
#
# $R/serve-load.txt: per-thread CPU ticks and interrupt counts at the start
# and end of 20 idle seconds and of 15 s of fio at QD 1 on the RAM LUN
# (fio on CPU 0); $R/serve-strace.txt: `strace -c -f` of serve over 8 idle
# seconds (absent when the host has no strace).
#
# Sourced by guest.sh, whose helpers and steps it uses.

run_step modules step_modules
run_step rd_mcp_create step_rd_mcp_create
run_step serve_start step_serve_start
run_step lio_create step_lio_create

# serve_load_snapshot LABEL: serve's threads' CPU ticks and the interrupts.
serve_load_snapshot() {
    pid=$(state serve.pid)
    echo "== $1 at $(cut -d' ' -f1 /proc/uptime) s"
    for t in /proc/"$pid"/task/*; do
        # Fields 14 and 15 of stat (utime, stime); comm has no spaces here.
        echo "$(cat "$t/comm") $(cut -d' ' -f14,15 "$t/stat")"
    done
    grep -E '^ *(LOC|RES|CAL):|virtio' /proc/interrupts
}

serve_load() {
    out=$R/serve-load.txt
    sleep 5
    serve_load_snapshot "idle, start" >"$out"
    sleep 20
    serve_load_snapshot "idle, end (20 s)" >>"$out"
    if [ -x /host/usr/bin/strace ]; then
        timeout -s INT 8 "$LD" --library-path "$LIBPATH" /host/usr/bin/strace -f -c \
            -p "$(state serve.pid)" -o "$R/serve-strace.txt" || true
    else
        echo "no /usr/bin/strace on the host: no system call count" >>"$out"
    fi
    d=$(need_disk ram)
    FIO_EXTRA="--cpus_allowed=0" run_fio serve-load-qd1 randread-4k-qd1.fio DISK="$d" RUNTIME=15 &
    fio_pid=$!
    sleep 4
    serve_load_snapshot "QD 1, start" >>"$out"
    sleep 10
    serve_load_snapshot "QD 1, end (10 s)" >>"$out"
    wait "$fio_pid" || fail "fio at QD 1 failed"
    cat "$out"
}
run_step serve_load serve_load
