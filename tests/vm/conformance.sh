# shellcheck shell=dash
# The VM test's SCSI conformance steps: libiscsi's test suite (iscsi-test-cu,
# Debian package libiscsi-bin, run from the host like fio) against the LUNs
# through LIO's iSCSI target on 127.0.0.1; sourced by guest.sh, whose helpers
# (host, fail, state, lun_name, ...) they use.
#
# One iSCSI target, CONFORMANCE_IQN, portal 127.0.0.1:3260, no
# authentication, with one LUN per backstore: the kernel's rd_mcp ramdisk
# (the comparison) and the dataplane's RAM, striped, file and nvme devices,
# the same backstores the tcm_loop disks of the other steps sit on. Every
# LUN runs `iscsi-test-cu --dataloss --test=$CONFORMANCE_FAMILY` (LINUX by
# default), all at once, and step conformance_<kind> judges one: its tests
# and outcomes go to $R/conformance-<kind>.tsv ("test<TAB>pass|fail"), which
# summarize.py turns into result.json's `conformance` object.
#
# A dataplane LUN's step fails when a test fails that is not a known,
# explained exception of tests/vm/conformance-exceptions.txt (lines
# "Suite.Test<TAB>kinds<TAB>reason", kinds a comma-separated list or "*").
# The rd_mcp LUN's step only records (the kernel's failures are the
# kernel's). The dataplane's failures that rd_mcp passes are listed in the
# step's log either way. --dataloss: the tests write anywhere on the LUN, so
# these steps run after every step that checks data.

CONFORMANCE_IQN=iqn.2026-12.org.dataplane:conformance
CONFORMANCE_PORTAL=127.0.0.1:3260
CONFORMANCE_FAMILY=${VM_CONFORMANCE_FAMILY:-LINUX}
CONFORMANCE_KINDS="rd ram striped file nvme"
CONFORMANCE_EXCEPTIONS=$REPO/tests/vm/conformance-exceptions.txt
CONFORMANCE_TIMEOUT=${VM_CONFORMANCE_TIMEOUT:-900}  # seconds a LUN's run may take

# conformance_backstore KIND: the configfs directory of the backstore of the
# LUN of KIND.
conformance_backstore() {
    case $1 in
        rd) echo "$CFS/core/rd_mcp_1/rd0" ;;
        *)
            if [ "$SELFTEST" = 1 ]; then
                # The stand-in LUNs of the selftest (guest.sh, nvme.sh).
                case $1 in
                    ram) ls -d "$CFS"/core/rd_mcp_*/selftest_ram ;;
                    striped) ls -d "$CFS"/core/rd_mcp_*/selftest_striped ;;
                    *) ls -d "$CFS"/core/iblock_*/"selftest_$1" ;;
                esac 2>/dev/null
            else
                ls -d "$CFS"/core/user_*/"$(lun_name "$1")" 2>/dev/null
            fi
            ;;
    esac
}

# step_iscsi_target: loads LIO's iSCSI target, brings up the loopback
# interface, exports every LUN there is under CONFORMANCE_IQN (LUN numbers
# in the order of CONFORMANCE_KINDS go to $ST/iscsi-lun-<kind>) and starts
# the suite against all of them (conformance_start).
step_iscsi_target() {
    conformance_serve
    modprobe iscsi_target_mod || fail "modprobe iscsi_target_mod"
    ip link set lo up 2>/dev/null || ifconfig lo 127.0.0.1 up || fail "cannot bring up lo"
    t=$CFS/iscsi/$CONFORMANCE_IQN/tpgt_1
    mkdir -p "$t/np/$CONFORMANCE_PORTAL" || fail "cannot create the portal $CONFORMANCE_PORTAL"
    # Any initiator, no CHAP, writable (demo mode).
    for a in authentication=0 generate_node_acls=1 cache_dynamic_acls=1 demo_mode_write_protect=0; do
        printf %s "${a#*=}" >"$t/attrib/${a%%=*}" || fail "cannot set ${a%%=*}"
    done
    n=0
    missing=
    for kind in $CONFORMANCE_KINDS; do
        b=$(conformance_backstore "$kind")
        if [ -z "$b" ] || [ ! -d "$b" ]; then
            missing="$missing $kind"
            continue
        fi
        mkdir -p "$t/lun/lun_$n"
        ln -s "$b" "$t/lun/lun_$n/${b##*/}" || fail "cannot export $b as LUN $n"
        echo "$n" >"$ST/iscsi-lun-$kind"
        echo "LUN $n: $kind (${b#"$CFS"/core/})"
        n=$((n + 1))
    done
    printf 1 >"$t/enable" || fail "cannot enable $CONFORMANCE_IQN"
    iscsi_inq=$(hostbin iscsi-inq) || fail "iscsi-inq not found (libiscsi-bin on the host)"
    "$LD" --library-path "$LIBPATH" "$iscsi_inq" "iscsi://$CONFORMANCE_PORTAL/$CONFORMANCE_IQN/0" ||
        fail "iscsi-inq cannot log in to $CONFORMANCE_IQN on $CONFORMANCE_PORTAL"
    conformance_start
    [ -z "$missing" ] || fail "no LUN of:$missing (their create steps failed)"
}

# conformance_serve: with VM_COALESCE_US set, restarts `dataplane serve`
# without that completion coalescing window: the suite sends one command at a
# time, and a window holds each lone completion for its whole length, which
# would make each LUN's run several minutes long under TCG. The LUNs stay in
# configfs and the restarted serve attaches them again, as after the kill -9
# steps. With the default configuration (no window) and with the selftest
# (no serve) there is nothing to do.
conformance_serve() {
    [ "$SELFTEST" = 1 ] && return 0
    [ "$COALESCE_US" = 0 ] && return 0
    stop_serve
    # (The step runs in a subshell: the change stays in it.)
    # shellcheck disable=SC2034 # read by write_config (guest.sh)
    COALESCE_US=0
    write_config
    start_serve conformance
}

# conformance_parse OUT: iscsi-test-cu's verbose output as "test<TAB>outcome"
# lines. CUnit prints "  Suite: <suite>" before a suite's tests and
# "    Test: <name> ...passed" (or "...FAILED") for each; the name may carry
# the suite already ("CompareAndWrite.Simple").
conformance_parse() {
    awk '
        /^ *Suite: / { sub(/^ *Suite: */, ""); suite = $0; next }
        /^ *Test: / {
            line = $0
            sub(/^ *Test: */, "", line)
            outcome = ""
            if (line ~ /\.\.\.passed/) outcome = "pass"
            else if (line ~ /\.\.\.FAILED/) outcome = "fail"
            name = line
            sub(/ *\.\.\..*/, "", name)
            if (name !~ /\./ && suite != "") name = suite "." name
            if (outcome != "") { printf "%s\t%s\n", name, outcome }
            else { pending = name }
            next
        }
        pending != "" && /\.\.\.passed|^ *passed/ { printf "%s\tpass\n", pending; pending = ""; next }
        pending != "" && /FAILED/ { printf "%s\tfail\n", pending; pending = ""; next }
    ' "$1"
}

# conformance_excepted TEST KIND: TEST failing on the LUN of KIND is a known,
# explained exception.
conformance_excepted() {
    [ -f "$CONFORMANCE_EXCEPTIONS" ] || return 1
    awk -F '\t' -v t="$1" -v k="$2" '
        /^#/ || NF < 3 { next }
        $1 == t { n = split($2, ks, ","); for (i = 1; i <= n; i++) if (ks[i] == "*" || ks[i] == k) found = 1 }
        END { exit found ? 0 : 1 }
    ' "$CONFORMANCE_EXCEPTIONS"
}

# conformance_start: starts iscsi-test-cu against every exported LUN at
# once, in the background, each writing $R/conformance-<kind>.log and, when
# it exits, its status to $ST/conformance-<kind>.rc. The LUNs are
# independent, and each run mostly waits on its LUN (one command at a
# time), so together they take about as long as one.
conformance_start() {
    bin=$(hostbin iscsi-test-cu) || fail "iscsi-test-cu not found (libiscsi-bin on the host)"
    for kind in $CONFORMANCE_KINDS; do
        lun=$(state "iscsi-lun-$kind")
        [ -n "$lun" ] || continue
        url=iscsi://$CONFORMANCE_PORTAL/$CONFORMANCE_IQN/$lun
        echo "+ iscsi-test-cu --dataloss --test=$CONFORMANCE_FAMILY $url &"
        rm -f "$ST/conformance-$kind.rc"
        mkdir -p "$ST/conformance-$kind"
        (
            # iscsi-test-cu may write files in its working directory.
            cd "$ST/conformance-$kind" || exit 1
            rc=0
            "$LD" --library-path "$LIBPATH" "$bin" --dataloss --verbose \
                --test="$CONFORMANCE_FAMILY" "$url" >"$R/conformance-$kind.log" 2>&1 </dev/null || rc=$?
            echo $rc >"$ST/conformance-$kind.rc"
        ) &
    done
}

# step_conformance KIND: waits for iscsi-test-cu against the LUN of KIND
# (started by step iscsi_target) and judges its outcome.
step_conformance() {
    [ -n "$(state "iscsi-lun-$1")" ] || fail "no iSCSI LUN of $1 (step iscsi_target failed)"
    i=0
    while [ ! -s "$ST/conformance-$1.rc" ] && [ $i -lt "$CONFORMANCE_TIMEOUT" ]; do
        sleep 1
        i=$((i + 1))
    done
    [ -s "$ST/conformance-$1.rc" ] || fail "iscsi-test-cu on $1 did not finish within ${CONFORMANCE_TIMEOUT} s"
    rc=$(state "conformance-$1.rc")
    conformance_parse "$R/conformance-$1.log" >"$R/conformance-$1.tsv"
    tail -n 12 "$R/conformance-$1.log"
    total=$(wc -l <"$R/conformance-$1.tsv")
    failed=$(awk -F '\t' '$2 == "fail" { print $1 }' "$R/conformance-$1.tsv")
    echo "$1: $total tests, $(echo "$failed" | grep -c .) failed (iscsi-test-cu exit status $rc)"
    [ "$total" -gt 0 ] || fail "no test outcome in iscsi-test-cu's output (exit status $rc)"
    [ "$1" = rd ] && return 0
    unexplained=
    for t in $failed; do
        why=known
        conformance_excepted "$t" "$1" || {
            why=UNEXPLAINED
            unexplained="$unexplained $t"
        }
        rd=$(awk -F '\t' -v t="$t" '$1 == t { print $2 }' "$R/conformance-rd.tsv" 2>/dev/null)
        echo "failed: $t ($why; rd_mcp: ${rd:-not run})"
    done
    [ -z "$unexplained" ] ||
        fail "failures not in conformance-exceptions.txt:$unexplained"
}

# step_iscsi_teardown: removes the conformance target (its LUN links, LUNs,
# portal, portal group and target), so the backstores are again only the
# tcm_loop disks' and `lio delete` may remove them.
step_iscsi_teardown() {
    t=$CFS/iscsi/$CONFORMANCE_IQN/tpgt_1
    [ -d "$t" ] || skip "no conformance target (step iscsi_target did not run)"
    printf 0 >"$t/enable" || true
    for l in "$t"/lun/lun_*; do
        [ -d "$l" ] || continue
        for link in "$l"/*; do
            if [ -L "$link" ]; then rm "$link" || fail "cannot unlink $link"; fi
        done
        rmdir "$l" || fail "cannot remove $l"
    done
    rmdir "$t/np/$CONFORMANCE_PORTAL" || fail "cannot remove the portal"
    rmdir "$t" "$CFS/iscsi/$CONFORMANCE_IQN" || fail "cannot remove $CONFORMANCE_IQN"
    echo "removed $CONFORMANCE_IQN"
}
