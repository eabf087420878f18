# shellcheck shell=dash
# A VM_SCRIPT (tests/vm/README.md): how a thread spinning on CPU 1 slows
# 4 KiB random reads of an rd_mcp LUN on CPU 0, by what the spinner does
# (nothing, a counter, `pause`, `rdtsc` each turn or every 16th,
# clock_gettime): the question behind the reactor's sparing clock reads
# (reactor/src/clock.rs, "Reading the TSC in an emulator").
#
#   cc -O2 -static -o /tmp/vm-spin tests/vm/scripts/spin.c
#   VM_SCRIPT=tests/vm/scripts/clock-probe.sh VM_NO_BUILD=1 VM_RESULTS=/tmp/vm-clock tests/vm/run.sh
#
# $R/clock-probe.txt: one line per round, mode and queue depth (fio on
# CPU 0, 4 s each, after a 3 s warm-up); $R/spin.txt: each spinner's rate.
# VM_KERNEL_ARGS=VM_SPIN=/other/path names another spinner binary.
#
# Sourced by guest.sh, whose helpers and steps it uses.

run_step modules step_modules
run_step rd_mcp_create step_rd_mcp_create

clock_probe() {
    spin=/host${VM_SPIN:-/tmp/vm-spin}
    [ -x "$spin" ] || fail "no spinner at $spin: build it on the host with cc -O2 -static -o ${VM_SPIN:-/tmp/vm-spin} tests/vm/scripts/spin.c"
    rd=$(need_disk rd)
    FIO_EXTRA="--cpus_allowed=0" run_fio warmup randread-4k-qd32.fio DISK="$rd" RUNTIME=3
    for r in 1 2 3; do
        for mode in none plain pause rdtsc rdtsc16 gettime; do
            pid=
            case $mode in
            none) ;;
            rdtsc16) "$spin" rdtsc 16 >>"$R/spin.txt" & pid=$! ;;
            *) "$spin" "$mode" >>"$R/spin.txt" & pid=$! ;;
            esac
            for qd in 1 32; do
                FIO_EXTRA="--cpus_allowed=0" run_fio "probe-$mode-qd$qd-$r" "randread-4k-qd$qd.fio" DISK="$rd" RUNTIME=4
                echo "round $r spinner $mode QD $qd: $(fio_sum "$R/fio-probe-$mode-qd$qd-$r.json" read iops) IOPS" |
                    tee -a "$R/clock-probe.txt"
            done
            if [ -n "$pid" ]; then
                kill "$pid"
                wait "$pid"
            fi
        done
    done
    cat "$R/spin.txt"
}
run_step clock_probe clock_probe
