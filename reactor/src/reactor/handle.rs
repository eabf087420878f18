//! The owner's side of a running reactor: [`ReactorHandle`] adds and removes
//! pollers, runs tasks on the reactor, reads its stats, stops and joins it;
//! [`Stopper`] can only stop it and goes anywhere.
//!
//! Every request is a message on the reactor's control queue (see
//! [`control`](super::control)); the blocking ones (`add_poller`,
//! `remove_poller`, `call`, `join`) refuse to run on the reactor's own thread.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use super::context::ReactorContext;
use super::control::{Message, Shared};
use super::exit::{ReactorExit, RemovedPoller};
use crate::error::Error;
use crate::poller::{Poller, PollerId};
use crate::stats::ReactorStats;
use crate::waker::Waker;

/// Owner's handle of a running reactor.
pub struct ReactorHandle {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<ReactorExit>>,
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
    /// The handle of the reactor thread `thread`, which runs and is pinned.
    pub(super) fn new(shared: Arc<Shared>, thread: JoinHandle<ReactorExit>) -> Self {
        ReactorHandle {
            shared,
            thread: Some(thread),
        }
    }

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

    /// A cloneable, thread-safe handle that can only read the reactor's
    /// counters (e.g. for a metrics thread).
    pub fn stats_reader(&self) -> StatsReader {
        StatsReader {
            shared: Arc::clone(&self.shared),
        }
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
    pub fn join(mut self) -> Result<ReactorExit, Error> {
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
    pub fn shutdown(self) -> Result<ReactorExit, Error> {
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

/// Reads one reactor's counters; cheap to clone and send anywhere. Reading
/// costs the reactor nothing: relaxed loads of what it publishes every 64
/// iterations (and the poller registry's lock, which the reactor takes only
/// to add or remove a poller).
#[derive(Clone)]
pub struct StatsReader {
    shared: Arc<Shared>,
}

impl fmt::Debug for StatsReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StatsReader")
            .field("reactor", &self.shared.name)
            .finish()
    }
}

impl StatsReader {
    /// Same as [`ReactorHandle::stats`].
    pub fn stats(&self) -> ReactorStats {
        self.shared.stats()
    }

    /// The reactor's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The core the reactor is pinned to.
    pub fn core(&self) -> Option<usize> {
        self.shared.core
    }
}
