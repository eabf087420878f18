//! What an NVMe namespace is to the bdev, derived from Identify data and
//! the kernel's limits for the namespace's queue: geometry, capabilities,
//! topology, and how requests become commands (the largest Read/Write
//! command, which command an unmap is). Pure: the inputs are read at open.

use super::cmd::MAX_NLB;
use super::identify::{
    Controller, Namespace, NSATTR_WRITE_PROTECTED, NSFEAT_ATOMICS, ONCS_DSM, ONCS_WRITE_ZEROES,
    VWC_PRESENT,
};
use crate::{Capabilities, Geometry, OpenProblem, Topology};

/// The NVMe driver's page (`NVME_CTRL_PAGE_SIZE`): the virtual boundary of
/// its queues, whatever the CPU's page size.
pub(super) const CTRL_PAGE: usize = 4096;

/// The minimum memory page size MDTS is counted in. CAP.MPSMIN is a
/// controller register that passthrough cannot read; 4 KiB (MPSMIN 0) is
/// what controllers report in practice, and the kernel's own limit (the
/// queue's `max_hw_sectors_kb`, computed with the real CAP) caps the
/// result whenever sysfs shows it.
pub(super) const MDTS_UNIT: u64 = 4096;

/// Linux 6.1 nvme-pci's limits, used when sysfs does not show the queue's:
/// `NVME_MAX_KB_SZ` and `NVME_MAX_SEGS` (`drivers/nvme/host/pci.c`).
const DEFAULT_MAX_HW_BYTES: u64 = 4096 << 10;
const DEFAULT_MAX_SEGMENTS: u32 = 127;

/// What the kernel says about the namespace's request queue
/// (`/sys/block/nvmeXnY/queue`), each `None` when unknown. Passthrough
/// requests are mapped under these limits (`blk_rq_map_user_iov`): a
/// command beyond them fails with `EINVAL`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct QueueLimits {
    /// `max_hw_sectors_kb`, in bytes.
    pub max_hw_bytes: Option<u64>,
    /// `max_segments`.
    pub max_segments: Option<u32>,
    /// `write_zeroes_max_bytes`: 0 when the driver will not send Write
    /// Zeroes to this device (a quirk) although ONCS claims it.
    pub write_zeroes_max_bytes: Option<u64>,
    /// `io_poll`: the queue has poll queues.
    pub io_poll: Option<bool>,
}

/// Which command an unmap ([`IoOp::Unmap`](crate::IoOp::Unmap)) is
/// (see [`UnmapMode`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnmapMode {
    /// Write Zeroes with Deallocate when the namespace promises that it
    /// deallocates and reads back zeroes (DLFEAT bit 3 and read behaviour
    /// 001b), so LBPRZ is reported; otherwise Dataset Management
    /// (deallocate), which the controller may skip, so LBPRZ is not
    /// reported; no unmap without either. The default.
    Auto,
    /// Always Dataset Management (deallocate); LBPRZ not reported.
    Deallocate,
    /// Always Write Zeroes, with Deallocate where the namespace supports
    /// it: the blocks read back zeroes (LBPRZ) whether or not the
    /// controller deallocates them.
    WriteZeroes,
}

/// The command an unmap becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum UnmapCommand {
    /// Write Zeroes with DEAC.
    WriteZeroesDeallocate,
    /// Write Zeroes without DEAC (the namespace does not promise zeroes
    /// after a deallocation).
    WriteZeroes,
    /// Dataset Management, attribute Deallocate.
    Deallocate,
}

/// The bdev's view of a namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Profile {
    pub geometry: Geometry,
    pub topology: Topology,
    pub capabilities: Capabilities,
    /// Largest Read or Write command in blocks: a request beyond it is
    /// split.
    pub command_blocks: u32,
    /// What an unmap is; `None` when unmap is not supported.
    pub unmap: Option<UnmapCommand>,
    /// Deallocated blocks read back as zeroes (DLFEAT).
    pub deallocated_reads_zeroes: bool,
    /// MDTS in bytes (with 4 KiB pages), `None` for no limit.
    pub mdts_bytes: Option<u64>,
}

/// Why `Profile` could not be made: an open problem.
fn format(text: String) -> OpenProblem {
    OpenProblem::UnsupportedFormat(text)
}

/// Derives the profile of namespace `ns` of controller `ctrl` served with
/// requests of at most `max_transfer_bytes` and unmaps as `mode` says.
///
/// Errors: an LBA format with metadata (protection information or not),
/// a block size outside 512 B..=64 KiB, an FLBAS naming no format
/// ([`OpenProblem::UnsupportedFormat`]); a write-protected namespace
/// ([`OpenProblem::WriteProtected`]); a namespace of no blocks
/// ([`OpenProblem::Empty`]).
pub(super) fn profile(
    ctrl: &Controller,
    ns: &Namespace,
    queue: &QueueLimits,
    mode: UnmapMode,
    max_transfer_bytes: u32,
) -> Result<Profile, OpenProblem> {
    let Some(lbaf) = ns.format else {
        return Err(format(format!(
            "FLBAS selects LBA format {} but the namespace has {}",
            ns.format_index,
            u16::from(ns.nlbaf) + 1
        )));
    };
    if lbaf.metadata_size != 0 {
        let pi = match ns.dps & 0x7 {
            0 => String::new(),
            t => format!(", protection information type {t}"),
        };
        return Err(format(format!(
            "LBA format {} has {} bytes of metadata per block{pi}; only formats without \
             metadata are served (reformat the namespace, e.g. `nvme format --lbaf=N` \
             with a format whose metadata size is 0)",
            ns.format_index, lbaf.metadata_size
        )));
    }
    if !(9..=16).contains(&lbaf.data_shift) {
        return Err(format(format!(
            "LBA format {} has blocks of 2^{} bytes; 512 bytes to 64 KiB are served",
            ns.format_index, lbaf.data_shift
        )));
    }
    if ns.nsattr & NSATTR_WRITE_PROTECTED != 0 {
        return Err(OpenProblem::WriteProtected(
            "Identify Namespace NSATTR bit 0".into(),
        ));
    }
    if ns.nsze == 0 {
        return Err(OpenProblem::Empty);
    }
    let bs = 1u32 << lbaf.data_shift;
    let bs64 = u64::from(bs);
    let geometry = Geometry {
        block_size: bs,
        num_blocks: ns.nsze,
    };

    // The largest command the kernel maps: MDTS, the queue's hardware
    // limit, and the segments of page-aligned memory (a buffer that
    // starts within a page spans one page more than its length).
    let mdts_bytes = (ctrl.mdts != 0).then(|| MDTS_UNIT << ctrl.mdts.min(32));
    let max_hw = queue.max_hw_bytes.unwrap_or(DEFAULT_MAX_HW_BYTES);
    let segments = u64::from(queue.max_segments.unwrap_or(DEFAULT_MAX_SEGMENTS).max(2));
    let command_bytes = [
        mdts_bytes.unwrap_or(u64::MAX),
        max_hw,
        (segments - 1) * CTRL_PAGE as u64,
        u64::from(MAX_NLB) * bs64,
    ]
    .into_iter()
    .min()
    .unwrap_or(0);
    let command_blocks = (command_bytes / bs64) as u32;
    if command_blocks == 0 {
        return Err(format(format!(
            "a block of {bs} bytes is larger than the largest transfer ({command_bytes} bytes)"
        )));
    }

    let dsm = ctrl.oncs & ONCS_DSM != 0;
    // The driver's quirk table may have turned Write Zeroes off for this
    // device (`write_zeroes_max_bytes` 0): passthrough would bypass it.
    let write_zeroes =
        ctrl.oncs & ONCS_WRITE_ZEROES != 0 && queue.write_zeroes_max_bytes != Some(0);
    let zeroes_then = if ns.write_zeroes_deallocates() {
        UnmapCommand::WriteZeroesDeallocate
    } else {
        UnmapCommand::WriteZeroes
    };
    let unmap = match mode {
        UnmapMode::Auto if write_zeroes && ns.write_zeroes_deallocates() => {
            Some(UnmapCommand::WriteZeroesDeallocate)
        }
        UnmapMode::Auto | UnmapMode::Deallocate => dsm.then_some(UnmapCommand::Deallocate),
        UnmapMode::WriteZeroes => write_zeroes.then_some(zeroes_then),
    };
    let unmap_by_zeroes = matches!(
        unmap,
        Some(UnmapCommand::WriteZeroes | UnmapCommand::WriteZeroesDeallocate)
    );
    // Write Zeroes moves no data, but like Linux (which caps it at the
    // queue's max_hw_sectors) it is kept within MDTS: some controllers
    // apply it. NLB is 16 bits.
    let max_zeroes = if write_zeroes || unmap_by_zeroes {
        let bytes = [
            mdts_bytes.unwrap_or(u64::MAX),
            max_hw,
            queue.write_zeroes_max_bytes.unwrap_or(u64::MAX),
        ]
        .into_iter()
        .min()
        .unwrap_or(0);
        ((bytes / bs64).clamp(1, u64::from(MAX_NLB))) as u32
    } else {
        0 // Dataset Management ranges count 32 bits of blocks.
    };

    let capabilities = Capabilities {
        volatile_cache: ctrl.vwc & VWC_PRESENT != 0,
        unmap: unmap.is_some(),
        unmap_reads_zeroes: unmap_by_zeroes,
        write_zeroes,
        max_transfer_blocks: (max_transfer_bytes / bs).max(1),
        max_unmap_blocks: max_zeroes,
        optimal_boundary_blocks: if ns.noiob.is_power_of_two() {
            u32::from(ns.noiob)
        } else {
            0
        },
    };
    Ok(Profile {
        geometry,
        topology: topology(ctrl, ns, bs),
        capabilities,
        command_blocks,
        unmap,
        deallocated_reads_zeroes: ns.deallocated_reads_zeroes(),
        mdts_bytes,
    })
}

/// Physical block and unmap granularity as Linux reports them for the
/// namespace (`nvme_update_disk_info`): the preferred write granularity
/// (NPWG) capped by the atomic write unit (NAWUPF, else the controller's
/// AWUPF), and the preferred deallocate granularity (NPDG), when NSFEAT
/// says they are valid; one block otherwise.
fn topology(ctrl: &Controller, ns: &Namespace, bs: u32) -> Topology {
    let bs64 = u64::from(bs);
    let atomic = if ns.nsfeat & NSFEAT_ATOMICS != 0 && ns.nawupf != 0 {
        (1 + u64::from(ns.nawupf)) * bs64
    } else {
        (1 + u64::from(ctrl.awupf)) * bs64
    };
    let (preferred, deallocate) = if ns.optimal_io_fields() {
        ((1 + u64::from(ns.npwg)) * bs64, 1 + u32::from(ns.npdg))
    } else {
        (bs64, 1)
    };
    let physical = preferred.min(atomic);
    let physical = if physical.is_power_of_two() && physical <= bs64 << 15 {
        physical as u32
    } else {
        bs
    };
    Topology {
        physical_block_size: physical,
        unmap_granularity_blocks: deallocate,
    }
}

#[cfg(test)]
mod tests {
    use super::super::identify::images::{qemu_controller, qemu_namespace};
    use super::*;

    const MIB: u32 = 1 << 20;

    fn qemu(block: u32) -> (Controller, Namespace) {
        (
            Controller::parse(&qemu_controller()),
            Namespace::parse(&qemu_namespace(1 << 30, block)),
        )
    }

    /// What sysfs shows for QEMU's controller under Linux 6.1: MDTS 7 is
    /// 512 KiB, 127 segments.
    fn qemu_queue() -> QueueLimits {
        QueueLimits {
            max_hw_bytes: Some(512 << 10),
            max_segments: Some(127),
            write_zeroes_max_bytes: Some(512 << 10),
            io_poll: Some(false),
        }
    }

    #[test]
    fn qemu_with_512_byte_blocks() {
        let (c, n) = qemu(512);
        let p = profile(&c, &n, &qemu_queue(), UnmapMode::Auto, MIB).unwrap();
        assert_eq!(
            p.geometry,
            Geometry {
                block_size: 512,
                num_blocks: 1 << 21
            }
        );
        assert_eq!(p.mdts_bytes, Some(512 << 10));
        // 126 pages: a buffer starting inside a page needs 127 segments.
        assert_eq!(p.command_blocks, 126 * 8);
        let caps = p.capabilities;
        assert!(caps.volatile_cache && caps.write_zeroes && caps.unmap);
        // DLFEAT 1 without bit 3: unmap deallocates with DSM, which the
        // controller may skip: no LBPRZ.
        assert_eq!(p.unmap, Some(UnmapCommand::Deallocate));
        assert!(!caps.unmap_reads_zeroes && p.deallocated_reads_zeroes);
        assert_eq!(caps.max_transfer_blocks, 2048);
        assert_eq!(caps.max_unmap_blocks, 1024, "Write Zeroes within MDTS");
        assert_eq!(caps.optimal_boundary_blocks, 0);
        assert_eq!(
            p.topology,
            Topology {
                physical_block_size: 512,
                unmap_granularity_blocks: 8
            }
        );
        assert!(p.topology.is_valid_for(512));
    }

    #[test]
    fn qemu_with_4096_byte_blocks() {
        let (c, n) = qemu(4096);
        let p = profile(&c, &n, &qemu_queue(), UnmapMode::Auto, MIB).unwrap();
        assert_eq!(p.geometry.block_size, 4096);
        assert_eq!(p.geometry.num_blocks, 1 << 18);
        assert_eq!(p.command_blocks, 126);
        assert_eq!(p.capabilities.max_transfer_blocks, 256);
        assert_eq!(p.capabilities.max_unmap_blocks, 128);
        assert_eq!(p.topology.unmap_granularity_blocks, 1);
    }

    #[test]
    fn splitting_limit_from_mdts_and_the_queue() {
        let (mut c, n) = qemu(512);
        // Without sysfs: MDTS and Linux 6.1's defaults (127 segments).
        let p = profile(&c, &n, &QueueLimits::default(), UnmapMode::Auto, MIB).unwrap();
        assert_eq!(p.command_blocks, 126 * 8);
        // A small MDTS wins: 2^5 * 4 KiB = 128 KiB.
        c.mdts = 5;
        let p = profile(&c, &n, &qemu_queue(), UnmapMode::Auto, MIB).unwrap();
        assert_eq!(p.command_blocks, 256);
        assert_eq!(p.capabilities.max_unmap_blocks, 256);
        // No MDTS: the kernel's 4 MiB and its segments.
        c.mdts = 0;
        let queue = QueueLimits {
            max_hw_bytes: Some(4 << 20),
            max_segments: Some(1025),
            ..qemu_queue()
        };
        let p = profile(&c, &n, &queue, UnmapMode::Auto, 8 * MIB).unwrap();
        assert_eq!(p.mdts_bytes, None);
        assert_eq!(p.command_blocks, (4 << 20) / 512);
        assert_eq!(p.capabilities.max_transfer_blocks, 16384);
        // NLB is 16 bits: 64 Ki blocks at most, whatever else allows.
        let queue = QueueLimits {
            max_hw_bytes: Some(1 << 40),
            max_segments: Some(u32::MAX),
            write_zeroes_max_bytes: None,
            io_poll: None,
        };
        let p = profile(&c, &n, &queue, UnmapMode::Auto, MIB).unwrap();
        assert_eq!(p.command_blocks, 65536);
        assert_eq!(p.capabilities.max_unmap_blocks, 65536);
    }

    #[test]
    fn unmap_modes() {
        let (c, mut n) = qemu(512);
        let q = qemu_queue();
        let p = profile(&c, &n, &q, UnmapMode::WriteZeroes, MIB).unwrap();
        assert_eq!(p.unmap, Some(UnmapCommand::WriteZeroes));
        assert!(p.capabilities.unmap_reads_zeroes);
        // Write Zeroes deallocates (DLFEAT 9): Auto prefers it.
        n.dlfeat = 0x9;
        let p = profile(&c, &n, &q, UnmapMode::Auto, MIB).unwrap();
        assert_eq!(p.unmap, Some(UnmapCommand::WriteZeroesDeallocate));
        assert!(p.capabilities.unmap && p.capabilities.unmap_reads_zeroes);
        let p = profile(&c, &n, &q, UnmapMode::Deallocate, MIB).unwrap();
        assert_eq!(p.unmap, Some(UnmapCommand::Deallocate));
        assert!(!p.capabilities.unmap_reads_zeroes);
        // The kernel turned Write Zeroes off for this device.
        let off = QueueLimits {
            write_zeroes_max_bytes: Some(0),
            ..q
        };
        let p = profile(&c, &n, &off, UnmapMode::Auto, MIB).unwrap();
        assert_eq!(p.unmap, Some(UnmapCommand::Deallocate));
        assert!(!p.capabilities.write_zeroes);
        assert_eq!(p.capabilities.max_unmap_blocks, 0, "32-bit DSM ranges");
        // Neither command: no unmap, no write zeroes.
        let mut bare = c.clone();
        bare.oncs = 0;
        for mode in [
            UnmapMode::Auto,
            UnmapMode::Deallocate,
            UnmapMode::WriteZeroes,
        ] {
            let p = profile(&bare, &n, &q, mode, MIB).unwrap();
            assert_eq!(p.unmap, None);
            let caps = p.capabilities;
            assert!(!caps.unmap && !caps.unmap_reads_zeroes && !caps.write_zeroes);
        }
        // No volatile cache: no flush needed.
        bare.vwc = 0;
        let p = profile(&bare, &n, &q, UnmapMode::Auto, MIB).unwrap();
        assert!(!p.capabilities.volatile_cache);
    }

    #[test]
    fn topology_from_the_optimal_io_fields() {
        let (mut c, mut n) = qemu(512);
        let q = qemu_queue();
        n.npwg = 7; // 4 KiB preferred writes
        n.npdg = 255; // 128 KiB deallocation
        n.noiob = 256;
        // The atomic unit caps the physical block (Linux does the same).
        let p = profile(&c, &n, &q, UnmapMode::Auto, MIB).unwrap();
        assert_eq!(p.topology.physical_block_size, 512, "AWUPF 0: one block");
        c.awupf = 7;
        let p = profile(&c, &n, &q, UnmapMode::Auto, MIB).unwrap();
        assert_eq!(
            p.topology,
            Topology {
                physical_block_size: 4096,
                unmap_granularity_blocks: 256
            }
        );
        assert_eq!(p.capabilities.optimal_boundary_blocks, 256);
        // NAWUPF, when NSFEAT says it is defined, overrides AWUPF.
        n.nsfeat |= NSFEAT_ATOMICS;
        n.nawupf = 1;
        let p = profile(&c, &n, &q, UnmapMode::Auto, MIB).unwrap();
        assert_eq!(p.topology.physical_block_size, 1024);
        // Without NSFEAT bit 4 the fields mean nothing.
        n.nsfeat = 0;
        let p = profile(&c, &n, &q, UnmapMode::Auto, MIB).unwrap();
        assert_eq!(p.topology, Topology::flat(512));
        // A granularity that is not a power of two is not a physical block.
        n.nsfeat = super::super::identify::NSFEAT_OPTPERF;
        n.npwg = 2;
        n.noiob = 3;
        let p = profile(&c, &n, &q, UnmapMode::Auto, MIB).unwrap();
        assert_eq!(p.topology.physical_block_size, 512);
        assert_eq!(p.capabilities.optimal_boundary_blocks, 0);
    }

    #[test]
    fn formats_that_are_refused() {
        let (c, n) = qemu(512);
        let q = qemu_queue();
        let refuse = |n: &Namespace| profile(&c, n, &q, UnmapMode::Auto, MIB).unwrap_err();
        let mut meta = n.clone();
        meta.format = Some(super::super::identify::LbaFormat {
            metadata_size: 8,
            data_shift: 12,
            relative_performance: 0,
        });
        meta.format_index = 5;
        meta.dps = 1;
        let problem = refuse(&meta);
        assert!(matches!(problem, OpenProblem::UnsupportedFormat(_)));
        let text = problem.to_string();
        assert!(
            text.contains("8 bytes of metadata") && text.contains("protection information type 1"),
            "{text}"
        );
        let mut missing = n.clone();
        missing.format = None;
        missing.format_index = 9;
        assert!(refuse(&missing).to_string().contains("format 9"));
        let mut tiny = n.clone();
        tiny.format.as_mut().unwrap().data_shift = 8;
        assert!(matches!(refuse(&tiny), OpenProblem::UnsupportedFormat(_)));
        let mut protected = n.clone();
        protected.nsattr = 1;
        assert!(matches!(refuse(&protected), OpenProblem::WriteProtected(_)));
        let mut empty = n.clone();
        empty.nsze = 0;
        assert!(matches!(refuse(&empty), OpenProblem::Empty));
    }
}
