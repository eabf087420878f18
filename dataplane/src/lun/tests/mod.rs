//! Tests of the logical unit, by topic. They drive a [`Lun`](super::Lun)
//! through its [`CommandExecutor`](crate::exec::CommandExecutor) contract
//! over the test disk ([`disk`]) with the [`harness`].

mod disk;
mod harness;

mod abort;
mod abort_task;
mod compare_and_write;
mod config;
mod counters;
mod durability;
mod emulated;
mod fuzz;
mod model;
mod read_write;
mod real_bdevs;
mod scheduling;
mod verify;
mod write_same_unmap;
