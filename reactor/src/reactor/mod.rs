//! Pinned per-core event loops.
//!
//! [`Reactor::spawn`] starts one OS thread, optionally pinned to a core, that
//! runs a list of [`Poller`]s round-robin, forever:
//!
//! ```text
//! loop {
//!     if control messages are pending (one relaxed load) { handle them }
//!     for each poller { work = poller.poll(); account busy/idle }
//!     finish removals / shutdown if their pollers are drained
//!     if idle long enough (adaptive policy) { sleep in epoll }
//! }
//! ```
//!
//! # Contract
//! - A poller is polled only on its reactor's thread, never concurrently with
//!   itself, in the order the pollers were added.
//! - **Accounting** follows SPDK's `_reactor_run`, see [`crate::stats`].
//! - **Idle policy** ([`IdlePolicy`]): `Busy` polls forever. `Adaptive`
//!   sleeps after `idle_polls_before_sleep` consecutive idle iterations:
//!   [`Waker::prepare_sleep`], one more pass over all pollers, and, if that
//!   found no work and no control message is pending, `epoll_wait` on the wake
//!   eventfd plus every poller's [`Poller::wait_fds`] (edge-triggered, see
//!   below) for at most `max_sleep`; then [`Waker::finish_sleep`]. The
//!   reactor does not sleep while a shutdown or a removal is draining.
//! - **Wait fds are edge-triggered** (`EPOLLIN | EPOLLET`): every new
//!   notification on a poller's fd (an eventfd write, a UIO interrupt) wakes a
//!   sleeping reactor once, whether or not the poller reads the fd. Pollers
//!   therefore need not drain or acknowledge their fds for the reactor to
//!   sleep (with level-triggered registration an unread UIO fd would turn
//!   every sleep into a spin), but a wake-up only means "poll now": the poller
//!   finds its work by polling its own state (ring indices), as always.
//! - **Control plane**: [`ReactorHandle::add_poller`],
//!   [`ReactorHandle::remove_poller`], [`ReactorHandle::run_on`] and
//!   [`ReactorHandle::call`] post a message to a mutex-protected queue, set a
//!   `pending` flag and write the wake eventfd. The loop reads the flag with
//!   one relaxed load per iteration and takes the lock only when it is set.
//!   Blocking requests (`add_poller`, `remove_poller`, `call`) made on the
//!   reactor's own thread fail with [`Error::OnReactorThread`]; code running
//!   on the reactor uses the [`ReactorContext`] instead.
//! - **Removal drains**: `remove_poller` calls `begin_shutdown` on the
//!   poller, keeps polling it until `is_drained` (or the reactor's
//!   `drain_timeout` passes), then takes it off the reactor and hands it back
//!   in a [`RemovedPoller`] that says whether it drained.
//! - **Shutdown**: [`ReactorHandle::stop`] (idempotent, any thread) closes
//!   the control queue (later requests fail with [`Error::Stopped`]), and the
//!   reactor, at its next iteration, calls `begin_shutdown` on every poller
//!   once and polls until all report `is_drained` or `drain_timeout` passes,
//!   then exits. [`ReactorHandle::join`] returns a [`ReactorReport`]: final
//!   stats, whether everything drained, and the pollers. Dropping a handle
//!   without joining stops and joins the reactor (blocking for at most about
//!   `drain_timeout`).
//! - A panicking poller takes its reactor thread down: `join` returns
//!   [`Error::Panicked`], pending requests fail with [`Error::Stopped`].

use std::collections::VecDeque;
use std::fmt;
use std::mem;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread::{self, JoinHandle, ThreadId};
use std::time::Duration;

use crossbeam_utils::CachePadded;

use crate::clock;
use crate::error::Error;
use crate::poller::Poller;
pub use crate::poller::PollerId;
use crate::sleep::Sleeper;
use crate::stats::{
    PollerCounters, PollerStats, ReactorCell, ReactorCounters, ReactorState, ReactorStats,
    SharedPollerCell, PUBLISH_EVERY,
};
use crate::waker::Waker;

/// What a reactor does when its pollers have no work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdlePolicy {
    /// Poll forever: lowest latency, one core at 100% always.
    Busy,
    /// Poll; after `idle_polls_before_sleep` consecutive iterations without
    /// work, sleep in epoll until a wait fd or the waker is notified, or
    /// `max_sleep` passes (the cap keeps a reactor responsive even if a
    /// producer forgot to kick it).
    Adaptive {
        /// Idle iterations in a row before sleeping.
        idle_polls_before_sleep: u32,
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
    /// Default longest sleep: 10 ms.
    pub const DEFAULT_MAX_SLEEP: Duration = Duration::from_millis(10);

    /// `Adaptive` with the default thresholds.
    pub const fn adaptive() -> Self {
        IdlePolicy::Adaptive {
            idle_polls_before_sleep: Self::DEFAULT_IDLE_POLLS_BEFORE_SLEEP,
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

type Task = Box<dyn FnOnce(&mut ReactorContext<'_>) + Send>;

enum Message {
    Run(Task),
    Remove {
        id: PollerId,
        reply: mpsc::SyncSender<Result<RemovedPoller, Error>>,
    },
}

#[derive(Default)]
struct Control {
    queue: VecDeque<Message>,
    /// Set by `stop` and at exit: no more messages are accepted.
    closed: bool,
}

/// A poller's published stats, listed for readers in polling order.
struct RegistryEntry {
    id: PollerId,
    name: String,
    cell: Arc<SharedPollerCell>,
}

/// State shared between a reactor thread and its handles.
struct Shared {
    name: String,
    core: Option<usize>,
    waker: Waker,
    /// Set (under the `control` lock) when messages are queued or a stop was
    /// requested; read by the loop once per iteration.
    pending: CachePadded<AtomicBool>,
    stop_requested: AtomicBool,
    control: Mutex<Control>,
    stats: CachePadded<ReactorCell>,
    registry: Mutex<Vec<RegistryEntry>>,
    next_id: AtomicU64,
    thread: OnceLock<ThreadId>,
}

/// Locks ignoring poison: every critical section here leaves the data
/// consistent, and a panicking poller must not make the handle panic too.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn post(&self, message: Message) -> Result<(), Error> {
        {
            let mut control = lock(&self.control);
            if control.closed {
                return Err(Error::Stopped(self.name.clone()));
            }
            control.queue.push_back(message);
            self.pending.store(true, Ordering::Release);
        }
        self.waker.wake();
        Ok(())
    }

    fn request_stop(&self) {
        {
            let mut control = lock(&self.control);
            if self.stop_requested.load(Ordering::Relaxed) {
                return;
            }
            control.closed = true;
            self.stop_requested.store(true, Ordering::Release);
            self.pending.store(true, Ordering::Release);
        }
        self.waker.wake();
    }

    /// Refuses further messages and fails the queued ones (their reply
    /// channels are dropped, so blocked callers get `Error::Stopped`).
    fn close(&self) {
        let leftovers = {
            let mut control = lock(&self.control);
            control.closed = true;
            mem::take(&mut control.queue)
        };
        drop(leftovers);
    }

    fn on_reactor_thread(&self) -> bool {
        self.thread.get() == Some(&thread::current().id())
    }

    fn refuse_on_reactor_thread(&self) -> Result<(), Error> {
        if self.on_reactor_thread() {
            Err(Error::OnReactorThread(self.name.clone()))
        } else {
            Ok(())
        }
    }

    fn next_poller_id(&self) -> PollerId {
        PollerId::from_raw(self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    fn stats(&self) -> ReactorStats {
        let pollers = lock(&self.registry)
            .iter()
            .map(|entry| entry.cell.snapshot(entry.id, &entry.name))
            .collect();
        self.stats
            .snapshot(&self.name, self.core, self.waker.is_sleeping(), pollers)
    }
}

/// Namespace for [`Reactor::spawn`].
#[derive(Debug)]
pub struct Reactor(());

impl Reactor {
    /// Starts a reactor thread running `pollers`.
    ///
    /// Returns once the thread runs and is pinned. Errors: a core outside
    /// [`available_cores`] or one the kernel refuses, a name with a NUL byte,
    /// eventfd/epoll creation, a poller wait fd that epoll rejects, thread
    /// creation. On error the pollers are dropped.
    pub fn spawn(
        config: ReactorConfig,
        pollers: Vec<Box<dyn Poller>>,
    ) -> Result<ReactorHandle, Error> {
        let ReactorConfig {
            name,
            core,
            idle,
            drain_timeout,
        } = config;
        if name.contains('\0') {
            return Err(Error::BadName(name));
        }
        if let Some(core) = core {
            let available = available_cores();
            if !available.contains(&core) {
                return Err(Error::BadCore {
                    reactor: name,
                    core,
                    available,
                });
            }
        }
        // Calibrate here rather than on the reactor thread.
        clock::init();
        let waker = Waker::new().map_err(Error::Waker)?;
        let sleeper = match idle {
            IdlePolicy::Busy => None,
            IdlePolicy::Adaptive { .. } => Some(Sleeper::new(waker.fd())?),
        };
        let shared = Arc::new(Shared {
            name: name.clone(),
            core,
            waker,
            pending: CachePadded::new(AtomicBool::new(false)),
            stop_requested: AtomicBool::new(false),
            control: Mutex::new(Control::default()),
            stats: CachePadded::new(ReactorCell::default()),
            registry: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(0),
            thread: OnceLock::new(),
        });
        let mut engine = Engine {
            shared: Arc::clone(&shared),
            idle,
            drain_timeout,
            sleeper,
            slots: Vec::with_capacity(pollers.len()),
            counters: ReactorCounters::default(),
            idle_run: 0,
            removing: 0,
            shutdown_deadline: None,
            iteration_start: 0,
        };
        for poller in pollers {
            engine.add(poller)?;
        }

        let (init_tx, init_rx) = mpsc::sync_channel::<Result<(), Error>>(1);
        let thread_shared = Arc::clone(&shared);
        let thread = thread::Builder::new()
            .name(name.clone())
            .spawn(move || {
                let _guard = ExitGuard(Arc::clone(&thread_shared));
                let _ = thread_shared.thread.set(thread::current().id());
                if let Some(core) = core {
                    if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
                        let _ = init_tx.send(Err(Error::Pin {
                            reactor: thread_shared.name.clone(),
                            core,
                        }));
                        return engine.exit(false);
                    }
                }
                let _ = init_tx.send(Ok(()));
                drop(init_tx);
                engine.run()
            })
            .map_err(|source| Error::Spawn {
                reactor: name.clone(),
                source,
            })?;
        match init_rx.recv() {
            Ok(Ok(())) => Ok(ReactorHandle {
                shared,
                thread: Some(thread),
            }),
            Ok(Err(error)) => {
                let _ = thread.join();
                Err(error)
            }
            Err(mpsc::RecvError) => {
                let _ = thread.join();
                Err(Error::Panicked(name))
            }
        }
    }
}

/// Closes the control queue and marks the reactor stopped when its thread
/// ends, also by a panic.
struct ExitGuard(Arc<Shared>);

impl Drop for ExitGuard {
    fn drop(&mut self) {
        self.0.close();
        self.0.stats.set_state(ReactorState::Stopped);
    }
}

/// Owner's handle of a running reactor.
pub struct ReactorHandle {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<ReactorReport>>,
}

impl fmt::Debug for ReactorHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReactorHandle")
            .field("name", &self.shared.name)
            .field("core", &self.shared.core)
            .field("state", &self.shared.stats.state())
            .finish()
    }
}

impl ReactorHandle {
    /// Reactor name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The core the reactor is pinned to.
    pub fn core(&self) -> Option<usize> {
        self.shared.core
    }

    /// The reactor's waker: producers on other threads call
    /// [`Waker::kick`] after publishing work for one of its pollers.
    pub fn waker(&self) -> &Waker {
        &self.shared.waker
    }

    /// A cloneable, thread-safe handle that can only stop the reactor.
    pub fn stopper(&self) -> Stopper {
        Stopper {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Asks the reactor to drain its pollers and exit. Idempotent; returns at
    /// once (use [`join`](Self::join) to wait).
    pub fn stop(&self) {
        self.shared.request_stop();
    }

    /// True once the reactor thread has ended.
    pub fn is_finished(&self) -> bool {
        match &self.thread {
            Some(thread) => thread.is_finished(),
            None => true,
        }
    }

    /// A snapshot of the reactor's and its pollers' counters (see
    /// [`crate::stats`] for how fresh it is).
    pub fn stats(&self) -> ReactorStats {
        self.shared.stats()
    }

    /// Adds a poller; returns once the reactor polls it. Its wait fds are
    /// registered first (under the adaptive policy); if epoll rejects one,
    /// the poller is dropped and the error returned. A poller added while
    /// the reactor drains gets `begin_shutdown` at once.
    pub fn add_poller(&self, poller: Box<dyn Poller>) -> Result<PollerId, Error> {
        self.call(move |ctx| ctx.add_poller(poller))?
    }

    /// Removes a poller after draining it: the reactor calls
    /// `begin_shutdown`, polls it until `is_drained` or its `drain_timeout`
    /// passes, takes it off and hands it back. Blocks until then.
    pub fn remove_poller(&self, id: PollerId) -> Result<RemovedPoller, Error> {
        self.shared.refuse_on_reactor_thread()?;
        let (reply, answer) = mpsc::sync_channel(1);
        self.shared.post(Message::Remove { id, reply })?;
        answer
            .recv()
            .map_err(|_| Error::Stopped(self.shared.name.clone()))?
    }

    /// Runs `task` on the reactor thread between two iterations; returns at
    /// once. Fails only if the reactor is stopped.
    pub fn run_on(
        &self,
        task: impl FnOnce(&mut ReactorContext<'_>) + Send + 'static,
    ) -> Result<(), Error> {
        self.shared.post(Message::Run(Box::new(task)))
    }

    /// Runs `task` on the reactor thread and returns its result.
    pub fn call<R: Send + 'static>(
        &self,
        task: impl FnOnce(&mut ReactorContext<'_>) -> R + Send + 'static,
    ) -> Result<R, Error> {
        self.shared.refuse_on_reactor_thread()?;
        let (reply, answer) = mpsc::sync_channel(1);
        self.run_on(move |ctx| {
            let _ = reply.send(task(ctx));
        })?;
        answer
            .recv()
            .map_err(|_| Error::Stopped(self.shared.name.clone()))
    }

    /// Waits for the reactor thread to exit (it exits only after a stop:
    /// [`stop`](Self::stop), a [`Stopper`], or `ReactorContext::stop`).
    pub fn join(mut self) -> Result<ReactorReport, Error> {
        self.shared.refuse_on_reactor_thread()?;
        let Some(thread) = self.thread.take() else {
            // Unreachable: only `join` and `drop` take the thread, and both
            // consume the handle.
            return Err(Error::Stopped(self.shared.name.clone()));
        };
        thread
            .join()
            .map_err(|_| Error::Panicked(self.shared.name.clone()))
    }

    /// [`stop`](Self::stop) then [`join`](Self::join).
    pub fn shutdown(self) -> Result<ReactorReport, Error> {
        self.stop();
        self.join()
    }
}

impl Drop for ReactorHandle {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            self.shared.request_stop();
            if !self.shared.on_reactor_thread() {
                let _ = thread.join();
            }
        }
    }
}

/// Stops one reactor; cheap to clone and send anywhere.
#[derive(Clone)]
pub struct Stopper {
    shared: Arc<Shared>,
}

impl fmt::Debug for Stopper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stopper")
            .field("reactor", &self.shared.name)
            .finish()
    }
}

impl Stopper {
    /// Same as [`ReactorHandle::stop`].
    pub fn stop(&self) {
        self.shared.request_stop();
    }

    /// The reactor's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// True once a stop was requested.
    pub fn is_stop_requested(&self) -> bool {
        self.shared.stop_requested.load(Ordering::Acquire)
    }
}

/// What [`ReactorHandle::join`] returns.
pub struct ReactorReport {
    /// Final, exact counters, with every poller still on the reactor.
    pub stats: ReactorStats,
    /// True if every poller reported `is_drained` before the deadline.
    pub drained: bool,
    /// The pollers still on the reactor at exit, in polling order.
    pub pollers: Vec<(PollerId, Box<dyn Poller>)>,
}

impl fmt::Debug for ReactorReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReactorReport")
            .field("stats", &self.stats)
            .field("drained", &self.drained)
            .field(
                "pollers",
                &self
                    .pollers
                    .iter()
                    .map(|(id, p)| (id, p.name()))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// A poller taken off its reactor by [`ReactorHandle::remove_poller`].
pub struct RemovedPoller {
    /// Its id on the reactor.
    pub id: PollerId,
    /// The poller; `begin_shutdown` has been called on it.
    pub poller: Box<dyn Poller>,
    /// True if it reported `is_drained` before the deadline.
    pub drained: bool,
    /// Its final, exact counters.
    pub stats: PollerStats,
}

impl fmt::Debug for RemovedPoller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemovedPoller")
            .field("id", &self.id)
            .field("poller", &self.poller.name())
            .field("drained", &self.drained)
            .field("stats", &self.stats)
            .finish()
    }
}

/// The reactor as seen by a task running on its thread
/// ([`ReactorHandle::run_on`], [`ReactorHandle::call`]).
pub struct ReactorContext<'a> {
    engine: &'a mut Engine,
}

impl fmt::Debug for ReactorContext<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReactorContext")
            .field("reactor", &self.engine.shared.name)
            .field("pollers", &self.poller_ids())
            .finish()
    }
}

impl ReactorContext<'_> {
    /// Reactor name.
    pub fn name(&self) -> &str {
        &self.engine.shared.name
    }

    /// The reactor's waker.
    pub fn waker(&self) -> &Waker {
        &self.engine.shared.waker
    }

    /// Adds a poller; it is polled from the next iteration on. See
    /// [`ReactorHandle::add_poller`].
    pub fn add_poller(&mut self, poller: Box<dyn Poller>) -> Result<PollerId, Error> {
        self.engine.add(poller)
    }

    /// Takes a poller off the reactor **at once, without draining it** (no
    /// `begin_shutdown`); `None` if there is no such poller or it is already
    /// being removed by [`ReactorHandle::remove_poller`].
    pub fn remove_poller_now(&mut self, id: PollerId) -> Option<Box<dyn Poller>> {
        let index = self
            .engine
            .slots
            .iter()
            .position(|slot| slot.id == id && slot.removal.is_none())?;
        Some(self.engine.take(index).poller)
    }

    /// Ids of the pollers on the reactor, in polling order.
    pub fn poller_ids(&self) -> Vec<PollerId> {
        self.engine.slots.iter().map(|slot| slot.id).collect()
    }

    /// Asks the reactor to stop (as [`ReactorHandle::stop`]); it starts
    /// draining after this task returns.
    pub fn stop(&self) {
        self.engine.shared.request_stop();
    }
}

/// A poller being removed: who waits for it and until when.
struct Removal {
    reply: mpsc::SyncSender<Result<RemovedPoller, Error>>,
    deadline: u64,
}

struct Slot {
    id: PollerId,
    poller: Box<dyn Poller>,
    /// Wait fds registered for it (empty under the busy policy).
    fds: Vec<RawFd>,
    counters: PollerCounters,
    cell: Arc<SharedPollerCell>,
    removal: Option<Removal>,
}

/// The reactor thread's state.
struct Engine {
    shared: Arc<Shared>,
    idle: IdlePolicy,
    drain_timeout: Duration,
    /// The epoll set (adaptive policy only).
    sleeper: Option<Sleeper>,
    slots: Vec<Slot>,
    counters: ReactorCounters,
    /// Idle iterations in a row.
    idle_run: u32,
    /// Slots with a removal in progress.
    removing: usize,
    /// Tick deadline of the shutdown drain, once a stop was seen.
    shutdown_deadline: Option<u64>,
    /// Tick at which the current iteration began (the end of the previous
    /// iteration or sleep).
    iteration_start: u64,
}

impl Engine {
    fn drain_deadline(&self) -> u64 {
        let ns = u64::try_from(self.drain_timeout.as_nanos()).unwrap_or(u64::MAX);
        clock::now().saturating_add(clock::ns_to_ticks(ns))
    }

    fn add(&mut self, mut poller: Box<dyn Poller>) -> Result<PollerId, Error> {
        let fds = match &mut self.sleeper {
            Some(sleeper) => {
                let fds = poller.wait_fds();
                sleeper.register(&fds)?;
                fds
            }
            None => Vec::new(),
        };
        if self.shutdown_deadline.is_some() {
            poller.begin_shutdown();
        }
        let id = self.shared.next_poller_id();
        let cell = Arc::new(SharedPollerCell::default());
        lock(&self.shared.registry).push(RegistryEntry {
            id,
            name: poller.name().to_owned(),
            cell: Arc::clone(&cell),
        });
        self.slots.push(Slot {
            id,
            poller,
            fds,
            counters: PollerCounters::default(),
            cell,
            removal: None,
        });
        Ok(id)
    }

    /// Takes slot `index` off the reactor (fds, registry, list).
    fn take(&mut self, index: usize) -> Slot {
        let slot = self.slots.remove(index);
        if let Some(sleeper) = &mut self.sleeper {
            sleeper.unregister(&slot.fds);
        }
        lock(&self.shared.registry).retain(|entry| entry.id != slot.id);
        if slot.removal.is_some() {
            self.removing -= 1;
        }
        slot
    }

    fn run(mut self) -> ReactorReport {
        self.shared.stats.set_state(ReactorState::Running);
        self.iteration_start = clock::now();
        loop {
            let polls_from = if self.shared.pending.load(Ordering::Relaxed) {
                self.control();
                clock::now()
            } else {
                self.iteration_start
            };
            let work = self.iterate(polls_from);
            if self.removing > 0 {
                self.finish_removals();
            }
            if let Some(deadline) = self.shutdown_deadline {
                if self.slots.iter().all(|slot| slot.poller.is_drained()) {
                    return self.exit(true);
                }
                if self.iteration_start >= deadline {
                    return self.exit(false);
                }
            }
            if work == 0 {
                self.maybe_sleep();
            }
        }
    }

    /// One pass over all pollers starting at tick `polls_from`; returns the
    /// work done.
    #[inline]
    fn iterate(&mut self, polls_from: u64) -> u64 {
        let mut last = polls_from;
        let mut work = 0;
        for slot in &mut self.slots {
            let done = slot.poller.poll() as u64;
            let now = clock::now();
            let ticks = now.saturating_sub(last);
            last = now;
            let counters = &mut slot.counters;
            counters.polls += 1;
            if done > 0 {
                counters.busy_ticks += ticks;
                counters.busy_polls += 1;
                counters.work += done;
                work += done;
            } else {
                counters.idle_ticks += ticks;
            }
        }
        if self.slots.is_empty() {
            last = clock::now();
        }
        let ticks = last.saturating_sub(self.iteration_start);
        self.iteration_start = last;
        let counters = &mut self.counters;
        counters.iterations += 1;
        counters.polls += self.slots.len() as u64;
        counters.work += work;
        if work > 0 {
            counters.busy_ticks += ticks;
            counters.busy_iterations += 1;
            self.idle_run = 0;
        } else {
            counters.idle_ticks += ticks;
            self.idle_run = self.idle_run.saturating_add(1);
        }
        if counters.iterations & (PUBLISH_EVERY - 1) == 0 {
            self.publish();
        }
        work
    }

    fn publish(&self) {
        self.counters.publish(&self.shared.stats);
        for slot in &self.slots {
            slot.counters.publish(&slot.cell);
        }
    }

    /// Handles queued control messages and a stop request.
    fn control(&mut self) {
        let messages = {
            let mut control = lock(&self.shared.control);
            self.shared.pending.store(false, Ordering::Relaxed);
            mem::take(&mut control.queue)
        };
        for message in messages {
            match message {
                Message::Run(task) => task(&mut ReactorContext { engine: self }),
                Message::Remove { id, reply } => self.begin_removal(id, reply),
            }
        }
        if self.shutdown_deadline.is_none() && self.shared.stop_requested.load(Ordering::Acquire) {
            self.begin_shutdown();
        }
        self.publish();
    }

    fn begin_removal(
        &mut self,
        id: PollerId,
        reply: mpsc::SyncSender<Result<RemovedPoller, Error>>,
    ) {
        let deadline = self.drain_deadline();
        let shutting_down = self.shutdown_deadline.is_some();
        let Some(slot) = self
            .slots
            .iter_mut()
            .find(|slot| slot.id == id && slot.removal.is_none())
        else {
            let _ = reply.send(Err(Error::UnknownPoller {
                reactor: self.shared.name.clone(),
                id,
            }));
            return;
        };
        // During a shutdown the poller already had its begin_shutdown.
        if !shutting_down {
            slot.poller.begin_shutdown();
        }
        slot.removal = Some(Removal { reply, deadline });
        self.removing += 1;
    }

    /// Hands back the pollers being removed that drained or ran out of time.
    fn finish_removals(&mut self) {
        let now = self.iteration_start;
        let mut index = 0;
        while index < self.slots.len() {
            let slot = &self.slots[index];
            let done = match &slot.removal {
                Some(removal) => slot.poller.is_drained() || now >= removal.deadline,
                None => false,
            };
            if done {
                let slot = self.take(index);
                Self::hand_back(slot);
            } else {
                index += 1;
            }
        }
    }

    fn hand_back(slot: Slot) {
        let Some(removal) = slot.removal else {
            return;
        };
        let removed = RemovedPoller {
            id: slot.id,
            stats: slot.counters.snapshot(slot.id, slot.poller.name()),
            drained: slot.poller.is_drained(),
            poller: slot.poller,
        };
        // If the caller is gone, the poller is dropped here.
        let _ = removal.reply.send(Ok(removed));
    }

    fn begin_shutdown(&mut self) {
        for slot in &mut self.slots {
            if slot.removal.is_none() {
                slot.poller.begin_shutdown();
            }
        }
        self.shutdown_deadline = Some(self.drain_deadline());
        self.shared.stats.set_state(ReactorState::Draining);
    }

    /// Sleeps if the adaptive policy says so (see the module docs).
    fn maybe_sleep(&mut self) {
        let IdlePolicy::Adaptive {
            idle_polls_before_sleep,
            max_sleep,
        } = self.idle
        else {
            return;
        };
        if self.idle_run < idle_polls_before_sleep
            || self.removing > 0
            || self.shutdown_deadline.is_some()
        {
            return;
        }
        let waker = self.shared.waker.clone();
        waker.prepare_sleep();
        self.publish();
        // Work published before our flag became visible to its producer is
        // found by this pass; work published after it comes with a kick.
        let work = self.iterate(self.iteration_start);
        if work > 0 || self.shared.pending.load(Ordering::Relaxed) {
            waker.finish_sleep();
            return;
        }
        let Some(sleeper) = &mut self.sleeper else {
            waker.finish_sleep();
            return;
        };
        // Counted (and published) as it begins, so that a reader sees
        // `sleeping` together with a `sleeps` that includes this one.
        self.counters.sleeps += 1;
        self.counters.publish(&self.shared.stats);
        let before = clock::now();
        let by_event = sleeper.wait(max_sleep);
        let after = clock::now();
        waker.finish_sleep();
        self.counters.sleep_ticks += after.saturating_sub(before);
        if by_event {
            self.counters.event_wakeups += 1;
        }
        self.iteration_start = after;
        self.publish();
    }

    /// Final accounting; hands back removals, returns the rest.
    fn exit(mut self, drained: bool) -> ReactorReport {
        self.publish();
        self.shared.close();
        let mut pollers = Vec::with_capacity(self.slots.len());
        let mut poller_stats = Vec::with_capacity(self.slots.len());
        while !self.slots.is_empty() {
            let slot = self.take(0);
            if slot.removal.is_some() {
                Self::hand_back(slot);
            } else {
                poller_stats.push(slot.counters.snapshot(slot.id, slot.poller.name()));
                pollers.push((slot.id, slot.poller));
            }
        }
        let mut stats = self.shared.stats();
        stats.pollers = poller_stats;
        stats.state = ReactorState::Stopped;
        stats.sleeping = false;
        self.shared.stats.set_state(ReactorState::Stopped);
        ReactorReport {
            stats,
            drained,
            pollers,
        }
    }
}
