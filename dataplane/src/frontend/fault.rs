//! [`SharedFault`]: how a device on a reactor tells the control plane that
//! it stopped talking to the kernel.
//!
//! A faulted device (a TCMU ring that cannot be walked, an scst_user fd
//! that refuses the device) stops touching the kernel interface and keeps
//! only draining its executor; the server, on another thread, must notice
//! to log the fault, count it and recover the device. The device records
//! its fault here once, off the hot path (at the poll where it faulted);
//! the server reads it whenever it looks.
//!
//! A device faults at most once in its life: recovery makes a new device.

use std::sync::OnceLock;

/// A device's fault, set at most once by the device's thread and read by
/// any thread.
#[derive(Debug)]
pub struct SharedFault<T> {
    fault: OnceLock<T>,
}

impl<T> Default for SharedFault<T> {
    fn default() -> Self {
        Self {
            fault: OnceLock::new(),
        }
    }
}

impl<T> SharedFault<T> {
    /// Records the fault; later calls keep the first.
    pub(crate) fn set(&self, fault: T) {
        let _ = self.fault.set(fault);
    }

    /// The fault, once the device recorded one.
    pub fn get(&self) -> Option<&T> {
        self.fault.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_fault_is_kept() {
        let f = SharedFault::default();
        assert_eq!(f.get(), None);
        f.set(1);
        f.set(2);
        assert_eq!(f.get(), Some(&1));
    }
}
