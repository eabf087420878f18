//! What the initiator can observe of the simulated kernel: its counters
//! and the registered device.

use dataplane::scst::abi::ScstUserOpt;

/// Counters of the simulator.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Driver calls (ioctls), failed ones included.
    pub ioctls: u64,
    /// Writes to the wait eventfd.
    pub notifications: u64,
    /// Commands submitted by the initiator.
    pub submitted: u64,
    /// Commands reaped by the initiator.
    pub reaped: u64,
    /// Commands finished (initiator and internal).
    pub completed: u64,
    /// Internal commands issued by the core (COMPARE AND WRITE, WRITE SAME).
    pub internal_cmds: u64,
    /// DO_WRITE_SAME replies executed by the core.
    pub write_same_offloaded: u64,
    /// Subcommands queued, by kind.
    pub parse_sent: u64,
    /// ALLOC_MEM subcommands queued.
    pub alloc_mem_sent: u64,
    /// EXEC subcommands queued.
    pub exec_sent: u64,
    /// ON_FREE_CMD subcommands queued.
    pub on_free_sent: u64,
    /// TASK_MGMT_RECEIVED and TASK_MGMT_DONE subcommands queued.
    pub tm_sent: u64,
    /// ATTACH_SESS subcommands queued.
    pub attach_sent: u64,
    /// DETACH_SESS subcommands queued.
    pub detach_sent: u64,
    /// Cached buffers reused.
    pub cache_hits: u64,
    /// Cached-direction commands that found no buffer.
    pub cache_misses: u64,
    /// Buffers evicted (ON_CACHED_MEM_FREE).
    pub evictions: u64,
    /// Idle cached buffers now.
    pub cached_buffers: u64,
    /// Bytes of idle cached buffers now.
    pub cached_bytes: u64,
    /// Replies refused with EINVAL.
    pub replies_einval: u64,
    /// Replies refused with ESRCH.
    pub replies_esrch: u64,
    /// Replies refused with EFAULT.
    pub replies_efault: u64,
    /// Handler buffers the simulator could not read or write.
    pub copy_faults: u64,
    /// ucmds unjammed.
    pub unjammed: u64,
    /// Live cmd_h handles.
    pub live_handles: u64,
}

/// The registered device, as the simulated kernel knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Device name.
    pub name: String,
    /// SCSI device type.
    pub type_: u8,
    /// Block size (follows READ CAPACITY data for disks).
    pub block_size: u32,
    /// Current options.
    pub options: ScstUserOpt,
    /// Blocking mode latched at REGISTER.
    pub blocking: bool,
}
