//! How to run one reactor: its name, core, idle policy and drain deadline.

use std::time::Duration;

/// Idle iterations in a row that a reactor on an expensive clock
/// ([`clock::is_cheap`] false) runs without reading it, unless a poller
/// asks for [`clock::recent`]: it reads the clock at the end of every
/// `IDLE_CLOCK_EVERY`-th, at the end of every iteration that found work,
/// and at a poller's first ask in an iteration. The `clock` module docs say
/// why an idle reactor leaves an emulated TSC alone.
///
/// [`clock::is_cheap`]: crate::clock::is_cheap
/// [`clock::recent`]: crate::clock::recent
pub const IDLE_CLOCK_EVERY: u32 = 64;

/// What a reactor does when its pollers have no work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdlePolicy {
    /// Poll forever: lowest latency, one core at 100% always.
    Busy,
    /// Poll; after `idle_polls_before_sleep` consecutive iterations without
    /// work, and no sooner than `min_spin` after the last work, sleep in
    /// epoll until a wait fd or the waker is notified, or
    /// `max_sleep` passes (the cap keeps a reactor responsive even if a
    /// producer forgot to kick it).
    Adaptive {
        /// Idle iterations in a row before sleeping.
        idle_polls_before_sleep: u32,
        /// The shortest spin after the last work before sleeping
        /// ([`IdlePolicy::DEFAULT_MIN_SPIN`] by default).
        min_spin: Duration,
        /// Longest single sleep.
        max_sleep: Duration,
    },
}

impl IdlePolicy {
    /// Default idle iterations before sleeping: 10 000. An idle pass over a
    /// few pollers costs roughly 10-100 ns, so a reactor spins for about
    /// 0.1-1 ms after its last work before it sleeps: long enough to keep
    /// spinning through the gaps of a synchronous (queue depth 1) I/O stream,
    /// where a sleep/wake cycle would add tens of microseconds per command,
    /// short enough that an idle reactor costs next to no CPU.
    pub const DEFAULT_IDLE_POLLS_BEFORE_SLEEP: u32 = 10_000;
    /// Default shortest spin after the last work before an adaptive
    /// reactor sleeps: none, the poll count alone decides. A floor (say
    /// 500 µs) keeps a reactor spinning through the gaps of a
    /// queue-depth-1 stream whatever its polls cost: an idle poll costs
    /// ten times more in an emulated guest than on the host, and a reactor
    /// that sleeps between the commands of a synchronous stream lengthens
    /// each round trip by a wake-up, which in turn keeps it sleeping. It
    /// is not the default because it did not pay where measured: in the
    /// VM test's guest (Intel host, perf-only boots) a 500 µs floor left
    /// queue-depth-1 IOPS as they were (0.53-0.56x rd_mcp against
    /// 0.53-0.64x without, three boots each) and cost queue depth 32
    /// (0.84-0.99x against 0.93-1.17x: the hold tuner kept no hold more
    /// often).
    pub const DEFAULT_MIN_SPIN: Duration = Duration::ZERO;
    /// Default longest sleep: 10 ms.
    pub const DEFAULT_MAX_SLEEP: Duration = Duration::from_millis(10);

    /// `Adaptive` with the default thresholds.
    pub const fn adaptive() -> Self {
        IdlePolicy::Adaptive {
            idle_polls_before_sleep: Self::DEFAULT_IDLE_POLLS_BEFORE_SLEEP,
            min_spin: Self::DEFAULT_MIN_SPIN,
            max_sleep: Self::DEFAULT_MAX_SLEEP,
        }
    }
}

impl Default for IdlePolicy {
    /// [`IdlePolicy::adaptive`]: a reactor does not burn a core unless asked.
    fn default() -> Self {
        Self::adaptive()
    }
}

/// How to run one reactor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReactorConfig {
    /// Thread name and stats name (Linux shows the first 15 bytes).
    pub name: String,
    /// Core to pin the thread to; `None` leaves it to the scheduler.
    pub core: Option<usize>,
    /// Busy or adaptive.
    pub idle: IdlePolicy,
    /// How long a stop (or a poller removal) waits for pollers to drain.
    pub drain_timeout: Duration,
}

impl ReactorConfig {
    /// Default drain deadline: 5 s.
    pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

    /// Unpinned, adaptive, 5 s drain deadline.
    pub fn new(name: impl Into<String>) -> Self {
        ReactorConfig {
            name: name.into(),
            core: None,
            idle: IdlePolicy::default(),
            drain_timeout: Self::DEFAULT_DRAIN_TIMEOUT,
        }
    }

    /// Pins the reactor to `core`.
    pub fn with_core(mut self, core: usize) -> Self {
        self.core = Some(core);
        self
    }

    /// Sets the idle policy.
    pub fn with_idle(mut self, idle: IdlePolicy) -> Self {
        self.idle = idle;
        self
    }

    /// Sets the drain deadline.
    pub fn with_drain_timeout(mut self, drain_timeout: Duration) -> Self {
        self.drain_timeout = drain_timeout;
        self
    }
}

/// Cores the calling thread may run on (its affinity mask), ascending. A
/// reactor can be pinned to exactly these.
pub fn available_cores() -> Vec<usize> {
    let mut cores: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|core| core.id)
        .collect();
    cores.sort_unstable();
    cores
}
