# shellcheck shell=bash
# shellcheck disable=SC2034 # SCST_BUILD is read by run.sh
# The SCST leg's host side, sourced by run.sh: builds the SCST kernel modules
# and fileio_tgt from the pinned source (SCST_SRC, by default ../shared/scst
# beside the repository: scst-<commit>.tar.xz) against the guest kernel's
# headers, downloaded from Debian's archive (linux-headers-$KVER, its
# -common package and linux-kbuild-<major.minor>) and unpacked in the cache,
# never installed. The result is cached by kernel version and source hash.
#
# Sets SCST_BUILD (the directory with scst.ko, scst_vdisk.ko, scst_user.ko,
# scst_local.ko and fileio_tgt; the guest reads it through /host) and writes
# $VM_RESULTS/scst-skip (why the SCST steps skip) when there is no source:
# outside CI the leg then skips; with CI=true a missing source is an error.
# A source that does not build is always an error (the build log's tail is
# printed).

SCST_SRC=${SCST_SRC:-$REPO/../shared/scst}
# Bump when the build recipe below changes in a way the hash cannot see.
SCST_RECIPE=1

# scst_packages: the host packages the build needs (for install_packages).
scst_packages() {
    command -v make >/dev/null || echo make
    command -v gcc-12 >/dev/null || echo gcc-12
    command -v perl >/dev/null || echo perl
    [ -e /usr/include/libelf.h ] || echo libelf-dev
}

build_scst() {
    SCST_BUILD=
    rm -f "$VM_RESULTS/scst-skip"
    local tarball
    tarball=$(first_file "$SCST_SRC"/scst-*.tar.xz)
    if [ -z "$tarball" ]; then
        [ "${CI:-}" != true ] || die "no SCST source (scst-*.tar.xz) in $SCST_SRC: CI must run the SCST leg"
        log "SCST leg skipped: no scst-*.tar.xz in $SCST_SRC (set SCST_SRC)"
        echo "no SCST source: no scst-*.tar.xz in $SCST_SRC (set SCST_SRC)" >"$VM_RESULTS/scst-skip"
        return
    fi
    local key out
    key=$( {
        echo "$SCST_RECIPE $KVER"
        sha256sum <"$tarball"
        cat "$HERE/scst-build.sh"
    } | sha256sum | cut -c1-16)
    out=$CACHE/scst-$KVER-$key
    if [ -f "$out/done" ]; then
        log "SCST build: cached ($out)"
        SCST_BUILD=$out
        return
    fi
    log "building SCST ($(basename "$tarball")) against linux-headers-$KVER"

    # The headers: linux-headers-<ver>-amd64 depends on -common and kbuild.
    local flavour=${KVER##*-} base=${KVER%-*} kmm pkgs p deb
    kmm=$(echo "$KVER" | cut -d. -f1-2)
    pkgs="linux-headers-$KVER linux-headers-$base-common linux-kbuild-$kmm"
    for p in $pkgs; do
        deb=$(first_file "$CACHE/${p}"_*.deb)
        if [ -z "$deb" ]; then
            apt_download "$CACHE" "$p" || { apt-get update -qq && apt_download "$CACHE" "$p"; }
            deb=$(first_file "$CACHE/${p}"_*.deb)
            [ -n "$deb" ] || die "apt-get download $p failed"
        fi
    done

    local work root kdir src
    work=$(mktemp -d "$CACHE/scst-build.XXXXXX")
    # shellcheck disable=SC2064
    trap "rm -rf '$work'" RETURN
    root=$work/root
    for p in $pkgs; do
        dpkg -x "$(first_file "$CACHE/${p}"_*.deb)" "$root"
    done
    kdir=$root/usr/src/linux-headers-$KVER
    [ -f "$kdir/Makefile" ] || die "linux-headers-$KVER has no Makefile under usr/src ($flavour)"
    # Its Makefile includes the -common one by absolute path; the kbuild
    # symlinks (scripts, tools) are relative and resolve inside $root.
    sed -i "s|include /usr/src/|include $root/usr/src/|" "$kdir/Makefile"
    tar -xf "$tarball" -C "$work"
    src=$(first_file "$work"/scst-*/scst)
    [ -n "$src" ] || die "$tarball holds no scst-*/scst directory"
    src=${src%/scst}
    local jobs
    jobs=$(nproc)
    if ! {
        make -C "$src/scst" 2release &&
            make -C "$src/scst" -j"$jobs" KDIR="$kdir" &&
            make -C "$src/scst_local" KDIR="$kdir" &&
            make -C "$src/usr/fileio"
    } >"$work/build.log" 2>&1; then
        tail -n 40 "$work/build.log" >&2
        die "the SCST build failed (the tail of its log is above)"
    fi
    rm -rf "$CACHE"/scst-"$KVER"-*
    mkdir -p "$out"
    cp "$src/scst/src/scst.ko" "$src/scst/src/dev_handlers/scst_vdisk.ko" \
        "$src/scst/src/dev_handlers/scst_user.ko" "$src/scst_local/scst_local.ko" \
        "$src/usr/fileio/fileio_tgt" "$out/"
    cp "$src/scst/include/scst_itf_ver.h" "$src/scst/include/scst_const.h" "$out/"
    basename "$tarball" >"$out/done"
    # Keep only the current kernel's headers in the cache.
    find "$CACHE" -maxdepth 1 -name 'linux-headers-*.deb' ! -name "linux-headers-${base}-*" -delete
    SCST_BUILD=$out
    log "SCST build: $(cd "$out" && echo *.ko fileio_tgt)"
}
