//! The memory the unit reads, writes and lends to the bdev: each command's
//! data buffer ([`DataBuffer`], the frontend's memory) and the unit's
//! scratch chunks ([`Scratch`]).
//!
//! This is the only place in `lun` with `unsafe` code besides the one call
//! that establishes a data buffer's contract, in `submit`. The engine above
//! works with safe operations only: copy in and out at an offset, scan and
//! compare, and lend memory to a bdev request as an [`SgList`].
//!
//! # Contract
//! - A [`DataBuffer`] holds memory it does not own. `submit`'s caller
//!   promises that the memory stays valid and untouched by the frontend
//!   until the response is delivered ([`CommandExecutor::submit`]);
//!   [`DataBuffer::attach`] takes that promise over once per command, and
//!   the task detaches before its response is built.
//! - Lending: a bdev request that carries an [`SgList`] of this memory
//!   holds a loan until its completion is delivered, and the engine then
//!   gives the loan back. While a loan is out the lender does not touch the
//!   bytes nor change the iovec arrays the list points to (the operations
//!   that would, panic), and dropping the lender leaks the memory instead
//!   of freeing it under the bdev.
//! - Giving a loan back is the engine's statement that the bdev has
//!   completed the request, which the port's completion stands for; that is
//!   the one fact these types take on trust.
//!
//! [`SgList`]: bdev::SgList
//! [`CommandExecutor::submit`]: crate::exec::CommandExecutor::submit

mod data;
mod scratch;

pub(super) use data::DataBuffer;
pub(super) use scratch::{ChunkId, Scratch};
