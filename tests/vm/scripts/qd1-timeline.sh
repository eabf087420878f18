# shellcheck shell=dash
# A VM_SCRIPT (tests/vm/README.md): where the time of one queue-depth-1 read
# goes, on the dataplane's RAM LUN and on rd_mcp, from an ftrace of the
# guest's kernel.
#
#   VM_SCRIPT=tests/vm/scripts/qd1-timeline.sh VM_RESULTS=/tmp/vm-qd1 tests/vm/run.sh
#
# Each side gets 2 s of fio's 4 KiB random reads at queue depth 1 (fio on
# CPU 0, the reactor on CPU 1, as in step perf) with scheduler, IPI,
# workqueue, idle, syscall events and kprobes on the target path traced.
# $R/trace-{dp,rd}.txt hold the raw traces and $R/qd1-timeline.txt the
# median time of the first occurrence of each event after fio's io_submit,
# per CPU (timeline.py). Tracing slows the guest: compare the two sides,
# not the absolute figures with step perf's.
#
# Sourced by guest.sh, whose helpers and steps it uses.

run_step modules step_modules
run_step rd_mcp_create step_rd_mcp_create
run_step serve_start step_serve_start
run_step lio_create step_lio_create

qd1_timeline() {
    T=/sys/kernel/tracing
    mountpoint -q $T || mount -t tracefs nodev $T || fail "cannot mount tracefs"
    dp=$(need_disk ram)
    rd=$(need_disk rd)
    for disk in $dp $rd; do
        FIO_EXTRA="--cpus_allowed=0" run_fio "warmup-qd1-${disk##*/}" randread-4k-qd1.fio DISK="$disk" RUNTIME=2
    done
    echo 0 >$T/tracing_on
    echo 32768 >$T/buffer_size_kb
    echo >$T/kprobe_events
    # The target's path: tcm_loop's submission, TCMU's queueing and
    # completion (or rd_mcp's execution), the SCSI and AIO completions.
    probes="tcm_loop_queuecommand target_queue_submission tcmu_queue_cmd uio_event_notify
        tcmu_irqcontrol rd_execute_rw target_complete_cmd scsi_done aio_complete"
    for p in $probes; do
        echo "p:k_$p $p" >>$T/kprobe_events || echo "no kprobe on $p"
    done
    for p in $probes; do
        [ -d "$T/events/kprobes/k_$p" ] && echo 1 >"$T/events/kprobes/k_$p/enable"
    done
    for e in sched/sched_switch sched/sched_waking sched/sched_wakeup \
        irq_vectors/reschedule_entry irq_vectors/call_function_single_entry \
        workqueue/workqueue_queue_work workqueue/workqueue_execute_start power/cpu_idle \
        syscalls/sys_enter_io_submit syscalls/sys_exit_io_submit \
        syscalls/sys_enter_io_getevents syscalls/sys_exit_io_getevents \
        syscalls/sys_enter_write syscalls/sys_exit_write; do
        echo 1 >"$T/events/$e/enable" || echo "no event $e"
    done
    for side in dp rd; do
        if [ $side = dp ]; then disk=$dp; else disk=$rd; fi
        echo >$T/trace
        echo 1 >$T/tracing_on
        FIO_EXTRA="--cpus_allowed=0" run_fio "trace-qd1-$side" randread-4k-qd1.fio DISK="$disk" RUNTIME=2
        echo 0 >$T/tracing_on
        cat $T/trace >"$R/trace-$side.txt"
    done
    host python3 "$REPO/tests/vm/scripts/timeline.py" "$R/trace-dp.txt" "$R/trace-rd.txt" >"$R/qd1-timeline.txt" ||
        fail "timeline.py failed"
    cat "$R/qd1-timeline.txt"
}
run_step qd1_timeline qd1_timeline
