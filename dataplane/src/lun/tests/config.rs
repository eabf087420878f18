//! Tests: the configuration defaults and their validation.

use bdev::{Capabilities, Geometry};

use crate::port::port_pair;

use super::super::{Lun, LunConfig, MAX_TASKS};
use super::harness::caps;

/// The Block Limits page of a default unit over `caps()`, at `block_size`.
fn default_block_limits(block_size: u32) -> (crate::scsi::UnitInfo, Vec<u8>) {
    let geometry = Geometry {
        block_size,
        num_blocks: 1 << 24,
    };
    let unit = LunConfig::new(geometry, caps()).validate().unwrap();
    let mut page = [0u8; crate::scsi::RESPONSE_BUFFER_LEN];
    let len = crate::scsi::inquiry::vpd(&unit, 0xB0, &mut page);
    assert_eq!(len, 64);
    (unit, page[..len].to_vec())
}

fn be32(page: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(page[at..at + 4].try_into().unwrap())
}

/// MAXIMUM UNMAP LBA COUNT of a default unit: 2^20 blocks (512 MiB at 512
/// bytes, 4 GiB at 4 KiB), at both block sizes.
#[test]
fn default_max_unmap_lba_count() {
    for block_size in [512, 4096] {
        let (_, page) = default_block_limits(block_size);
        assert_eq!(be32(&page, 20), 1 << 20, "{block_size}");
    }
}

/// MAXIMUM WRITE SAME LENGTH of a default unit: 0xFFFF, the largest count
/// WRITE SAME (10) can carry, so both WRITE SAME CDBs reach the same
/// limit; the decoder enforces it.
#[test]
fn default_max_write_same_length() {
    for block_size in [512, 4096] {
        let (unit, page) = default_block_limits(block_size);
        assert_eq!(be32(&page, 36), 0, "{block_size}");
        assert_eq!(be32(&page, 40), 0xFFFF, "{block_size}");
        let ws16 = |blocks: u32| {
            let mut cdb = [0u8; 16];
            cdb[0] = 0x93;
            cdb[1] = 0x08; // UNMAP
            cdb[10..14].copy_from_slice(&blocks.to_be_bytes());
            crate::scsi::decode(&cdb, &unit)
        };
        assert!(ws16(0xFFFF).is_ok());
        assert_eq!(ws16(0x10000), Err(crate::scsi::ScsiError::cdb_byte(10)));
    }
}

#[test]
fn config_defaults() {
    let geometry = Geometry {
        block_size: 4096,
        num_blocks: 1 << 20,
    };
    let config = LunConfig::new(geometry, caps());
    assert_eq!(config.max_transfer_bytes, 256 * 4096 / 256 * 256); // 1 MiB
    assert_eq!(config.scratch_chunk_bytes, 256 * 1024);
    assert_eq!(config.num_blocks, 1 << 20);
    assert!(config.write_cache);
    let unit = config.validate().unwrap();
    assert_eq!(unit.serial, "0000000000000001");
    assert_eq!(&unit.vendor, b"DATAPLN ");
    assert_eq!(unit.max_transfer_blocks, 256);
    // A bdev with a small transfer limit lowers the defaults.
    let small = LunConfig::new(
        geometry,
        Capabilities {
            max_transfer_blocks: 8,
            ..caps()
        },
    );
    assert_eq!(small.max_transfer_bytes, 8 * 4096);
    assert_eq!(small.scratch_chunk_bytes, 8 * 4096);
    assert!(small.validate().is_ok());
    // Null bdev: no volatile cache, so no write cache.
    let null = bdev::null::NullBdev::new("n", 512, 1000).unwrap();
    let config = LunConfig::for_bdev(&null);
    assert!(!config.write_cache);
    assert!(config.validate().is_ok());
    // No topology from the bdev: one physical block per logical block.
    assert_eq!(config.bdev_topology, bdev::Topology::flat(512));
    let unit = config.validate().unwrap();
    assert_eq!(
        (unit.physical_block_exponent, unit.unmap_granularity_blocks),
        (0, 1)
    );
    // 512-byte blocks on a medium of 4 KiB blocks deallocating 64 KiB.
    let mut advanced = LunConfig::for_bdev(&null);
    advanced.bdev_topology = bdev::Topology {
        physical_block_size: 4096,
        unmap_granularity_blocks: 128,
    };
    let unit = advanced.validate().unwrap();
    assert_eq!(
        (unit.physical_block_exponent, unit.unmap_granularity_blocks),
        (3, 128)
    );
}

#[test]
fn config_validation() {
    let base = LunConfig::new(
        Geometry {
            block_size: 512,
            num_blocks: 1000,
        },
        caps(),
    );
    type Change = Box<dyn Fn(&mut LunConfig)>;
    let cases: Vec<(&str, Change)> = vec![
        ("vendor", Box::new(|c| c.vendor = "TOO LONG V".into())),
        ("vendor", Box::new(|c| c.vendor = String::new())),
        ("product", Box::new(|c| c.product = "x".repeat(17))),
        ("revision", Box::new(|c| c.revision = "é".into())),
        ("serial", Box::new(|c| c.serial = "has space".into())),
        ("serial", Box::new(|c| c.serial = "s".repeat(129))),
        ("ieee_company_id", Box::new(|c| c.ieee_company_id = 1 << 24)),
        ("num_blocks", Box::new(|c| c.num_blocks = 1001)),
        ("num_blocks", Box::new(|c| c.num_blocks = 0)),
        ("control mode", Box::new(|c| c.control.tst = 2)),
        ("control mode", Box::new(|c| c.control.queue_alg = 2)),
        ("control mode", Box::new(|c| c.control.qerr = 2)),
        (
            "block size",
            Box::new(|c| c.bdev_geometry.block_size = 1000),
        ),
        (
            "physical block",
            Box::new(|c| c.bdev_topology.physical_block_size = 256),
        ),
        (
            "physical block",
            Box::new(|c| c.bdev_topology.physical_block_size = 3 * 512),
        ),
        (
            "unmap granularity",
            Box::new(|c| c.bdev_topology.unmap_granularity_blocks = 0),
        ),
        (
            "write_cache",
            Box::new(|c| {
                c.capabilities.volatile_cache = false;
                c.write_cache = true;
            }),
        ),
        (
            "max_transfer_bytes",
            Box::new(|c| c.max_transfer_bytes = 1000),
        ),
        (
            "max_transfer_bytes",
            Box::new(|c| c.max_transfer_bytes = 257 * 512),
        ),
        (
            "max_compare_write_blocks",
            Box::new(|c| c.max_compare_write_blocks = 0),
        ),
        (
            "max_compare_write_blocks",
            Box::new(|c| {
                c.max_transfer_bytes = 4096;
                c.max_compare_write_blocks = 9;
            }),
        ),
        (
            "max_unmap_descriptors",
            Box::new(|c| c.max_unmap_descriptors = 0),
        ),
        (
            "max_unmap_descriptors",
            Box::new(|c| c.max_unmap_descriptors = 4096),
        ),
        (
            "max_unmap_lba_count",
            Box::new(|c| c.max_unmap_lba_count = 0),
        ),
        (
            "max_write_same_blocks",
            Box::new(|c| c.max_write_same_blocks = 0),
        ),
        ("max_tasks", Box::new(|c| c.max_tasks = 0)),
        ("max_tasks", Box::new(|c| c.max_tasks = MAX_TASKS + 1)),
        (
            "scratch_chunk_bytes",
            Box::new(|c| c.scratch_chunk_bytes = 1000),
        ),
        (
            "scratch_chunk_bytes",
            Box::new(|c| c.scratch_chunk_bytes = 257 * 512),
        ),
        (
            "scratch_bytes",
            Box::new(|c| c.scratch_bytes = c.scratch_chunk_bytes - 1),
        ),
    ];
    for (field, change) in cases {
        let mut config = base.clone();
        change(&mut config);
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains(field), "{field}: {error}");
        let (port, _end) = port_pair(4).unwrap();
        assert!(Lun::new(config, port).is_err());
    }
    // Unmap limits do not matter when the bdev cannot unmap.
    let mut config = base.clone();
    config.capabilities.unmap = false;
    config.max_unmap_descriptors = 0;
    let unit = config.validate().unwrap();
    assert_eq!(
        (unit.max_unmap_descriptors, unit.max_unmap_lba_count),
        (0, 0)
    );
}
