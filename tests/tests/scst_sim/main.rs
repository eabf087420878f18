//! `ScstDevice` and registration against the SCST simulator, one module per
//! concern:
//! - `device`: end to end (initiator → simulated kernel → `ScstDevice` →
//!   `Lun` → port → bdev poller → RAM bdev) against a model disk, task
//!   management, sessions and the ioctls per I/O;
//! - `register`: registration, with the simulator reading the version and
//!   license strings as the kernel does;
//! - `alloc`: the SCST path allocates nothing per command in steady state;
//! - `fault`: a command stuck in a fault bdev, ended by ABORT TASK;
//! - `handoff`: the device handed to a successor under I/O.
//!
//! The counting allocator counts per thread here, so the allocation tests
//! share the binary with the others.

mod alloc;
mod device;
mod fault;
mod handoff;
mod register;

#[global_allocator]
static ALLOC: test_support::alloc::CountingAlloc = test_support::alloc::CountingAlloc;
