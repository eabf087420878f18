# shellcheck shell=dash
# The VM test's SCST leg; sourced by guest.sh, whose helpers (run_fio,
# need_disk, set_disk, start_serve, stop_serve, sgrun, expect, ...) and I/O
# steps (given the KINDs `scst` and `scststripe`) it uses.
#
# run.sh builds the SCST modules and fileio_tgt on the host (scst-build.sh)
# and passes their directory as VM_SCST_BUILD; the guest loads the modules
# from there (through /host, not /lib/modules: as SCST users who load a
# build tree do). The leg runs after the TCMU leg has stopped its server: a
# server of its own serves `[[scst]]` devices over RAM and striped bdevs,
# exported through scst_local as LUNs 0 and 1 by the server itself
# (`[[scst.export]]`, which also brings them back after a restart);
# `dataplane scst add-lun` / `del-lun` are tried on a third LUN.

SCST_DIR=
[ -z "${VM_SCST_BUILD:-}" ] || SCST_DIR=/host$VM_SCST_BUILD
SCST_SYS=/sys/kernel/scst_tgt
SCST_RAM_SIZE=$((128 << 20))
# LUNs of scst_local's target: 0 sdisk0 (RAM), 1 sstripe0disk, 2 snull0 (the
# dataplane's null bdev), 3 the add-lun trial, and the in-kernel and
# fileio_tgt devices of the comparison: 4 vdisk_fileio, 5 fileio_tgt,
# 6 vdisk_nullio; 7 sstuck0disk (a fault bdev holding reads of a block);
SCST_NULL_LUN=2
SCST_TRIAL_LUN=3
SCST_STUCK_LUN=7
# 8 sfile0disk: a file bdev (a file in the guest's tmpfs, buffered), whose
# data outlives the server that wrote it: the hand-off step checks it.
SCST_FILE_LUN=8
# 9 sunbatched0disk and 10 sbatched0disk: two 16 MiB RAM devices alike but
# for batching, off (doorbell_batch = 1) and the default: the QD 1 latency
# that batching must not cost.
SCST_UNBATCHED_LUN=9
SCST_BATCHED_LUN=10
SCST_QD1_MB=16
SCST_STRIPE_CHILD_SIZE=$((64 << 20))

# scst_need: skips the step when there is no SCST build, saying why.
scst_need() {
    if [ -z "$SCST_DIR" ]; then
        skip "$(cat /results/scst-skip 2>/dev/null || echo "no SCST build (VM_SCST_BUILD unset)")"
    fi
    [ "$SELFTEST" = 1 ] && skip "VM_SELFTEST=1: the SCST leg needs the dataplane"
    return 0
}

step_scst_modules() {
    scst_need
    for m in configfs dlm crc32c_generic libcrc32c crc-t10dif; do
        modprobe "$m" || fail "modprobe $m"
    done
    for ko in scst scst_vdisk scst_user scst_local; do
        insmod "$SCST_DIR/$ko.ko" || fail "insmod $SCST_DIR/$ko.ko"
    done
    mkdir -p /var/lib/scst/pr /var/lib/scst/dif_tags /var/lib/scst/vdev_mode_pages
    [ -d "$SCST_SYS" ] || fail "$SCST_SYS missing after loading scst"
    [ -c /dev/scst_user ] || fail "/dev/scst_user missing after loading scst_user"
    cat "$SCST_SYS/version"
}

write_scst_config() {
    cat >"$ST/serve.toml" <<EOF
[reactors]
cores = [1]
idle = "adaptive"

[[bdev]]
name = "sram0"
type = "ram"
size = "$((SCST_RAM_SIZE >> 20))MiB"
block_size = $BLOCK_SIZE

[[bdev]]
name = "sram1"
type = "ram"
size = "$((SCST_STRIPE_CHILD_SIZE >> 20))MiB"
block_size = $BLOCK_SIZE

[[bdev]]
name = "sram2"
type = "ram"
size = "$((SCST_STRIPE_CHILD_SIZE >> 20))MiB"
block_size = $BLOCK_SIZE

[[bdev]]
name = "sstripe0"
type = "striped"
children = ["sram1", "sram2"]
chunk = "64KiB"

[[scst]]
name = "$(lun_name scst)"
bdev = "sram0"
[[scst.export]]
lun = 0

[[scst]]
name = "$(lun_name scststripe)"
bdev = "sstripe0"
[[scst.export]]
lun = 1

[[bdev]]
name = "snull"
type = "null"
size = "$((SCST_RAM_SIZE >> 20))MiB"
block_size = $BLOCK_SIZE

[[bdev]]
name = "sram3"
type = "ram"
size = "16MiB"
block_size = $BLOCK_SIZE

[[bdev]]
name = "sstuck0"
type = "fault"
base = "sram3"

[[bdev.rules]]
ops = ["read"]
range = [$TMR_STUCK_LBA, $((TMR_STUCK_LBA + 1))]
stuck = true

[[scst]]
name = "sstuck0disk"
bdev = "sstuck0"
[[scst.export]]
lun = $SCST_STUCK_LUN

[[scst]]
name = "$(lun_name scstnull)"
bdev = "snull"
[[scst.export]]
lun = $SCST_NULL_LUN

[[bdev]]
name = "sfile0"
type = "file"
path = "$ST/sfile0.img"
size = "32MiB"
block_size = $BLOCK_SIZE
direct = false

[[scst]]
name = "sfile0disk"
bdev = "sfile0"
[[scst.export]]
lun = $SCST_FILE_LUN

[[bdev]]
name = "sram4"
type = "ram"
size = "${SCST_QD1_MB}MiB"
block_size = $BLOCK_SIZE

[[scst]]
name = "sunbatched0disk"
bdev = "sram4"
doorbell_batch = 1
[[scst.export]]
lun = $SCST_UNBATCHED_LUN

[[bdev]]
name = "sram5"
type = "ram"
size = "${SCST_QD1_MB}MiB"
block_size = $BLOCK_SIZE

[[scst]]
name = "sbatched0disk"
bdev = "sram5"
[[scst.export]]
lun = $SCST_BATCHED_LUN
EOF
}

# scst_registered NAME: the SCST device NAME exists (dataplane registered it).
scst_registered() { [ -e "$SCST_SYS/devices/$1" ]; }

step_scst_serve_start() {
    scst_need
    serve_running && fail "the TCMU leg's dataplane serve is still running"
    write_scst_config
    cat "$ST/serve.toml"
    # Every server of the leg listens for a successor (step scst_handoff).
    echo "--handoff-socket $ST/handoff.sock" >"$ST/serve-args"
    start_serve scst1
    for name in $(lun_name scst) $(lun_name scststripe); do
        i=0
        while ! scst_registered "$name" && [ $i -lt 100 ]; do
            sleep 0.1
            i=$((i + 1))
        done
        scst_registered "$name" || {
            cat "$R/serve-scst1.log"
            fail "dataplane serve did not register SCST device $name"
        }
    done
    grep -i "version" "$R/serve-scst1.log" || true
}

# scst_local_disk_now LUN: scst_local's disk of LUN, /dev/sdX (nothing if
# none).
scst_local_disk_now() {
    for _s in "$SCST_SYS"/targets/scst_local/scst_local_tgt/sessions/*/host; do
        _h=$(basename "$(readlink "$_s")")
        for _b in /sys/bus/scsi/devices/"${_h#host}":*:*:"$1"/block/*; do
            [ -e "$_b" ] && [ -b "/dev/${_b##*/}" ] && {
                echo "/dev/${_b##*/}"
                return 0
            }
        done
    done
    return 0
}
# scst_local leaves every disk it creates at its host template's
# cmd_per_lun, 3 commands, on kernels from 3.19 on: its sdev_configure works
# out the LUN's depth (it logs "Configuring queue depth 64") but applies it
# only through scsi_activate_tcq, which those kernels no longer have. At
# depth 3 a fio job at iodepth 32 keeps 3 commands at the device, whoever
# serves it. Each scst_local disk of the test, the dataplane's and the
# kernel handlers' alike, is given the depth scst_local meant.
SCST_LOCAL_QUEUE_DEPTH=64

# scst_local_deepen DISK: raises DISK's queue depth to SCST_LOCAL_QUEUE_DEPTH.
scst_local_deepen() {
    _qd=/sys/block/${1#/dev/}/device/queue_depth
    [ -w "$_qd" ] || return 0
    [ "$(cat "$_qd")" -ge "$SCST_LOCAL_QUEUE_DEPTH" ] || echo "$SCST_LOCAL_QUEUE_DEPTH" >"$_qd" ||
        echo "could not set the queue depth of $1" >&2
}

# scst_local_disk LUN: waits up to 15 s for scst_local_disk_now LUN, and
# gives the disk its queue depth (scst_local_deepen).
scst_local_disk() {
    _i=0
    while [ $_i -lt 150 ]; do
        _d=$(scst_local_disk_now "$1")
        [ -z "$_d" ] || {
            scst_local_deepen "$_d"
            echo "$_d"
            return 0
        }
        sleep 0.1
        _i=$((_i + 1))
    done
}

# step_scst_add_lun: the LUNs serve exported by itself (0: scst, 1:
# scststripe) have their disks; `dataplane scst add-lun` exports the RAM
# device as LUN SCST_TRIAL_LUN too, which reads what LUN 0 wrote, and
# `del-lun` removes it again.
step_scst_add_lun() {
    scst_need
    grep "exported SCST device" "$R/serve-$(state serve.tag).log" || true
    lun=0
    for kind in scst scststripe; do
        d=$(scst_local_disk $lun)
        [ -n "$d" ] || fail "no scst_local disk for LUN $lun ($(lun_name $kind)): serve did not export it"
        echo "LUN $lun ($(lun_name $kind)): $d"
        set_disk $kind "$d" "$SCST_RAM_SIZE" "$BLOCK_SIZE"
        lun=$((lun + 1))
    done
    name=$(lun_name scst)
    echo "+ dataplane scst add-lun $name --lun $SCST_TRIAL_LUN"
    out=$(dataplane scst add-lun "$name" --lun $SCST_TRIAL_LUN 2>&1) ||
        fail "dataplane scst add-lun $name: $(first_error "$out")"
    echo "$out"
    d2=$(echo "$out" | awk '$1 == "disk:" { print $2 }')
    [ -b "$d2" ] || fail "add-lun $name printed no disk"
    head -c 65536 /dev/urandom >"$ST/lun2"
    hdd if="$ST/lun2" of="$(state disk-scst)" bs=65536 oflag=direct conv=notrunc status=none ||
        fail "write through LUN 0 failed"
    read_is "$ST/lun2" "$d2" 0 128 512
    echo "LUN $SCST_TRIAL_LUN ($d2) reads what LUN 0 wrote"
    dataplane scst list
    out=$(dataplane scst del-lun "$name" --lun $SCST_TRIAL_LUN 2>&1) ||
        fail "dataplane scst del-lun $name --lun $SCST_TRIAL_LUN: $(first_error "$out")"
    echo "$out"
    [ ! -e "$SCST_SYS/targets/scst_local/scst_local_tgt/luns/$SCST_TRIAL_LUN" ] || fail "LUN $SCST_TRIAL_LUN still there"
}

# step_scst_kill9_restart: kill -9 of serve while fio runs on LUN 0
# (continue_on_error: I/O fails while no LUN maps the device), restart with
# the same configuration; serve exports the LUN again, and the disk must
# serve again within 10 s of the kill without any manual step. The I/O
# errors must all fall in that window: a line in the kernel log marks the
# moment the disk served again, and a kernel report of an I/O error on the
# disk after it fails the step.
step_scst_kill9_restart() {
    d=$(need_disk scst)
    serve_running || fail "dataplane serve is not running"
    dmesg_mark scst-restart
    (
        env DISK="$d" SIZE=$((64 << 20)) RUNTIME=20 \
            timeout -s KILL 140 "$LD" --library-path "$LIBPATH" "$(fio_bin)" \
            --output-format=json --output="$R/fio-scst-restart.json" "$FIO_JOBS/restart-continue.fio"
    ) >"$ST/scst-restart-fio.log" 2>&1 &
    fpid=$!
    sleep 5
    t0=$(now)
    kill9_serve scst2
    # The disk serves again: a read of its first block succeeds.
    ok=
    while awk -v a="$t0" -v b="$(now)" 'BEGIN { exit !(b - a < 30) }'; do
        if hdd if="$d" of=/dev/null bs=4096 count=1 iflag=direct status=none 2>/dev/null; then
            ok=$(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }')
            dmesg_note scst-served "${d#/dev/} serves again"
            break
        fi
        sleep 0.2
    done
    frc=0
    wait $fpid || frc=$?
    late=
    [ -z "$ok" ] || late=$(dmesg_since scst-served | disk_lines "${d#/dev/}" | io_trouble)
    grep "exported SCST device\|cannot export" "$R/serve-scst2.log" || true
    fout=$R/fio-scst-restart.json
    ferr=$(awk -F: '/"total_err"/ { gsub(/[ ,]/, "", $2); s += $2 } END { print s + 0 }' "$fout" 2>/dev/null)
    echo "restart timeline: LUN 0 served again ${ok:-never} s after the kill;" \
        "fio saw ${ferr:-?} failed I/Os of $(($(fio_sum "$fout" read total_ios) + $(fio_sum "$fout" write total_ios)))"
    echo "${ok:-}" >"$R/scst-restart-seconds"
    if [ -n "$ok" ]; then
        expect_trouble_until "${d#/dev/}" scst-restart scst-served
    else
        expect_trouble "${d#/dev/}" scst-restart
    fi
    expect_trouble "$(state disk-scststripe | sed 's|/dev/||')" scst-restart
    [ -n "$ok" ] || fail "LUN 0 did not serve again within 30 s of the kill"
    awk -v s="$ok" 'BEGIN { exit !(s <= 10) }' || fail "LUN 0 served again only after $ok s (more than 10)"
    [ $frc = 0 ] || {
        cat "$ST/scst-restart-fio.log"
        fail "fio during the restart exited with status $frc"
    }
    [ -z "$late" ] || {
        echo "$late"
        fail "I/O errors on ${d#/dev/} after it served again (kernel log above)"
    }
    echo "no I/O error on ${d#/dev/} in the kernel log after it served again"
}

# step_scst_handoff: while fio writes (and reads back and checks) the file
# bdev's LUN and reads it at full speed, a successor server is started with
# --take-over: the running server quiesces its SCST devices, flushes the
# kernel's cached buffers, hands the open /dev/scst_user fds over and exits.
# The LUN never leaves scst_local's target (watched every 50 ms), fio sees
# no error and no wrong block (a file bdev: the data outlives the server
# that wrote it, unlike a RAM bdev's), the kernel logs no I/O trouble, and
# the successor serves.
step_scst_handoff() {
    scst_need
    serve_running || fail "dataplane serve is not running"
    d=$(scst_local_disk $SCST_FILE_LUN)
    [ -b "$d" ] || fail "no scst_local disk for LUN $SCST_FILE_LUN (sfile0disk)"
    old=$(state serve.pid)
    oldtag=$(state serve.tag)
    lun_dir=$SCST_SYS/targets/scst_local/scst_local_tgt/luns/$SCST_FILE_LUN
    dmesg_mark scst-handoff
    rm -f "$ST/handoff-lun-gone" "$ST/handoff-watch-stop"
    (
        while [ ! -e "$ST/handoff-watch-stop" ]; do
            [ -e "$lun_dir" ] || now >>"$ST/handoff-lun-gone"
            sleep 0.05
        done
    ) &
    wpid=$!
    (run_fio scst-handoff handoff-verify.fio DISK="$d" SIZE=$((32 << 20)) RUNTIME=14) \
        >"$ST/scst-handoff-fio.log" 2>&1 &
    fpid=$!
    sleep 4
    t0=$(now)
    start_serve scst3 --take-over "$ST/handoff.sock"
    i=0
    while kill -0 "$old" 2>/dev/null && [ $i -lt 300 ]; do
        sleep 0.1
        i=$((i + 1))
    done
    t1=$(now)
    frc=0
    wait $fpid || frc=$?
    touch "$ST/handoff-watch-stop"
    wait $wpid || true
    grep "successor\|hand\|took over" "$R/serve-$oldtag.log" "$R/serve-scst3.log" || true
    cat "$ST/scst-handoff-fio.log"
    secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
    # The old server's own account: quiesce, flush, drain and send.
    ms=$(sed -n 's/.*handed over SCST device.* in \([0-9]*\) ms.*/\1/p' "$R/serve-$oldtag.log")
    echo "${ms:-}" >"$R/scst-handoff-ms"
    echo "hand-off timeline: the successor started at +0 s (its start check takes 2 s)," \
        "the old server handed its devices over in ${ms:-?} ms and (pid $old)" \
        "exited by +$secs s with status $(state "serve-$oldtag.rc")"
    kill -0 "$old" 2>/dev/null && fail "the old server is still running 30 s after its successor started"
    [ "$(state "serve-$oldtag.rc")" = 0 ] || fail "the old server exited with status $(state "serve-$oldtag.rc")"
    grep -q "handed over SCST device" "$R/serve-$oldtag.log" || fail "the old server did not hand its devices over"
    grep -q "took over SCST device" "$R/serve-scst3.log" || fail "the successor did not take the devices over"
    [ ! -s "$ST/handoff-lun-gone" ] || fail "LUN $SCST_FILE_LUN left the target during the hand-off (at $(head -n 1 "$ST/handoff-lun-gone"))"
    [ $frc = 0 ] || fail "fio across the hand-off failed"
    errs=$(dmesg_unexpected scst-handoff)
    [ -z "$errs" ] || {
        echo "$errs"
        fail "kernel log reports I/O trouble during the hand-off"
    }
    n=$(wait_served scst3 sfile0disk)
    [ "$n" -gt 0 ] || fail "the successor reports no command on sfile0disk"
    echo "the successor served $n commands on sfile0disk; LUN $SCST_FILE_LUN never left the target"
}

# step_scst_caw KIND: COMPARE AND WRITE of one block: with the block's data
# it writes the new data (GOOD); with other data it writes nothing and
# answers MISCOMPARE.
step_scst_caw() {
    d=$(need_disk "$1")
    bs=$(kind_bs "$1")
    lba=2048
    head -c "$bs" /dev/urandom >"$ST/caw-old"
    head -c "$bs" /dev/urandom >"$ST/caw-new"
    hdd if="$ST/caw-old" of="$d" bs="$bs" seek=$lba oflag=direct conv=notrunc status=none ||
        fail "write of the block failed"
    cat "$ST/caw-old" "$ST/caw-new" >"$ST/caw-hit"
    sgrun caw-hit sg_compare_and_write --in="$ST/caw-hit" --lba=$lba --num=1 --xferlen=$((2 * bs)) "$d"
    read_is "$ST/caw-new" "$d" $lba 1 "$bs"
    echo "COMPARE AND WRITE with matching data: written"
    cat "$ST/caw-old" "$ST/caw-old" >"$ST/caw-miss"
    rc=0
    sg sg_compare_and_write --in="$ST/caw-miss" --lba=$lba --num=1 --xferlen=$((2 * bs)) "$d" \
        >"$ST/caw-miss.out" 2>&1 || rc=$?
    cat "$ST/caw-miss.out"
    [ $rc != 0 ] || fail "COMPARE AND WRITE with other data succeeded"
    grep -qi "miscompare" "$ST/caw-miss.out" || fail "no MISCOMPARE for other data"
    read_is "$ST/caw-new" "$d" $lba 1 "$bs"
    echo "COMPARE AND WRITE with other data: MISCOMPARE, block unchanged"
}

# step_scst_tmr_abort: stuck_read_is_aborted (reliability.sh) through
# scst_local: SCST passes the error handler's ABORT TASK to serve as
# TASK_MGMT_RECEIVED.
step_scst_tmr_abort() {
    scst_need
    serve_running || fail "dataplane serve is not running"
    d=$(scst_local_disk $SCST_STUCK_LUN)
    [ -b "$d" ] || fail "no scst_local disk for LUN $SCST_STUCK_LUN (sstuck0disk)"
    stuck_read_is_aborted "$d" sstuck0disk sstuck0 scst-tmr
}

# step_scst_task_mgmt KIND: a LUN reset (sg_reset -d) while fio runs. SCST's
# scst_local drops the response of commands a reset aborts, so the
# initiator waits out its command timeout (lowered to 10 s here) before it
# recovers; the step judges the handler: fio ends, nothing is left in flight
# and the LUN serves (the aborts serve counted are printed: with a RAM bdev
# a command rarely is still executing when the reset comes).
step_scst_task_mgmt() {
    d=$(need_disk "$1")
    name=$(lun_name "$1")
    serve_running || fail "dataplane serve is not running"
    echo 10 >"/sys/block/${d#/dev/}/device/timeout"
    stats=$R/serve-stats-$(state serve.tag).json
    dmesg_mark "scst-tm-$1"
    (run_fio "scst-tm-$1" randrw-restart.fio DISK="$d" RUNTIME=20 >"$ST/scst-tm-fio.log" 2>&1) &
    fpid=$!
    sleep 5
    echo "+ sg_reset --device $d"
    sg sg_reset --device "$d" || echo "sg_reset exited with status $?"
    frc=0
    wait $fpid || frc=$?
    cat "$ST/scst-tm-fio.log"
    dmesg_since "scst-tm-$1" | head -n 20
    expect_trouble "${d#/dev/}" "scst-tm-$1"
    [ $frc = 0 ] || fail "fio during the reset failed (status $frc)"
    report_now
    aborts=$(stats_field "$stats" "$name" aborts_total)
    received=$(stats_field "$stats" "$name" received_total)
    completed=$(stats_field "$stats" "$name" commands_total)
    echo "serve: $name aborts_total ${aborts:-?}, received ${received:-?}, completed ${completed:-?}"
    [ "${received:-x}" = "${completed:-y}" ] || fail "commands left in flight on $name"
    hdd if="$d" of=/dev/null bs=4k count=256 iflag=direct status=none || fail "reads after the reset failed"
}

# step_scst_perf: fio 4 KiB randread QD 32 (fio on CPU 0, the reactor on
# CPU 1) on the dataplane's RAM device (dp), SCST's in-kernel vdisk_fileio
# over a tmpfs file (vdisk), fileio_tgt over a tmpfs file (ftgt), the
# dataplane's null bdev (dpnull) and vdisk_nullio (nullio), VM_PERF_ROUNDS
# rounds, the order rotating each round. The dataplane's ioctls per I/O over
# its runs come from serve's statistics (SIGUSR1 before and after each).
# Then QD 1 on two RAM devices alike but for batching: dpb_qd1 (the
# default) and dpnb_qd1 (doorbell_batch = 1), fresh alike (a RAM bdev's
# memory is prefaulted), the order alternating: the latency that batching
# must not cost. Both devices run at once, one fio job each (the guest's
# speed shifts within seconds, by up to 2x at QD 1: runs one after the
# other differed by up to 1.5x with both devices alike), which of the two
# is fio's first job alternating.
step_scst_perf() {
    scst_need
    serve_running || fail "dataplane serve is not running"
    mkdir -p /mnt/scsttmp
    mountpoint -q /mnt/scsttmp || mount -t tmpfs -o size=$((2 * SCST_RAM_SIZE / 1048576 + 16))m tmpfs /mnt/scsttmp
    hdd if=/dev/zero of=/mnt/scsttmp/vdisk.img bs=1M count=$((SCST_RAM_SIZE >> 20)) status=none
    hdd if=/dev/zero of=/mnt/scsttmp/ftgt.img bs=1M count=$((SCST_RAM_SIZE >> 20)) status=none
    h=$SCST_SYS/handlers
    echo "add_device kvdisk0 filename=/mnt/scsttmp/vdisk.img; blocksize=$BLOCK_SIZE" >"$h/vdisk_fileio/mgmt" ||
        fail "vdisk_fileio add_device failed"
    echo "add_device knull0 size_mb=$((SCST_RAM_SIZE >> 20)); blocksize=$BLOCK_SIZE" >"$h/vdisk_nullio/mgmt" ||
        fail "vdisk_nullio add_device failed"
    "$LD" --library-path "$LIBPATH" "$SCST_DIR/fileio_tgt" -b "$BLOCK_SIZE" ftgt0 /mnt/scsttmp/ftgt.img \
        >"$R/fileio_tgt.log" 2>&1 &
    echo $! >"$ST/fileio_tgt.pid"
    i=0
    while ! scst_registered ftgt0 && [ $i -lt 100 ]; do
        sleep 0.1
        i=$((i + 1))
    done
    scst_registered ftgt0 || {
        cat "$R/fileio_tgt.log"
        fail "fileio_tgt did not register ftgt0"
    }
    # `scst list` shows the dataplane's devices only (fileio_tgt's is an
    # scst_user device too), `--all` every one.
    listed=$(dataplane scst list) || fail "dataplane scst list failed"
    echo "$listed"
    echo "$listed" | grep -q "^$(lun_name scst) " || fail "scst list does not show $(lun_name scst)"
    ! echo "$listed" | grep -q "^ftgt0 " || fail "scst list shows fileio_tgt's ftgt0"
    dataplane scst list --all | grep -q "^ftgt0 " || fail "scst list --all does not show ftgt0"
    luns=$SCST_SYS/targets/scst_local/scst_local_tgt/luns/mgmt
    lun=4
    for dev in kvdisk0 ftgt0 knull0; do
        echo "add $dev $lun" >"$luns" || fail "add $dev $lun failed"
        lun=$((lun + 1))
    done
    targets="dp vdisk ftgt dpnull nullio"
    for t in $targets; do
        case $t in
            dp) d=$(need_disk scst) ;;
            dpnull) d=$(scst_local_disk $SCST_NULL_LUN) ;;
            vdisk) d=$(scst_local_disk 4) ;;
            ftgt) d=$(scst_local_disk 5) ;;
            nullio) d=$(scst_local_disk 6) ;;
        esac
        [ -b "$d" ] || fail "no disk for $t"
        echo "$d" >"$ST/perf-scst-$t"
        echo "$t: $d"
    done
    stats=$R/serve-stats-$(state serve.tag).json
    if [ "$PERF_WARMUP" -gt 0 ]; then
        for t in $targets; do
            FIO_EXTRA="--cpus_allowed=0" run_fio "warmup-scst-$t" randread-4k-qd32.fio \
                DISK="$(state "perf-scst-$t")" RUNTIME="$PERF_WARMUP"
        done
    fi
    ios=0
    ioctls=0
    r=1
    while [ $r -le "$PERF_ROUNDS" ]; do
        for t in $(rotate $((r - 1)) "$targets"); do
            if [ "$t" != dp ]; then
                FIO_EXTRA="--cpus_allowed=0" run_fio "perf-scst-$t-$r" randread-4k-qd32.fio \
                    DISK="$(state "perf-scst-$t")" RUNTIME="$PERF_RUNTIME"
                continue
            fi
            # The ioctls per I/O at queue depth 32: serve's counters taken
            # while the run is at full depth (report_now's signal 2 s after
            # fio's start, past its 1 s ramp, and again PERF_RUNTIME - 2 s
            # later, before its end), not around the whole run: the device's
            # idle asks before and after the I/O (at least one per
            # millisecond while the reactor is awake, see
            # dataplane/src/scst/idle_watch.rs) are no QD 32.
            (FIO_EXTRA="--cpus_allowed=0" run_fio "perf-scst-dp-$r" randread-4k-qd32.fio \
                DISK="$(state perf-scst-dp)" RUNTIME="$PERF_RUNTIME") >"$ST/perf-scst-dp.log" 2>&1 &
            fpid=$!
            window=$((PERF_RUNTIME - 2))
            [ "$window" -ge 1 ] || window=1
            sleep 2
            report_now
            c0=$(stats_field "$stats" "$(lun_name scst)" commands_total)
            b0=$(stats_field "$stats" "$(lun_name scst)" doorbells_total)
            sleep $((window - 1))
            report_now
            ios=$((ios + $(stats_field "$stats" "$(lun_name scst)" commands_total) - c0))
            ioctls=$((ioctls + $(stats_field "$stats" "$(lun_name scst)" doorbells_total) - b0))
            frc=0
            wait $fpid || frc=$?
            cat "$ST/perf-scst-dp.log"
            [ $frc = 0 ] || fail "fio perf-scst-dp-$r failed (status $frc)"
        done
        r=$((r + 1))
    done
    echo "dataplane RAM device at full depth in its runs: $ioctls ioctls for $ios commands" |
        tee "$R/scst-ioctls"
    echo "$ioctls $ios" >"$R/scst-ioctls-per-io"
    b=$(scst_local_disk $SCST_BATCHED_LUN)
    nb=$(scst_local_disk $SCST_UNBATCHED_LUN)
    [ -b "$b" ] || fail "no disk for sbatched0disk (LUN $SCST_BATCHED_LUN)"
    [ -b "$nb" ] || fail "no disk for sunbatched0disk (LUN $SCST_UNBATCHED_LUN)"
    r=1
    while [ $r -le "$PERF_ROUNDS" ]; do
        if [ $((r % 2)) = 1 ]; then
            set -- NAME_A=dpb DISK_A="$b" NAME_B=dpnb DISK_B="$nb"
        else
            set -- NAME_A=dpnb DISK_A="$nb" NAME_B=dpb DISK_B="$b"
        fi
        FIO_EXTRA="--cpus_allowed=0" run_fio "perf-scst-qd1pair-$r" randread-4k-qd1-pair.fio \
            "$@" RUNTIME="$PERF_RUNTIME"
        r=$((r + 1))
    done
}

# step_scst_perf_teardown: removes the comparison devices and stops fileio_tgt.
step_scst_perf_teardown() {
    scst_need
    luns=$SCST_SYS/targets/scst_local/scst_local_tgt/luns/mgmt
    for lun in 4 5 6; do
        d=$(scst_local_disk_now $lun)
        [ -z "$d" ] || echo 1 >"/sys/block/${d#/dev/}/device/delete"
        [ ! -e "${luns%/mgmt}/$lun" ] || echo "del $lun" >"$luns" || fail "del $lun failed"
    done
    pid=$(state fileio_tgt.pid)
    [ -z "$pid" ] || kill "$pid" 2>/dev/null || true
    h=$SCST_SYS/handlers
    for dev in kvdisk0:vdisk_fileio knull0:vdisk_nullio; do
        [ ! -e "$SCST_SYS/devices/${dev%%:*}" ] || echo "del_device ${dev%%:*}" >"$h/${dev#*:}/mgmt" ||
            fail "del_device ${dev%%:*} failed"
    done
    umount /mnt/scsttmp 2>/dev/null || true
}

step_scst_del_lun() {
    scst_need
    for name in $(lun_name scst) $(lun_name scststripe) $(lun_name scstnull) sstuck0disk sfile0disk sunbatched0disk sbatched0disk; do
        echo "+ dataplane scst del-lun $name"
        out=$(dataplane scst del-lun "$name" 2>&1) || fail "dataplane scst del-lun $name: $(first_error "$out")"
        echo "$out"
    done
    rm -f "$ST/disk-scst" "$ST/disk-scststripe"
}

step_scst_serve_stop() {
    scst_need
    stop_serve
    rm -f "$ST/serve-args"
}

step_scst_dmesg_clean() {
    scst_need
    errs=$(dmesg_unexpected scst)
    [ -z "$errs" ] || {
        echo "$errs"
        fail "kernel log reports I/O errors or warnings during the SCST leg"
    }
}

# scst_steps: the leg, in order (step names `scst_*`). Without an SCST build
# (or with VM_SELFTEST=1) every step skips, saying why.
scst_steps() {
    dmesg_mark scst
    _why=
    [ -n "$SCST_DIR" ] || _why=$(cat /results/scst-skip 2>/dev/null || echo "no SCST build (VM_SCST_BUILD unset)")
    [ "$SELFTEST" != 1 ] || _why="VM_SELFTEST=1: the SCST leg needs the dataplane"
    if [ -n "$_why" ]; then
        for kind in scst scststripe; do
            echo "$_why" >"$ST/skip-$kind"
        done
    fi
    run_step scst_modules step_scst_modules
    run_step scst_serve_start step_scst_serve_start
    run_step scst_add_lun step_scst_add_lun
    for kind in scst scststripe; do
        sfx=
        [ $kind = scst ] || sfx=_striped
        run_step "scst_randwrite_verify$sfx" step_randwrite_verify $kind
        run_step "scst_randrw_bssplit$sfx" step_randrw_bssplit $kind
    done
    run_step scst_seq_1m step_seq_1m scst
    run_step scst_sg_inq step_sg_inq scst
    run_step scst_sg_vpd step_sg_vpd scst
    run_step scst_sg_readcap step_sg_readcap scst
    run_step scst_sg_modes step_sg_modes scst
    run_step scst_sg_sync step_sg_sync scst
    run_step scst_sg_unmap step_sg_unmap scst
    run_step scst_sg_unmap_striped step_sg_unmap scststripe
    run_step scst_sg_write_same step_sg_write_same scst
    run_step scst_caw step_scst_caw scst
    run_step scst_ext4 step_ext4 scst
    run_step scst_task_mgmt step_scst_task_mgmt scst
    run_step scst_tmr_abort step_scst_tmr_abort
    run_step scst_perf step_scst_perf
    run_step scst_perf_teardown step_scst_perf_teardown
    run_step scst_kill9_restart step_scst_kill9_restart
    run_step scst_handoff step_scst_handoff
    run_step scst_del_lun step_scst_del_lun
    run_step scst_serve_stop step_scst_serve_stop
    run_step scst_dmesg_clean step_scst_dmesg_clean
}
