//! The reactor as seen by code running on its own thread: tasks posted with
//! [`ReactorHandle::run_on`](super::ReactorHandle::run_on) or
//! [`ReactorHandle::call`](super::ReactorHandle::call) get a
//! [`ReactorContext`], through which they add and remove pollers without
//! blocking (the blocking handle calls would wait on themselves).
//!
//! The context reaches the reactor's engine through [`ReactorOps`], which
//! the engine implements: the control queue names [`Task`], so this file must
//! not depend on the engine that drains that queue.

use std::fmt;

use crate::error::Error;
use crate::poller::{Poller, PollerId};
use crate::waker::Waker;

/// A task for the reactor thread.
pub(super) type Task = Box<dyn FnOnce(&mut ReactorContext<'_>) + Send>;

/// What a task on the reactor thread may do to its reactor. Implemented by
/// the reactor's engine; each method is the [`ReactorContext`] method of the
/// same name. `Send` (as the engine is) keeps [`ReactorContext`] `Send`.
pub(super) trait ReactorOps: Send {
    fn name(&self) -> &str;
    fn waker(&self) -> &Waker;
    fn add_poller(&mut self, poller: Box<dyn Poller>) -> Result<PollerId, Error>;
    fn remove_poller_now(&mut self, id: PollerId) -> Option<Box<dyn Poller>>;
    fn poller_ids(&self) -> Vec<PollerId>;
    fn request_stop(&self);
}

/// The reactor as seen by a task running on its thread
/// ([`ReactorHandle::run_on`](super::ReactorHandle::run_on),
/// [`ReactorHandle::call`](super::ReactorHandle::call)).
pub struct ReactorContext<'a> {
    engine: &'a mut dyn ReactorOps,
}

impl fmt::Debug for ReactorContext<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReactorContext")
            .field("reactor", &self.engine.name())
            .field("pollers", &self.poller_ids())
            .finish()
    }
}

// A context stays `Send`, as it was when it borrowed the engine directly.
const _: fn() = || {
    fn send<T: Send>() {}
    send::<ReactorContext<'static>>();
};

impl<'a> ReactorContext<'a> {
    /// The context for one task run by `engine`.
    pub(super) fn new(engine: &'a mut dyn ReactorOps) -> Self {
        ReactorContext { engine }
    }
}

impl ReactorContext<'_> {
    /// Reactor name.
    pub fn name(&self) -> &str {
        self.engine.name()
    }

    /// The reactor's waker.
    pub fn waker(&self) -> &Waker {
        self.engine.waker()
    }

    /// Adds a poller; it is polled from the next iteration on. See
    /// [`ReactorHandle::add_poller`](super::ReactorHandle::add_poller).
    pub fn add_poller(&mut self, poller: Box<dyn Poller>) -> Result<PollerId, Error> {
        self.engine.add_poller(poller)
    }

    /// Takes a poller off the reactor **at once, without draining it** (no
    /// `begin_shutdown`); `None` if there is no such poller or it is already
    /// being removed by
    /// [`ReactorHandle::remove_poller`](super::ReactorHandle::remove_poller).
    pub fn remove_poller_now(&mut self, id: PollerId) -> Option<Box<dyn Poller>> {
        self.engine.remove_poller_now(id)
    }

    /// Ids of the pollers on the reactor, in polling order.
    pub fn poller_ids(&self) -> Vec<PollerId> {
        self.engine.poller_ids()
    }

    /// Asks the reactor to stop (as
    /// [`ReactorHandle::stop`](super::ReactorHandle::stop)); it starts
    /// draining after this task returns.
    pub fn stop(&self) {
        self.engine.request_stop();
    }
}
