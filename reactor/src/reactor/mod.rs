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
//!   sleeps after `idle_polls_before_sleep` consecutive idle iterations,
//!   and no sooner than `min_spin` after the last work:
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
//!   then exits. [`ReactorHandle::join`] returns a [`ReactorExit`]: final
//!   stats, whether everything drained, and the pollers. Dropping a handle
//!   without joining stops and joins the reactor (blocking for at most about
//!   `drain_timeout`).
//! - A panicking poller takes its reactor thread down: `join` returns
//!   [`Error::Panicked`], pending requests fail with [`Error::Stopped`].
//!
//! # Files
//! - `config`: [`ReactorConfig`], [`IdlePolicy`], [`available_cores`].
//! - `spawn`: [`Reactor::spawn`], which starts the thread.
//! - `handle`: [`ReactorHandle`] and [`Stopper`], the owner's side.
//! - `context`: [`ReactorContext`], the reactor as seen by a task on it.
//! - `control`: the state a reactor shares with its handles (control queue,
//!   stop request, published stats).
//! - `engine`: the reactor thread: the loop, control messages, removal and
//!   shutdown drains, the adaptive sleep.
//! - `exit`: [`ReactorExit`] and [`RemovedPoller`], what comes back.
//!
//! Dependencies between these files point one way: `spawn` uses `engine`
//! and `handle`, which use `control`, which uses `context` and `exit`.
//! The engine reaches a task's [`ReactorContext`] through a trait the engine
//! implements, so `context` needs nothing from `engine`.
//!
//! [`Poller`]: crate::Poller
//! [`Poller::wait_fds`]: crate::Poller::wait_fds
//! [`Waker::prepare_sleep`]: crate::Waker::prepare_sleep
//! [`Waker::finish_sleep`]: crate::Waker::finish_sleep
//! [`Error::OnReactorThread`]: crate::Error::OnReactorThread
//! [`Error::Stopped`]: crate::Error::Stopped
//! [`Error::Panicked`]: crate::Error::Panicked

mod config;
mod context;
mod control;
mod engine;
mod exit;
mod handle;
mod spawn;

pub use crate::poller::PollerId;
pub use config::{available_cores, IdlePolicy, ReactorConfig, IDLE_CLOCK_EVERY};
pub use context::ReactorContext;
pub use exit::{ReactorExit, RemovedPoller};
pub use handle::{ReactorHandle, StatsReader, Stopper};
pub use spawn::Reactor;
