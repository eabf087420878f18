//! [`TcmuDeviceConfig`]: the settings of one TCMU device.

use crate::frontend::CoalesceConfig;

/// Device settings.
#[derive(Debug, Clone)]
pub struct TcmuDeviceConfig {
    /// Poller name (statistics, logs), e.g. `tcmu:disk0`.
    pub name: String,
    /// Most ring entries walked, and most executor completions collected,
    /// per poll. Default 128.
    pub budget: usize,
    /// Use out-of-order completion when the mailbox offers it. Default true;
    /// false completes strictly in ring order.
    pub allow_out_of_order: bool,
    /// Iovecs preallocated per slot. A command with more still works (the
    /// slot's list grows once). Default 32.
    pub iovecs_per_slot: usize,
    /// Acknowledge the notification fd on the first idle poll after work (one
    /// `read` per busy-to-idle transition, then the ring is checked again).
    /// Needed under the adaptive idle policy while the reactor has no
    /// "woke up" hook that calls
    /// [`TcmuDevice::acknowledge_doorbell`](super::TcmuDevice::acknowledge_doorbell);
    /// pointless when the reactor only busy-polls. Default false.
    pub acknowledge_on_idle: bool,
    /// Doorbell coalescing: completions written to the ring are held (the
    /// tail not yet published, the doorbell not rung) by the rule of
    /// [`crate::frontend::Coalescer`], where a batch *builds by itself*
    /// when the poll found new commands while others are still executing.
    /// A poll that finds no new command, or leaves nothing executing,
    /// publishes whatever is waiting (unless a `window` is set), so a lone
    /// command never waits: the hold only applies while the initiator keeps
    /// the queue busy. The hold is measured from the first completion
    /// written after the last publication. Defaults: batch 32 (1 rings
    /// after every poll that completed something), `max_hold` 20 µs, no
    /// window.
    pub coalesce: CoalesceConfig,
    /// Record each command's latency inside the dataplane (ring walk to
    /// response) for statistics
    /// ([`TcmuDevice::latency`](super::TcmuDevice::latency)). Costs one
    /// histogram increment per command and the thread's recent time
    /// ([`reactor::clock::recent`]) at a walk that finds commands and at a
    /// poll that collects responses (no clock read at an idle poll).
    /// Default true.
    pub track_latency: bool,
}

impl Default for TcmuDeviceConfig {
    fn default() -> Self {
        Self {
            name: "tcmu".to_owned(),
            budget: 128,
            allow_out_of_order: true,
            iovecs_per_slot: 32,
            acknowledge_on_idle: false,
            coalesce: CoalesceConfig::default(),
            track_latency: true,
        }
    }
}
