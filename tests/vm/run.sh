#!/usr/bin/env bash
# Real-kernel test: boots a stock Debian kernel with LIO/TCMU under QEMU (TCG),
# runs `dataplane serve` and `dataplane lio` inside it, drives the LUNs with
# fio, sg3-utils and ext4, and compares against the kernel's rd_mcp ramdisk.
#
# Usage (as root, Debian 12): tests/vm/run.sh
# See tests/vm/README.md for what it does and the VM_* environment variables.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
# Resolved: the guest reaches the cached fio and SCST builds through /host
# by their host paths, and cannot follow a symlinked .cache (a second
# clone sharing the first's) to an absolute target outside /host.
CACHE=$(realpath -m "$HERE/.cache")

VM_RESULTS=${VM_RESULTS:-$REPO/target/vm}
VM_TIMEOUT=${VM_TIMEOUT:-1800}     # seconds for the whole QEMU run
VM_MEM=${VM_MEM:-2048}            # guest memory, MiB
VM_SMP=${VM_SMP:-2}               # guest vCPUs
VM_STEPS=${VM_STEPS:-}            # comma-separated step names to run (empty: all)
VM_KEEP=${VM_KEEP:-0}             # 1: shell on the console after the test
VM_SELFTEST=${VM_SELFTEST:-0}     # 1: back the "dataplane" LUNs by rd_mcp (tests the harness)
VM_NO_BUILD=${VM_NO_BUILD:-0}     # 1: do not run cargo build
VM_PERF_ROUNDS=${VM_PERF_ROUNDS:-3}  # rounds of the IOPS comparison, order alternating
VM_COALESCE_US=${VM_COALESCE_US:-0}  # serve's tcmu.completion_coalesce_us in the guest (0: the default)
VM_PERF_RUNTIME=${VM_PERF_RUNTIME:-4} # seconds of each fio run in a round
VM_PERF_WARMUP=${VM_PERF_WARMUP:-3}   # seconds of uncounted random reads on each LUN first
VM_MIN_RATIO=${VM_MIN_RATIO:-}    # e.g. 0.9: fail when dataplane/rd_mcp IOPS is lower
VM_MIN_FILE_RATIO=${VM_MIN_FILE_RATIO:-}  # e.g. 0.8: fail when file bdev/iblock IOPS is lower
VM_MIN_NVME_RATIO=${VM_MIN_NVME_RATIO:-}  # e.g. 0.9: fail when nvme bdev/iblock IOPS is lower
VM_NVME_NS_MIB=${VM_NVME_NS_MIB:-128}     # size of each emulated NVMe namespace, MiB
VM_SOAK_SECONDS=${VM_SOAK_SECONDS:-40}    # duration of the soak (step soak_short)
VM_SCRIPT=${VM_SCRIPT:-}          # a script of yours to run in the guest instead of the steps
VM_KERNEL_ARGS=${VM_KERNEL_ARGS:-}  # more guest kernel parameters (experiments, e.g. idle=poll)
# QEMU's -cpu. `max` without ERMS: with it advertised, the guest kernel's
# copies (copy_to/from_user, memcpy) and glibc's larger memcpy use
# `rep movsb`, which TCG runs one byte per iteration; without it they move
# 8 bytes (`rep movsq`) or a vector at a time. Bulk copies in the guest ran
# 3x faster and the whole VM test 10 % faster (tests/vm/README.md, Timing).
VM_CPU=${VM_CPU:-max,erms=off}
VM_DATAPLANE=${VM_DATAPLANE:-${CARGO_TARGET_DIR:-$REPO/target}/release/dataplane}

# Kernel modules the guest needs (their dependencies are added from modules.dep).
MODULES="configfs uio target_core_mod target_core_user tcm_loop scsi_mod sd_mod sg
virtio_pci 9pnet_virtio 9p ext4 crc32c_generic crc32c-intel crct10dif_generic
crct10dif-pclmul crc64_rocksoft_generic nvme_core nvme target_core_iblock iscsi_target_mod
dlm libcrc32c crc-t10dif"
# Bump when the guest image recipe below changes in a way the hash cannot see.
RECIPE_VERSION=1

# first_file GLOB-EXPANSION...: the first of the arguments that exists.
first_file() {
    local f
    for f in "$@"; do
        if [ -e "$f" ]; then
            echo "$f"
            return
        fi
    done
}
log() { printf '[vm] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (QEMU's 9p export of / and apt-get need it)"
case "$VM_NVME_NS_MIB" in
    '' | *[!0-9]*) die "VM_NVME_NS_MIB must be a whole number of MiB" ;;
esac
[ "$VM_NVME_NS_MIB" -ge 128 ] || die "VM_NVME_NS_MIB must be at least 128 (the device tests use 72 MiB in 8 MiB regions)"
case "$REPO$VM_RESULTS$VM_DATAPLANE" in
    *' '* | *,* | *'"'*) die "paths with spaces, commas or quotes are not supported" ;;
esac

# ---------------------------------------------------------------- packages
install_packages() {
    local need=()
    command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
    command -v cpio >/dev/null || need+=(cpio)
    command -v depmod >/dev/null || need+=(kmod)
    command -v fio >/dev/null || need+=(fio)
    command -v sg_inq >/dev/null || need+=(sg3-utils)
    command -v mkfs.ext4 >/dev/null || need+=(e2fsprogs)
    command -v gzip >/dev/null || need+=(gzip)
    command -v python3 >/dev/null || need+=(python3)
    command -v iscsi-test-cu >/dev/null || need+=(libiscsi-bin)
    # shellcheck disable=SC2207 # package names, one per line
    need+=($(scst_packages))
    # shellcheck disable=SC2207
    need+=($(fio_packages))
    command -v apt-get >/dev/null || die "apt-get not found: this script expects Debian 12"
    if [ ${#need[@]} -gt 0 ]; then
        log "installing ${need[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    fi
}

# apt-get download PKG into DIR (sandbox user root: the cache may be root-only).
apt_download() { # dir pkg
    (cd "$1" && apt-get download -q -o APT::Sandbox::User=root "$2" >/dev/null)
}

# ---------------------------------------------------------------- guest image
# Sets KVER, GUEST_KERNEL, GUEST_INITRD.
build_guest() {
    mkdir -p "$CACHE"
    local kpkg
    kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}' || true)
    if [ -z "$kpkg" ]; then
        apt-get update -qq
        kpkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
    fi
    [ -n "$kpkg" ] || die "cannot resolve the kernel package of linux-image-amd64"
    KVER=${kpkg#linux-image-}

    local bbver bbdeb kdeb
    bbver=$(apt-cache policy busybox-static | awk '/Candidate:/ {print $2}')
    local key
    key=$( {
        echo "$RECIPE_VERSION $KVER $bbver $MODULES"
        cat "$HERE/init"
    } | sha256sum | cut -c1-16)
    local guest=$CACHE/guest-$KVER-$key
    GUEST_KERNEL=$guest/vmlinuz
    GUEST_INITRD=$guest/initrd.gz
    if [ -f "$GUEST_INITRD" ] && [ -f "$GUEST_KERNEL" ]; then
        log "guest image: cached ($guest)"
        return
    fi
    log "building the guest image for $KVER"

    kdeb=$(first_file "$CACHE"/"${kpkg}"_*.deb)
    if [ -z "$kdeb" ]; then
        apt_download "$CACHE" "$kpkg" || { apt-get update -qq && apt_download "$CACHE" "$kpkg"; }
        kdeb=$(first_file "$CACHE"/"${kpkg}"_*.deb)
        [ -n "$kdeb" ] || die "apt-get download $kpkg failed"
    fi
    bbdeb=$(first_file "$CACHE"/busybox-static_*.deb)
    if [ -z "$bbdeb" ] || [ "$(dpkg-deb -f "$bbdeb" Version)" != "$bbver" ]; then
        rm -f "$CACHE"/busybox-static_*.deb
        apt_download "$CACHE" busybox-static
        bbdeb=$(first_file "$CACHE"/busybox-static_*.deb)
        [ -n "$bbdeb" ] || die "apt-get download busybox-static failed"
    fi

    local work
    work=$(mktemp -d "$CACHE/build.XXXXXX")
    # shellcheck disable=SC2064
    trap "rm -rf '$work'" RETURN
    local kroot=$work/kernel root=$work/root bb=$work/busybox
    dpkg -x "$kdeb" "$kroot"
    dpkg -x "$bbdeb" "$bb"
    depmod -b "$kroot" "$KVER"

    mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,tmp,run,root,host,results,mnt}
    cp "$bb/bin/busybox" "$root/bin/busybox"
    local applet
    for applet in $("$root/bin/busybox" --list-full); do
        [ -e "$root/$applet" ] || ln -s /bin/busybox "$root/$applet"
    done

    local mdir=lib/modules/$KVER m
    mkdir -p "$root/$mdir"
    for m in $MODULES; do
        modprobe -d "$kroot" -S "$KVER" --show-depends "$m" ||
            die "module $m not found in $KVER"
    done | awk '$1 == "insmod" {print $2}' | sort -u | while read -r ko; do
        local rel=${ko#"$kroot"/}
        mkdir -p "$root/$(dirname "$rel")"
        cp "$ko" "$root/$rel"
    done
    cp "$kroot/$mdir"/modules.{builtin,builtin.modinfo,order} "$root/$mdir/"
    depmod -b "$root" "$KVER"

    cp "$HERE/init" "$root/init"
    chmod 755 "$root/init"
    echo "root:x:0:0:root:/root:/bin/sh" >"$root/etc/passwd"
    echo "root:x:0:" >"$root/etc/group"

    rm -rf "$CACHE"/guest-*
    mkdir -p "$guest"
    (cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) >"$GUEST_INITRD.tmp"
    cp "$kroot/boot/vmlinuz-$KVER" "$GUEST_KERNEL"
    mv "$GUEST_INITRD.tmp" "$GUEST_INITRD"
    # Keep only the current kernel package in the cache.
    find "$CACHE" -maxdepth 1 -name 'linux-image-*.deb' ! -name "${kpkg}_*" -delete
    log "guest image: $(du -h "$GUEST_INITRD" | cut -f1) initramfs, $(du -h "$GUEST_KERNEL" | cut -f1) kernel"
}

# ---------------------------------------------------------------- dataplane binary
build_dataplane() {
    if [ "$VM_NO_BUILD" = 1 ]; then
        [ -x "$VM_DATAPLANE" ] || die "VM_NO_BUILD=1 but $VM_DATAPLANE does not exist"
        return
    fi
    if ! command -v cargo >/dev/null && [ -f "$HOME/.cargo/env" ]; then
        # shellcheck disable=SC1091
        . "$HOME/.cargo/env"
    fi
    if command -v cargo >/dev/null; then
        log "cargo build --release -p cli"
        (cd "$REPO" && cargo build --release -p cli --quiet)
    elif [ -x "$VM_DATAPLANE" ]; then
        log "cargo not found: using the existing $VM_DATAPLANE"
    else
        die "cargo not found and $VM_DATAPLANE does not exist"
    fi
    [ -x "$VM_DATAPLANE" ] || die "$VM_DATAPLANE was not built (CARGO_TARGET_DIR? set VM_DATAPLANE)"
}

# The Rust tests that need an NVMe namespace, built on the host (the debug
# profile `cargo test` uses, so after it nothing is rebuilt) and run in the
# guest (step device_tests). NVME_TESTS: "crate:target:kind:filter" each,
# kind lib (unit tests) or test (a tests/ file), filter the name filter
# (the guest's root filesystem refuses O_DIRECT, so a binary's file-bdev
# tests are filtered out).
NVME_TESTS="bdev:bdev:lib:nvme:: bdev:nvme:test: tests:serve_sim:test:nvme tests:zero_alloc:test:nvme
tests:bench_run:test:nvme bench:bench:lib:namespace"
build_device_tests() {
    local list=$1 spec crate target kind filter exe sel
    : >"$list"
    if [ "$VM_NO_BUILD" = 1 ] || ! command -v cargo >/dev/null; then
        log "device tests not built (VM_NO_BUILD=1 or no cargo): step device_tests fails"
        return
    fi
    log "cargo test --no-run (the NVMe device tests)"
    for spec in $NVME_TESTS; do
        IFS=: read -r crate target kind filter <<<"$spec"
        if [ "$kind" = lib ]; then sel=(--lib); else sel=(--test "$target"); fi
        exe=$(cd "$REPO" && cargo test -p "$crate" "${sel[@]}" --no-run \
            --message-format=json --quiet 2>/dev/null |
            python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") \
            and m["target"]["name"] == sys.argv[1] and m["profile"]["test"]:
        print(m["executable"])' "$target")
        [ -n "$exe" ] || die "cargo test -p $crate --$kind $target built no test binary"
        printf '%s\t%s\n' "$exe" "$filter" >>"$list"
    done
}

# ---------------------------------------------------------------- NVMe drive
# One emulated NVMe controller with six namespaces, each on its own sparse raw
# image in the cache directory, created empty for every run:
#   namespace 1 (nvme0n1, ng0n1): the in-kernel iblock baseline (read-only)
#     and the raw reference, and the nvme passthrough bdev's namespace;
#   namespace 2 (nvme0n2, ng0n2): the file bdev's (its whole block device);
#   namespace 3 (nvme0n3, ng0n3): the device tests' (step device_tests);
#   namespaces 4 and 5 (ng0n4, ng0n5): the children of a striped bdev;
#   namespace 6 (nvme0n6): the soak's file bdev (tests/vm/soak.sh).
# No bdev writes the namespace of another; iblock never writes (readonly=1).
# discard=unmap makes a deallocation (DSM, Write Zeroes with DEAC) punch a
# hole in the image, so deallocated blocks read back as zeroes.
NVME_NAMESPACES=6
make_nvme_images() {
    local i
    for i in $(seq 1 "$NVME_NAMESPACES"); do
        rm -f "$CACHE/nvme-ns$i.img"
        truncate -s "${VM_NVME_NS_MIB}M" "$CACHE/nvme-ns$i.img"
    done
}
nvme_qemu_args() {
    local i
    # shellcheck disable=SC2054 # the commas belong to -device/-drive values
    NVME_ARGS=(-device nvme,id=nvme0,serial=dpnvme0)
    for i in $(seq 1 "$NVME_NAMESPACES"); do
        # shellcheck disable=SC2054
        NVME_ARGS+=(-drive "file=$CACHE/nvme-ns$i.img,if=none,format=raw,id=nvm$i,discard=unmap"
            -device "nvme-ns,drive=nvm$i,bus=nvme0,nsid=$i,logical_block_size=512,physical_block_size=512")
    done
}

# ---------------------------------------------------------------- SCST
# shellcheck source=tests/vm/scst-build.sh
. "$HERE/scst-build.sh"

# ---------------------------------------------------------------- fio
# shellcheck source=tests/vm/fio-build.sh
. "$HERE/fio-build.sh"

# ---------------------------------------------------------------- run
install_packages
build_dataplane
build_guest
make_nvme_images
nvme_qemu_args

mkdir -p "$VM_RESULTS"
VM_RESULTS=$(cd "$VM_RESULTS" && pwd)
[ "$VM_RESULTS" != / ] || die "VM_RESULTS must not be /"
find "$VM_RESULTS" -mindepth 1 -maxdepth 1 -type f -delete
build_device_tests "$VM_RESULTS/nvme-tests.list"
build_scst
build_fio

# log_buf_len: the whole run's kernel log fits (the soak and the SCST leg log
# thousands of the errors they cause), so dmesg_clean reads all of it.
CMDLINE="console=ttyS0 quiet panic=-1 oops=panic log_buf_len=16M VM_REPO=$REPO VM_DATAPLANE=$VM_DATAPLANE"
CMDLINE+=" VM_KEEP=$VM_KEEP VM_SELFTEST=$VM_SELFTEST VM_PERF_ROUNDS=$VM_PERF_ROUNDS"
CMDLINE+=" VM_PERF_RUNTIME=$VM_PERF_RUNTIME VM_PERF_WARMUP=$VM_PERF_WARMUP VM_COALESCE_US=$VM_COALESCE_US"
CMDLINE+=" VM_NVME_NS_MIB=$VM_NVME_NS_MIB VM_NVME_NAMESPACES=$NVME_NAMESPACES VM_SOAK_SECONDS=$VM_SOAK_SECONDS"
[ -z "$VM_STEPS" ] || CMDLINE+=" VM_STEPS=$VM_STEPS"
[ -z "$VM_KERNEL_ARGS" ] || CMDLINE+=" $VM_KERNEL_ARGS"
[ -z "$SCST_BUILD" ] || CMDLINE+=" VM_SCST_BUILD=$SCST_BUILD"
[ -z "$VM_FIO" ] || CMDLINE+=" VM_FIO=$VM_FIO"
[ -z "${VM_CONFORMANCE_FAMILY:-}" ] || CMDLINE+=" VM_CONFORMANCE_FAMILY=$VM_CONFORMANCE_FAMILY"
if [ -n "${VM_SCRIPT:-}" ]; then
    VM_SCRIPT=$(realpath "$VM_SCRIPT")
    CMDLINE+=" VM_SCRIPT=$VM_SCRIPT"
fi

# shellcheck disable=SC2054 # the commas belong to -virtfs values
QEMU=(qemu-system-x86_64 -accel tcg -cpu "$VM_CPU" -m "$VM_MEM" -smp "$VM_SMP"
    -kernel "$GUEST_KERNEL" -initrd "$GUEST_INITRD" -append "$CMDLINE"
    -nographic -no-reboot -nic none
    -virtfs local,path=/,mount_tag=host,security_model=none,readonly=on
    -virtfs "local,path=$VM_RESULTS,mount_tag=results,security_model=none"
    "${NVME_ARGS[@]}")

CONSOLE=$VM_RESULTS/console.log
log "booting $KVER (TCG, ${VM_SMP} vCPUs, ${VM_MEM} MiB, timeout ${VM_TIMEOUT}s); console: $CONSOLE"
start=$(date +%s.%N)
echo "$start" >"$VM_RESULTS/host-start"
qemu_status=0
if [ "$VM_KEEP" = 1 ]; then
    "${QEMU[@]}" 2>&1 | tee "$CONSOLE" || qemu_status=$?
else
    timeout -k 10 "$VM_TIMEOUT" "${QEMU[@]}" </dev/null 2>&1 | tee "$CONSOLE" || qemu_status=$?
fi
end=$(date +%s.%N)
echo "$end" >"$VM_RESULTS/host-end"
[ "$qemu_status" = 0 ] || log "QEMU exited with status $qemu_status (124: timeout after ${VM_TIMEOUT}s)"

summary_status=0
VM_SELFTEST=$VM_SELFTEST python3 "$HERE/summarize.py" "$VM_RESULTS" --kernel "$KVER" --qemu-status "$qemu_status" \
    ${VM_MIN_RATIO:+--min-ratio "$VM_MIN_RATIO"} ${VM_MIN_FILE_RATIO:+--min-file-ratio "$VM_MIN_FILE_RATIO"} \
    ${VM_MIN_NVME_RATIO:+--min-nvme-ratio "$VM_MIN_NVME_RATIO"} ||
    summary_status=$?

if [ "$summary_status" != 0 ]; then
    log "FAILED. Tail of the console log ($CONSOLE):"
    tail -n 40 "$CONSOLE" >&2 || true
    for f in "$VM_RESULTS"/serve*.log; do
        [ -f "$f" ] || continue
        log "tail of $f:"
        tail -n 30 "$f" >&2 || true
    done
    # Last, so that a log cut to its tail still says why: the problems, and
    # each failed step's message with the end of its output.
    log "FAILED: why (from $VM_RESULTS/result.json and the step logs):"
    python3 "$HERE/summarize.py" "$VM_RESULTS" --why >&2 || true
    exit 1
fi
log "passed; results in $VM_RESULTS"
