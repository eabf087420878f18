#!/bin/sh
# shellcheck shell=dash disable=SC2015,SC3028
# (busybox ash: $RANDOM exists; "A && B || fail" is meant as written.)
# The VM test's guest side: runs as root under busybox sh inside the QEMU guest
# booted by tests/vm/run.sh (its /init runs this file from the host's 9p share).
#
# Every step runs in a subshell with its output in $R/step-<name>.log and its
# outcome appended to $R/steps.tsv as "name<TAB>pass|fail|skip<TAB>seconds<TAB>message".
# A failing step does not stop the run. fio writes JSON into $R/fio-*.json;
# run.sh (summarize.py) turns all of it into $R/result.json after the VM exits.
#
# Host programs (fio, sg3-utils, e2fsprogs, dd, the dataplane binary) are not
# copied into the guest: they run from /host through the host's dynamic loader.

R=/results
REPO=/host${VM_REPO:?VM_REPO not set}
DP=/host${VM_DATAPLANE:?VM_DATAPLANE not set}
FIO_JOBS=$REPO/fio
CFS=/sys/kernel/config/target
ST=/run/vmstate                 # state shared between steps (disk names, pids)
SELFTEST=${VM_SELFTEST:-0}      # 1: the "dataplane" LUNs are rd_mcp LUNs
PERF_ROUNDS=${VM_PERF_ROUNDS:-3}
# serve's tcmu.completion_coalesce_us in the guest: 0, the README's default
# configuration (the devices' own adaptive coalescing decides); VM_COALESCE_US
# sets a window to compare with.
COALESCE_US=${VM_COALESCE_US:-0}
PERF_RUNTIME=${VM_PERF_RUNTIME:-4}
PERF_WARMUP=${VM_PERF_WARMUP:-3}
RESTART_RUNTIME=12
SOAK_SECONDS=${VM_SOAK_SECONDS:-60}  # the soak's duration (step soak_short)
FIO_TIMEOUT=${VM_FIO_TIMEOUT:-300}  # seconds before a fio run is killed

# LUN sizes (bytes). The RAM LUN and the rd_mcp LUN have the same size.
RAM_SIZE=$((128 << 20))
STRIPE_CHILD_SIZE=$((64 << 20))
STRIPE_SIZE=$((2 * STRIPE_CHILD_SIZE))
BLOCK_SIZE=512

# What our SCSI layer advertises (checked with sg3-utils).
if [ "$SELFTEST" = 1 ]; then
    EXPECT_VENDOR="LIO-ORG"
    EXPECT_PRODUCT="RAMDISK-MCP"
else
    EXPECT_VENDOR="DATAPLN"
    EXPECT_PRODUCT="DATAPLANE DISK"
fi

mkdir -p "$ST" /mnt/ext4
export MKE2FS_CONFIG=/host/etc/mke2fs.conf

now() { awk '{print $1}' /proc/uptime; }
log() {
    echo "guest: $*"
    echo "$(now) $*" >>"$R/guest.log"
}
# fail/skip MESSAGE: end the step. They write to stderr so that the message
# reaches the step log even from inside $(...).
fail() {
    echo "FAIL: $*" >&2
    exit 1
}
skip() {
    echo "SKIP: $*" >&2
    exit 77
}
# first_error TEXT: the most telling line of a failed command's output.
first_error() {
    _l=$(echo "$1" | grep -i -m 1 'error' || true)
    [ -n "$_l" ] || _l=$(echo "$1" | tail -n 1)
    echo "$_l"
}

# ------------------------------------------------------------ host programs
LD=
for d in /host/usr/lib/x86_64-linux-gnu /host/lib/x86_64-linux-gnu; do
    if [ -f "$d/ld-linux-x86-64.so.2" ]; then
        LD=$d/ld-linux-x86-64.so.2
        break
    fi
done
LIBPATH=/host/usr/lib/x86_64-linux-gnu:/host/usr/lib/x86_64-linux-gnu/ceph:/host/lib/x86_64-linux-gnu

# resolve PATH: follow symlinks, re-rooting absolute targets under /host.
resolve() {
    p=$1
    n=0
    while [ -L "$p" ] && [ $n -lt 16 ]; do
        t=$(readlink "$p")
        case $t in
            /*) p=/host$t ;;
            *) p=$(dirname "$p")/$t ;;
        esac
        n=$((n + 1))
    done
    echo "$p"
}
hostbin() {
    for d in /usr/bin /usr/sbin /bin /sbin; do
        if [ -e "/host$d/$1" ] || [ -L "/host$d/$1" ]; then
            resolve "/host$d/$1"
            return 0
        fi
    done
    echo "host program $1 not found (install it on the host)" >&2
    return 127
}
# host PROG ARGS...: run a host program through the host's loader.
host() {
    _p=$(hostbin "$1") || return 127
    shift
    "$LD" --library-path "$LIBPATH" "$_p" "$@"
}
# fio_bin: the fio the guest runs: run.sh's build (VM_FIO, fio-build.sh: the
# host's version without library engines, quicker to start under TCG), else
# the host's.
fio_bin() {
    if [ -n "${VM_FIO:-}" ] && [ -x "/host$VM_FIO" ]; then
        echo "/host$VM_FIO"
    else
        hostbin fio
    fi
}
fio() { "$LD" --library-path "$LIBPATH" "$(fio_bin)" "$@"; }
mke2fs() { host mke2fs "$@"; }
e2fsck() { host e2fsck "$@"; }
hdd() { host dd "$@"; }
sg() { # sg TOOL ARGS...: an sg3-utils program
    _t=$1
    shift
    host "$_t" "$@"
}
dataplane() { "$LD" --library-path "$LIBPATH" "$DP" "$@"; }

# ------------------------------------------------------------ steps
wanted() {
    [ -z "${VM_STEPS:-}" ] && return 0
    case ",$VM_STEPS," in *",$1,"*) return 0 ;; esac
    return 1
}
record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$R/steps.tsv"; }

# run_step NAME FUNCTION [ARGS...]
run_step() {
    _name=$1
    shift
    if ! wanted "$_name"; then
        record "$_name" skip 0 "not selected (VM_STEPS)"
        return 0
    fi
    _log=$R/step-$_name.log
    log "step $_name: start"
    _t0=$(now)
    (
        set -e
        "$@"
    ) >"$_log" 2>&1 </dev/null
    _rc=$?
    _t1=$(now)
    _dur=$(awk -v a="$_t0" -v b="$_t1" 'BEGIN { printf "%.1f", b - a }')
    _msg=$(grep -E '^(FAIL|SKIP): ' "$_log" | tail -n 1 | cut -d' ' -f2- | tr '\t' ' ')
    case $_rc in
        0) _status=pass ;;
        77) _status=skip ;;
        *)
            _status=fail
            [ -n "$_msg" ] || _msg="exit status $_rc: $(grep -v '^+' "$_log" | tail -n 1 | tr '\t' ' ')"
            ;;
    esac
    record "$_name" "$_status" "$_dur" "$_msg"
    log "step $_name: $_status (${_dur}s) $_msg"
    if [ "$_status" = fail ]; then
        tail -n 15 "$_log" | sed 's/^/    | /'
    fi
}

# ------------------------------------------------------------ helpers
state() { cat "$ST/$1" 2>/dev/null || true; }

# need_disk KIND: prints the disk of the LUN of KIND (ram, striped, rd,
# iblock, file) or fails; skips when the step that would have made it recorded
# why that LUN cannot exist here ($ST/skip-KIND, e.g. the file bdev is unknown
# to this dataplane).
need_disk() {
    if [ -s "$ST/skip-$1" ]; then
        skip "$(cat "$ST/skip-$1")"
    fi
    _d=$(state "disk-$1")
    [ -n "$_d" ] && [ -b "$_d" ] || fail "no $1 LUN (its create step failed)"
    echo "$_d"
}
# set_disk KIND DISK SIZE BLOCK_SIZE: records the LUN of KIND for later steps.
set_disk() {
    echo "$2" >"$ST/disk-$1"
    echo "$3" >"$ST/size-$1"
    echo "$4" >"$ST/bs-$1"
}
# kind_size KIND / kind_bs KIND: the LUN's size and logical block size (bytes).
kind_size() { state "size-$1"; }
kind_bs() { state "bs-$1"; }
# rd_backed KIND: VM_SELFTEST=1 stands rd_mcp in for this dataplane LUN, which
# has no UNMAP, WRITE SAME with UNMAP or logical block provisioning.
rd_backed() {
    [ "$SELFTEST" = 1 ] && { [ "$1" = ram ] || [ "$1" = striped ]; }
}

# wait_block ADDRESS: waits for the disk of SCSI H:C:T (LUN 0), prints /dev/sdX.
wait_block() {
    i=0
    while [ $i -lt 100 ]; do
        for b in /sys/bus/scsi/devices/"$1":0/block/*; do
            if [ -e "$b" ] && [ -b "/dev/${b##*/}" ]; then
                echo "/dev/${b##*/}"
                return 0
            fi
        done
        i=$((i + 1))
        sleep 0.1
    done
    return 1
}

# export_loopback NAME BACKSTORE_DIR INDEX: exports an enabled in-kernel
# backstore through its own tcm_loop target (WWN from INDEX, one digit);
# prints /dev/sdX.
export_loopback() {
    # LIO reports its VPD pages only once a unit serial number is set.
    printf %s "vm-$1-$3" >"$2/wwn/vpd_unit_serial"
    _w=naa.500140500000000$3
    mkdir -p "$CFS/loopback/$_w/tpgt_1/lun/lun_0"
    printf %s "naa.500140590000000$3" >"$CFS/loopback/$_w/tpgt_1/nexus"
    ln -s "$2" "$CFS/loopback/$_w/tpgt_1/lun/lun_0/$1"
    _addr=$(cat "$CFS/loopback/$_w/tpgt_1/address")
    wait_block "$_addr" || fail "LUN $1 ($_addr): no block device appeared"
}

# make_rd_lun NAME SIZE_BYTES INDEX: a kernel rd_mcp ramdisk exported through
# its own tcm_loop target; prints /dev/sdX.
make_rd_lun() {
    _d=$CFS/core/rd_mcp_$3/$1
    mkdir -p "$_d"
    printf %s "rd_pages=$(($2 / 4096))" >"$_d/control"
    printf 1 >"$_d/enable"
    export_loopback "$1" "$_d" "$3"
}

# fio_sum FILE SECTION FIELD: sum of FIELD in the read/write/trim SECTION over
# all jobs of a fio JSON output (fio pretty-prints one key per line).
fio_sum() {
    awk -v sec="\"$2\"" -v key="\"$3\"" '
        $1 == sec && $2 == ":" && $3 == "{" { in_sec = 1; depth = 0; next }
        in_sec && /\{/ { depth++ }
        in_sec && /\}/ { if (depth == 0) { in_sec = 0; next } depth-- }
        in_sec && depth == 0 && $1 == key { v = $3; sub(/,$/, "", v); s += v }
        END { printf "%.0f\n", s }' "$1"
}

# run_fio NAME JOBFILE [VAR=value...]: runs a job file from fio/ with DISK etc.
# in the environment, JSON into $R/fio-NAME.json; fails on any fio error.
run_fio() {
    _n=$1
    _job=$2
    shift 2
    _out=$R/fio-$_n.json
    echo "+ $* fio $FIO_JOBS/$_job"
    _rc=0
    # fio's own limits bound a healthy run; the timeout catches a stuck LUN.
    # FIO_EXTRA (unquoted on purpose: a list of options) adds flags to this run.
    # shellcheck disable=SC2086
    env "$@" timeout -s KILL "$FIO_TIMEOUT" "$LD" --library-path "$LIBPATH" "$(fio_bin)" \
        --output-format=json --output="$_out" ${FIO_EXTRA:-} "$FIO_JOBS/$_job" || _rc=$?
    [ "$_rc" != 137 ] || fail "fio $_n killed after ${FIO_TIMEOUT}s"
    grep -v '^[{}]\|^ ' "$_out" 2>/dev/null | head -n 5
    [ "$_rc" = 0 ] || fail "fio $_n exited with status $_rc"
    if grep -q '"error" : [1-9]' "$_out"; then fail "fio $_n reported an error"; fi
    echo "fio $_n: read $(fio_sum "$_out" read io_bytes) B $(fio_sum "$_out" read iops) IOPS," \
        "write $(fio_sum "$_out" write io_bytes) B $(fio_sum "$_out" write iops) IOPS"
}

# stats_field FILE DEVICE FIELD: FIELD of DEVICE in a serve --stats-file
# (pretty-printed JSON: a device's "name" comes before its counters); nothing
# (and status 0) before serve wrote its first report.
stats_field() {
    awk -v dev="\"$2\"," -v key="\"$3\":" '
        $1 == "\"name\":" && $2 == dev { found = 1 }
        found && $1 == key { v = $2; sub(/,$/, "", v); print v; exit }' "$1" 2>/dev/null || true
}

# stats_commands FILE DEVICE: commands_total of DEVICE in a serve --stats-file.
stats_commands() { stats_field "$1" "$2" commands_total; }

# Marks in the kernel log are its lines' timestamps, not line numbers: the
# log buffer wraps (the soak alone logs thousands of errors), which shifts
# line numbers but not timestamps.
# dmesg_now: the timestamp of the kernel log's last line (0 if none).
dmesg_now() {
    dmesg | tail -n 1 | awk '{ t = $0; sub(/^\[ */, "", t); sub(/\].*/, "", t); printf "%.6f\n", t + 0 }'
}
# dmesg_mark NAME: records where the kernel log is now, as NAME.
dmesg_mark() { dmesg_now >"$ST/dmesg-$1"; }
# dmesg_note NAME TEXT: writes "vm: TEXT" into the kernel log and records
# that line's timestamp as NAME (its own, not the log's last line's: the
# kernel may log another line right after it).
dmesg_note() {
    echo "vm: $2" >/dev/kmsg
    dmesg | awk -v text="vm: $2" '
        index($0, text) { t = $0; sub(/^\[ */, "", t); sub(/\].*/, "", t); last = t }
        END { printf "%.6f\n", last + 0 }' >"$ST/dmesg-$1"
}
# dmesg_since MARK: the kernel lines logged after MARK.
dmesg_since() {
    dmesg | awk -v from="$(state "dmesg-$1")" '
        { t = $0; sub(/^\[ */, "", t); sub(/\].*/, "", t); if (t + 0 > from + 0) print }'
}
# dmesg_errors MARK: kernel lines since the mark that report I/O trouble.
dmesg_errors() { dmesg_since "$1" | io_trouble; }
io_trouble() {
    grep -E 'I/O error|FAILED Result|critical (target|medium)|Sense Key|timed out|Call Trace|BUG:|WARNING:|tcmu.*(fail|error)' || true
}
# expect_trouble DISK MARK: the kernel lines about DISK (sdX) from MARK to now
# report I/O errors or timeouts a step caused on purpose (and checked
# itself); dmesg_unexpected leaves them out. The windows are kept with the
# results ($R/fault-windows), to check a dmesg failure after the run.
expect_trouble() {
    echo "$1 $(state "dmesg-$2") $(dmesg_now)" >>"$R/fault-windows"
}
# expect_trouble_until DISK FROM TO: expect_trouble for the window between
# two marks.
expect_trouble_until() {
    echo "$1 $(state "dmesg-$2") $(state "dmesg-$3")" >>"$R/fault-windows"
}
# disk_lines DISK: the kernel lines (stdin) about DISK (sdX), as
# dmesg_unexpected tells them.
disk_lines() { awk -v d="$1" 'index($0, "[" d "]") || index($0, "dev " d ",")'; }
# dmesg_unexpected MARK: dmesg_errors MARK without the expected trouble.
dmesg_unexpected() {
    dmesg_since "$1" | awk -v wins="$(tr '\n' ';' 2>/dev/null <"$R/fault-windows")" '
        BEGIN {
            n = split(wins, w, ";")
            for (i = 1; i <= n; i++) { split(w[i], f, " "); disk[i] = f[1]; lo[i] = f[2]; hi[i] = f[3] }
        }
        {
            t = $0; sub(/^\[ */, "", t); sub(/\].*/, "", t); t += 0
            for (i = 1; i <= n; i++)
                if (disk[i] != "" && t > lo[i] + 0 && t <= hi[i] + 0 &&
                    (index($0, "[" disk[i] "]") || index($0, "dev " disk[i] ","))) next
            print
        }' | io_trouble
}

# ------------------------------------------------------------ serve
# lun_name KIND: the LIO device name of the dataplane LUN of KIND.
lun_name() {
    case $1 in
        ram) echo ram0disk ;;
        striped) echo stripe0disk ;;
        file) echo file0disk ;;
        nvme) echo nvme0disk ;;
        nvmestripe) echo stripe1disk ;;
        scst) echo sdisk0 ;;
        scststripe) echo sstripe0disk ;;
        scstnull) echo snull0 ;;
    esac
}

write_config() {
    cat >"$ST/serve.toml" <<EOF
[reactors]
cores = [1]
idle = "adaptive"

[[bdev]]
name = "ram0"
type = "ram"
size = "$((RAM_SIZE >> 20))MiB"
block_size = $BLOCK_SIZE

[[bdev]]
name = "ram1"
type = "ram"
size = "$((STRIPE_CHILD_SIZE >> 20))MiB"
block_size = $BLOCK_SIZE

[[bdev]]
name = "ram2"
type = "ram"
size = "$((STRIPE_CHILD_SIZE >> 20))MiB"
block_size = $BLOCK_SIZE

[[bdev]]
name = "stripe0"
type = "striped"
children = ["ram1", "ram2"]
chunk = "64KiB"
$(device_bdev_config)
$(reliability_bdev_config)

[tcmu]
subtype = "dataplane"
completion_coalesce_us = $COALESCE_US
EOF
}

# start_serve TAG: starts `dataplane serve` in the background; its pid goes to
# $ST/serve.pid and, when it exits, its status to $ST/serve.rc.
#
# Further arguments, and those in $ST/serve-args (a leg's own flags, kept
# across restarts), go to serve. Each server's exit status is also kept as
# $ST/serve-TAG.rc; serve.rc is the current server's only (a server that
# handed its devices over exits after its successor started).
start_serve() {
    _tag=$1
    shift
    rm -f "$ST/serve.rc" "$ST/serve.pid" "$ST/serve-$_tag.rc"
    echo "$_tag" >"$ST/serve.tag"
    (
        # Not through the dataplane() function: $! must be the dataplane
        # process itself (the loader runs it in-process), not a subshell.
        # shellcheck disable=SC2046 # serve-args is a list of flags
        "$LD" --library-path "$LIBPATH" "$DP" serve --config "$ST/serve.toml" --stats-interval 5 \
            --stats-file "$R/serve-stats-$_tag.json" $(state serve-args) "$@" \
            >"$R/serve-$_tag.log" 2>&1 </dev/null &
        echo $! >"$ST/serve.pid"
        _src=0
        wait $! || _src=$?
        echo $_src >"$ST/serve-$_tag.rc"
        [ "$(state serve.tag)" != "$_tag" ] || echo $_src >"$ST/serve.rc"
    ) &
    i=0
    while [ ! -s "$ST/serve.pid" ] && [ $i -lt 50 ]; do
        sleep 0.1
        i=$((i + 1))
    done
    # It must still be running a moment later.
    sleep 2
    if [ -s "$ST/serve.rc" ]; then
        cat "$R/serve-$_tag.log"
        fail "dataplane serve exited with status $(state serve.rc): $(first_error "$(cat "$R/serve-$_tag.log")")"
    fi
    echo "dataplane serve running, pid $(state serve.pid)"
}

step_modules() {
    for m in configfs target_core_mod target_core_user tcm_loop sd_mod sg \
        crc32c_generic crc32c-intel ext4; do
        modprobe "$m" || fail "modprobe $m"
    done
    mountpoint -q /sys/kernel/config || mount -t configfs configfs /sys/kernel/config
    [ -d "$CFS/core" ] || fail "$CFS/core missing"
    [ -x "$LD" ] || fail "host loader not found under /host"
    fio --version
    sg sg_inq --version 2>&1 | head -n 1
    mke2fs -V 2>&1 | head -n 1
    [ -f "$DP" ] || fail "dataplane binary $DP not found"
    dataplane --version
}

step_rd_mcp_create() {
    d=$(make_rd_lun rd0 "$RAM_SIZE" 1)
    set_disk rd "$d" "$RAM_SIZE" "$BLOCK_SIZE"
    echo "rd_mcp LUN rd0: $d"
}

step_serve_start() {
    [ "$SELFTEST" = 1 ] && skip "VM_SELFTEST=1: the LUNs are rd_mcp"
    write_config
    cat "$ST/serve.toml"
    # The TCMU leg's servers serve metrics (step ops_control).
    echo "--metrics-listen $OPS_METRICS" >"$ST/serve-args"
    start_serve 1
}

step_lio_create() {
    if [ "$SELFTEST" = 1 ]; then
        d=$(make_rd_lun selftest_ram "$RAM_SIZE" 2)
        set_disk ram "$d" "$RAM_SIZE" "$BLOCK_SIZE"
        d=$(make_rd_lun selftest_striped "$STRIPE_SIZE" 3)
        set_disk striped "$d" "$STRIPE_SIZE" "$BLOCK_SIZE"
        echo "VM_SELFTEST=1: rd_mcp LUNs $(state disk-ram) $(state disk-striped)"
        return 0
    fi
    [ -s "$ST/serve.pid" ] || fail "dataplane serve is not running (step serve_start failed)"
    for spec in ram:$(lun_name ram):ram0:$RAM_SIZE striped:$(lun_name striped):stripe0:$STRIPE_SIZE; do
        kind=${spec%%:*}
        rest=${spec#*:}
        name=${rest%%:*}
        rest=${rest#*:}
        bdev=${rest%%:*}
        size=${rest#*:}
        echo "+ dataplane lio create $name --bdev $bdev --size $((size >> 20))MiB --loopback"
        out=$(dataplane lio create "$name" --bdev "$bdev" --size "$((size >> 20))MiB" --loopback 2>&1) ||
            fail "dataplane lio create $name: $(first_error "$out")"
        echo "$out"
        d=$(echo "$out" | awk '$1 == "disk:" { print $2 }')
        [ -n "$d" ] || fail "lio create $name printed no 'disk:' line"
        [ -b "$d" ] || fail "lio create $name: $d is not a block device"
        set_disk "$kind" "$d" "$size" "$BLOCK_SIZE"
    done
    dataplane lio list --json >"$R/lio-list.json" || fail "dataplane lio list --json"
    cat "$R/lio-list.json"
    grep -q ram0disk "$R/lio-list.json" || fail "lio list does not show ram0disk"
    grep -q stripe0disk "$R/lio-list.json" || fail "lio list does not show stripe0disk"
}

# ------------------------------------------------------------ I/O steps
# Each takes the KIND of LUN (ram, striped, file); the size and block size are
# the ones its create step recorded.
step_randwrite_verify() { # KIND
    d=$(need_disk "$1")
    size=$(kind_size "$1")
    run_fio "randwrite-verify-$1" randwrite-verify.fio DISK="$d"
    out=$R/fio-randwrite-verify-$1.json
    w=$(fio_sum "$out" write io_bytes)
    r=$(fio_sum "$out" read io_bytes)
    [ "$w" = "$size" ] || fail "wrote $w bytes, expected the whole LUN ($size)"
    [ "$r" = "$size" ] || fail "verify read back $r bytes, expected $size"
}

step_randrw_bssplit() { # KIND
    d=$(need_disk "$1")
    run_fio "randrw-bssplit-$1" randrw-bssplit-verify.fio DISK="$d"
    out=$R/fio-randrw-bssplit-$1.json
    w=$(fio_sum "$out" write io_bytes)
    r=$(fio_sum "$out" read io_bytes)
    [ "$w" -gt 0 ] || fail "no writes"
    # The reads include the final read-back of every write.
    [ "$r" -ge "$w" ] || fail "read $r bytes, less than the $w written: no verify pass?"
}

step_seq_1m() { # KIND
    d=$(need_disk "$1")
    size=$(kind_size "$1")
    run_fio "seq-1m-$1" seq-1m.fio DISK="$d"
    out=$R/fio-seq-1m-$1.json
    [ "$(fio_sum "$out" write io_bytes)" = "$size" ] || fail "sequential write did not cover the LUN"
    [ "$(fio_sum "$out" read io_bytes)" = "$size" ] || fail "sequential read did not cover the LUN"
    [ "$(fio_sum "$out" write bw_bytes)" -gt 0 ] || fail "no write bandwidth reported"
    [ "$(fio_sum "$out" read bw_bytes)" -gt 0 ] || fail "no read bandwidth reported"
}

# ------------------------------------------------------------ sg3-utils steps
# expect FILE REGEX: the tool output in FILE must match the extended regex.
expect() {
    grep -Eq "$2" "$1" || fail "expected /$2/ in the output of ${1##*/}"
}
sgrun() { # OUTNAME TOOL ARGS...: runs an sg3-utils tool, output to $ST/OUTNAME.out
    _o=$ST/$1.out
    shift
    echo "+ $*"
    _rc=0
    sg "$@" >"$_o" 2>&1 || _rc=$?
    cat "$_o"
    [ $_rc = 0 ] || fail "$1 exited with status $_rc"
}

step_sg_inq() { # [KIND], default ram
    d=$(need_disk "${1:-ram}")
    sgrun inq sg_inq "$d"
    expect "$ST/inq.out" "Vendor identification: $EXPECT_VENDOR *$"
    expect "$ST/inq.out" "Product identification: $EXPECT_PRODUCT *$"
    expect "$ST/inq.out" "Product revision level: [^ ]"
    expect "$ST/inq.out" "Peripheral device type: disk"
}

step_sg_vpd() { # KIND
    d=$(need_disk "$1")
    bs=$(kind_bs "$1")
    sgrun vpd00 sg_vpd --page=0x00 "$d"
    for p in "Unit serial number" "Device identification" "Block limits" \
        "Block device characteristics" "Logical block provisioning"; do
        expect "$ST/vpd00.out" "^ *$p"
    done
    sgrun vpd00hex sg_inq --page=0x00 --hex "$d"
    sgrun vpd80 sg_vpd --page=0x80 "$d"
    expect "$ST/vpd80.out" "Unit serial number: [^ ]"
    sgrun vpd83 sg_vpd --page=0x83 "$d"
    expect "$ST/vpd83.out" "designator type: NAA"
    sgrun vpdb0 sg_vpd --page=0xb0 "$d"
    mtl=$(awk -F': ' '/Maximum transfer length:/ { print $2 + 0 }' "$ST/vpdb0.out")
    # A RAM LUN takes 1 MiB at once; a device-backed one may advertise the
    # device's own limit, but at least one block.
    min_mtl=1
    case $1 in file | nvme) ;; *) min_mtl=$((1048576 / bs)) ;; esac
    [ -n "$mtl" ] && [ "$mtl" -ge "$min_mtl" ] ||
        fail "B0 maximum transfer length '$mtl' blocks is below $min_mtl"
    echo "B0 maximum transfer length: $mtl blocks of $bs bytes"
    sgrun vpdb1 sg_vpd --page=0xb1 "$d"
    expect "$ST/vpdb1.out" "Non-rotating medium"
    sgrun vpdb2 sg_vpd --page=0xb2 "$d"
    if [ "$SELFTEST" = 1 ]; then
        echo "VM_SELFTEST=1: LIO's backstores do not stand in for our logical block provisioning; B2 fields not checked"
        return 0
    fi
    expect "$ST/vpdb2.out" "Unmap command supported \\(LBPU\\): 1"
    expect "$ST/vpdb2.out" "Write same \\(16\\) with unmap bit supported \\(LBPWS\\): 1"
    expect "$ST/vpdb0.out" "Maximum unmap LBA count: [1-9]"
}

step_sg_readcap() { # KIND
    d=$(need_disk "$1")
    bs=$(kind_bs "$1")
    sgrun readcap sg_readcap --long "$d"
    expect "$ST/readcap.out" "Logical block length=$bs bytes"
    expect "$ST/readcap.out" "Number of logical blocks=$(($(kind_size "$1") / bs))\$"
    if rd_backed "$1"; then
        expect "$ST/readcap.out" "Logical block provisioning: lbpme=0"
    else
        expect "$ST/readcap.out" "Logical block provisioning: lbpme=1"
    fi
}

step_sg_modes() { # [KIND], default ram
    d=$(need_disk "${1:-ram}")
    sgrun modes sg_modes --page=0x3f "$d"
    expect "$ST/modes.out" "^>> Caching"
    expect "$ST/modes.out" "^>> Control,"
}

step_sg_sync() { # KIND
    d=$(need_disk "$1")
    sgrun sync sg_sync "$d"
}

# read_is FILE DISK LBA COUNT BS: the COUNT blocks at LBA (read with O_DIRECT)
# equal FILE.
read_is() {
    hdd if="$2" of="$ST/readback" bs="$5" skip="$3" count="$4" iflag=direct status=none ||
        fail "read of $4 blocks at LBA $3 failed"
    cmp "$ST/readback" "$1" || fail "blocks $3..$(($3 + $4 - 1)) differ from the expected data"
}

step_sg_unmap() { # KIND
    rd_backed "$1" && skip "VM_SELFTEST=1: rd_mcp does not support UNMAP"
    d=$(need_disk "$1")
    bs=$(kind_bs "$1")
    n=$((1048576 / bs))
    head -c $((n * bs)) /dev/urandom >"$ST/random"
    head -c $((n * bs)) /dev/zero >"$ST/zeros"
    hdd if="$ST/random" of="$d" bs=1M oflag=direct status=none || fail "write of the test range failed"
    read_is "$ST/random" "$d" 0 $n "$bs"
    sgrun unmap sg_unmap --force --lba=0 --num=$n "$d"
    read_is "$ST/zeros" "$d" 0 $n "$bs"
    echo "UNMAP of $n blocks at LBA 0: they read back as zeroes"
}

step_sg_write_same() { # KIND
    d=$(need_disk "$1")
    bs=$(kind_bs "$1")
    lba=$((4194304 / bs))
    n=$((131072 / bs))
    # One block of a recognisable pattern, and the expected result.
    awk -v bs="$bs" 'BEGIN { for (i = 0; i < bs / 16; i++) printf "dataplane-ws%03d\n", i % 1000 }' >"$ST/pattern"
    [ "$(wc -c <"$ST/pattern")" = "$bs" ] || fail "pattern is not one block"
    : >"$ST/pattern-x"
    i=0
    while [ $i -lt $n ]; do
        cat "$ST/pattern" >>"$ST/pattern-x"
        i=$((i + 1))
    done
    if rd_backed "$1" && ! sg sg_write_same --in="$ST/pattern" --xferlen="$bs" --lba=$lba --num=1 "$d"; then
        skip "VM_SELFTEST=1: rd_mcp does not support WRITE SAME"
    fi
    sgrun ws sg_write_same --in="$ST/pattern" --xferlen="$bs" --lba=$lba --num=$n "$d"
    read_is "$ST/pattern-x" "$d" $lba $n "$bs"
    echo "WRITE SAME(10) of $n blocks: pattern read back"
    sgrun ws16 sg_write_same --16 --in="$ST/pattern" --xferlen="$bs" --lba=$((lba + n)) --num=$n "$d"
    read_is "$ST/pattern-x" "$d" $((lba + n)) $n "$bs"
    echo "WRITE SAME(16) of $n blocks: pattern read back"
    if rd_backed "$1"; then
        echo "VM_SELFTEST=1: rd_mcp does not support WRITE SAME with UNMAP"
        return 0
    fi
    head -c $((n * bs)) /dev/zero >"$ST/zeros-ws"
    sgrun wsu sg_write_same --16 --unmap --lba=$lba --num=$n "$d"
    read_is "$ST/zeros-ws" "$d" $lba $n "$bs"
    echo "WRITE SAME(16) UNMAP of $n blocks: zeroes read back"
}

step_sg_opcodes() {
    d=$(need_disk ram)
    if [ "$SELFTEST" = 1 ] && ! sg sg_opcodes "$d"; then
        skip "VM_SELFTEST=1: rd_mcp does not support REPORT SUPPORTED OPERATION CODES"
    fi
    sgrun opcodes sg_opcodes "$d"
    for op in "Read\(10\)" "Write\(10\)" "Read\(16\)" "Write\(16\)" "Inquiry" \
        "Read capacity\(10\)" "Synchronize cache\(10\)"; do
        expect "$ST/opcodes.out" "$op"
    done
    [ "$SELFTEST" = 1 ] && return 0
    expect "$ST/opcodes.out" "Unmap"
    expect "$ST/opcodes.out" "Write same\(16\)"
}

# ------------------------------------------------------------ ext4
step_ext4() { # KIND
    d=$(need_disk "$1")
    mke2fs -t ext4 -F -q "$d" || fail "mkfs.ext4 failed"
    mount -t ext4 "$d" /mnt/ext4 || fail "mount failed"
    i=1
    while [ $i -le 50 ]; do
        kb=$(((RANDOM % 1024) + 1))
        dd if=/dev/urandom of=/mnt/ext4/file$i bs=1024 count=$kb 2>/dev/null || fail "write file$i"
        i=$((i + 1))
    done
    (cd /mnt/ext4 && sha256sum file*) >"$ST/sums"
    du -sk /mnt/ext4
    sync
    umount /mnt/ext4 || fail "umount failed"
    echo 3 >/proc/sys/vm/drop_caches
    mount -t ext4 -o ro "$d" /mnt/ext4 || fail "second mount failed"
    (cd /mnt/ext4 && sha256sum -c "$ST/sums" >"$ST/sums.check") || {
        grep -v ': OK$' "$ST/sums.check"
        umount /mnt/ext4
        fail "checksums differ after remount"
    }
    echo "50 files read back with matching sha256"
    umount /mnt/ext4 || fail "final umount failed"
    e2fsck -f -n "$d" || fail "e2fsck -f -n reported problems (status $?)"
}

# ------------------------------------------------------------ performance
# Rounds alternate the order (dataplane first, then rd_mcp first, ...) so that
# drifts in the host's load do not favour one side. Without a dataplane LUN the
# rd_mcp side still runs (its figure is still reported) and the step fails.
step_perf() {
    rd=$(need_disk rd)
    dp=$(state disk-ram)
    [ -n "$dp" ] && [ -b "$dp" ] || dp=
    echo "$COALESCE_US" >"$R/perf-coalesce-us"
    # Warm-up, not counted: the first seconds of random reads on a LUN run
    # measurably slower in this guest (the first round used to read 30-40 %
    # low on the dataplane side).
    if [ "$PERF_WARMUP" -gt 0 ]; then
        for disk in $dp $rd; do
            FIO_EXTRA="--cpus_allowed=0" run_fio "warmup-${disk##*/}" randread-4k-qd32.fio DISK="$disk" RUNTIME="$PERF_WARMUP"
        done
    fi
    stats=$R/serve-stats-$(state serve.tag).json
    ios=0
    doorbells=0
    r=1
    while [ $r -le "$PERF_ROUNDS" ]; do
        if [ $((r % 2)) = 1 ]; then order="dataplane rd_mcp"; else order="rd_mcp dataplane"; fi
        # QD 32 (throughput) and QD 1 (latency), each pair adjacent in time.
        for qd in 32 1; do
            for t in $order; do
                if [ "$t" = dataplane ]; then disk=$dp; else disk=$rd; fi
                [ -n "$disk" ] || continue
                name=$t
                [ "$qd" = 32 ] || name=${t}_qd$qd
                counted=
                if [ "$t" = dataplane ] && [ "$qd" = 32 ] && serve_running; then
                    counted=1
                    report_now
                    c0=$(stats_field "$stats" "$(lun_name ram)" commands_total)
                    b0=$(stats_field "$stats" "$(lun_name ram)" doorbells_total)
                fi
                # fio runs on CPU 0 for both sides, the dataplane's reactor on
                # CPU 1 (its serve config): the deployment model of a polled
                # dataplane is a core of its own, and an unpinned fio that the
                # scheduler puts next to the spinning reactor halves both.
                FIO_EXTRA="--cpus_allowed=0" run_fio "perf-$name-$r" "randread-4k-qd$qd.fio" DISK="$disk" RUNTIME="$PERF_RUNTIME"
                if [ -n "$counted" ]; then
                    report_now
                    ios=$((ios + $(stats_field "$stats" "$(lun_name ram)" commands_total) - c0))
                    doorbells=$((doorbells + $(stats_field "$stats" "$(lun_name ram)" doorbells_total) - b0))
                    echo "hold in force: $(stats_field "$stats" "$(lun_name ram)" hold_us) us"
                fi
            done
        done
        r=$((r + 1))
    done
    echo "dataplane RAM LUN at QD 32: $doorbells doorbells for $ios commands" | tee "$R/tcmu-doorbells"
    echo "$doorbells $ios" >"$R/tcmu-doorbells-per-io"
    [ -n "$dp" ] || fail "no dataplane RAM LUN (its create step failed); rd_mcp measured alone"
    # serve's default completion_affinity = "auto" switches the tcm_loop
    # target of its LUNs with the load (this kernel has the attribute).
    grep "completion affinity: .* follows the load" "$R/serve-$(state serve.tag).log" ||
        fail "serve did not take its LUNs' tcm_loop targets under completion_affinity = \"auto\""
    # Its statistics say where the completions run and how often that moved.
    report_now
    cpu=$(stats_field "$stats" "$(lun_name ram)" completion_cpu | tr -d '"')
    switches=$(stats_field "$stats" "$(lun_name ram)" completion_switches_total)
    echo "completions of $(lun_name ram) on the $cpu CPU, $switches switch(es) so far"
    [ -n "$cpu" ] && [ -n "$switches" ] ||
        fail "serve's statistics lack completion_cpu or completion_switches_total for $(lun_name ram)"
}

# ------------------------------------------------------------ kill -9 and restart
serve_running() { [ -s "$ST/serve.pid" ] && [ ! -s "$ST/serve.rc" ]; }

# kill9_serve TAG: kill -9 of the running `dataplane serve`, then the same
# config started again as serve-TAG (its log and statistics files).
kill9_serve() {
    old=$(state serve.pid)
    echo "kill -9 $old"
    kill -9 "$old"
    i=0
    while [ ! -s "$ST/serve.rc" ] && [ $i -lt 20 ]; do
        sleep 0.1
        i=$((i + 1))
    done
    echo "old serve exited with status $(state serve.rc)"
    start_serve "$1"
}

# wait_served TAG DEVICE: waits (up to two statistics intervals) until serve-TAG
# reports commands completed on DEVICE; prints the count.
wait_served() {
    i=0
    while [ $i -lt 24 ]; do
        _n=$(stats_commands "$R/serve-stats-$1.json" "$2")
        if [ "${_n:-0}" -gt 0 ]; then
            echo "$_n"
            return 0
        fi
        sleep 0.5
        i=$((i + 1))
    done
    echo 0
}

step_kill9_restart() { # KIND DEVICE TAG: I/O on the LUN of KIND while serve is killed
    [ "$SELFTEST" = 1 ] && skip "VM_SELFTEST=1: no dataplane process to kill"
    d=$(need_disk "$1")
    serve_running || fail "dataplane serve is not running"
    dmesg_mark "restart-$1"
    (run_fio "restart-$1" randrw-restart.fio DISK="$d" RUNTIME="$RESTART_RUNTIME" >"$ST/restart-fio.log" 2>&1) &
    fpid=$!
    sleep 6
    kill9_serve "$3"
    frc=0
    wait $fpid || frc=$?
    cat "$ST/restart-fio.log"
    [ $frc = 0 ] || fail "fio during the restart failed (status $frc)"
    served=$(wait_served "$3" "$2")
    echo "the restarted dataplane serve completed $served commands on $2"
    [ "$served" -gt 0 ] || fail "the restarted dataplane serve served no I/O"
    errs=$(dmesg_errors "restart-$1")
    [ -z "$errs" ] || {
        echo "$errs"
        fail "kernel reported I/O errors during the restart"
    }
}

# ------------------------------------------------------------ teardown
step_lio_delete() {
    [ "$SELFTEST" = 1 ] && skip "VM_SELFTEST=1: no dataplane LUNs"
    kinds="ram striped"
    for k in file nvme nvmestripe; do
        [ -z "$(state "disk-$k")" ] || kinds="$kinds $k"
    done
    for kind in $kinds; do
        name=$(lun_name "$kind")
        echo "+ dataplane lio delete $name"
        out=$(dataplane lio delete "$name" 2>&1) || fail "dataplane lio delete $name: $(first_error "$out")"
        echo "$out"
        [ ! -e "$CFS/core/user_0/$name" ] || fail "$name still in configfs"
    done
    for kind in $kinds; do
        d=$(state "disk-$kind")
        i=0
        while [ -b "$d" ] && [ $i -lt 50 ]; do
            sleep 0.1
            i=$((i + 1))
        done
        [ ! -b "$d" ] || fail "$d still present after delete"
        rm -f "$ST/disk-$kind"
    done
    dataplane lio list --json
}

# stop_serve: SIGTERM to the running `dataplane serve`, which must exit with
# status 0 within 10 s.
stop_serve() {
    serve_running || fail "dataplane serve is not running"
    kill -TERM "$(state serve.pid)"
    i=0
    while [ ! -s "$ST/serve.rc" ] && [ $i -lt 100 ]; do
        sleep 0.1
        i=$((i + 1))
    done
    [ -s "$ST/serve.rc" ] || fail "dataplane serve did not exit within 10 s of SIGTERM"
    [ "$(state serve.rc)" = 0 ] || fail "dataplane serve exited with status $(state serve.rc) on SIGTERM"
}

step_serve_sigterm() {
    [ "$SELFTEST" = 1 ] && skip "VM_SELFTEST=1: no dataplane process"
    stop_serve
}

step_dmesg_clean() {
    errs=$(dmesg_unexpected boot)
    [ -z "$errs" ] || {
        echo "$errs"
        fail "kernel log reports I/O errors or warnings"
    }
}

# The emulated NVMe drive: its devices, the device tests, the iblock baseline,
# the LUNs of the file and nvme bdevs, the comparison and the durability step.
# shellcheck source=tests/vm/nvme.sh
. "$REPO/tests/vm/nvme.sh"
# Ring resets under load, task management, the soak.
# shellcheck source=tests/vm/reliability.sh
. "$REPO/tests/vm/reliability.sh"
# shellcheck source=tests/vm/soak.sh
. "$REPO/tests/vm/soak.sh"
# libiscsi's conformance suite through LIO's iSCSI target.
# shellcheck source=tests/vm/conformance.sh
. "$REPO/tests/vm/conformance.sh"
# The control socket, reload and metrics of a running server.
# shellcheck source=tests/vm/ops.sh
. "$REPO/tests/vm/ops.sh"
# The SCST leg.
# shellcheck source=tests/vm/scst.sh
. "$REPO/tests/vm/scst.sh"

# ------------------------------------------------------------ main
# Debugging from the VM_KEEP=1 shell: `VM_LIB=1 . /host<repo>/tests/vm/guest.sh`
# defines the helpers (fio, sg, dataplane, host, make_rd_lun, run_step, ...)
# without running anything.
if [ "${VM_LIB:-0}" = 1 ]; then
    # shellcheck disable=SC2317
    return 0 2>/dev/null || exit 0
fi

: >"$R/steps.tsv"
now >"$R/guest-start"
log "kernel $(uname -r), $(nproc) CPUs, selftest=$SELFTEST, steps=${VM_STEPS:-all}"
uname -r >"$R/kernel"
echo 0 >"$ST/dmesg-boot"
# fio_bin falls back to the host's fio, which starts slower under TCG.
[ -z "${VM_FIO:-}" ] || [ -x "/host$VM_FIO" ] ||
    log "the guest's fio build /host$VM_FIO is not there: the host's fio runs instead"

if [ -n "${VM_SCRIPT:-}" ]; then
    # Debugging: run a script of your own (host path) with these helpers defined.
    log "running VM_SCRIPT=$VM_SCRIPT instead of the steps"
    # shellcheck disable=SC1090
    . "/host$VM_SCRIPT"
    now >"$R/guest-done"
    exit 0
fi

run_step modules step_modules
run_step nvme_devices step_nvme_devices
run_step device_tests step_device_tests
run_step rd_mcp_create step_rd_mcp_create
run_step iblock_create step_iblock_create
run_step serve_start step_serve_start
run_step lio_create step_lio_create
run_step lio_create_file step_lio_create_device file file0
run_step lio_create_nvme step_lio_create_device nvme nvme0
run_step lio_create_nvmestripe step_lio_create_device nvmestripe stripe1
for kind in ram striped file nvme nvmestripe; do
    run_step "randwrite_verify_$kind" step_randwrite_verify $kind
done
for kind in ram striped file nvme nvmestripe; do
    run_step "randrw_bssplit_$kind" step_randrw_bssplit $kind
done
run_step seq_1m_ram step_seq_1m ram
run_step seq_1m_file step_seq_1m file
run_step seq_1m_nvme step_seq_1m nvme
run_step sg_inq step_sg_inq
run_step sg_modes step_sg_modes
run_step sg_opcodes step_sg_opcodes
# ram's step names are the bare ones.
for kind in ram file nvme; do
    sfx=_$kind
    [ $kind = ram ] && sfx=
    run_step "sg_vpd$sfx" step_sg_vpd $kind
    run_step "sg_readcap$sfx" step_sg_readcap $kind
    run_step "sg_sync$sfx" step_sg_sync $kind
    run_step "sg_unmap$sfx" step_sg_unmap $kind
    run_step "sg_write_same$sfx" step_sg_write_same $kind
done
run_step sg_unmap_nvmestripe step_sg_unmap nvmestripe
run_step topology_file step_topology file
run_step topology_nvme step_topology nvme
run_step ext4 step_ext4 ram
run_step ext4_file step_ext4 file
run_step ext4_nvme step_ext4 nvme
run_step perf step_perf
run_step perf_nvme step_perf_nvme
run_step kill9_restart step_kill9_restart striped "$(lun_name striped)" 2
run_step kill9_restart_file step_kill9_restart file "$(lun_name file)" 3
run_step kill9_restart_nvme step_kill9_restart nvme "$(lun_name nvme)" 4
run_step ring_reset_under_load step_ring_reset_under_load ram
run_step durability_file step_durability file "$(lun_name file)" 5
run_step durability_nvme step_durability nvme "$(lun_name nvme)" 6
run_step tmr_abort step_tmr_abort
run_step ops_control step_ops_control
run_step soak_short step_soak_short
run_step iscsi_target step_iscsi_target
for kind in $CONFORMANCE_KINDS; do
    run_step "conformance_$kind" step_conformance "$kind"
done
run_step iscsi_teardown step_iscsi_teardown
run_step lio_delete step_lio_delete
run_step serve_sigterm step_serve_sigterm
scst_steps
run_step dmesg_clean step_dmesg_clean

dmesg >"$R/dmesg.txt"
now >"$R/guest-done"
log "done"
