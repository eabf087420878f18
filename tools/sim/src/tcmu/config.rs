//! The simulator's geometry and capabilities.

use dataplane::tcmu::abi::*;

/// Simulator geometry and capabilities.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimConfig {
    /// Bytes of command ring after the 128-byte mailbox (a non-zero multiple
    /// of 8). The kernel's default is 8 MiB - 128.
    pub cmdr_size: u32,
    /// Bytes of data area (a multiple of `data_block_size`).
    pub data_area_size: usize,
    /// Data block size (the kernel's `data_pages_per_blk * PAGE_SIZE`; a
    /// non-zero multiple of 8 here, so tests can use tiny blocks).
    pub data_block_size: u32,
    /// Mailbox flags (`TCMU_MAILBOX_FLAG_CAP_*`). The current kernel sets all
    /// four (0xf).
    pub flags: u16,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            cmdr_size: (8 << 20) - CMDR_OFF,
            data_area_size: 64 << 20,
            data_block_size: 4096,
            flags: TCMU_MAILBOX_FLAG_CAP_OOOC
                | TCMU_MAILBOX_FLAG_CAP_READ_LEN
                | TCMU_MAILBOX_FLAG_CAP_TMR
                | TCMU_MAILBOX_FLAG_CAP_KEEP_BUF,
        }
    }
}
