//! CDBs, sessions, options, pools and devices the tests share.

use super::*;

pub use test_support::scst::options;

pub const READ_10: [u8; 10] = [0x28, 0, 0, 0, 0, 8, 0, 0, 1, 0];
pub const WRITE_10: [u8; 10] = [0x2A, 0, 0, 0, 0, 8, 0, 0, 2, 0];
pub const SESS_A: u64 = 0xA000;
pub const SESS_B: u64 = 0xB000;

pub fn default_options() -> ScstUserOpt {
    options(
        SCST_USER_MEM_REUSE_ALL,
        SCST_USER_ON_FREE_CMD_CALL,
        SCST_USER_PARSE_STANDARD,
    )
}

pub fn small_pool(max_bytes: usize, max_buffer_bytes: usize) -> BufferPool {
    BufferPool::new(PoolConfig {
        max_bytes,
        max_buffer_bytes,
        populate: false,
    })
    .unwrap()
}

pub fn unit() -> UnitInfo {
    let geometry = Geometry {
        block_size: 4096,
        num_blocks: 1 << 16,
    };
    let caps = Capabilities {
        volatile_cache: false,
        unmap: true,
        unmap_reads_zeroes: true,
        write_zeroes: true,
        max_transfer_blocks: 0,
        max_unmap_blocks: 0,
        optimal_boundary_blocks: 0,
    };
    LunConfig::new(geometry, caps).validate().unwrap()
}

pub type Dev = ScstDevice<FakeKernel, Manual>;

pub fn device_with(
    opts: ScstUserOpt,
    tasks: u32,
    budget: usize,
    pool: BufferPool,
    unit: Option<UnitInfo>,
) -> (FakeKernel, Dev) {
    // No coalescing: every poll with something to send or ask exchanges,
    // which keeps the protocol tests step by step.
    let config = ScstDeviceConfig {
        name: "scst:test".into(),
        budget,
        unit,
        coalesce: CoalesceConfig {
            max_hold: Duration::ZERO,
            ..CoalesceConfig::default()
        },
        idle_poll_interval: Duration::ZERO,
        ..ScstDeviceConfig::default()
    };
    device_config(opts, tasks, pool, config)
}

pub fn device_config(
    opts: ScstUserOpt,
    tasks: u32,
    pool: BufferPool,
    config: ScstDeviceConfig,
) -> (FakeKernel, Dev) {
    let kernel = FakeKernel::new(opts);
    let dev = ScstDevice::new(kernel.clone(), Manual::new(tasks), pool, config).unwrap();
    (kernel, dev)
}

pub fn device() -> (FakeKernel, Dev) {
    device_with(
        default_options(),
        16,
        32,
        small_pool(4 << 20, 1 << 20),
        None,
    )
}

pub fn fixed_sense(key: u8, asc: u8, ascq: u8) -> Vec<u8> {
    let mut s = vec![0u8; 18];
    s[0] = 0x70;
    s[2] = key;
    s[7] = 10;
    s[12] = asc;
    s[13] = ascq;
    s
}
