//! The SCST frontend: SCST's scst_user interface (`/dev/scst_user`), driven
//! by a polled device that batches every reply and a budget of new
//! subcommands into one `SCST_USER_REPLY_AND_GET_MULTI`.
//!
//! # Pieces
//! - [`abi`]: `scst_user.h` structs, ioctl numbers and constants with
//!   compile-time layout checks.
//! - [`driver`]: the [`ScstDriver`](driver::ScstDriver) contract (real fd or
//!   in-process kernel side) and the REPLY_AND_GET_MULTI buffer.
//! - [`wake`] and [`idle_watch`]: what tells a sleeping reactor, and an
//!   awake one with idle devices, that the kernel queued work (instead of
//!   an empty ioctl per device every idle-polling interval).

pub mod abi;
pub mod device;
pub mod driver;
pub mod error;
pub mod export;
pub mod idle_watch;
pub mod ioctl;
pub mod local_disk;
pub mod pool;
pub mod register;
pub mod version;
pub mod wake;
