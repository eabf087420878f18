# shellcheck shell=dash
# The VM test's steps on the emulated NVMe drive; sourced by guest.sh, whose
# helpers (run_fio, need_disk, set_disk, make_rd_lun's export_loopback,
# start_serve, ...) they use.
#
# The drive (run.sh): one controller, serial dpnvme0, with six namespaces
# of VM_NVME_NS_MIB MiB each, 512-byte LBAs, each on its own sparse raw image:
#   - namespace 1 (/dev/nvme0n1, /dev/ng0n1): the nvme passthrough bdev's,
#     and the in-kernel baseline: an LIO iblock backstore opened read-only
#     (readonly=1) and the raw reference (fio reading the namespace itself);
#   - namespace 2 (/dev/nvme0n2): the file bdev's, its whole block device;
#   - namespace 3 (/dev/ng0n3): the Rust device tests';
#   - namespaces 4 and 5 (/dev/ng0n4, /dev/ng0n5): the children of `stripe1`,
#     a striped bdev over two nvme bdevs (the LUN of KIND `nvmestripe`);
#   - namespace 6 (/dev/nvme0n6): the soak's file bdev (tests/vm/soak.sh).
# A bdev never writes another's namespace, and nothing writes through the
# baseline, so it can share namespace 1 with the passthrough bdev and be
# compared with it on the same namespace. Separate namespaces rather than
# partitions because the passthrough bdev (/dev/ngXnY) addresses a whole
# namespace. The nvme module gets one poll queue (poll_queues=1) so that the
# IOPOLL test polls.

NVME_NS_MIB=${VM_NVME_NS_MIB:-128}
NVME_NAMESPACES=${VM_NVME_NAMESPACES:-6}
NVME_SERIAL=dpnvme0
BASE_NS=nvme0n1      # iblock baseline, raw reference, the nvme bdev's namespace
NVME_BDEV_NG=ng0n1   # the nvme bdev's generic character device
FILE_NS=nvme0n2      # the file bdev's block device
TEST_NG=ng0n3        # the device tests' namespace
# The durability step's region on the file LUN, and the RAM control's.
DURABLE_SIZE=$((64 << 20))
CONTROL_SIZE=$((8 << 20))

# kernel_at_least MAJOR MINOR: the running kernel is MAJOR.MINOR or newer.
kernel_at_least() {
    _v=$(uname -r)
    _maj=${_v%%.*}
    _min=${_v#*.}
    _min=${_min%%[!0-9]*}
    [ "$_maj" -gt "$1" ] || { [ "$_maj" -eq "$1" ] && [ "$_min" -ge "$2" ]; }
}

# wait_dev -b|-c PATH: waits up to 30 s for a block (-b) or character (-c)
# device node (the controller probes asynchronously, slowly under TCG).
wait_dev() {
    _j=0
    while [ $_j -lt 300 ]; do
        test "$1" "$2" && return 0
        sleep 0.1
        _j=$((_j + 1))
    done
    return 1
}

# ns_bytes NS / ns_lba NS: a namespace's size and logical block size (bytes).
ns_bytes() { echo $(($(cat "/sys/block/$1/size") * 512)); }
ns_lba() { cat "/sys/block/$1/queue/logical_block_size"; }

step_nvme_devices() {
    for m in nvme_core "nvme poll_queues=1" target_core_iblock; do
        # shellcheck disable=SC2086 # a module and its parameters
        modprobe $m || fail "modprobe $m"
    done
    ng=1
    if ! kernel_at_least 5 13; then
        ng=0
        echo "kernel $(uname -r) is older than 5.13: no NVMe generic character devices (/dev/ngXnY)"
    fi
    : >"$R/nvme-info"
    n=1
    while [ $n -le "$NVME_NAMESPACES" ]; do
        ns=nvme0n$n
        wait_dev -b "/dev/$ns" || fail "/dev/$ns (emulated NVMe namespace $n) did not appear"
        bytes=$(ns_bytes "$ns")
        [ "$bytes" = $((NVME_NS_MIB << 20)) ] ||
            fail "/dev/$ns has $bytes bytes, expected its image's ${NVME_NS_MIB} MiB"
        if [ $ng = 1 ]; then
            wait_dev -c "/dev/ng0n$n" || fail "/dev/ng0n$n (the generic character device of $ns) did not appear"
            ls -l "/dev/ng0n$n"
        fi
        printf '%s\tbytes\t%s\n' "$ns" "$bytes" >>"$R/nvme-info"
        for attr in logical_block_size physical_block_size write_cache discard_granularity \
            discard_max_bytes write_zeroes_max_bytes max_hw_sectors_kb; do
            printf '%s\t%s\t%s\n' "$ns" "$attr" "$(cat "/sys/block/$ns/queue/$attr")" >>"$R/nvme-info"
        done
        n=$((n + 1))
    done
    c=/sys/class/nvme/nvme0
    for attr in serial model firmware_rev; do
        printf 'nvme0\t%s\t%s\n' "$attr" "$(sed 's/ *$//' "$c/$attr")" >>"$R/nvme-info"
    done
    cat "$R/nvme-info"
    [ "$(sed 's/ *$//' "$c/serial")" = "$NVME_SERIAL" ] || fail "nvme0's serial is not $NVME_SERIAL"
    echo "LBA size of $BASE_NS: $(ns_lba "$BASE_NS") bytes"
}

# make_iblock_lun NAME DEVICE INDEX ro|rw [ATTRIBUTE=VALUE...]: an LIO iblock
# backstore on a block device, its attributes set before export, exported
# through its own tcm_loop target; prints /dev/sdX.
make_iblock_lun() {
    _d=$CFS/core/iblock_$3/$1
    mkdir -p "$_d"
    printf %s "udev_path=$2" >"$_d/control"
    [ "$4" = rw ] || printf %s "readonly=1" >"$_d/control"
    printf 1 >"$_d/enable"
    _n=$1
    _dir=$_d
    _i=$3
    shift 4
    for _a in "$@"; do
        printf %s "${_a#*=}" >"$_dir/attrib/${_a%%=*}" || fail "iblock $_n: cannot set ${_a%%=*}"
    done
    export_loopback "$_n" "$_dir" "$_i"
}

step_iblock_create() {
    dev=/dev/$BASE_NS
    [ -b "$dev" ] || fail "no $dev (step nvme_devices failed)"
    d=$(make_iblock_lun nvme_iblock "$dev" 4 ro)
    set_disk iblock "$d" "$(ns_bytes "$BASE_NS")" "$(ns_lba "$BASE_NS")"
    echo "iblock LUN nvme_iblock on $dev (read-only backstore): $d, $(cat "/sys/block/${d##*/}/size") sectors"
    [ "$(ns_bytes "${d##*/}")" = "$(ns_bytes "$BASE_NS")" ] || fail "the iblock LUN's size differs from $dev's"
}

# ------------------------------------------------------------ device bdevs
# The dataplane's bdevs on the drive: `file0`, the file bdev on namespace 2's
# block device, and `nvme0`, the nvme passthrough bdev on namespace 1's
# generic character device. Each is served as a LUN of its namespace's size
# and LBA size: the KIND `file` and `nvme` of the steps.

# kind_ns KIND: the namespace under the LUN of KIND (for nvmestripe, its
# first child's: both children are alike). With the selftest, the
# nvme LUN is a writable iblock LUN, which cannot share namespace 1 with the
# read-only baseline's: it takes namespace 3 (after the device tests).
kind_ns() {
    case $1 in
        file) echo "$FILE_NS" ;;
        nvme) if [ "$SELFTEST" = 1 ]; then echo nvme0n3; else echo "$BASE_NS"; fi ;;
        nvmestripe) echo nvme0n4 ;;
    esac
}

# kind_bytes KIND: the size of the LUN of KIND: its namespace's, or twice
# that over the two children of stripe1.
kind_bytes() {
    _b=$(ns_bytes "$(kind_ns "$1")")
    [ "$1" = nvmestripe ] && _b=$((2 * _b))
    echo "$_b"
}

# device_bdev_config: serve's [[bdev]] sections of the drive's bdevs.
device_bdev_config() {
    cat <<EOF

[[bdev]]
name = "file0"
type = "file"
path = "/dev/$FILE_NS"

[[bdev]]
name = "nvme0"
type = "nvme"
path = "/dev/$NVME_BDEV_NG"

[[bdev]]
name = "nvme1"
type = "nvme"
path = "/dev/ng0n4"

[[bdev]]
name = "nvme2"
type = "nvme"
path = "/dev/ng0n5"

[[bdev]]
name = "stripe1"
type = "striped"
children = ["nvme1", "nvme2"]
chunk = "64KiB"
EOF
}

# step_lio_create_device KIND BDEV: exports bdev BDEV as the LUN of KIND,
# the whole of its namespace or namespaces (with the selftest: an iblock LUN
# on it).
step_lio_create_device() {
    ns=$(kind_ns "$1")
    dev=/dev/$ns
    [ -b "$dev" ] || fail "no $dev (step nvme_devices failed)"
    bytes=$(kind_bytes "$1")
    bs=$(ns_lba "$ns")
    if [ "$SELFTEST" = 1 ]; then
        [ "$1" = nvmestripe ] && skip "VM_SELFTEST=1: no stand-in for a striped bdev over namespaces"
        # A writable iblock LUN with UNMAP and WRITE SAME with UNMAP on.
        case $1 in file) i=5 ;; *) i=6 ;; esac
        d=$(make_iblock_lun "selftest_$1" "$dev" $i rw emulate_tpu=1 emulate_tpws=1)
        set_disk "$1" "$d" "$bytes" "$bs"
        echo "VM_SELFTEST=1: iblock LUN on $dev: $d"
        return 0
    fi
    serve_running || fail "dataplane serve is not running (step serve_start failed)"
    name=$(lun_name "$1")
    echo "+ dataplane lio create $name --bdev $2 --size $bytes --block-size $bs --loopback"
    out=$(dataplane lio create "$name" --bdev "$2" --size "$bytes" --block-size "$bs" --loopback 2>&1) ||
        fail "dataplane lio create $name: $(first_error "$out")"
    echo "$out"
    d=$(echo "$out" | awk '$1 == "disk:" { print $2 }')
    [ -n "$d" ] || fail "lio create $name printed no 'disk:' line"
    [ -b "$d" ] || fail "lio create $name: $d is not a block device"
    set_disk "$1" "$d" "$bytes" "$bs"
    dataplane lio list --json >"$R/lio-list.json" || fail "dataplane lio list --json"
    grep -q "$name" "$R/lio-list.json" || fail "lio list does not show $name"
}

# step_topology KIND: what the kernel's SCSI disk learnt from the LUN of KIND
# (READ CAPACITY(16), VPD B0/B2, the caching mode page) matches the namespace
# its bdev sits on.
step_topology() {
    d=$(need_disk "$1")
    s=${d##*/}
    ns=$(kind_ns "$1")
    bad=
    for attr in logical_block_size physical_block_size write_cache discard_granularity; do
        a=$(cat "/sys/block/$s/queue/$attr")
        b=$(cat "/sys/block/$ns/queue/$attr")
        echo "$attr: LUN $a, namespace $b"
        if [ "$1" = nvme ] && [ $attr = discard_granularity ]; then
            # The nvme bdev reports the namespace's preferred deallocate
            # granularity (Identify Namespace NPDG, 4 KiB on QEMU's drive);
            # the kernel's nvme driver uses the LBA size and ignores NPDG.
            # Both are whole LBAs: the LUN's must be a multiple.
            [ "$a" -ge "$b" ] && [ $((a % b)) = 0 ] || bad="$bad $attr"
            continue
        fi
        [ "$a" = "$b" ] || bad="$bad $attr"
    done
    a=$(ns_bytes "$s")
    b=$(ns_bytes "$ns")
    echo "size: LUN $a, namespace $b"
    [ "$a" = "$b" ] || bad="$bad size"
    a=$(cat "/sys/block/$s/queue/discard_max_bytes")
    b=$(cat "/sys/block/$ns/queue/discard_max_bytes")
    echo "discard_max_bytes: LUN $a, namespace $b"
    if [ "$b" -gt 0 ] && [ "$a" = 0 ]; then bad="$bad discard"; fi
    [ "$(cat "/sys/block/$s/queue/rotational")" = 0 ] || bad="$bad rotational"
    [ -z "$bad" ] || fail "the LUN does not report the namespace's:$bad"
}

# ------------------------------------------------------------ device tests
# step_device_tests: the Rust tests that need an NVMe namespace (they skip
# on hosts without one) run here against namespace 3's generic character
# device, which nothing else uses (the tests overwrite its first 72 MiB).
# run.sh builds them on the host and lists them in $R/nvme-tests.list, a
# line "<test binary><TAB><name filter>" each; they run from /host through
# the host's loader. DATAPLANE_TEST_NVME names the device; CI is not set in
# the guest, so a test that lacks something else (a host tool) says so and
# skips.
step_device_tests() {
    dev=/dev/$TEST_NG
    [ -c "$dev" ] || skip "no $dev: $(uname -r) has no NVMe generic character devices (5.13+)"
    [ -s "$R/nvme-tests.list" ] || fail "run.sh listed no test binaries ($R/nvme-tests.list)"
    total=0
    while IFS="$(printf '\t')" read -r bin filter; do
        name=${bin##*/}
        echo "+ DATAPLANE_TEST_NVME=$dev $name $filter"
        rc=0
        DATAPLANE_TEST_NVME=$dev RUST_BACKTRACE=1 "$LD" --library-path "$LIBPATH" "/host$bin" \
            --test-threads=1 "$filter" >"$ST/tests.out" 2>&1 || rc=$?
        cat "$ST/tests.out"
        [ $rc = 0 ] || fail "$name: tests failed (exit status $rc)"
        # Skips for what the guest lacks besides the drive (a tool) are
        # fine; a skip for want of the device is not.
        grep '^skipped:' "$ST/tests.out" | grep -q DATAPLANE_TEST_NVME &&
            fail "$name: a test skipped for want of the NVMe device, with $dev present"
        n=$(awk '/^test result:/ { s += $4 } END { print s + 0 }' "$ST/tests.out")
        [ "$n" -gt 0 ] || fail "$name ran no test (filter '$filter')"
        total=$((total + n))
    done <"$R/nvme-tests.list"
    echo "$total tests passed on $dev"
}

# ------------------------------------------------------------ performance
# rotate K WORD...: the words, starting at the K-th (0-based), wrapping round.
rotate() {
    _k=$1
    shift
    echo "$@" | awk -v k="$_k" '{ for (i = 0; i < NF; i++) printf "%s ", $((i + k) % NF + 1) }'
}

# step_perf_nvme: fio 4 KiB randread QD 32 on the iblock LUN, on namespace 1
# itself (raw), and on the LUNs of the file and nvme bdevs (those that
# exist), VM_PERF_ROUNDS rounds, the order rotating each round, fio on CPU 0
# (the reactor's is CPU 1).
step_perf_nvme() {
    ib=$(need_disk iblock)
    raw=/dev/$BASE_NS
    targets="iblock raw"
    missing=
    for k in file nvme; do
        d=$(state "disk-$k")
        if [ -n "$d" ] && [ -b "$d" ]; then targets="$targets $k"; else missing="$missing $k"; fi
    done
    if [ "$PERF_WARMUP" -gt 0 ]; then
        for t in $targets; do
            FIO_EXTRA="--cpus_allowed=0" run_fio "warmup-nvme-$t" randread-4k-qd32.fio \
                DISK="$(perf_disk "$t")" RUNTIME="$PERF_WARMUP"
        done
    fi
    r=1
    while [ $r -le "$PERF_ROUNDS" ]; do
        for t in $(rotate $((r - 1)) "$targets"); do
            FIO_EXTRA="--cpus_allowed=0" run_fio "perf-nvme-$t-$r" randread-4k-qd32.fio \
                DISK="$(perf_disk "$t")" RUNTIME="$PERF_RUNTIME"
        done
        r=$((r + 1))
    done
    [ -z "$missing" ] || fail "no LUN of:$missing (their create steps failed); measured: $targets"
}
# perf_disk TARGET: the disk step_perf_nvme reads for TARGET.
perf_disk() {
    case $1 in
        iblock) echo "$ib" ;;
        raw) echo "$raw" ;;
        *) state "disk-$1" ;;
    esac
}

# ------------------------------------------------------------ durability
# step_durability KIND DEVICE TAG: data written and acknowledged before a
# kill -9 of `dataplane serve` reads back intact after the restart (serve-TAG).
# fio writes DURABLE_SIZE bytes of the LUN (random, 4 KiB to 256 KiB, crc32c
# headers, an fsync at the end) and saves its verify state; once it has
# exited, every write is acknowledged and serve is killed and restarted;
# then a verify-only run reads all of it back. The control: the RAM LUN,
# written the same way before the kill, must fail the same verify after it
# (its memory died with the process), which shows the verify pass sees lost
# data. VM_SELFTEST=1 (no serve): the control's blocks are zeroed instead.
step_durability() {
    d=$(need_disk "$1")
    c=$(need_disk ram)
    [ "$SELFTEST" = 1 ] || serve_running || fail "dataplane serve is not running"
    dmesg_mark durability
    rm -rf "$ST/durable-$1" "$ST/durable-ram"
    mkdir -p "$ST/durable-$1" "$ST/durable-ram"
    FIO_EXTRA="--aux-path=$ST/durable-$1" run_fio "durable-write-$1" durable-write.fio \
        DISK="$d" SIZE="$DURABLE_SIZE" VERIFY_ONLY=0
    FIO_EXTRA="--aux-path=$ST/durable-ram" run_fio durable-write-ram-control durable-write.fio \
        DISK="$c" SIZE="$CONTROL_SIZE" VERIFY_ONLY=0
    written=$(fio_sum "$R/fio-durable-write-$1.json" write io_bytes)
    [ "$written" = "$DURABLE_SIZE" ] || fail "fio wrote $written bytes, expected $DURABLE_SIZE"
    ls "$ST/durable-$1"/*verify.state || fail "fio saved no verify state"
    if [ "$SELFTEST" = 1 ]; then
        echo "VM_SELFTEST=1: no dataplane process to kill; the RAM control's blocks are zeroed instead"
        hdd if=/dev/zero of="$c" bs=1M count=$((CONTROL_SIZE >> 20)) oflag=direct status=none ||
            fail "zeroing the control failed"
    else
        kill9_serve "$3"
    fi
    FIO_EXTRA="--aux-path=$ST/durable-$1" run_fio "durable-verify-$1" durable-write.fio \
        DISK="$d" SIZE="$DURABLE_SIZE" VERIFY_ONLY=1
    r=$(fio_sum "$R/fio-durable-verify-$1.json" read io_bytes)
    [ "$r" = "$written" ] || fail "the verify pass read back $r bytes of the $written written"
    echo "durable: the $written bytes written before the kill -9 read back intact after the restart"
    rc=0
    (FIO_EXTRA="--aux-path=$ST/durable-ram" run_fio durable-verify-ram-control durable-write.fio \
        DISK="$c" SIZE="$CONTROL_SIZE" VERIFY_ONLY=1) >"$ST/control.log" 2>&1 || rc=$?
    # fio names every bad block: the first few say enough.
    grep -v '^verify: bad magic' "$ST/control.log" | sed 's/^FAIL: /control: /'
    grep -m 3 '^verify: bad magic' "$ST/control.log" || true
    [ $rc != 0 ] || fail "the RAM control read back its data after the restart: the verify pass cannot see lost data"
    echo "control: the RAM LUN's data did not survive, and the verify pass said so"
    if [ "$SELFTEST" != 1 ]; then
        served=$(wait_served "$3" "$2")
        echo "the restarted dataplane serve completed $served commands on $2"
        [ "$served" -gt 0 ] || fail "the restarted dataplane serve served no I/O on $2"
    fi
    errs=$(dmesg_errors durability)
    [ -z "$errs" ] || {
        echo "$errs"
        fail "kernel reported I/O errors"
    }
}
