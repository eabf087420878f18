//! [`ScstStats`]: the counters and gauges of one SCST device.

use crate::frontend::device_stats;

device_stats! {
    /// Device counters, readable from any thread. Only the device's
    /// thread writes them, once per poll (relaxed loads and stores).
    pub struct ScstStats;
    /// A copy of [`ScstStats`]. Counters are totals since the device
    /// was created; gauges are values as of the last poll.
    pub struct ScstStatsSnapshot;
    counters {
        /// Polls that did any work.
        polls_with_work,
        /// REPLY_AND_GET_MULTI calls.
        ioctls,
        /// Calls that returned EAGAIN (nothing new; replies consumed).
        eagain,
        /// Calls that failed otherwise (replies kept and resent, except a
        /// refused one).
        ioctl_errors,
        /// Replies the kernel consumed.
        replies_sent,
        /// Replies the kernel refused (dropped, not resent).
        reply_failures,
        /// Subcommands received, all kinds.
        subcommands,
        /// ATTACH_SESS received.
        attach_sess,
        /// DETACH_SESS received.
        detach_sess,
        /// PARSE received.
        parse,
        /// PARSE answered with CHECK CONDITION.
        parse_errors,
        /// ALLOC_MEM received.
        alloc_mem,
        /// EXEC received.
        exec,
        /// ON_FREE_CMD received.
        on_free_cmd,
        /// ON_CACHED_MEM_FREE received.
        on_cached_mem_free,
        /// TASK_MGMT_RECEIVED received.
        tm_received,
        /// TASK_MGMT_DONE received.
        tm_done,
        /// EXT_COPY_REMAP received.
        ext_copy_remap,
        /// Subcommands of unknown subcode.
        unknown_subcodes,
        /// EXEC replies queued (executed or failed directly).
        commands_completed,
        /// `bufflen` of the EXECs received.
        data_bytes,
        /// `resp_data_len` of the EXEC replies.
        data_in_bytes,
        /// BUSY answers because the pool was exhausted (ALLOC_MEM with
        /// `pbuf` 0, or EXEC status BUSY).
        busy,
        /// ALLOC_MEMs larger than the pool's largest buffer given a buffer
        /// of their own (see `MAX_OVERSIZE`).
        oversize_buffers,
        /// EXECs failed because their `pbuf` was not a pool buffer.
        bad_pbufs,
        /// ON_FREE_CMD / ON_CACHED_MEM_FREE naming an address the pool did
        /// not hand out (or already free).
        bad_frees,
        /// EXECs that waited for a free slot.
        held,
        /// `executor.abort` calls for task management.
        aborts,
    }
    gauges {
        /// The reply hold in force, in microseconds (0: replies go out at
        /// once; see `frontend::Coalescer`).
        hold_us,
        /// Sessions attached.
        sessions,
        /// Subcommands received and not yet answered (executing, waiting,
        /// or with a reply not yet consumed).
        outstanding,
        /// Commands in the executor.
        executing,
        /// Bytes of pool buffers handed out (in flight or cached by the
        /// kernel).
        pool_bytes_in_use,
        /// Pool buffers handed out.
        pool_buffers_in_use,
        /// Pool allocations that failed (total).
        pool_failed_allocs,
    }
}
