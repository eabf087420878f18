//! [`IdleWatch`]: whether the kernel has work for any idle scst_user device
//! of a reactor thread, learnt with one `epoll_wait` per idle-polling
//! interval for all of them instead of one empty ioctl each.
//!
//! # Why
//! An idle device asks the kernel for work every `idle_poll_us` (5 µs)
//! while its reactor is awake, that is while another device on it is busy:
//! an empty SCST_USER_REPLY_AND_GET_MULTI each time. In the VM test, with
//! seven devices on one reactor and two of them at queue depth 1, each idle
//! device made about 31 000 such calls a second (155 000 in all): the
//! reactor's loop went round about every 32 µs, and every command of the
//! busy devices waited for the idle ones' calls.
//!
//! # How
//! A device's [`WakeSet`](super::wake::WakeSet) is an epoll set that
//! becomes readable when the kernel queues work for the device, once armed
//! (see its docs). The watch of a thread holds the armed sets of the
//! devices polled on it in one more epoll set (epoll sets nest, and
//! readiness is re-checked at each wait: level-triggered) and waits on it
//! without blocking at most once per interval, remembering which sets were
//! ready. A device whose set was not among them skips its ask; its answer
//! is at most one interval old, as its ask would have been. A device still
//! asks at least every [`BACKSTOP`] whatever the watch says, so a wake-up
//! the kernel never sends costs at most that.
//!
//! # Contract
//! - [`WatchEntry::may_have_work`] returns `true` ("ask") unless the watch
//!   positively saw the set not ready within the interval; any error, more
//!   ready sets than one wait reports, or a set that could not be added
//!   gives `true`.
//! - One watch per thread, created on first use; a device registers its set
//!   on the thread it is polled on, and again if it moves to another
//!   thread. A closed set leaves the watch by itself (epoll forgets a file
//!   when its last descriptor closes); tokens are never reused.

use std::cell::RefCell;
use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};

/// The longest a device goes without asking the kernel, whatever the watch
/// says (a lost wake-up costs at most this).
pub const BACKSTOP: Duration = Duration::from_millis(1);

/// Ready sets one wait reports; with more, every device asks.
const MAX_EVENTS: usize = 64;

/// Watch and entry tokens; 0 is "none".
static NEXT_TOKEN: AtomicU64 = AtomicU64::new(1);

fn next_token() -> u64 {
    NEXT_TOKEN.fetch_add(1, Ordering::Relaxed)
}

thread_local! {
    static WATCH: RefCell<Option<IdleWatch>> = const { RefCell::new(None) };
}

/// The epoll set of one thread's idle devices and what its last wait saw.
#[derive(Debug)]
pub struct IdleWatch {
    epoll: Epoll,
    /// This watch's token (entries remember where they are registered).
    id: u64,
    /// Clock ticks of the last wait; `None` before the first.
    checked_at: Option<u64>,
    /// Tokens of the sets the last wait reported ready (capacity
    /// `MAX_EVENTS`, never grown).
    ready: Vec<u64>,
    /// The last wait filled its event buffer: more sets may be ready.
    overflow: bool,
    /// Waits made (tests).
    waits: u64,
}

impl IdleWatch {
    fn new() -> Result<Self, Errno> {
        Ok(Self {
            epoll: Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?,
            id: next_token(),
            checked_at: None,
            ready: Vec::with_capacity(MAX_EVENTS),
            overflow: false,
            waits: 0,
        })
    }

    /// Waits without blocking unless the last wait is younger than
    /// `interval` ticks. Errors: every set counts as ready.
    fn refresh(&mut self, now: u64, interval: u64) {
        if self
            .checked_at
            .is_some_and(|at| now.saturating_sub(at) < interval)
        {
            return;
        }
        self.checked_at = Some(now);
        self.waits += 1;
        self.ready.clear();
        let mut events = [EpollEvent::empty(); MAX_EVENTS];
        match self.epoll.wait(&mut events, EpollTimeout::ZERO) {
            Ok(n) => {
                self.overflow = n == MAX_EVENTS;
                self.ready.extend(events[..n].iter().map(|e| e.data()));
            }
            Err(_) => self.overflow = true,
        }
    }

    fn is_ready(&self, token: u64) -> bool {
        self.overflow || self.ready.contains(&token)
    }
}

/// One device's place in the watch of the thread that polls it.
#[derive(Debug)]
pub struct WatchEntry {
    token: u64,
    /// The watch holding the set (0: none yet).
    watch: u64,
    /// Adding the set failed: always ask.
    failed: bool,
}

impl Default for WatchEntry {
    fn default() -> Self {
        Self::new()
    }
}

impl WatchEntry {
    /// An entry in no watch yet.
    pub fn new() -> Self {
        Self {
            token: next_token(),
            watch: 0,
            failed: false,
        }
    }

    /// Whether the device whose armed wake set is `set` should ask the
    /// kernel for work now (see the module docs): `false` only when this
    /// thread's watch, waited on at most `interval` ticks ago (now is
    /// `now`), did not report `set` ready.
    pub fn may_have_work(&mut self, set: BorrowedFd<'_>, now: u64, interval: u64) -> bool {
        if self.failed {
            return true;
        }
        // `try_with`: a thread past its thread-locals' destruction asks.
        WATCH
            .try_with(|cell| {
                let Ok(mut slot) = cell.try_borrow_mut() else {
                    return true;
                };
                if slot.is_none() {
                    match IdleWatch::new() {
                        Ok(w) => *slot = Some(w),
                        Err(_) => {
                            self.failed = true;
                            return true;
                        }
                    }
                }
                let Some(watch) = slot.as_mut() else {
                    return true;
                };
                if self.watch != watch.id {
                    let event = EpollEvent::new(EpollFlags::EPOLLIN, self.token);
                    match watch.epoll.add(set, event) {
                        // EEXIST: added before, on a visit to this thread.
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(_) => {
                            self.failed = true;
                            return true;
                        }
                    }
                    self.watch = watch.id;
                    // Its readiness was not part of the last wait.
                    watch.checked_at = None;
                }
                watch.refresh(now, interval);
                watch.is_ready(self.token)
            })
            .unwrap_or(true)
    }
}

/// Waits this thread's watch has made.
#[cfg(test)]
fn waits_on_this_thread() -> u64 {
    WATCH.with(|cell| cell.borrow().as_ref().map_or(0, |w| w.waits))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    use nix::sys::eventfd::{EfdFlags, EventFd};

    /// An epoll set holding one eventfd (what a `WakeSet` is, armed).
    fn set_of(ev: &EventFd) -> Epoll {
        let set = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).unwrap();
        set.add(ev.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, 0))
            .unwrap();
        set
    }

    fn eventfd() -> EventFd {
        EventFd::from_value_and_flags(0, EfdFlags::EFD_NONBLOCK).unwrap()
    }

    // Each test runs on a thread of its own: one watch each.

    #[test]
    fn an_idle_set_is_not_asked_and_a_signalled_one_is() {
        let (a, b) = (eventfd(), eventfd());
        let (set_a, set_b) = (set_of(&a), set_of(&b));
        let (mut ea, mut eb) = (WatchEntry::new(), WatchEntry::new());
        assert!(!ea.may_have_work(set_a.0.as_fd(), 100, 10));
        assert!(!eb.may_have_work(set_b.0.as_fd(), 100, 10));
        b.write(1).unwrap();
        // Within the interval: the answer of the last wait.
        assert!(!eb.may_have_work(set_b.0.as_fd(), 105, 10));
        // Past it: one wait answers both.
        let waits = waits_on_this_thread();
        assert!(!ea.may_have_work(set_a.0.as_fd(), 110, 10));
        assert!(eb.may_have_work(set_b.0.as_fd(), 110, 10));
        assert_eq!(waits_on_this_thread(), waits + 1);
        // Level-triggered: still ready at the next wait, not after a read.
        assert!(eb.may_have_work(set_b.0.as_fd(), 120, 10));
        b.read().unwrap();
        assert!(!eb.may_have_work(set_b.0.as_fd(), 130, 10));
    }

    #[test]
    fn a_set_new_to_the_watch_is_waited_for_at_once() {
        let (a, b) = (eventfd(), eventfd());
        let (set_a, set_b) = (set_of(&a), set_of(&b));
        let (mut ea, mut eb) = (WatchEntry::new(), WatchEntry::new());
        assert!(!ea.may_have_work(set_a.0.as_fd(), 100, 1000));
        b.write(1).unwrap();
        assert!(
            eb.may_have_work(set_b.0.as_fd(), 101, 1000),
            "added after the last wait: its readiness was not in it"
        );
    }

    #[test]
    fn a_set_that_cannot_be_added_is_always_asked() {
        // epoll refuses a regular file (EPERM).
        let file =
            std::fs::File::open(env!("CARGO_MANIFEST_DIR").to_owned() + "/Cargo.toml").unwrap();
        let mut e = WatchEntry::new();
        assert!(e.may_have_work(file.as_fd(), 100, 10));
        assert!(e.failed);
        let ev = eventfd();
        let set = set_of(&ev);
        assert!(
            e.may_have_work(set.0.as_fd(), 200, 10),
            "failed once: always asks"
        );
    }

    #[test]
    fn a_device_polled_on_another_thread_and_back_keeps_its_place() {
        let ev = eventfd();
        let set = set_of(&ev);
        let mut e = WatchEntry::new();
        assert!(!e.may_have_work(set.0.as_fd(), 100, 10));
        let mut e = std::thread::scope(|s| {
            s.spawn(|| {
                let mut e = e;
                assert!(!e.may_have_work(set.0.as_fd(), 100, 10));
                e
            })
            .join()
            .unwrap()
        });
        ev.write(1).unwrap();
        assert!(
            e.may_have_work(set.0.as_fd(), 200, 10),
            "back on this thread's watch, which still holds the set"
        );
        assert!(!e.failed);
    }

    #[test]
    fn more_ready_sets_than_one_wait_reports_make_every_device_ask() {
        let fds: Vec<EventFd> = (0..=MAX_EVENTS).map(|_| eventfd()).collect();
        let sets: Vec<Epoll> = fds.iter().map(set_of).collect();
        let mut entries: Vec<WatchEntry> = sets.iter().map(|_| WatchEntry::new()).collect();
        for (set, e) in sets.iter().zip(entries.iter_mut()) {
            e.may_have_work(set.0.as_fd(), 100, 1000);
        }
        let quiet = eventfd();
        let quiet_set = set_of(&quiet);
        let mut quiet_entry = WatchEntry::new();
        for ev in &fds {
            ev.write(1).unwrap();
        }
        // The quiet set is new: a wait happens now, and it overflows.
        assert!(quiet_entry.may_have_work(quiet_set.0.as_fd(), 2000, 1000));
    }
}
