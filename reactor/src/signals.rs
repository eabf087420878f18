//! SIGINT and SIGTERM stop the reactors.
//!
//! [`ShutdownSignals::install`] registers handlers for SIGINT and SIGTERM
//! through `signal-hook`: the handler itself only writes a byte to a
//! self-pipe (async-signal-safe); a background thread reads it and then does
//! the real work: it calls [`Stopper::stop`] on every registered reactor and
//! wakes everyone blocked in [`ShutdownSignals::wait`]. The binary typically
//! installs it right after spawning its reactors, waits (printing a progress
//! line every second with `wait_timeout`), then joins the reactors.
//!
//! A **second** SIGINT or SIGTERM after the shutdown began terminates the
//! process at once (`_exit(128 + signal)`, from the handler, which is
//! async-signal-safe), so a drain that hangs can still be interrupted.
//!
//! Dropping the `ShutdownSignals` unregisters everything and ends the thread;
//! the signals then get their default action again unless other handlers are
//! registered.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::{Handle, Signals};
use signal_hook::SigId;

use crate::error::Error;
use crate::reactor::{ReactorHandle, Stopper};

/// The signals that stop the reactors.
pub const SHUTDOWN_SIGNALS: [i32; 2] = [SIGINT, SIGTERM];

/// Why the shutdown began.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownCause {
    /// This signal arrived (`SIGINT`, `SIGTERM`).
    Signal(i32),
    /// [`ShutdownSignals::trigger`] was called.
    Requested,
}

#[derive(Debug, Default)]
struct State {
    stoppers: Mutex<Vec<Stopper>>,
    cause: Mutex<Option<ShutdownCause>>,
    triggered: Condvar,
    /// Makes the next signal terminate the process (read by the handler).
    armed: Arc<AtomicBool>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl State {
    fn trigger(&self, cause: ShutdownCause) {
        {
            let mut current = lock(&self.cause);
            if current.is_none() {
                *current = Some(cause);
            }
        }
        self.armed.store(true, Ordering::SeqCst);
        for stopper in lock(&self.stoppers).iter() {
            stopper.stop();
        }
        self.triggered.notify_all();
    }
}

/// Stops registered reactors on SIGINT/SIGTERM; see the module docs.
#[derive(Debug)]
pub struct ShutdownSignals {
    state: Arc<State>,
    handle: Handle,
    thread: Option<JoinHandle<()>>,
    escalation: Vec<SigId>,
}

impl ShutdownSignals {
    /// Installs the handlers and registers `reactors`.
    pub fn install(reactors: &[&ReactorHandle]) -> Result<Self, Error> {
        Self::install_stoppers(reactors.iter().map(|reactor| reactor.stopper()))
    }

    /// Installs the handlers and registers these stoppers.
    pub fn install_stoppers(stoppers: impl IntoIterator<Item = Stopper>) -> Result<Self, Error> {
        let state = Arc::new(State {
            stoppers: Mutex::new(stoppers.into_iter().collect()),
            ..State::default()
        });
        let mut escalation = Vec::with_capacity(SHUTDOWN_SIGNALS.len());
        for signal in SHUTDOWN_SIGNALS {
            match signal_hook::flag::register_conditional_shutdown(
                signal,
                128 + signal,
                Arc::clone(&state.armed),
            ) {
                Ok(id) => escalation.push(id),
                Err(error) => {
                    unregister(&escalation);
                    return Err(Error::Signals(error));
                }
            }
        }
        let mut signals = match Signals::new(SHUTDOWN_SIGNALS) {
            Ok(signals) => signals,
            Err(error) => {
                unregister(&escalation);
                return Err(Error::Signals(error));
            }
        };
        let handle = signals.handle();
        let thread_state = Arc::clone(&state);
        let thread = thread::Builder::new()
            .name("shutdown-signals".into())
            .spawn(move || {
                for signal in signals.forever() {
                    thread_state.trigger(ShutdownCause::Signal(signal));
                }
            });
        let thread = match thread {
            Ok(thread) => thread,
            Err(error) => {
                handle.close();
                unregister(&escalation);
                return Err(Error::Signals(error));
            }
        };
        Ok(ShutdownSignals {
            state,
            handle,
            thread: Some(thread),
            escalation,
        })
    }

    /// Registers one more reactor; stops it at once if the shutdown already
    /// began.
    pub fn add(&self, reactor: &ReactorHandle) {
        self.add_stopper(reactor.stopper());
    }

    /// Registers one more stopper; stops it at once if the shutdown already
    /// began.
    pub fn add_stopper(&self, stopper: Stopper) {
        let mut stoppers = lock(&self.state.stoppers);
        if self.is_triggered() {
            stopper.stop();
        }
        stoppers.push(stopper);
    }

    /// Begins the shutdown as if a signal had arrived.
    pub fn trigger(&self) {
        self.state.trigger(ShutdownCause::Requested);
    }

    /// True once a signal arrived or [`trigger`](Self::trigger) was called.
    pub fn is_triggered(&self) -> bool {
        self.cause().is_some()
    }

    /// What began the shutdown, if it began.
    pub fn cause(&self) -> Option<ShutdownCause> {
        *lock(&self.state.cause)
    }

    /// Blocks until the shutdown begins.
    pub fn wait(&self) -> ShutdownCause {
        let mut cause = lock(&self.state.cause);
        loop {
            if let Some(cause) = *cause {
                return cause;
            }
            cause = self
                .state
                .triggered
                .wait(cause)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Blocks until the shutdown begins or `timeout` passes; `None` on
    /// timeout.
    pub fn wait_timeout(&self, timeout: Duration) -> Option<ShutdownCause> {
        let deadline = Instant::now() + timeout;
        let mut cause = lock(&self.state.cause);
        loop {
            if let Some(cause) = *cause {
                return Some(cause);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            cause = self
                .state
                .triggered
                .wait_timeout(cause, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

fn unregister(ids: &[SigId]) {
    for &id in ids {
        signal_hook::low_level::unregister(id);
    }
}

impl Drop for ShutdownSignals {
    fn drop(&mut self) {
        self.handle.close();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        unregister(&self.escalation);
    }
}
