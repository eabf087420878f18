# shellcheck shell=dash
# The soak: verified I/O for a given time while the LUN's ring is reset, the
# server is killed with SIGKILL and restarted, and a fault bdev fails I/O at
# random in one range of the disk and delays it at random everywhere.
# Sourced by guest.sh (its helpers: run_fio, fio_sum, stats_field,
# kill9_serve, dataplane, ...); step soak_short in reliability.sh runs it for
# VM_SOAK_SECONDS (40 by default; the closing notes report a 30-minute run:
# `VM_STEPS=modules,nvme_devices,serve_start,soak_short VM_SOAK_SECONDS=1800
# VM_TIMEOUT=3000 tests/vm/run.sh`).
#
# The LUN `soak0disk` is the fault bdev `soak0` over the file bdev
# `soakfile` on namespace 6 of the emulated drive: a file bdev keeps the data
# across the kills, so a round that spans one still verifies. The disk:
#   - [0, SOAK_VERIFY_BYTES): rounds of fio/soak-verify.fio back to back,
#     each writing and then checking what it wrote; no rule fails I/O here
#     (only the random delays apply): every round must pass, and a mismatch
#     is a verify error;
#   - [SOAK_FAULT_OFFSET, + SOAK_FAULT_BYTES): fio/soak-faulty.fio for the
#     whole time, going on past errors: the fault bdev fails 5 % of its reads
#     and writes with MEDIUM ERROR (the range of soak_bdev_config's first
#     rule); fio counts them in `total_err`.
# Between the two, every 5 to 12 s (drawn at random): `action/reset_ring` of
# the LUN and kill -9 of serve with a restart (after a statistics report, so
# the counters of the instance that dies are kept), in turn, the first one
# drawn at random. While it runs, the console shows only emergencies (the
# injected errors would flood it; dmesg keeps them). It reports, in
# $R/soak.json: the time, verify rounds and their I/Os, the faulty range's
# I/Os and errors, ring resets, restarts, faults injected (the fault bdev's
# `failed` and `delayed`, summed over the serve instances), recoveries
# (`recoveries_total` of the LUN, summed likewise) and verify errors.

SOAK_LUN=soak0disk
SOAK_NS=nvme0n6
SOAK_VERIFY_BYTES=$((96 << 20))
SOAK_FAULT_OFFSET=$((96 << 20))
SOAK_FAULT_BYTES=$((16 << 20))
SOAK_ROUND_BYTES=$((16 << 20))

# soak_bdev_config: serve's [[bdev]] sections of the soak (512-byte LBAs,
# the namespace's).
soak_bdev_config() {
    cat <<EOF

[[bdev]]
name = "soakfile"
type = "file"
path = "/dev/$SOAK_NS"

[[bdev]]
name = "soak0"
type = "fault"
base = "soakfile"
seed = 1

[[bdev.rules]]
ops = ["read", "write"]
range = [$((SOAK_FAULT_OFFSET / 512)), $(((SOAK_FAULT_OFFSET + SOAK_FAULT_BYTES) / 512))]
probability = 0.05
error = "medium"

[[bdev.rules]]
probability = 0.002
latency_us = 1000
latency_max_us = 20000
EOF
}

# rand N: a random number in [0, N).
rand() {
    _r=$(od -An -N2 -tu2 /dev/urandom | tr -dc '0-9')
    echo $((${_r:-0} % $1))
}

# soak_add_counters TAG: adds the fault bdev's failed and delayed and the
# LUN's recoveries_total of serve instance TAG (its last statistics report;
# a figure it does not report counts 0) to the totals in $ST/soak-counters
# ("failed delayed recoveries").
soak_add_counters() {
    _f=$R/serve-stats-$1.json
    _failed=$(stats_field "$_f" soak0 failed)
    _delayed=$(stats_field "$_f" soak0 delayed)
    _rec=$(stats_field "$_f" "$SOAK_LUN" recoveries_total)
    read -r _t1 _t2 _t3 <"$ST/soak-counters"
    echo "$((_t1 + ${_failed:-0})) $((_t2 + ${_delayed:-0})) $((_t3 + ${_rec:-0}))" >"$ST/soak-counters"
}

# soak_rounds DISK END: verify rounds until the time END (seconds since the
# epoch); each round's I/O is added to $ST/soak-verify ("rounds ios").
soak_rounds() {
    echo "0 0" >"$ST/soak-verify"
    while [ "$(date +%s)" -lt "$2" ]; do
        run_fio soak-verify soak-verify.fio DISK="$1" SIZE="$SOAK_VERIFY_BYTES" \
            IO_SIZE="$SOAK_ROUND_BYTES" >>"$ST/soak-rounds.log" 2>&1 || {
            tail -n 20 "$ST/soak-rounds.log"
            fail "soak round $(cut -d' ' -f1 "$ST/soak-verify") failed (see $ST/soak-rounds.log)"
        }
        _out=$R/fio-soak-verify.json
        _ios=$(($(fio_sum "$_out" read total_ios) + $(fio_sum "$_out" write total_ios)))
        read -r _n _t <"$ST/soak-verify"
        echo "$((_n + 1)) $((_t + _ios))" >"$ST/soak-verify"
    done
}

# soak_run DISK SECONDS
soak_run() {
    _disk=$1
    _end=$(($(date +%s) + $2))
    _t0=$(now)
    _printk=$(cut -f1 /proc/sys/kernel/printk)
    echo 1 >/proc/sys/kernel/printk
    echo "0 0 0" >"$ST/soak-counters"
    : >"$ST/soak-rounds.log"
    dev=
    for c in "$CFS"/core/user_*/"$SOAK_LUN"; do
        [ -e "$c/action/reset_ring" ] && dev=$c
    done
    [ -n "$dev" ] || fail "no $SOAK_LUN/action/reset_ring in configfs"

    echo "+ soak for $2 s on $_disk: verify rounds over [0, $SOAK_VERIFY_BYTES)," \
        "injected failures in [$SOAK_FAULT_OFFSET, +$SOAK_FAULT_BYTES)"
    (
        env DISK="$_disk" OFFSET="$SOAK_FAULT_OFFSET" SIZE="$SOAK_FAULT_BYTES" RUNTIME="$2" \
            timeout -s KILL $(($2 + 120)) "$LD" --library-path "$LIBPATH" "$(fio_bin)" \
            --output-format=json --output="$R/fio-soak-faulty.json" "$FIO_JOBS/soak-faulty.fio"
    ) >"$ST/soak-faulty.log" 2>&1 &
    _faulty=$!
    (soak_rounds "$_disk" "$_end") >"$ST/soak-verify.log" 2>&1 &
    _verify=$!

    _resets=0
    _restarts=0
    _n=0
    _next=$(rand 2)
    while :; do
        sleep $((5 + $(rand 8)))
        # No disruption in the last 10 s: the last round ends on a serving LUN.
        [ $(($(date +%s) + 10)) -lt "$_end" ] || break
        _n=$((_n + 1))
        _next=$((1 - _next))
        if [ "$_next" = 0 ]; then
            echo "$(date +%T) + echo 1 > ${dev#"$CFS"/}/action/reset_ring"
            printf 1 >"$dev/action/reset_ring" || fail "writing reset_ring failed"
            _resets=$((_resets + 1))
        else
            _tag=$(state serve.tag)
            kill -USR1 "$(state serve.pid)"
            sleep 1
            soak_add_counters "$_tag"
            echo "$(date +%T) + kill -9 serve, restart"
            kill9_serve "soak$_n"
            _restarts=$((_restarts + 1))
        fi
    done
    _vrc=0
    wait $_verify || _vrc=$?
    cat "$ST/soak-verify.log"
    _frc=0
    wait $_faulty || _frc=$?
    _tag=$(state serve.tag)
    kill -USR1 "$(state serve.pid)"
    sleep 1
    soak_add_counters "$_tag"

    echo "$_printk" >/proc/sys/kernel/printk
    read -r _rounds _vios <"$ST/soak-verify"
    _fout=$R/fio-soak-faulty.json
    _fios=$(($(fio_sum "$_fout" read total_ios) + $(fio_sum "$_fout" write total_ios)))
    _ferr=$(awk -F: '/"total_err"/ { gsub(/[ ,]/, "", $2); s += $2 } END { print s + 0 }' "$_fout")
    read -r _failed _delayed _recoveries <"$ST/soak-counters"
    _verify_errors=0
    [ $_vrc = 0 ] || _verify_errors=1
    _secs=$(awk -v a="$_t0" -v b="$(now)" 'BEGIN { printf "%.0f", b - a }')
    cat >"$R/soak.json" <<EOF
{"seconds": $_secs, "verify_rounds": $_rounds, "verify_ios": $_vios,
 "verify_errors": $_verify_errors, "faulty_range_ios": $_fios,
 "faulty_range_errors": $_ferr, "ring_resets": $_resets, "restarts": $_restarts,
 "faults_injected": $((_failed + _delayed)), "injected_failures": $_failed,
 "injected_delays": $_delayed, "recoveries": $_recoveries}
EOF
    echo "soak: $(tr -d '\n' <"$R/soak.json")"
    [ $_vrc = 0 ] || fail "a verify round failed: data outside the failing range was lost or wrong"
    [ $_frc = 0 ] || {
        cat "$ST/soak-faulty.log"
        fail "fio on the failing range exited with status $_frc"
    }
    [ "$_rounds" -gt 0 ] || fail "no verify round ran"
    [ "$_ferr" -gt 0 ] || fail "fio saw no error on the failing range"
    [ "$_failed" -gt 0 ] || fail "the fault bdev counted no injected failure"
    # Each reset is one recovery, but an instance killed before its report
    # showed the last one loses it from the count: at least one must show.
    [ "$_resets" = 0 ] || [ "$_recoveries" -gt 0 ] || fail "$_resets ring resets but no recovery counted"
}
