# shellcheck shell=dash
# The VM test's SCSI conformance steps: libiscsi's test suite (iscsi-test-cu,
# Debian package libiscsi-bin, run from the host like fio) against the LUNs
# through LIO's iSCSI target on 127.0.0.1; sourced by guest.sh, whose helpers
# (host, fail, state, lun_name, ...) they use.
#
# Two iSCSI targets share the portal 127.0.0.1:3260, no authentication:
# CONFORMANCE_IQN_RD with the kernel's rd_mcp ramdisk (the comparison) and
# CONFORMANCE_IQN with one LUN per dataplane backstore (RAM, striped, file,
# nvme), the same backstores the tcm_loop disks of the other steps sit on.
# Every LUN runs `iscsi-test-cu --dataloss --test=$CONFORMANCE_FAMILY`
# (LINUX by default) and step conformance_<kind> judges one: its tests and
# outcomes go to $R/conformance-<kind>.tsv ("test<TAB>pass|fail"), which
# summarize.py turns into result.json's `conformance` object.
#
# rd_mcp's run starts as soon as the performance steps are over (step
# iscsi_target_rd): no later step uses that LUN, and the run's CPU time then
# overlaps the reliability steps, which mostly wait (on restarts, on
# fixed-length fio runs; measured: about 11 s longer together), instead of
# lengthening the dataplane LUNs' runs, which are CPU-bound together under
# TCG (one vCPU busy, the other spun by the reactor). The
# dataplane LUNs' runs start together after every step that checks their
# data (step iscsi_target). A target of its own keeps rd_mcp's sessions
# apart from the LUNs added later (an added LUN would give rd_mcp's LUN a
# REPORTED LUNS DATA HAS CHANGED unit attention mid-test).
#
# A dataplane LUN's step fails when a test fails that is not a known,
# explained exception of tests/vm/conformance-exceptions.txt (lines
# "Suite.Test<TAB>kinds<TAB>reason", kinds a comma-separated list or "*").
# The rd_mcp LUN's step only records (the kernel's failures are the
# kernel's). The dataplane's failures that rd_mcp passes are listed in the
# step's log either way. --dataloss: the tests write anywhere on the LUN, so
# these steps run after every step that checks data on it.

CONFORMANCE_IQN=iqn.2026-12.org.dataplane:conformance
CONFORMANCE_IQN_RD=iqn.2026-12.org.dataplane:conformance-rd
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

# conformance_target IQN KIND...: creates the iSCSI target IQN (loading
# LIO's iSCSI target and bringing up the loopback interface first), exports
# the backstore of each KIND as its LUNs 0, 1, ... (LUN numbers and the IQN
# go to $ST/iscsi-lun-<kind> and $ST/iscsi-iqn-<kind>), checks that
# iscsi-inq logs in and starts the suite against those LUNs
# (conformance_start). Fails, after starting the others, when a KIND has no
# backstore.
conformance_target() {
    iqn=$1
    shift
    modprobe iscsi_target_mod || fail "modprobe iscsi_target_mod"
    ip link set lo up 2>/dev/null || ifconfig lo 127.0.0.1 up || fail "cannot bring up lo"
    t=$CFS/iscsi/$iqn/tpgt_1
    mkdir -p "$t/np/$CONFORMANCE_PORTAL" || fail "cannot create the portal $CONFORMANCE_PORTAL of $iqn"
    # Any initiator, no CHAP, writable (demo mode).
    for a in authentication=0 generate_node_acls=1 cache_dynamic_acls=1 demo_mode_write_protect=0; do
        printf %s "${a#*=}" >"$t/attrib/${a%%=*}" || fail "cannot set ${a%%=*}"
    done
    n=0
    missing=
    started=
    for kind in "$@"; do
        b=$(conformance_backstore "$kind")
        if [ -z "$b" ] || [ ! -d "$b" ]; then
            missing="$missing $kind"
            continue
        fi
        mkdir -p "$t/lun/lun_$n"
        ln -s "$b" "$t/lun/lun_$n/${b##*/}" || fail "cannot export $b as LUN $n of $iqn"
        echo "$n" >"$ST/iscsi-lun-$kind"
        echo "$iqn" >"$ST/iscsi-iqn-$kind"
        echo "$iqn LUN $n: $kind (${b#"$CFS"/core/})"
        started="$started $kind"
        n=$((n + 1))
    done
    if [ -n "$started" ]; then
        printf 1 >"$t/enable" || fail "cannot enable $iqn"
        iscsi_inq=$(hostbin iscsi-inq) || fail "iscsi-inq not found (libiscsi-bin on the host)"
        "$LD" --library-path "$LIBPATH" "$iscsi_inq" "iscsi://$CONFORMANCE_PORTAL/$iqn/0" ||
            fail "iscsi-inq cannot log in to $iqn on $CONFORMANCE_PORTAL"
        # shellcheck disable=SC2086 # a list of kinds
        conformance_start $started
    fi
    [ -z "$missing" ] || fail "no LUN of:$missing (their create steps failed)"
}

# step_iscsi_target_rd: the rd_mcp LUN's target, and its run started.
step_iscsi_target_rd() {
    conformance_target "$CONFORMANCE_IQN_RD" rd
}

# step_iscsi_target: the dataplane LUNs' target, and their runs started
# (after restarting serve without a coalescing window, conformance_serve).
step_iscsi_target() {
    conformance_serve
    kinds=
    for kind in $CONFORMANCE_KINDS; do
        [ "$kind" = rd ] || kinds="$kinds $kind"
    done
    # shellcheck disable=SC2086 # a list of kinds
    conformance_target "$CONFORMANCE_IQN" $kinds
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

# conformance_start KIND...: starts iscsi-test-cu against the LUN of each
# KIND, in the background, each writing $R/conformance-<kind>.log and, when
# it exits, its status to $ST/conformance-<kind>.rc. The LUNs are
# independent, and each run mostly waits on its LUN (one command at a
# time), so runs started together overlap.
conformance_start() {
    bin=$(hostbin iscsi-test-cu) || fail "iscsi-test-cu not found (libiscsi-bin on the host)"
    for kind in "$@"; do
        url=iscsi://$CONFORMANCE_PORTAL/$(state "iscsi-iqn-$kind")/$(state "iscsi-lun-$kind")
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
    [ -n "$(state "iscsi-lun-$1")" ] || fail "no iSCSI LUN of $1 (its iscsi_target step failed)"
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

# step_iscsi_teardown: removes the conformance targets (their LUN links,
# LUNs, portals, portal groups and targets), so the backstores are again
# only the tcm_loop disks' and `lio delete` may remove them.
step_iscsi_teardown() {
    removed=
    for iqn in "$CONFORMANCE_IQN" "$CONFORMANCE_IQN_RD"; do
        t=$CFS/iscsi/$iqn/tpgt_1
        [ -d "$t" ] || continue
        printf 0 >"$t/enable" || true
        for l in "$t"/lun/lun_*; do
            [ -d "$l" ] || continue
            for link in "$l"/*; do
                if [ -L "$link" ]; then rm "$link" || fail "cannot unlink $link"; fi
            done
            rmdir "$l" || fail "cannot remove $l"
        done
        rmdir "$t/np/$CONFORMANCE_PORTAL" || fail "cannot remove the portal of $iqn"
        rmdir "$t" "$CFS/iscsi/$iqn" || fail "cannot remove $iqn"
        echo "removed $iqn"
        removed=1
    done
    [ -n "$removed" ] || skip "no conformance target (steps iscsi_target_rd and iscsi_target did not run)"
}
