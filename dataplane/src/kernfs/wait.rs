//! Waiting for the kernel: the control plane polls for what a write makes
//! appear (a UIO device, a disk, a management result) rather than sleep
//! blindly.

use std::time::{Duration, Instant};

/// Calls `probe` every `interval` until it gives a value or `timeout` has
/// passed; it is always tried at least once, and once more after the
/// last pause.
pub fn poll_until<T>(
    timeout: Duration,
    interval: Duration,
    mut probe: impl FnMut() -> Option<T>,
) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(value) = probe() {
            return Some(value);
        }
        if start.elapsed() >= timeout {
            return None;
        }
        std::thread::sleep(interval);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tries_once_with_no_time_and_until_found_otherwise() {
        let mut calls = 0;
        assert_eq!(
            poll_until(Duration::ZERO, Duration::from_millis(1), || {
                calls += 1;
                None::<()>
            }),
            None
        );
        assert_eq!(calls, 1);
        let mut left = 3;
        let found = poll_until(Duration::from_secs(5), Duration::from_millis(1), || {
            left -= 1;
            (left == 0).then_some("found")
        });
        assert_eq!(found, Some("found"));
    }
}
