#!/usr/bin/env bash
# A single-node Ceph cluster for tests: one monitor, one manager and one
# BlueStore OSD on a sparse file, replication size 1, cephx on, bound to
# 127.0.0.1 only, everything under one directory. See README.md here.
#
#   cluster.sh start DIR [--watch-pid PID]
#       Starts a cluster in DIR (created if needed) and prints the absolute
#       path of its ceph.conf on the last line of stdout (progress goes to
#       stderr). Pool `rbd` is created and initialised. Fails when a cluster
#       of DIR is still running; the leftovers of a dead one are removed
#       first. With --watch-pid, a watcher stops the cluster when process
#       PID exits. A start that fails stops and removes what it started.
#   cluster.sh stop DIR
#       Stops the daemons of DIR (TERM, then KILL after a bounded wait) and
#       removes everything start created in DIR (DIR itself when empty).
#   cluster.sh osd-stop DIR     Stops the OSD only (its data is kept).
#   cluster.sh osd-start DIR    Starts it again; waits until it is up.
#   cluster.sh status DIR       `ceph -s` of the cluster of DIR.
#
# Only processes whose command line names DIR's ceph.conf are ever
# signalled, so clusters in two directories never touch each other.
set -euo pipefail

# Bounds of the waits, in seconds.
START_TIMEOUT=${CEPH_TEST_START_TIMEOUT:-120}
STOP_TIMEOUT=${CEPH_TEST_STOP_TIMEOUT:-30}
# Seconds one CLI command may take before it counts as hung.
CMD_TIMEOUT=30
# Size of the OSD's sparse block file.
BLOCK_SIZE=$((8 << 30))
# What start creates in DIR (and stop removes).
CREATED=(ceph.conf ceph.client.admin.keyring mon.keyring monmap mon mgr osd run log crash)

log() { printf '[cluster.sh %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

usage() {
    sed -n '5,19p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

# ---- helpers ---------------------------------------------------------------

# Sets DIR (absolute) and CONF from the argument.
set_dir() {
    [ -n "${1:-}" ] || usage
    [ -d "$1" ] || die "no directory $1"
    DIR=$(cd "$1" && pwd -P)
    CONF=$DIR/ceph.conf
    # Processes are told apart by the words of their command lines.
    [[ "$DIR" != *[[:space:]]* ]] || die "DIR '$DIR' contains white space; use another directory"
    # Unix socket paths (the admin sockets under DIR/run) hold 107 bytes.
    local longest=/run/ceph-client.admin.4194304.asok
    if [ $((${#DIR} + ${#longest})) -gt 107 ]; then
        die "DIR $DIR is too long for the daemons' admin sockets (unix socket paths are limited to 107 bytes); use a shorter path"
    fi
}

ceph_cli() { timeout "$CMD_TIMEOUT" ceph -c "$CONF" --connect-timeout 10 "$@"; }
rbd_cli() { timeout "$CMD_TIMEOUT" rbd -c "$CONF" "$@"; }

# Whether pid $1 is alive and its command line names this DIR's ceph.conf
# (the daemons) or DIR itself (the watcher), as a whole argument.
ours() {
    local pid=$1 cmdline
    [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
    cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
    [[ " $cmdline " == *" $CONF "* || " $cmdline " == *" $DIR "* ]]
}

# The pid in pid file $1 when it names one of this DIR's live processes.
pid_of() {
    local file=$1 pid
    [ -f "$file" ] || return 1
    pid=$(tr -dc '0-9' <"$file")
    ours "$pid" || return 1
    printf '%s\n' "$pid"
}

# Pid files of the daemons (written by the daemons: `pid file` in the conf)
# and of the watcher.
DAEMONS=(mon.a mgr.x osd.0)
watcher_pidfile() { printf '%s\n' "$DIR/run/watcher.pid"; }

# Sends TERM to the processes of pid files "$@", waits up to STOP_TIMEOUT
# seconds for them to exit, then KILLs the rest.
stop_pids() {
    local file pid pids=() deadline
    for file in "$@"; do
        if pid=$(pid_of "$file"); then pids+=("$pid"); fi
    done
    [ ${#pids[@]} -gt 0 ] || return 0
    kill -TERM "${pids[@]}" 2>/dev/null || true
    deadline=$((SECONDS + STOP_TIMEOUT))
    while [ $SECONDS -lt $deadline ]; do
        local alive=()
        for pid in "${pids[@]}"; do
            if ours "$pid"; then alive+=("$pid"); fi
        done
        [ ${#alive[@]} -gt 0 ] || return 0
        sleep 0.2
    done
    log "still running after ${STOP_TIMEOUT}s, killing: ${alive[*]}"
    kill -KILL "${alive[@]}" 2>/dev/null || true
    sleep 0.5
}

# Stops the daemons of DIR. The OSD first: it tells the monitor that it
# goes and would wait 5 s for a monitor already gone.
stop_daemons() {
    stop_pids "$DIR/run/osd.0.pid"
    stop_pids "$DIR/run/mgr.x.pid" "$DIR/run/mon.a.pid"
}

# The tail of every daemon log, for a failure message.
log_tails() {
    local f
    for f in "$DIR"/log/*.log; do
        [ -f "$f" ] || continue
        printf '\n---- tail of %s ----\n' "$f" >&2
        tail -n 25 "$f" >&2 || true
    done
}

# The warnings and errors of the cluster log (health checks raised and
# cleared), which its tail of statistics lines hides.
cluster_log_warnings() {
    local f=$DIR/log/ceph.cluster.log
    [ -f "$f" ] || return 0
    printf '\n---- warnings and errors of %s ----\n' "$f" >&2
    grep -E '\[(WRN|ERR)\]' "$f" | tail -n 25 >&2 || true
}

# Logs the free space of DIR's file system, with a warning when it is
# under 5 GiB: the OSD's block file and the monitor's store grow there.
check_free_space() {
    local avail_kib
    avail_kib=$(df -Pk "$DIR" | awk 'NR == 2 { print $4 }')
    [ -n "$avail_kib" ] || return 0
    if [ "$avail_kib" -lt $((5 << 20)) ]; then
        log "warning: only $((avail_kib >> 10)) MiB free on the file system of $DIR; the cluster's writes may fail with ENOSPC"
    else
        log "$((avail_kib >> 20)) GiB free on the file system of $DIR"
    fi
}

# Polls `$1` (a shell function) every half second until it succeeds or
# START_TIMEOUT seconds have passed since `start` began (then fails with
# the description $2, the cluster status and the logs' tails).
wait_for() {
    local check=$1 what=$2
    while ! "$check"; do
        if [ $SECONDS -ge "$DEADLINE" ]; then
            # The logs first, the cluster's own account last: a report cut
            # to its tail still says what was wrong.
            log_tails
            cluster_log_warnings
            ceph_cli -s >&2 2>&1 || true
            ceph_cli health detail >&2 2>&1 || true
            die "timed out after ${START_TIMEOUT}s waiting for $what (the logs' tails and the cluster's health above)"
        fi
        sleep 0.5
    done
}

# A TCP port on 127.0.0.1 that no socket uses now (/proc/net/tcp*), picked
# at random so that clusters started at once rarely race for one.
free_port() {
    local port hex
    for _ in $(seq 1 200); do
        port=$((20000 + (RANDOM * 32768 + RANDOM) % 30000))
        printf -v hex ':%04X ' "$port"
        if ! cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | grep -q "$hex"; then
            printf '%s\n' "$port"
            return 0
        fi
    done
    die "no free TCP port found on 127.0.0.1"
}

uuid() { cat /proc/sys/kernel/random/uuid; }

# Starts a daemon: it daemonizes and writes its pid file itself; its
# standard streams go to a file so that no caller's pipe stays open.
start_daemon() {
    local name=$1
    shift
    local rc=0
    "$@" -c "$CONF" </dev/null >>"$DIR/log/$name.stdout" 2>&1 || rc=$?
    if [ $rc -ne 0 ]; then
        log_tails
        die "$name did not start: $* (exit $rc)"
    fi
}

# ---- checks polled while starting ------------------------------------------

mon_answers() { ceph_cli mon stat >/dev/null 2>&1; }
mgr_active() { ceph_cli mgr stat -f json 2>/dev/null | grep -q '"available": *true'; }
osd_up_in() {
    local stat
    stat=$(ceph_cli osd stat -f json 2>/dev/null) || return 1
    grep -q '"num_up_osds": *1[,}]' <<<"$stat" && grep -q '"num_in_osds": *1[,}]' <<<"$stat"
}
osd_down() {
    ceph_cli osd stat -f json 2>/dev/null | grep -q '"num_up_osds": *0[,}]'
}
# Every placement group active+clean (`ceph pg stat`:
# "17 pgs: 17 active+clean; ...").
pgs_clean() {
    local stat total
    stat=$(ceph_cli pg stat 2>/dev/null) || return 1
    total=$(sed -n 's/^\([0-9]*\) pgs: .*/\1/p' <<<"$stat")
    [ -n "$total" ] && [ "$total" -gt 0 ] && grep -q "pgs: $total active+clean[;,]\{0,1\}\( \|$\)" <<<"$stat"
}
health_ok() { [ "$(ceph_cli health 2>/dev/null)" = HEALTH_OK ]; }

# ---- commands --------------------------------------------------------------

write_conf() {
    local fsid=$1 port=$2
    cat >"$CONF" <<EOF
# Written by tests/ceph/cluster.sh: a single-node test cluster.
[global]
fsid = $fsid
mon host = [v2:127.0.0.1:$port]
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind msgr1 = false
ms bind ipv6 = false
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
auth allow insecure global id reclaim = false
run dir = $DIR/run
crash dir = $DIR/crash
pid file = $DIR/run/\$name.pid
admin socket = $DIR/run/\$cluster-\$name.\$pid.asok
mon cluster log file = $DIR/log/\$cluster.\$channel.log
osd pool default size = 1
osd pool default min size = 1
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon warn on pool pg num not power of two = false
# The host's free disk space is not what the tests look at: a monitor on a
# disk with 2 % free would report MON_DISK_LOW (HEALTH_WARN) and start
# would never see HEALTH_OK. At 0 the monitor warns (MON_DISK_CRIT) and
# refuses to start only when under 1 % is free; start logs the free space
# itself (check_free_space).
mon data avail warn = 0
mon data avail crit = 0
mgr initial modules = iostat
# Faster map updates and statistics than a production cluster needs: start
# and osd-start wait on them.
paxos propose interval = 0.1
mgr tick period = 1
mgr stats period = 1
osd mon report interval = 1

[client]
keyring = $DIR/ceph.client.admin.keyring

[mon]
mon data = $DIR/mon/\$name
log file = $DIR/log/\$name.log
admin socket = $DIR/run/\$cluster-\$name.asok

[mgr]
mgr data = $DIR/mgr/\$name
keyring = $DIR/mgr/\$name/keyring
log file = $DIR/log/\$name.log
admin socket = $DIR/run/\$cluster-\$name.asok
# Modules a test cluster never uses (python that only costs memory and
# start time; some need packages Debian's ceph-mgr does not pull in).
mgr disabled modules = alerts diskprediction_local influx insights k8sevents localpool mds_autoscaler mirroring nfs osd_perf_query osd_support prometheus restful rook selftest snap_schedule stats telegraf test_orchestrator zabbix cephadm dashboard

[osd]
osd data = $DIR/osd/\$name
keyring = $DIR/osd/\$name/keyring
log file = $DIR/log/\$name.log
admin socket = $DIR/run/\$cluster-\$name.asok
osd objectstore = bluestore
bluestore block path = $DIR/osd/\$name.block
bluestore block create = true
bluestore block size = $BLOCK_SIZE
bluestore block db create = false
bluestore block wal create = false
osd memory target = 939524096
osd op num shards = 2
osd op num threads per shard = 1
EOF
}

# Something of a cluster of DIR still running: fail.
refuse_if_running() {
    local name file pid
    for name in "${DAEMONS[@]}"; do
        file=$DIR/run/$name.pid
        if pid=$(pid_of "$file"); then
            die "a cluster of $DIR is running (pid $pid from $file); stop it first: $0 stop $DIR"
        fi
    done
}

remove_created() {
    local item
    for item in "${CREATED[@]}"; do rm -rf "${DIR:?}/$item"; done
    rmdir "$DIR" 2>/dev/null || true
}

# The EXIT trap of a start: when it failed, nothing is left running.
start_failed() {
    local rc=$?
    [ $rc -ne 0 ] || return 0
    log "start failed; stopping what was started"
    stop_daemons
    remove_created
    exit $rc
}

cmd_start() {
    local watch_pid=""
    [ -n "${1:-}" ] || usage
    mkdir -p "$1"
    set_dir "$1"
    shift
    while [ $# -gt 0 ]; do
        case $1 in
        --watch-pid) watch_pid=${2:?--watch-pid needs a pid}; shift 2 ;;
        *) usage ;;
        esac
    done
    if [ -n "$watch_pid" ] && ! kill -0 "$watch_pid" 2>/dev/null; then
        die "--watch-pid $watch_pid: no such process"
    fi
    for prog in ceph-mon ceph-mgr ceph-osd ceph ceph-authtool monmaptool rbd timeout; do
        command -v "$prog" >/dev/null || die "$prog not found (Debian: apt-get install ceph-mon ceph-mgr ceph-osd ceph-common)"
    done
    refuse_if_running
    # Leftovers of a cluster that is not running any more.
    local item
    for item in "${CREATED[@]}"; do rm -rf "${DIR:?}/$item"; done
    mkdir -p "$DIR"/{run,log,crash,mon/mon.a,mgr/mgr.x,osd/osd.0}

    DEADLINE=$((SECONDS + START_TIMEOUT))
    # A failed start leaves nothing running.
    trap start_failed EXIT

    local fsid port
    fsid=$(uuid)
    port=$(free_port)
    write_conf "$fsid" "$port"
    log "cluster $fsid in $DIR, monitor on 127.0.0.1:$port (msgr2)"
    check_free_space

    # Keys: the monitor's and client.admin's.
    local keyring=$DIR/ceph.client.admin.keyring monkeys=$DIR/mon.keyring
    ceph-authtool --create-keyring "$keyring" --gen-key -n client.admin \
        --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' --cap mds 'allow *' >/dev/null
    ceph-authtool --create-keyring "$monkeys" --gen-key -n mon. --cap mon 'allow *' >/dev/null
    ceph-authtool "$monkeys" --import-keyring "$keyring" >/dev/null
    chmod 600 "$keyring" "$monkeys"

    log "monitor"
    monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$port]" "$DIR/monmap" >/dev/null
    ceph-mon -c "$CONF" --mkfs -i a --monmap "$DIR/monmap" --keyring "$monkeys" \
        </dev/null >>"$DIR/log/mon.a.stdout" 2>&1 || { log_tails; die "ceph-mon --mkfs failed"; }
    start_daemon mon.a ceph-mon -i a
    wait_for mon_answers "the monitor to answer"

    log "manager"
    ceph_cli auth get-or-create mgr.x mon 'allow profile mgr' osd 'allow *' mds 'allow *' \
        -o "$DIR/mgr/mgr.x/keyring"
    start_daemon mgr.x ceph-mgr -i x

    log "OSD (BlueStore on a sparse $((BLOCK_SIZE >> 30)) GiB file)"
    local osd_uuid osd_id
    osd_uuid=$(uuid)
    osd_id=$(ceph_cli osd new "$osd_uuid")
    [ "$osd_id" = 0 ] || die "the monitor gave the OSD id '$osd_id', expected 0"
    ceph-authtool --create-keyring "$DIR/osd/osd.0/keyring" --gen-key -n osd.0 >/dev/null
    ceph_cli auth add osd.0 osd 'allow *' mon 'allow profile osd' mgr 'allow profile osd' \
        -i "$DIR/osd/osd.0/keyring" >&2
    ceph-osd -c "$CONF" -i 0 --mkfs --osd-uuid "$osd_uuid" \
        </dev/null >>"$DIR/log/osd.0.stdout" 2>&1 || { log_tails; die "ceph-osd --mkfs failed"; }
    start_daemon osd.0 ceph-osd -i 0
    wait_for osd_up_in "the OSD to be up and in"
    wait_for mgr_active "the manager to be active"

    log "pool rbd"
    ceph_cli osd pool create rbd 8 8 >&2 || die "ceph osd pool create rbd failed"
    wait_for pgs_clean "every placement group to be active+clean"
    log "placement groups active+clean"
    rbd_cli pool init rbd || die "rbd pool init rbd failed"
    wait_for health_ok "HEALTH_OK"

    if [ -n "$watch_pid" ]; then
        # The watcher's streams go nowhere: a caller reading this script's
        # output must see its end.
        setsid bash "$0" _watch "$DIR" "$watch_pid" </dev/null >>"$DIR/log/watcher.log" 2>&1 &
        echo $! >"$(watcher_pidfile)"
        log "watching pid $watch_pid (watcher pid $!)"
    fi
    trap - EXIT
    log "ready in ${SECONDS}s"
    printf '%s\n' "$CONF"
}

# The start time of pid $1 (field 22 of /proc/PID/stat), so that a reused
# pid is not taken for the watched process.
start_time() { sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f20; }

cmd_watch() {
    set_dir "$1"
    local pid=$2 started
    started=$(start_time "$pid") || exit 0
    while [ -n "$started" ] && [ "$(start_time "$pid" || true)" = "$started" ]; do
        [ -f "$CONF" ] || exit 0
        sleep 1
    done
    log "pid $pid exited: stopping the cluster"
    rm -f "$(watcher_pidfile)"
    cmd_stop "$DIR"
}

cmd_stop() {
    if [ -n "${1:-}" ] && [ ! -d "$1" ]; then
        log "no directory $1: nothing to stop"
        return 0
    fi
    set_dir "${1:-}"
    # The watcher first, unless it is this process.
    local wpid
    if wpid=$(pid_of "$(watcher_pidfile)" 2>/dev/null) && [ "$wpid" != $$ ]; then
        kill -TERM "$wpid" 2>/dev/null || true
    fi
    stop_daemons
    remove_created
    log "stopped and removed the cluster of $DIR"
}

cmd_osd_stop() {
    set_dir "${1:-}"
    pid_of "$DIR/run/osd.0.pid" >/dev/null || die "the OSD of $DIR is not running"
    stop_pids "$DIR/run/osd.0.pid"
    DEADLINE=$((SECONDS + START_TIMEOUT))
    wait_for osd_down "the monitor to mark the OSD down"
    log "OSD stopped"
}

cmd_osd_start() {
    set_dir "${1:-}"
    [ -f "$CONF" ] || die "no cluster in $DIR (no ceph.conf)"
    if pid_of "$DIR/run/osd.0.pid" >/dev/null; then die "the OSD of $DIR is running already"; fi
    DEADLINE=$((SECONDS + START_TIMEOUT))
    start_daemon osd.0 ceph-osd -i 0
    wait_for osd_up_in "the OSD to be up and in"
    wait_for pgs_clean "every placement group to be active+clean"
    log "OSD up in ${SECONDS}s"
}

cmd_status() {
    set_dir "${1:-}"
    ceph_cli -s
}

case ${1:-} in
start) shift; cmd_start "$@" ;;
stop) [ $# -eq 2 ] || usage; cmd_stop "$2" ;;
osd-stop) [ $# -eq 2 ] || usage; cmd_osd_stop "$2" ;;
osd-start) [ $# -eq 2 ] || usage; cmd_osd_start "$2" ;;
status) [ $# -eq 2 ] || usage; cmd_status "$2" ;;
_watch) [ $# -eq 3 ] || usage; cmd_watch "$2" "$3" ;;
*) usage ;;
esac
