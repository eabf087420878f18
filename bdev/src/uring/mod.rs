//! The io_uring engine that bdevs over the kernel's block layer share.
//!
//! One [`Ring`] per bdev channel, owned by the channel's thread (SPDK's
//! uring bdev does the same): nothing in it is shared or locked.
//!
//! # What a channel does with it
//! - **Submit fills SQEs, nothing more.** A request becomes one SQE written
//!   into the shared submission queue with [`Ring::push`]; no system call.
//!   The SQE's `user_data` is the index of a preallocated per-request slot
//!   ([`Slots`]), where the channel keeps the request's tag and state.
//! - **One `io_uring_enter` per poll, only when there is work for it.**
//!   [`Ring::publish`] hands every SQE pushed since the last poll to the
//!   kernel with a single enter, and makes none when nothing is pending.
//!   With SQPOLL the kernel's thread picks SQEs up by itself and an enter is
//!   made only to wake it. With IOPOLL completions are found only by polling
//!   the device from an enter, so `publish` enters on every poll while
//!   anything is in flight (still one per poll). Every enter is counted
//!   ([`Ring::enters`]).
//! - **Completions are read from the CQ without a system call.**
//!   [`Ring::reap`] walks the completion queue in shared memory.
//!   Without IOPOLL the kernel posts CQEs on its own (from task work it
//!   runs when it interrupts the reactor's thread), so a busy reactor sees
//!   them on its next poll.
//! - **Never more in flight than the CQ holds.** [`Ring::room`] is the
//!   smaller of the free SQ entries and the CQ entries not yet spoken for,
//!   so the CQ cannot overflow and no completion is ever dropped. Requests
//!   beyond it wait in the channel (in preallocated queues), never in the
//!   reactor.
//!
//! The memory the kernel reads and writes on a request's behalf (the
//! request's buffers, iovec arrays, bounce buffers, registered regions) is
//! the subject of the one unsafe contract here, on [`Ring::push`] and
//! [`Ring::register_buffers`]; `ring.rs` is the only file with unsafe code.

mod fixed;
mod ring;
mod slots;

pub use fixed::{FixedRefused, FixedRegions, RefusalNotice, MAX_FIXED_BUFFER};
pub use ring::{Ring, RingConfig};
pub use slots::Slots;
