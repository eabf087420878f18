//! Starting a reactor: [`Reactor::spawn`] checks the configuration, builds
//! the engine with its first pollers, starts the thread, pins it and returns
//! the [`ReactorHandle`] once the loop runs.

use std::sync::{mpsc, Arc};
use std::thread;

use super::config::{available_cores, IdlePolicy, ReactorConfig};
use super::control::Shared;
use super::engine::Engine;
use super::handle::ReactorHandle;
use crate::clock;
use crate::error::Error;
use crate::poller::Poller;
use crate::sleep::Sleeper;
use crate::stats::ReactorState;
use crate::waker::Waker;

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
        let shared = Arc::new(Shared::new(name.clone(), core, waker));
        let mut engine = Engine::new(
            Arc::clone(&shared),
            idle,
            drain_timeout,
            sleeper,
            pollers.len(),
        );
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
            Ok(Ok(())) => Ok(ReactorHandle::new(shared, thread)),
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
