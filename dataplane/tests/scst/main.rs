//! The SCST frontend without a kernel, one module per concern:
//! - `device`: `ScstDevice` against a scripted fake kernel and a manual
//!   executor (the REPLY_AND_GET_MULTI protocol, buffer flows, task
//!   management, PARSE, options and faults);
//! - `register`: registration against a scripted driver, and opening
//!   `/dev/scst_user` when it is missing;
//! - `alloc`: `ScstDevice::poll` allocates nothing in steady state.
//!
//! The counting allocator counts per thread here, so the allocation test
//! shares the binary with the others.

mod alloc;
mod device;
mod register;

#[global_allocator]
static ALLOC: test_support::alloc::CountingAlloc = test_support::alloc::CountingAlloc;
