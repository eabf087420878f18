//! [`TcmuStats`]: the counters of one TCMU device.

use crate::frontend::device_stats;

device_stats! {
    /// Device counters, readable from any thread. Updated once per poll with
    /// relaxed batched adds.
    pub struct TcmuStats;
    /// A copy of [`TcmuStats`].
    pub struct TcmuStatsSnapshot;
    counters {
        /// CMD entries taken from the ring (including malformed ones).
        commands_received,
        /// Responses written to the ring.
        commands_completed,
        /// Bytes of data buffer (sum of iovec lengths) of received commands.
        data_bytes,
        /// Bytes of data-in reported by completed commands (`data_in_len`).
        data_in_bytes,
        /// Doorbells rung.
        doorbells,
        /// Doorbell writes that failed (retried at the next poll).
        doorbell_errors,
        /// Polls that did any work.
        polls_with_work,
        /// Commands failed because their entry was malformed (bad iovec,
        /// `cdb_off`, or a CDB longer than 16 bytes).
        malformed_commands,
        /// TMR entries seen.
        tmr_entries,
        /// `executor.abort` calls made for TMR entries.
        aborts,
        /// Entries of unknown opcode passed with UNKNOWN_OP.
        unknown_entries,
        /// PAD entries passed.
        pad_entries,
        /// Commands that arrived while the device's concurrency gate was
        /// open (see `frontend::Coalescer`): their share tells overlapping
        /// commands from a queue-depth-1 stream.
        concurrent_commands,
    }
    gauges {
        /// The completion hold in force, in microseconds (0: completions
        /// are published at once; see `frontend::Coalescer`).
        hold_us,
    }
}
