# shellcheck shell=dash
# The VM test's reliability steps; sourced by guest.sh, whose helpers
# (run_fio, need_disk, lun_name, dmesg_mark, stats_field, ...) they use.

# step_ring_reset_under_load KIND: while fio reads and writes the LUN of KIND
# (20 s, no verify), the kernel resets the device's command ring
# (`action/reset_ring` 1: commands in flight complete with BUSY, which the
# initiator retries). fio must finish without an error and the kernel log
# show no I/O error; serve must log the fault and the recovery, count both in
# its statistics, and serve the LUN again.
step_ring_reset_under_load() {
    [ "$SELFTEST" = 1 ] && skip "VM_SELFTEST=1: no dataplane ring to reset"
    d=$(need_disk "$1")
    name=$(lun_name "$1")
    serve_running || fail "dataplane serve is not running"
    dev=
    for c in "$CFS"/core/user_*/"$name"; do
        [ -e "$c/action/reset_ring" ] && dev=$c
    done
    [ -n "$dev" ] || fail "no $name/action/reset_ring in configfs"
    tag=$(state serve.tag)
    stats=$R/serve-stats-$tag.json
    log=$R/serve-$tag.log
    before=$(stats_field "$stats" "$name" recoveries_total)
    dmesg_mark "ring-reset-$1"
    (run_fio "ring-reset-$1" randrw-restart.fio DISK="$d" RUNTIME="$RESTART_RUNTIME" >"$ST/ring-reset-fio.log" 2>&1) &
    fpid=$!
    sleep 6
    echo "+ echo 1 > ${dev#"$CFS"/}/action/reset_ring"
    printf 1 >"$dev/action/reset_ring" || fail "writing reset_ring failed"
    frc=0
    wait $fpid || frc=$?
    cat "$ST/ring-reset-fio.log"
    [ $frc = 0 ] || fail "fio during the ring reset failed (status $frc)"
    grep -E "$name .*(ring fault|recover)" "$log" || true
    grep -q "$name .*ring fault" "$log" || fail "serve did not log the ring fault of $name"
    grep -q "recovered $name" "$log" || fail "serve did not log the recovery of $name"
    # Up to two statistics intervals for the counters to show it.
    i=0
    while [ $i -lt 24 ]; do
        after=$(stats_field "$stats" "$name" recoveries_total)
        [ "${after:-0}" -gt "${before:-0}" ] && break
        sleep 0.5
        i=$((i + 1))
    done
    faults=$(stats_field "$stats" "$name" faults_total)
    echo "statistics of $name: faults_total ${faults:-?}, recoveries_total ${before:-0} -> ${after:-?}"
    [ "${after:-0}" -gt "${before:-0}" ] || fail "recoveries_total of $name did not rise"
    [ "${faults:-0}" -gt 0 ] || fail "faults_total of $name is 0"
    # And the LUN serves again.
    hdd if="$d" of=/dev/null bs=4k count=256 iflag=direct status=none || fail "reads of $d after the recovery failed"
    errs=$(dmesg_errors "ring-reset-$1")
    [ -z "$errs" ] || {
        echo "$errs"
        fail "kernel reported I/O errors during the ring reset"
    }
}
