//! SIGTERM sent to this very process stops the registered reactors, which
//! drain their pollers and exit. In its own test binary, because it signals
//! the whole process.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use reactor::{
    IdlePolicy, Poller, Reactor, ReactorConfig, ReactorState, ShutdownCause, ShutdownSignals,
};

/// Idle poller that needs `drain_polls` polls after `begin_shutdown`.
struct Draining {
    drain_polls: u64,
    shutdown_calls: Arc<AtomicU64>,
    after_shutdown: u64,
    shutting_down: bool,
}

impl Poller for Draining {
    fn name(&self) -> &str {
        "draining"
    }

    fn poll(&mut self) -> usize {
        if self.shutting_down {
            self.after_shutdown += 1;
        }
        0
    }

    fn begin_shutdown(&mut self) {
        self.shutting_down = true;
        self.shutdown_calls.fetch_add(1, Ordering::Relaxed);
    }

    fn is_drained(&self) -> bool {
        self.shutting_down && self.after_shutdown >= self.drain_polls
    }
}

#[test]
fn sigterm_stops_and_drains_every_reactor() {
    let calls = Arc::new(AtomicU64::new(0));
    let poller = |drain_polls| -> Box<dyn Poller> {
        Box::new(Draining {
            drain_polls,
            shutdown_calls: Arc::clone(&calls),
            after_shutdown: 0,
            shutting_down: false,
        })
    };
    let busy = Reactor::spawn(
        ReactorConfig::new("sig-busy").with_idle(IdlePolicy::Busy),
        vec![poller(1_000)],
    )
    .unwrap();
    // This one is asleep when the signal comes (600 s sleep cap): only the
    // stop's eventfd write can end its sleep.
    let sleepy = Reactor::spawn(
        ReactorConfig::new("sig-sleepy").with_idle(IdlePolicy::Adaptive {
            idle_polls_before_sleep: 10,
            min_spin: Duration::ZERO,
            max_sleep: Duration::from_secs(600),
        }),
        vec![poller(10), poller(2_000)],
    )
    .unwrap();
    let late = Reactor::spawn(
        ReactorConfig::new("sig-late").with_idle(IdlePolicy::Busy),
        vec![poller(5)],
    )
    .unwrap();

    let signals = ShutdownSignals::install(&[&busy, &sleepy]).unwrap();
    signals.add(&late);
    assert!(!signals.is_triggered());
    assert_eq!(signals.wait_timeout(Duration::from_millis(1)), None);

    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !sleepy.stats().sleeping {
        assert!(std::time::Instant::now() < deadline, "reactor never slept");
        std::thread::sleep(Duration::from_millis(1));
    }

    kill(Pid::this(), Signal::SIGTERM).unwrap();
    assert_eq!(signals.wait(), ShutdownCause::Signal(nix::libc::SIGTERM));
    assert!(signals.is_triggered());

    for handle in [busy, sleepy, late] {
        let name = handle.name().to_owned();
        let report = handle.join().unwrap();
        assert!(report.drained, "{name} did not drain");
        assert_eq!(report.stats.state, ReactorState::Stopped, "{name}");
    }
    // begin_shutdown reached all four pollers exactly once.
    assert_eq!(calls.load(Ordering::Relaxed), 4);

    // A reactor registered after the shutdown began is stopped at once.
    let after = Reactor::spawn(
        ReactorConfig::new("sig-after").with_idle(IdlePolicy::Busy),
        vec![poller(1)],
    )
    .unwrap();
    signals.add(&after);
    let report = after.join().unwrap();
    assert!(report.drained);
    assert_eq!(calls.load(Ordering::Relaxed), 5);
    drop(signals);
}
