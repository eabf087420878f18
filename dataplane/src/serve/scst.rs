//! `[[scst]]` devices of `dataplane serve`: an scst_user device per entry,
//! registered at start and served until shutdown.
//!
//! # Building one ([`build_device`])
//! 1. The host opens a fresh `/dev/scst_user` fd (`O_NONBLOCK`: scst_user
//!    latches the mode at REGISTER_DEVICE) — [`super::Host::open_scst`].
//! 2. REGISTER_DEVICE with the configured or discovered DEV_USER_VERSION,
//!    then SET_OPTIONS / GET_OPTIONS ([`register_with_version`], whose
//!    errors say what to do).
//! 3. A LUN over the bdev (serial = the device name, a stable `lu_id`
//!    derived from it, sense format per `d_sense`), a [`BufferPool`] capped
//!    at `pool_mb`, and the [`ScstDevice`] polling both; the LUN's bdev port
//!    goes to the reactor's bdev poller (the caller's job).
//!
//! Unlike TCMU devices, which come and go with LIO, SCST devices exist
//! because this process registers them: a failure here is fatal at start,
//! and closing the fd (at shutdown, after the device drained) unregisters
//! the device and removes its LUNs from SCST.

use bdev::BdevRef;

use super::config::ScstConfig;
use super::server::MAX_TRANSFER_BYTES;
use crate::lun::{Lun, LunConfig};
use crate::port::{port_pair, ChannelEnd};
use crate::scsi::SenseFormat;
use crate::scst::device::{ScstDevice, ScstDeviceConfig};
use crate::scst::driver::ScstDriver;
use crate::scst::pool::{BufferPool, PoolConfig};
use crate::scst::register::{register_with_version, RegisterSpec};
use crate::scst::version::VersionSource;

/// Task slots of an SCST device's LUN.
const MAX_TASKS: u32 = 1024;

/// The device type `dataplane serve` runs for an `[[scst]]` entry.
pub type ServedScstDevice = ScstDevice<Box<dyn ScstDriver>, Lun>;

/// A stable, non-zero 64-bit id of an SCST device (for VPD 0x83): FNV-1a
/// of `scst/<name>`, so it differs from the id of a TCMU device of the same
/// name.
pub fn lu_id(name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in b"scst/".iter().chain(name.as_bytes()) {
        h ^= u64::from(*byte);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h.max(1)
}

/// Registers the device of `config` on `driver` with `version` and builds
/// its LUN, pool and [`ScstDevice`]. Returns the device and the bdev end of
/// its LUN's port (to attach to a bdev poller). An error is the message of
/// the failing step (registration errors are [`register_with_version`]'s).
pub fn build_device(
    config: &ScstConfig,
    bdev: &BdevRef,
    mut driver: Box<dyn ScstDriver>,
    version: &str,
    source: &VersionSource,
) -> Result<(ServedScstDevice, ChannelEnd), String> {
    let geometry = bdev.geometry();
    let options = config.options();
    let mut spec = RegisterSpec::new(config.name.clone(), geometry.block_size);
    spec.version = Some(version.to_owned());
    spec.options = options;
    register_with_version(&mut driver, &spec, version, source).map_err(|e| e.to_string())?;

    let mut lun_config = LunConfig::for_bdev(bdev.as_ref());
    lun_config.serial = config.name.clone();
    lun_config.lu_id = lu_id(&config.name);
    lun_config.max_tasks = MAX_TASKS;
    lun_config.sense_format = if options.d_sense != 0 {
        SenseFormat::Descriptor
    } else {
        SenseFormat::Fixed
    };
    let depth = MAX_TASKS.next_power_of_two() as usize;
    let (port, end) = port_pair(depth).map_err(|e| e.to_string())?;
    let lun = Lun::new(lun_config, port).map_err(|e| format!("LUN configuration: {e}"))?;
    let unit = lun.unit().clone();
    // The largest buffer covers the largest transfer SCST may send (the
    // LUN answers anything beyond its own limit with INVALID FIELD IN CDB);
    // pages are faulted in on first use and then reused.
    let pool = BufferPool::new(PoolConfig {
        max_bytes: config.pool_bytes(),
        max_buffer_bytes: MAX_TRANSFER_BYTES as usize,
        populate: false,
    })
    .map_err(|e| e.to_string())?;
    let device = ScstDevice::new(
        driver,
        lun,
        pool,
        ScstDeviceConfig {
            name: format!("scst:{}", config.name),
            unit: Some(unit),
            idle_poll_interval: config.idle_poll_interval(),
            coalesce: config.coalesce(),
            ..ScstDeviceConfig::default()
        },
    )
    .map_err(|e| e.to_string())?;
    Ok((device, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lu_ids_are_stable_and_distinct() {
        // FNV-1a 64 of "scst/disk0": the same in every build and run.
        assert_eq!(lu_id("disk0"), LU_ID_DISK0);
        assert_ne!(lu_id("disk1"), LU_ID_DISK0);
        assert_ne!(lu_id(""), 0);
    }

    const LU_ID_DISK0: u64 = 0xcc7e_6a26_1108_1a50;
}
