//! The TCMU device against the kernel simulator, one module per concern:
//! - `device`: random commands checked byte for byte against a model disk
//!   (out of order, with TMRs, coalescing, on its own thread) and targeted
//!   tests of the ring protocol, malformed entries and faults;
//! - `alloc`: the device's polls and the simulator allocate nothing in
//!   steady state.
//!
//! The counting allocator counts per thread here, so the allocation test
//! shares the binary with the others. (The whole bench path's allocation
//! test, `zero_alloc.rs`, counts process-wide and has a binary of its own.)

mod alloc;
mod device;

#[global_allocator]
static ALLOC: test_support::alloc::CountingAlloc = test_support::alloc::CountingAlloc;
