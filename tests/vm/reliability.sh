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

# The LUN of step tmr_abort: `stuck0`, a fault bdev over the RAM bdev `ram3`
# whose reads of block TMR_STUCK_LBA never complete until aborted.
TMR_LUN=stuck0disk
TMR_STUCK_LBA=4096

# reliability_bdev_config: serve's [[bdev]] sections of these steps.
reliability_bdev_config() {
    cat <<EOF2

[[bdev]]
name = "ram3"
type = "ram"
size = "16MiB"
block_size = $BLOCK_SIZE

[[bdev]]
name = "stuck0"
type = "fault"
base = "ram3"

[[bdev.rules]]
ops = ["read"]
range = [$TMR_STUCK_LBA, $((TMR_STUCK_LBA + 1))]
stuck = true
EOF2
    soak_bdev_config
}

# fault_lun NAME BDEV BYTES BLOCK: exports BDEV as LUN NAME through tcm_loop and
# prints its disk.
fault_lun() {
    echo "+ dataplane lio create $1 --bdev $2 --size $3 --block-size $4 --loopback" >&2
    _out=$(dataplane lio create "$1" --bdev "$2" --size "$3" --block-size "$4" --loopback 2>&1) ||
        fail "dataplane lio create $1: $(first_error "$_out")"
    echo "$_out" >&2
    _d=$(echo "$_out" | awk '$1 == "disk:" { print $2 }')
    [ -b "$_d" ] || fail "lio create $1 printed no disk"
    echo "$_d"
}

# report_now: asks the running serve for a statistics report (SIGUSR1, which
# also rewrites its --stats-file) and gives it a moment.
report_now() {
    kill -USR1 "$(state serve.pid)"
    sleep 1
}

# stuck_read_is_aborted DISK DEVICE FAULT_BDEV MARK: a READ that the fault bdev
# FAULT_BDEV holds forever (block TMR_STUCK_LBA) is sent to DISK with a
# 5-second timeout (sg_raw); the SCSI error handler aborts it (ABORT TASK),
# the target passes the abort to serve (LIO: a TMR entry, sent with
# `tmr_notification` on; SCST: TASK_MGMT_RECEIVED), serve aborts the backend
# I/O and completes the command. Checks: the command ends long before the
# kernel's own timeout (30 s) would have ended it, serve counts the abort
# (DEVICE's `aborts_total`, FAULT_BDEV's `aborted`), nothing is left in
# flight, and the disk serves on; its kernel lines since MARK are expected
# trouble.
stuck_read_is_aborted() {
    stats=$R/serve-stats-$(state serve.tag).json
    dmesg_mark "$4"
    # READ(10) of one block at TMR_STUCK_LBA.
    lba=$(printf '%02x %02x %02x %02x' $((TMR_STUCK_LBA >> 24 & 255)) \
        $((TMR_STUCK_LBA >> 16 & 255)) $((TMR_STUCK_LBA >> 8 & 255)) $((TMR_STUCK_LBA & 255)))
    t0=$(now)
    rc=0
    # shellcheck disable=SC2086 # the CDB's bytes
    sg sg_raw -r "$BLOCK_SIZE" --timeout=5 "$1" 28 00 $lba 00 00 01 00 || rc=$?
    secs=$(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }')
    echo "sg_raw of the stuck block returned status $rc after ${secs} s"
    dmesg_since "$4"
    [ "$rc" != 0 ] || fail "the READ of the stuck block succeeded"
    awk -v s="$secs" 'BEGIN { exit !(s < 25) }' ||
        fail "the stuck READ took ${secs} s: the abort did not reach serve (the kernel timed it out)"
    # The target hands the abort to serve asynchronously (LIO queues a TMR
    # entry; SCST a TASK_MGMT_RECEIVED): reports until serve counted it,
    # for up to 10 s.
    i=0
    while :; do
        report_now
        aborts=$(stats_field "$stats" "$2" aborts_total)
        received=$(stats_field "$stats" "$2" received_total)
        completed=$(stats_field "$stats" "$2" commands_total)
        aborted=$(stats_field "$stats" "$3" aborted)
        stuck=$(stats_field "$stats" "$3" stuck)
        [ "${aborts:-0}" -ge 1 ] && [ "${received:-x}" = "${completed:-y}" ] && break
        i=$((i + 1))
        [ $i -lt 10 ] || break
    done
    echo "serve: $2 aborts_total ${aborts:-?}, received ${received:-?}, completed" \
        "${completed:-?}; $3 stuck ${stuck:-?}, aborted ${aborted:-?}"
    [ "${aborts:-0}" -ge 1 ] || fail "serve counted no abort on $2"
    [ "${aborted:-0}" -ge 1 ] || fail "the abort did not reach the fault bdev"
    [ "${received:-x}" = "${completed:-y}" ] || fail "commands left in flight on $2"
    # The LUN serves on: blocks beside the stuck one, written and read back.
    hdd if=/dev/urandom of="$ST/tmr.bin" bs=4096 count=16 status=none
    hdd if="$ST/tmr.bin" of="$1" bs=4096 seek=$(((TMR_STUCK_LBA * BLOCK_SIZE + BLOCK_SIZE + 4095) / 4096)) \
        oflag=direct conv=notrunc status=none || fail "write after the abort failed"
    hdd if="$1" of="$ST/tmr.back" bs=4096 skip=$(((TMR_STUCK_LBA * BLOCK_SIZE + BLOCK_SIZE + 4095) / 4096)) \
        count=16 iflag=direct status=none || fail "read after the abort failed"
    cmp "$ST/tmr.bin" "$ST/tmr.back" || fail "data written after the abort read back wrong"
    expect_trouble "${1#/dev/}" "$4"
}

# step_tmr_abort: stuck_read_is_aborted on a TCMU LUN over `stuck0`, through
# tcm_loop; LIO passes the abort on because `lio create` turned
# `tmr_notification` on.
step_tmr_abort() {
    [ "$SELFTEST" = 1 ] && skip "VM_SELFTEST=1: no dataplane fault bdev"
    serve_running || fail "dataplane serve is not running"
    d=$(fault_lun "$TMR_LUN" stuck0 16MiB "$BLOCK_SIZE")
    c=$(echo "$CFS"/core/user_*/"$TMR_LUN")
    echo "attrib/tmr_notification: $(cat "$c/attrib/tmr_notification")"
    [ "$(cat "$c/attrib/tmr_notification")" = 1 ] || fail "lio create left tmr_notification off"
    stuck_read_is_aborted "$d" "$TMR_LUN" stuck0 tmr
    out=$(dataplane lio delete "$TMR_LUN" 2>&1) || fail "dataplane lio delete $TMR_LUN: $(first_error "$out")"
}

# step_soak_short: the soak (tests/vm/soak.sh) for VM_SOAK_SECONDS (60) on
# the LUN soak0disk.
step_soak_short() {
    [ "$SELFTEST" = 1 ] && skip "VM_SELFTEST=1: no dataplane fault bdev"
    serve_running || fail "dataplane serve is not running"
    [ -b "/dev/$SOAK_NS" ] || fail "no /dev/$SOAK_NS (step nvme_devices failed)"
    d=$(fault_lun "$SOAK_LUN" soak0 "$(ns_bytes "$SOAK_NS")" "$(ns_lba "$SOAK_NS")")
    dmesg_mark soak
    soak_run "$d" "$SOAK_SECONDS"
    expect_trouble "${d#/dev/}" soak
    out=$(dataplane lio delete "$SOAK_LUN" 2>&1) || fail "dataplane lio delete $SOAK_LUN: $(first_error "$out")"
}
