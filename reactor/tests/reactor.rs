//! Behaviour of `Reactor`: accounting, adaptive sleep and wake-up, runtime
//! control, shutdown and pinning. Waits use a generous deadline only as a
//! failure guard; nothing here asserts speed.

use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::eventfd::{EfdFlags, EventFd};
use reactor::spsc::{self, Consumer};
use reactor::{
    available_cores, Error, IdlePolicy, Poller, PollerId, Reactor, ReactorConfig, ReactorState,
};

/// Failure guard for waits: long enough never to trip on a loaded machine.
const GUARD: Duration = Duration::from_secs(20);

fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + GUARD;
    while !condition() {
        assert!(Instant::now() < deadline, "gave up waiting for: {what}");
        thread::sleep(Duration::from_millis(1));
    }
}

/// What a [`Scripted`] poller saw, readable from the test thread.
#[derive(Debug, Default)]
struct Probe {
    polls: AtomicU64,
    busy_polls: AtomicU64,
    work: AtomicU64,
    shutdown_calls: AtomicU64,
    polls_after_shutdown: AtomicU64,
    dropped: AtomicBool,
}

/// A poller whose `poll` returns `pattern(call_index)` and that reports
/// drained `drain_polls` polls after `begin_shutdown` (never if `u64::MAX`).
struct Scripted {
    name: String,
    probe: Arc<Probe>,
    pattern: Box<dyn FnMut(u64) -> usize + Send>,
    calls: u64,
    drain_polls: u64,
    shutting_down: bool,
    after_shutdown: u64,
}

impl Scripted {
    fn new(name: &str, pattern: impl FnMut(u64) -> usize + Send + 'static) -> (Self, Arc<Probe>) {
        let probe = Arc::new(Probe::default());
        let poller = Scripted {
            name: name.to_owned(),
            probe: Arc::clone(&probe),
            pattern: Box::new(pattern),
            calls: 0,
            drain_polls: 0,
            shutting_down: false,
            after_shutdown: 0,
        };
        (poller, probe)
    }

    fn draining_for(mut self, polls: u64) -> Self {
        self.drain_polls = polls;
        self
    }
}

impl Poller for Scripted {
    fn name(&self) -> &str {
        &self.name
    }

    fn poll(&mut self) -> usize {
        let done = (self.pattern)(self.calls);
        self.calls += 1;
        if self.shutting_down {
            self.after_shutdown += 1;
            self.probe
                .polls_after_shutdown
                .store(self.after_shutdown, Ordering::Relaxed);
        }
        self.probe.polls.store(self.calls, Ordering::Relaxed);
        if done > 0 {
            self.probe.busy_polls.fetch_add(1, Ordering::Relaxed);
            self.probe.work.fetch_add(done as u64, Ordering::Relaxed);
        }
        done
    }

    fn begin_shutdown(&mut self) {
        self.shutting_down = true;
        self.probe.shutdown_calls.fetch_add(1, Ordering::Relaxed);
    }

    fn is_drained(&self) -> bool {
        self.after_shutdown >= self.drain_polls
    }
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.probe.dropped.store(true, Ordering::Relaxed);
    }
}

fn busy(name: &str) -> ReactorConfig {
    ReactorConfig::new(name).with_idle(IdlePolicy::Busy)
}

/// An adaptive reactor that sleeps soon and for long: a test that needs a
/// wake-up would time out (the guard) if the wake-up were lost.
fn sleepy(name: &str) -> ReactorConfig {
    ReactorConfig::new(name).with_idle(IdlePolicy::Adaptive {
        idle_polls_before_sleep: 50,
        min_spin: Duration::ZERO,
        max_sleep: Duration::from_secs(600),
    })
}

#[test]
fn work_counts_add_up() {
    // Poller A works on every third poll (2 items), B on every fifth (1
    // item); both are polled once per iteration.
    let (a, probe_a) = Scripted::new("a", |i| if i % 3 == 0 { 2 } else { 0 });
    let (b, probe_b) = Scripted::new("b", |i| usize::from(i % 5 == 0));
    let handle = Reactor::spawn(busy("counts"), vec![Box::new(a), Box::new(b)]).unwrap();
    wait_until("10 000 polls", || {
        probe_b.polls.load(Ordering::Relaxed) >= 10_000
    });
    let report = handle.shutdown().unwrap();
    assert!(report.drained);
    let stats = &report.stats;
    assert_eq!(stats.state, ReactorState::Stopped);
    assert_eq!(stats.pollers.len(), 2);
    let (sa, sb) = (&stats.pollers[0], &stats.pollers[1]);
    assert_eq!((sa.name.as_str(), sb.name.as_str()), ("a", "b"));

    let iterations = stats.iterations;
    assert_eq!(sa.polls, iterations);
    assert_eq!(sb.polls, iterations);
    assert_eq!(sa.polls, probe_a.polls.load(Ordering::Relaxed));
    assert_eq!(sb.polls, probe_b.polls.load(Ordering::Relaxed));
    assert_eq!(sa.busy_polls, iterations.div_ceil(3));
    assert_eq!(sa.work, 2 * iterations.div_ceil(3));
    assert_eq!(sb.busy_polls, iterations.div_ceil(5));
    assert_eq!(sb.work, iterations.div_ceil(5));
    assert_eq!(stats.polls, 2 * iterations);
    assert_eq!(stats.work, sa.work + sb.work);
    // An iteration is busy when either poller worked: i % 3 == 0 || i % 5 == 0.
    let busy_iterations = (0..iterations).filter(|i| i % 3 == 0 || i % 5 == 0).count() as u64;
    assert_eq!(stats.busy_iterations, busy_iterations);
    assert!(stats.busy_ns > 0 && stats.idle_ns > 0);
    // The busy policy never sleeps.
    assert_eq!((stats.sleeps, stats.sleep_ns), (0, 0));
    // Both pollers come back in order; `shutdown` called begin_shutdown once.
    let ids: Vec<PollerId> = report.pollers.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, [sa.id, sb.id]);
    assert_eq!(probe_a.shutdown_calls.load(Ordering::Relaxed), 1);
    assert_eq!(probe_b.shutdown_calls.load(Ordering::Relaxed), 1);
}

#[test]
fn busy_and_idle_are_attributed_per_poll() {
    // Works (3 items) on exactly 40 polls, then idles.
    let (poller, probe) = Scripted::new("burst", |i| if i < 40 { 3 } else { 0 });
    let handle = Reactor::spawn(busy("attr"), vec![Box::new(poller)]).unwrap();
    wait_until("idle polls after the burst", || {
        probe.polls.load(Ordering::Relaxed) >= 1_000
    });
    let report = handle.shutdown().unwrap();
    let poller = &report.stats.pollers[0];
    assert_eq!(poller.busy_polls, 40);
    assert_eq!(poller.work, 120);
    assert!(poller.polls >= 1_000);
    assert!(poller.busy_ns > 0, "busy polls took no time");
    assert!(poller.idle_ns > 0, "idle polls took no time");
    assert_eq!(report.stats.busy_iterations, 40);
    assert_eq!(
        report.stats.iterations - report.stats.busy_iterations,
        poller.polls - 40
    );
}

#[test]
fn stats_are_readable_while_running() {
    let (poller, _probe) = Scripted::new("steady", |_| 1);
    let handle = Reactor::spawn(busy("live"), vec![Box::new(poller)]).unwrap();
    wait_until("published work", || handle.stats().work >= 1_000);
    let first = handle.stats();
    assert_eq!(first.state, ReactorState::Running);
    assert_eq!(first.pollers.len(), 1);
    assert_eq!(first.pollers[0].name, "steady");
    wait_until("more published work", || {
        handle.stats().pollers[0].work > first.pollers[0].work
    });
    handle.shutdown().unwrap();
}

/// Takes values from a ring; work = values taken.
struct RingReader {
    ring: Consumer<u64>,
    seen: Arc<Mutex<Vec<u64>>>,
}

impl Poller for RingReader {
    fn name(&self) -> &str {
        "ring-reader"
    }

    fn poll(&mut self) -> usize {
        let mut seen = self.seen.lock().unwrap();
        self.ring.pop_batch(16, |value| seen.push(value))
    }
}

#[test]
fn idle_reactor_sleeps_and_a_kick_wakes_it() {
    let (mut tx, rx) = spsc::channel::<u64>(16).unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let reader = RingReader {
        ring: rx,
        seen: Arc::clone(&seen),
    };
    let handle = Reactor::spawn(sleepy("kick"), vec![Box::new(reader)]).unwrap();
    let waker = handle.waker().clone();

    for round in 1..=3u64 {
        // Each round needs one more sleep: the previous one ended with a kick.
        wait_until("the reactor to sleep", || {
            let stats = handle.stats();
            stats.sleeping && stats.sleeps >= round
        });
        let wakeups = waker.wakeups();
        tx.push(round).unwrap();
        waker.kick();
        // With a 600 s sleep cap only the kick can get the value taken.
        wait_until("the kicked reactor to take the value", || {
            seen.lock().unwrap().len() as u64 == round
        });
        assert_eq!(
            waker.wakeups(),
            wakeups + 1,
            "kick did not write the eventfd"
        );
    }
    let report = handle.shutdown().unwrap();
    assert_eq!(*seen.lock().unwrap(), [1, 2, 3]);
    assert!(report.stats.sleeps >= 3);
    assert!(report.stats.event_wakeups >= 3);
    assert!(report.stats.sleep_ns > 0);
    assert_eq!(report.stats.pollers[0].work, 3);
}

#[test]
fn kick_while_awake_writes_no_eventfd() {
    let (poller, _probe) = Scripted::new("spin", |_| 1);
    let handle = Reactor::spawn(sleepy("awake"), vec![Box::new(poller)]).unwrap();
    wait_until("work", || handle.stats().work > 100);
    let waker = handle.waker().clone();
    let wakeups = waker.wakeups();
    for _ in 0..1_000 {
        waker.kick();
    }
    // The poller always has work, so the reactor never declares sleep.
    assert_eq!(waker.wakeups(), wakeups);
    assert_eq!(handle.stats().sleeps, 0);
    handle.shutdown().unwrap();
}

/// Works when `mail` holds letters; its eventfd is written by the sender
/// and never read (the reactor registers it edge-triggered).
struct Mailbox {
    mail: Arc<AtomicU64>,
    doorbell: Arc<EventFd>,
}

impl Poller for Mailbox {
    fn name(&self) -> &str {
        "mailbox"
    }

    fn poll(&mut self) -> usize {
        self.mail.swap(0, Ordering::Acquire) as usize
    }

    fn wait_fds(&self) -> Vec<RawFd> {
        vec![self.doorbell.as_fd().as_raw_fd()]
    }
}

#[test]
fn poller_fd_wakes_a_sleeping_reactor_without_being_drained() {
    let doorbell = Arc::new(EventFd::from_value_and_flags(0, EfdFlags::EFD_NONBLOCK).unwrap());
    let mail = Arc::new(AtomicU64::new(0));
    let mailbox = Mailbox {
        mail: Arc::clone(&mail),
        doorbell: Arc::clone(&doorbell),
    };
    let handle = Reactor::spawn(sleepy("fd"), vec![Box::new(mailbox)]).unwrap();
    for round in 1..=3u64 {
        // Each round needs one more sleep: the previous one ended with a kick.
        wait_until("the reactor to sleep", || {
            let stats = handle.stats();
            stats.sleeping && stats.sleeps >= round
        });
        mail.store(round, Ordering::Release);
        doorbell.write(1).unwrap();
        wait_until("the mailbox to be emptied", || {
            mail.load(Ordering::Acquire) == 0
        });
    }
    // The doorbell was never read, so it stays readable. Edge-triggered, that
    // does not wake the reactor again: it sleeps, and stays asleep.
    wait_until("the reactor to sleep again", || handle.stats().sleeping);
    let asleep = handle.stats();
    thread::sleep(Duration::from_millis(50));
    let later = handle.stats();
    assert!(
        later.event_wakeups <= asleep.event_wakeups + 1,
        "an unread fd keeps waking the reactor: {} -> {}",
        asleep.event_wakeups,
        later.event_wakeups
    );
    // The reactor's own waker was never written: the fd did the waking.
    assert_eq!(handle.waker().wakeups(), 0);
    let report = handle.shutdown().unwrap();
    assert_eq!(report.stats.pollers[0].work, 1 + 2 + 3);
    assert!(report.stats.event_wakeups >= 3);
}

#[test]
fn an_adaptive_reactor_spins_a_minimum_time_after_work() {
    // Sleep after 1 idle poll by count: only the time floor keeps it up.
    const FLOOR: Duration = Duration::from_micros(500);
    let config = ReactorConfig::new("floor").with_idle(IdlePolicy::Adaptive {
        idle_polls_before_sleep: 1,
        min_spin: FLOOR,
        max_sleep: Duration::from_secs(600),
    });
    // (first poll, last poll): the first poll does the only work.
    let times: Arc<Mutex<Option<(Instant, Instant)>>> = Arc::default();
    let seen = Arc::clone(&times);
    let (poller, _probe) = Scripted::new("once", move |i| {
        let now = Instant::now();
        let mut times = seen.lock().unwrap();
        let first = times.map_or(now, |(first, _)| first);
        *times = Some((first, now));
        usize::from(i == 0)
    });
    let handle = Reactor::spawn(config, vec![Box::new(poller)]).unwrap();
    wait_until("the reactor to sleep", || handle.stats().sleeping);
    let (work, last) = times.lock().unwrap().expect("polled");
    assert!(
        last - work >= FLOOR,
        "slept {:?} after its work",
        last - work
    );
    handle.shutdown().unwrap();
}

#[test]
fn pollers_are_added_and_removed_at_runtime() {
    let (first, first_probe) = Scripted::new("first", |_| 0);
    let handle = Reactor::spawn(sleepy("runtime"), vec![Box::new(first)]).unwrap();
    let first_id = handle.stats().pollers[0].id;

    // Added while the reactor sleeps: the add request wakes it.
    wait_until("the reactor to sleep", || handle.stats().sleeping);
    let (second, second_probe) = Scripted::new("second", |i| usize::from(i < 10));
    let second = second.draining_for(25);
    let second_id = handle.add_poller(Box::new(second)).unwrap();
    assert_ne!(second_id, first_id);
    wait_until("the new poller to be polled", || {
        second_probe.polls.load(Ordering::Relaxed) >= 10
    });
    let ids = handle.call(|ctx| ctx.poller_ids()).unwrap();
    assert_eq!(ids, [first_id, second_id]);

    // Removal drains first: begin_shutdown, then 25 polls until drained.
    let removed = handle.remove_poller(second_id).unwrap();
    assert_eq!(removed.id, second_id);
    assert!(removed.drained);
    assert_eq!(second_probe.shutdown_calls.load(Ordering::Relaxed), 1);
    assert_eq!(
        second_probe.polls_after_shutdown.load(Ordering::Relaxed),
        25
    );
    assert_eq!(removed.stats.busy_polls, 10);
    assert_eq!(removed.stats.work, 10);
    assert_eq!(
        removed.stats.polls,
        second_probe.polls.load(Ordering::Relaxed)
    );
    assert!(!second_probe.dropped.load(Ordering::Relaxed));
    drop(removed);
    assert!(second_probe.dropped.load(Ordering::Relaxed));

    // Gone from the reactor and from its stats; a second removal fails.
    assert_eq!(handle.call(|ctx| ctx.poller_ids()).unwrap(), [first_id]);
    assert!(handle.stats().poller(second_id).is_none());
    assert!(matches!(
        handle.remove_poller(second_id),
        Err(Error::UnknownPoller { id, .. }) if id == second_id
    ));
    // The other poller was left alone.
    assert_eq!(first_probe.shutdown_calls.load(Ordering::Relaxed), 0);

    // `remove_poller_now` on the reactor thread skips the drain.
    let (third, third_probe) = Scripted::new("third", |_| 0);
    let third_id = handle.add_poller(Box::new(third)).unwrap();
    let taken = handle
        .call(move |ctx| ctx.remove_poller_now(third_id).map(|p| p.name().to_owned()))
        .unwrap();
    assert_eq!(taken.as_deref(), Some("third"));
    assert_eq!(third_probe.shutdown_calls.load(Ordering::Relaxed), 0);
    assert!(third_probe.dropped.load(Ordering::Relaxed));

    let report = handle.shutdown().unwrap();
    assert_eq!(report.pollers.len(), 1);
    assert_eq!(report.pollers[0].0, first_id);
}

#[test]
fn removal_gives_up_at_the_drain_deadline() {
    let (stuck, probe) = Scripted::new("stuck", |_| 0);
    let stuck = stuck.draining_for(u64::MAX);
    let config = busy("stuck").with_drain_timeout(Duration::from_millis(20));
    let handle = Reactor::spawn(config, vec![Box::new(stuck)]).unwrap();
    let id = handle.stats().pollers[0].id;
    let removed = handle.remove_poller(id).unwrap();
    assert!(!removed.drained);
    assert!(probe.polls_after_shutdown.load(Ordering::Relaxed) > 0);
    let report = handle.shutdown().unwrap();
    assert!(report.drained, "no pollers left, so nothing undrained");
    assert!(report.pollers.is_empty());
}

#[test]
fn stop_drains_a_slow_poller() {
    let (slow, slow_probe) = Scripted::new("slow", |_| 0);
    let slow = slow.draining_for(5_000);
    let (quick, quick_probe) = Scripted::new("quick", |_| 0);
    let handle = Reactor::spawn(sleepy("drain"), vec![Box::new(slow), Box::new(quick)]).unwrap();
    // Stopping a sleeping reactor wakes it.
    wait_until("the reactor to sleep", || handle.stats().sleeping);
    let stopper = handle.stopper();
    stopper.stop();
    stopper.stop(); // idempotent
    assert!(stopper.is_stop_requested());
    let report = handle.join().unwrap();
    assert!(report.drained);
    assert_eq!(slow_probe.shutdown_calls.load(Ordering::Relaxed), 1);
    assert_eq!(quick_probe.shutdown_calls.load(Ordering::Relaxed), 1);
    assert_eq!(
        slow_probe.polls_after_shutdown.load(Ordering::Relaxed),
        5_000
    );
    assert_eq!(report.stats.state, ReactorState::Stopped);
    assert_eq!(report.pollers.len(), 2);
}

#[test]
fn stop_gives_up_at_the_drain_deadline() {
    let (stuck, probe) = Scripted::new("stuck", |_| 0);
    let stuck = stuck.draining_for(u64::MAX);
    let config = busy("deadline").with_drain_timeout(Duration::from_millis(20));
    let handle = Reactor::spawn(config, vec![Box::new(stuck)]).unwrap();
    let report = handle.shutdown().unwrap();
    assert!(!report.drained);
    assert!(probe.polls_after_shutdown.load(Ordering::Relaxed) > 0);
    assert_eq!(report.pollers.len(), 1);
}

#[test]
fn requests_after_stop_fail() {
    let (poller, _probe) = Scripted::new("p", |_| 0);
    let handle = Reactor::spawn(busy("closed"), vec![Box::new(poller)]).unwrap();
    handle.stop();
    let (late, late_probe) = Scripted::new("late", |_| 0);
    assert!(matches!(
        handle.add_poller(Box::new(late)),
        Err(Error::Stopped(name)) if name == "closed"
    ));
    assert!(late_probe.dropped.load(Ordering::Relaxed));
    assert!(matches!(handle.run_on(|_| {}), Err(Error::Stopped(_))));
    assert!(matches!(
        handle.remove_poller(PollerId::from_raw(0)),
        Err(Error::Stopped(_))
    ));
    wait_until("the thread to end", || handle.is_finished());
    assert_eq!(handle.stats().state, ReactorState::Stopped);
    handle.join().unwrap();
}

#[test]
fn dropping_the_handle_stops_and_joins() {
    let (poller, probe) = Scripted::new("p", |_| 0);
    let handle = Reactor::spawn(sleepy("dropped"), vec![Box::new(poller)]).unwrap();
    drop(handle);
    assert_eq!(probe.shutdown_calls.load(Ordering::Relaxed), 1);
    assert!(probe.dropped.load(Ordering::Relaxed));
}

#[test]
fn a_task_can_stop_its_reactor() {
    let (poller, probe) = Scripted::new("p", |_| 0);
    let handle = Reactor::spawn(busy("self-stop"), vec![Box::new(poller)]).unwrap();
    handle.run_on(|ctx| ctx.stop()).unwrap();
    let report = handle.join().unwrap();
    assert!(report.drained);
    assert_eq!(probe.shutdown_calls.load(Ordering::Relaxed), 1);
}

#[test]
fn a_panicking_poller_fails_join() {
    let (poller, _probe) = Scripted::new("boom", |i| {
        assert!(i < 100, "poller exploded on purpose");
        0
    });
    let handle = Reactor::spawn(busy("panics"), vec![Box::new(poller)]).unwrap();
    wait_until("the thread to end", || handle.is_finished());
    assert!(matches!(
        handle.call(|ctx| ctx.poller_ids()),
        Err(Error::Stopped(_))
    ));
    assert!(matches!(handle.join(), Err(Error::Panicked(name)) if name == "panics"));
}

#[test]
fn pinning_to_a_missing_core_is_an_error() {
    let cores = available_cores();
    assert!(!cores.is_empty());
    let missing = cores.iter().max().unwrap() + 1_000;
    let (poller, probe) = Scripted::new("p", |_| 0);
    let result = Reactor::spawn(busy("nowhere").with_core(missing), vec![Box::new(poller)]);
    match result {
        Err(Error::BadCore {
            core, available, ..
        }) => {
            assert_eq!(core, missing);
            assert_eq!(available, cores);
        }
        other => panic!("expected BadCore, got {other:?}"),
    }
    assert!(probe.dropped.load(Ordering::Relaxed));
}

#[test]
fn pins_to_an_available_core() {
    let core = *available_cores().last().unwrap();
    let handle = Reactor::spawn(busy("pinned").with_core(core), Vec::new()).unwrap();
    assert_eq!(handle.core(), Some(core));
    let seen = handle.call(|_| available_cores()).unwrap();
    assert_eq!(seen, [core], "the reactor thread's affinity");
    let report = handle.shutdown().unwrap();
    assert_eq!(report.stats.core, Some(core));
    assert!(report.stats.iterations > 0);
}

#[test]
fn a_name_with_nul_is_an_error() {
    assert!(matches!(
        Reactor::spawn(busy("bad\0name"), Vec::new()),
        Err(Error::BadName(_))
    ));
}

/// A poller whose wait fd is not a descriptor.
struct BadFd;

impl Poller for BadFd {
    fn name(&self) -> &str {
        "bad-fd"
    }
    fn poll(&mut self) -> usize {
        0
    }
    fn wait_fds(&self) -> Vec<RawFd> {
        vec![-1]
    }
}

#[test]
fn a_bad_wait_fd_is_an_error() {
    assert!(matches!(
        Reactor::spawn(sleepy("bad-fd"), vec![Box::new(BadFd)]),
        Err(Error::Epoll { .. })
    ));
    let handle = Reactor::spawn(sleepy("bad-fd-late"), Vec::new()).unwrap();
    assert!(matches!(
        handle.add_poller(Box::new(BadFd)),
        Err(Error::Epoll { .. })
    ));
    // The busy policy does not use wait fds at all.
    let busy_handle = Reactor::spawn(busy("bad-fd-busy"), vec![Box::new(BadFd)]).unwrap();
    busy_handle.shutdown().unwrap();
    handle.shutdown().unwrap();
}
