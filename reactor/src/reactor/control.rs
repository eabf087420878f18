//! The state a reactor thread shares with its handles: the control queue that
//! carries tasks and removals to the thread, the stop request, the published
//! counters and the registry that lists each poller's published stats.
//!
//! Producers ([`ReactorHandle`](super::ReactorHandle), [`Stopper`](super::Stopper))
//! post under the `control` lock, set `pending` and kick the waker; the loop
//! reads `pending` with one relaxed load per iteration and takes the lock only
//! when it is set.

use std::collections::VecDeque;
use std::mem;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread::{self, ThreadId};

use crossbeam_utils::CachePadded;

use super::context::Task;
use super::exit::RemovedPoller;
use crate::error::Error;
use crate::poller::PollerId;
use crate::stats::{ReactorCell, ReactorStats, SharedPollerCell};
use crate::waker::Waker;

/// A request to the reactor thread.
pub(super) enum Message {
    /// Run a task on the reactor thread between two iterations.
    Run(Task),
    /// Drain a poller, take it off and send it back on `reply`.
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
pub(super) struct Shared {
    /// Reactor name.
    pub(super) name: String,
    /// The core it is pinned to.
    pub(super) core: Option<usize>,
    pub(super) waker: Waker,
    /// Set (under the `control` lock) when messages are queued or a stop was
    /// requested; read by the loop once per iteration.
    pub(super) pending: CachePadded<AtomicBool>,
    pub(super) stop_requested: AtomicBool,
    control: Mutex<Control>,
    /// The reactor's published counters and state.
    pub(super) stats: CachePadded<ReactorCell>,
    registry: Mutex<Vec<RegistryEntry>>,
    next_id: AtomicU64,
    /// The reactor thread, once it runs.
    pub(super) thread: OnceLock<ThreadId>,
}

/// Locks ignoring poison: every critical section here leaves the data
/// consistent, and a panicking poller must not make the handle panic too.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    /// A reactor's shared state before its thread starts: nothing queued, no
    /// stop requested, no pollers.
    pub(super) fn new(name: String, core: Option<usize>, waker: Waker) -> Self {
        Shared {
            name,
            core,
            waker,
            pending: CachePadded::new(AtomicBool::new(false)),
            stop_requested: AtomicBool::new(false),
            control: Mutex::new(Control::default()),
            stats: CachePadded::new(ReactorCell::default()),
            registry: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(0),
            thread: OnceLock::new(),
        }
    }

    /// Queues `message` for the reactor thread and wakes it; fails once the
    /// reactor is stopped.
    pub(super) fn post(&self, message: Message) -> Result<(), Error> {
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

    /// Closes the queue and asks the loop to begin its shutdown. Idempotent.
    pub(super) fn request_stop(&self) {
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
    pub(super) fn close(&self) {
        let leftovers = {
            let mut control = lock(&self.control);
            control.closed = true;
            mem::take(&mut control.queue)
        };
        drop(leftovers);
    }

    /// Takes the queued messages and clears `pending` (reactor thread).
    pub(super) fn take_messages(&self) -> VecDeque<Message> {
        let mut control = lock(&self.control);
        self.pending.store(false, Ordering::Relaxed);
        mem::take(&mut control.queue)
    }

    /// Lists a poller's published stats for readers, after those listed.
    pub(super) fn register(&self, id: PollerId, name: String, cell: Arc<SharedPollerCell>) {
        lock(&self.registry).push(RegistryEntry { id, name, cell });
    }

    /// Takes a poller's stats off the list.
    pub(super) fn unregister(&self, id: PollerId) {
        lock(&self.registry).retain(|entry| entry.id != id);
    }

    /// True when called on the reactor thread itself.
    pub(super) fn on_reactor_thread(&self) -> bool {
        self.thread.get() == Some(&thread::current().id())
    }

    /// Fails a blocking request made on the reactor thread, where it could
    /// never be answered.
    pub(super) fn refuse_on_reactor_thread(&self) -> Result<(), Error> {
        if self.on_reactor_thread() {
            Err(Error::OnReactorThread(self.name.clone()))
        } else {
            Ok(())
        }
    }

    /// A new id, never handed out before on this reactor.
    pub(super) fn next_poller_id(&self) -> PollerId {
        PollerId::from_raw(self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    /// A snapshot of the published counters, with every listed poller.
    pub(super) fn stats(&self) -> ReactorStats {
        let pollers = lock(&self.registry)
            .iter()
            .map(|entry| entry.cell.snapshot(entry.id, &entry.name))
            .collect();
        self.stats
            .snapshot(&self.name, self.core, self.waker.is_sleeping(), pollers)
    }
}
