//! The crate's error type.

use std::io;

use crate::poller::PollerId;
use crate::spsc::RingError;

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configured core is not one this process may run on.
    #[error("reactor {reactor}: core {core} is not available (available cores: {available:?})")]
    BadCore {
        /// Reactor name.
        reactor: String,
        /// The configured core.
        core: usize,
        /// The cores the process may run on.
        available: Vec<usize>,
    },
    /// The kernel refused to pin the reactor thread to its core.
    #[error("reactor {reactor}: cannot pin the thread to core {core}")]
    Pin {
        /// Reactor name.
        reactor: String,
        /// The configured core.
        core: usize,
    },
    /// The reactor name cannot be a thread name (it contains a NUL byte).
    #[error("reactor name {0:?} contains a NUL byte")]
    BadName(String),
    /// The OS could not start the reactor thread.
    #[error("reactor {reactor}: cannot spawn the thread: {source}")]
    Spawn {
        /// Reactor name.
        reactor: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Creating the wake eventfd failed.
    #[error("cannot create the wake eventfd: {0}")]
    Waker(#[source] io::Error),
    /// An epoll call failed (creating the instance or registering a poller's
    /// wait fd).
    #[error("epoll {op} failed: {source}")]
    Epoll {
        /// What was attempted (`create`, `add fd 7`, ...).
        op: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The reactor has stopped (or is stopping) and takes no more requests.
    #[error("reactor {0} is stopped")]
    Stopped(String),
    /// No poller with this id runs on the reactor.
    #[error("reactor {reactor}: no poller {id}")]
    UnknownPoller {
        /// Reactor name.
        reactor: String,
        /// The id asked for.
        id: PollerId,
    },
    /// A blocking request was made from the reactor's own thread, where it
    /// could never be answered. Use the `ReactorContext` instead.
    #[error("reactor {0}: blocking request from the reactor's own thread")]
    OnReactorThread(String),
    /// The reactor thread panicked (a poller panicked).
    #[error("reactor {0}: the thread panicked")]
    Panicked(String),
    /// Installing the signal handlers failed.
    #[error("cannot install signal handlers: {0}")]
    Signals(#[source] io::Error),
    /// A ring could not be created.
    #[error(transparent)]
    Ring(#[from] RingError),
}
