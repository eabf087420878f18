# shellcheck shell=dash
# Operating a running server (sourced by guest.sh, whose helpers it uses):
# the control socket, a reload by SIGHUP under I/O, and the metrics
# endpoint. The TCMU leg's servers listen for metrics on OPS_METRICS
# (step serve_start writes it to $ST/serve-args) and on the default
# control socket.

OPS_METRICS=127.0.0.1:9150
OPS_RPC=/run/dataplane/rpc.sock

# metrics_value NAME DEVICE [LABEL]: the value of metric NAME for DEVICE
# (label device="DEVICE") and LABEL (e.g. op="write") in a scrape of
# OPS_METRICS; nothing if absent.
metrics_value() {
    wget -q -O - "http://$OPS_METRICS/metrics" 2>/dev/null |
        awk -v n="$1" -v d="device=\"$2\"" -v l="${3:-device=\"$2\"}" \
            'index($0, n "{") == 1 && index($0, d) && index($0, l) { print $NF; exit }'
}

# step_ops_control: over the control socket, a RAM bdev `rpc0` is created;
# `dataplane lio create` puts a LUN on it, which serve attaches on its own;
# fio writes and checks it (fio/handoff-verify.fio) while the configuration
# file gains a null bdev and serve is sent SIGHUP: the reload must make
# that bdev, leave the LUN serving (fio sees no error and no wrong block)
# and keep `rpc0` (not in the file). The metrics endpoint must report the
# LUN's completed commands, rising; then the LUN and both bdevs go away
# again (bdev_delete over the socket, a reload without the null bdev).
step_ops_control() {
    [ "$SELFTEST" = 1 ] && skip "VM_SELFTEST=1: no dataplane process"
    serve_running || fail "dataplane serve is not running"
    # The metrics endpoint is on 127.0.0.1: the guest's loopback must be up.
    ip link set lo up 2>/dev/null || ifconfig lo 127.0.0.1 up || fail "cannot bring up lo"
    log_file=$R/serve-$(state serve.tag).log
    out=$(dataplane rpc --socket "$OPS_RPC" bdev_ram_create name=rpc0 size=32MiB 2>&1) ||
        fail "bdev_ram_create over the control socket: $(first_error "$out")"
    echo "bdev_ram_create: $out"
    dataplane rpc --socket "$OPS_RPC" bdev_get_bdevs name=rpc0 | grep -q '"rpc0"' ||
        fail "bdev_get_bdevs does not show rpc0"
    echo "+ dataplane lio create rpc0disk --bdev rpc0 --size 32MiB --loopback"
    out=$(dataplane lio create rpc0disk --bdev rpc0 --size 32MiB --loopback 2>&1) ||
        fail "dataplane lio create rpc0disk: $(first_error "$out")"
    echo "$out"
    d=$(echo "$out" | awk '$1 == "disk:" { print $2 }')
    [ -b "$d" ] || fail "lio create rpc0disk printed no disk"
    before=$(metrics_value dataplane_device_commands_completed_total rpc0disk)
    dmesg_mark ops
    (run_fio ops-verify handoff-verify.fio DISK="$d" SIZE=$((16 << 20)) RUNTIME=10) \
        >"$ST/ops-fio.log" 2>&1 &
    fpid=$!
    sleep 3
    cp "$ST/serve.toml" "$ST/serve.toml.orig"
    printf '\n[[bdev]]\nname = "hup0"\ntype = "null"\nsize = "16MiB"\n' >>"$ST/serve.toml"
    kill -HUP "$(state serve.pid)"
    i=0
    while ! grep -q "reloaded: bdevs made: hup0" "$log_file" && [ $i -lt 100 ]; do
        sleep 0.1
        i=$((i + 1))
    done
    grep "reload" "$log_file" || true
    grep -q "reloaded: bdevs made: hup0" "$log_file" || fail "serve did not reload (no 'reloaded: bdevs made: hup0')"
    mid=$(metrics_value dataplane_device_commands_completed_total rpc0disk)
    frc=0
    wait $fpid || frc=$?
    cat "$ST/ops-fio.log"
    [ $frc = 0 ] || fail "fio across the reload failed"
    after=$(metrics_value dataplane_device_commands_completed_total rpc0disk)
    echo "metrics: rpc0disk completed ${before:-none} before fio, ${mid:-none} at the reload, ${after:-none} after"
    [ -n "$after" ] || fail "the metrics endpoint does not report rpc0disk"
    awk -v a="${mid:-0}" -v b="$after" 'BEGIN { exit !(b > a && a > 0) }' ||
        fail "rpc0disk's completed commands did not rise in the metrics (${mid:-none} then $after)"
    writes=$(metrics_value dataplane_device_commands_total rpc0disk 'op="write"')
    good=$(metrics_value dataplane_device_responses_total rpc0disk 'status="GOOD"')
    medium=$(metrics_value dataplane_device_errors_total rpc0disk 'sense_key="MEDIUM_ERROR"')
    echo "metrics: rpc0disk writes ${writes:-none}, GOOD responses ${good:-none}, MEDIUM ERRORs ${medium:-none}"
    awk -v w="${writes:-0}" -v g="${good:-0}" -v m="${medium:-x}" 'BEGIN { exit !(w > 0 && g >= w && m == 0) }' ||
        fail "the LUN's figures are not as fio's writes make them (writes ${writes:-none}, GOOD ${good:-none}, MEDIUM ERROR ${medium:-none})"
    dataplane rpc --socket "$OPS_RPC" bdev_get_bdevs name=rpc0 | grep -q '"rpc0"' ||
        fail "the reload removed rpc0, which the control socket created"
    errs=$(dmesg_unexpected ops)
    [ -z "$errs" ] || {
        echo "$errs"
        fail "kernel log reports I/O trouble during the reload"
    }
    # Clean up: the LUN, rpc0 over the socket, hup0 by another reload.
    out=$(dataplane lio delete rpc0disk 2>&1) || fail "dataplane lio delete rpc0disk: $(first_error "$out")"
    i=0
    until out=$(dataplane rpc --socket "$OPS_RPC" bdev_delete name=rpc0 2>&1); do
        i=$((i + 1))
        [ $i -lt 50 ] || fail "bdev_delete rpc0: $(first_error "$out")"
        sleep 0.1 # until serve detached the deleted LUN
    done
    cp "$ST/serve.toml.orig" "$ST/serve.toml"
    kill -HUP "$(state serve.pid)"
    i=0
    while ! grep -q "reloaded: bdevs removed: hup0" "$log_file" && [ $i -lt 100 ]; do
        sleep 0.1
        i=$((i + 1))
    done
    grep -q "reloaded: bdevs removed: hup0" "$log_file" || fail "the reload back did not remove hup0"
    echo "control socket, reload under fio and metrics: as expected"
}
