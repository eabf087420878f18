//! The SCST simulator against a handler written to the scst_user ABI, one
//! module per topic:
//! - `random_io`: thousands of random READ/WRITE commands end to end, for
//!   every parse, ON_FREE_CMD and memory-reuse type, and with the handler
//!   on its own thread sleeping on the wait fd;
//! - `flows`: task management, the handler's death, sessions, the SGV
//!   cache, ON_FREE_CMD, WRITE SAME and COMPARE AND WRITE through the core,
//!   unit attentions and the ready-list order;
//! - `errors`: the error paths of replies, REPLY_AND_GET_MULTI,
//!   registration and options;
//! - `handler`: the test handler they share.
//!
//! The allocation-counting test is a binary of its own (`scst_alloc.rs`):
//! it counts every thread's allocations (process-wide), so no other test
//! may run beside it.

mod errors;
mod flows;
mod handler;
mod random_io;
