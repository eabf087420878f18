//! [`Drain`]: stopping a frontend device without losing a command.
//!
//! Shutdown has the same three steps in both frontends: stop taking new
//! commands from the kernel ([`Drain::begin`]; the device asks
//! [`Drain::accepting`] before it takes any), keep completing the commands
//! in flight (polling goes on as usual, publishing without holding back),
//! and report drained ([`Drain::drained`]) once the executor holds no
//! command and everything the device owes the kernel has gone out. A
//! faulted device (one that stopped talking to the kernel) is drained as
//! soon as its executor is empty: nothing more can go out.

/// A device's shutdown state. Starts accepting; [`Drain::begin`] is final.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Drain {
    draining: bool,
}

impl Drain {
    /// Stops taking new commands (idempotent).
    #[inline]
    pub fn begin(&mut self) {
        self.draining = true;
    }

    /// True until [`Drain::begin`]: the device may take new commands.
    #[inline]
    pub fn accepting(&self) -> bool {
        !self.draining
    }

    /// True after [`Drain::begin`]: completions are published without
    /// being held.
    #[inline]
    pub fn is_draining(&self) -> bool {
        self.draining
    }

    /// Whether a device is drained: its executor holds no command
    /// (`executor_in_flight == 0`) and, unless it is `faulted`, it owes the
    /// kernel nothing (`settled`, asked only then: every command received
    /// is answered, every completion published). Independent of
    /// [`Drain::begin`]: an idle device is drained.
    #[inline]
    pub fn drained(
        executor_in_flight: usize,
        faulted: bool,
        settled: impl FnOnce() -> bool,
    ) -> bool {
        executor_in_flight == 0 && (faulted || settled())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn begin_stops_accepting() {
        let mut d = Drain::default();
        assert!(d.accepting() && !d.is_draining());
        d.begin();
        assert!(!d.accepting() && d.is_draining());
        d.begin();
        assert!(d.is_draining());
    }

    #[test]
    fn drained_needs_an_empty_executor_and_a_settled_or_faulted_device() {
        assert!(Drain::drained(0, false, || true));
        assert!(!Drain::drained(0, false, || false));
        assert!(!Drain::drained(1, false, || true));
        assert!(Drain::drained(0, true, || false));
        assert!(!Drain::drained(1, true, || true));
    }
}
