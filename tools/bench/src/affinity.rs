//! The bench thread's CPU: pinned to the simulator's (or a reactor's for
//! the reference loop), and given back its original affinity.

use crate::error::BenchError;

/// The calling thread's CPU affinity, restored on drop. The bench pins its
/// thread to the simulator's CPU; [`reactor::available_cores`] (and so
/// reactor placement) reads the calling thread's affinity, which must be the
/// original one when reactors are spawned again (`--compare`).
pub(crate) struct AffinityGuard(libc::cpu_set_t);

impl AffinityGuard {
    /// The calling thread's affinity now.
    pub(crate) fn save() -> Self {
        // SAFETY: a zeroed cpu_set_t is a valid empty set; sched_getaffinity
        // writes at most sizeof(cpu_set_t) bytes into it for this thread (0).
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set);
            Self(set)
        }
    }

    /// Gives the calling thread the saved affinity again.
    pub(crate) fn restore(&self) {
        // SAFETY: passes a valid cpu_set_t of the right size for this thread.
        unsafe {
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &self.0);
        }
    }
}

impl Drop for AffinityGuard {
    fn drop(&mut self) {
        self.restore();
    }
}

/// Pins the calling thread to `core`.
pub(crate) fn pin_current_thread(core: usize) -> Result<(), BenchError> {
    if core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
        Ok(())
    } else {
        Err(BenchError::Pin(core))
    }
}
