# shellcheck shell=bash
# shellcheck disable=SC2034 # VM_FIO is read by run.sh
# The guest's fio, sourced by run.sh: the host's fio version (Debian's
# package, the one the job files were written for) built again from the
# same upstream source without the library engines the VM test never uses.
#
# Why: Debian's fio links 64 shared libraries (librbd and libceph-common,
# glusterfs, RDMA, pmem, nbd, ...), and loading them is most of its start:
# under QEMU TCG `fio --version` took 0.53-0.84 s against 0.12-0.18 s for
# this build, and a 2 s run 2.9-3.2 s against 2.5 s (same boot). The VM
# test starts fio about 120 times. The engines the job files use (libaio)
# and fio's behaviour are the same: the same upstream source, configured
# as Debian does (--disable-native) less the library engines.
#
# The source is Debian's: fio_<version>.dsc from the archive's pool names
# the upstream tarball and its SHA-256, which is checked. The result is
# cached by version and recipe. Sets VM_FIO (the binary's host path; the
# guest reads it through /host). When the build cannot be done (no
# network, no compiler), the guest uses the host's fio, which is slower
# only: outside CI with a message, with CI=true it is an error.

FIO_ARCHIVE=${FIO_ARCHIVE:-http://deb.debian.org/debian}
# Bump when the build recipe below changes in a way the hash cannot see.
FIO_RECIPE=1

# fio_packages: the host packages the build needs (for install_packages).
fio_packages() {
    command -v make >/dev/null || echo make
    command -v gcc-12 >/dev/null || echo gcc-12
    [ -e /usr/include/libaio.h ] || echo libaio-dev
    command -v curl >/dev/null || echo curl
}

# fio_unavailable WHY: falls back to the host's fio, or stops in CI.
fio_unavailable() {
    [ "${CI:-}" != true ] || die "cannot build the guest's fio: $1"
    log "guest fio: the host's (slower to start under TCG): $1"
}

build_fio() {
    VM_FIO=
    local version upstream key out pool=$FIO_ARCHIVE/pool/main/f/fio
    version=$(dpkg-query -W -f '${Version}' fio 2>/dev/null) || {
        fio_unavailable "the fio package is not installed"
        return
    }
    version=${version#*:} # the pool's file names carry no epoch
    upstream=${version%-*}
    key=$( {
        echo "$FIO_RECIPE $version"
        cat "$HERE/fio-build.sh"
    } | sha256sum | cut -c1-16)
    out=$CACHE/fio-$upstream-$key
    if [ -x "$out/fio" ]; then
        log "guest fio: cached ($out)"
        VM_FIO=$out/fio
        return
    fi
    log "building fio $upstream for the guest (Debian's source, without library engines)"
    local work dsc tarball sha
    work=$(mktemp -d "$CACHE/fio-build.XXXXXX")
    # shellcheck disable=SC2064
    trap "rm -rf '$work'" RETURN
    dsc=$pool/fio_$version.dsc
    if ! curl -fsS -o "$work/fio.dsc" "$dsc"; then
        fio_unavailable "cannot download $dsc"
        return
    fi
    # Checksums-Sha256: " <sha256> <size> fio_<upstream>.orig.tar.<ext>"
    read -r sha tarball < <(awk '/^Checksums-Sha256:/ { s = 1; next }
        /^[^ ]/ { s = 0 } s && $3 ~ /\.orig\.tar\.[a-z0-9]+$/ { print $1, $3; exit }' "$work/fio.dsc")
    if [ -z "$tarball" ]; then
        fio_unavailable "$dsc names no upstream tarball"
        return
    fi
    if ! curl -fsS -o "$work/$tarball" "$pool/$tarball"; then
        fio_unavailable "cannot download $tarball"
        return
    fi
    echo "$sha  $work/$tarball" | sha256sum -c --quiet - ||
        die "$tarball does not match the SHA-256 in $dsc"
    tar -xf "$work/$tarball" -C "$work"
    local src cc
    src=$(first_file "$work"/fio-*/configure)
    [ -n "$src" ] || die "$tarball holds no fio-*/configure"
    src=${src%/configure}
    cc=$(command -v gcc-12 || command -v cc) || {
        fio_unavailable "no C compiler"
        return
    }
    if ! (
        cd "$src" &&
            ./configure --cc="$cc" --disable-native --disable-lex --disable-numa --disable-rdma \
                --disable-rados --disable-rbd --disable-http --disable-gfapi --disable-pmem \
                --disable-xnvme --disable-libzbc --disable-tcmalloc --disable-dfs &&
            make -j"$(nproc)" fio
    ) >"$work/build.log" 2>&1; then
        tail -n 30 "$work/build.log" >&2
        die "the guest fio's build failed (the tail of its log is above)"
    fi
    grep -q '^Linux AIO support  *yes' "$work/build.log" ||
        die "the guest fio was configured without libaio (libaio-dev missing?)"
    rm -rf "$CACHE"/fio-[0-9]*
    mkdir -p "$out"
    cp "$src/fio" "$out/fio"
    VM_FIO=$out/fio
    log "guest fio: built ($VM_FIO)"
}
