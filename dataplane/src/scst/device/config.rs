//! [`ScstDeviceConfig`], its limits, and the checks [`ScstDevice::new`]
//! makes on the settings and on the registered options.
//!
//! [`ScstDevice::new`]: super::ScstDevice::new

use std::time::Duration;

use nix::errno::Errno;

use crate::frontend::CoalesceConfig;
use crate::scsi::{ControlMode, UnitInfo};
use crate::scst::abi::*;

/// Largest `budget` accepted.
pub const MAX_BUDGET: usize = 4096;
/// Most task slots a device uses (more executor tasks are left unused).
pub const MAX_SLOTS: usize = 16384;
/// Most TASK_MGMT_DONEs waiting for their commands at once; more wait in
/// the held queue.
pub const MAX_TM_WAITS: usize = 64;

/// Errors of [`ScstDevice::new`](super::ScstDevice::new).
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// A [`ScstDeviceConfig`] value is out of range; the message names it.
    #[error("invalid SCST device configuration: {0}")]
    InvalidConfig(String),
    /// SCST_USER_GET_OPTIONS failed (is the device registered?).
    #[error("SCST_USER_GET_OPTIONS failed: {0} (the device must be registered first)")]
    GetOptions(Errno),
    /// The registered options ask for something the device does not do.
    #[error("unsupported scst_user options: {0}")]
    UnsupportedOptions(String),
    /// The executor has no task slots.
    #[error("the command executor has no task slots")]
    NoTaskSlots,
}

/// Device settings.
#[derive(Debug, Clone)]
pub struct ScstDeviceConfig {
    /// Poller name (statistics, logs), e.g. `scst:disk0`. Default `scst`.
    pub name: String,
    /// Most new subcommands asked for per ioctl (the REPLY_AND_GET_MULTI
    /// buffer's capacity), and most executor completions collected per
    /// poll. 1..=[`MAX_BUDGET`]. Default 128.
    pub budget: usize,
    /// Task slots used, at most the executor's `max_tasks` and
    /// [`MAX_SLOTS`]; 0 = as many as the executor has. Default 0.
    pub max_tasks: u32,
    /// The logical unit's description, used to answer PARSE (required when
    /// the registered parse type is CALL or EXCEPTION) and to check that the
    /// pool's largest buffer covers the unit's maximum transfer. Pass the
    /// executor's (`Lun::unit().clone()`). Default `None`.
    pub unit: Option<UnitInfo>,
    /// Reply coalescing, by the rule of [`crate::frontend::Coalescer`]: a
    /// batch *builds by itself* while commands are executing. Replies that
    /// need no prompt answer (EXEC completions, ON_FREE_CMD,
    /// ON_CACHED_MEM_FREE) are then held until `batch` are queued, and the
    /// device does not ask for new subcommands after a call that found
    /// none, so that one ioctl carries many replies. Replies a command or
    /// the kernel waits for (PARSE, ALLOC_MEM, sessions, task management)
    /// are never held. The hold is measured from the last exchange:
    /// `max_hold` is the longest time before the next one happens anyway (a
    /// held reply goes out, or the device looks for new subcommands). A
    /// `window` holds replies even when nothing executes; as one ioctl
    /// both answers and asks, no new subcommand is asked for while replies
    /// are held. See [`ScstDevice::poll`](super::ScstDevice::poll) for
    /// when an exchange happens at once. Defaults: batch 32 (1 exchanges at
    /// every poll that has a reply; 0 is refused), `max_hold` 20 µs, no
    /// window.
    pub coalesce: CoalesceConfig,
    /// Record each command's latency (EXEC received to response collected)
    /// for statistics ([`ScstDevice::latency`](super::ScstDevice::latency)).
    /// Default true.
    pub track_latency: bool,
    /// Idle polling interval: with no reply to send and no command
    /// executing, a call that found nothing is followed by the next one only
    /// after this long (a call that found something is followed at once).
    /// Every call is a system call, so this bounds the syscall rate of an
    /// idle busy-polled device; a command arriving while idle waits at most
    /// this long. Default 5 µs; 0 asks at every poll.
    pub idle_poll_interval: Duration,
    /// The longest an idle device goes without a call while its driver
    /// says nothing is queued ([`ScstDriver::may_have_work`]): what a
    /// wake-up the kernel never sends costs at most. Default
    /// [`idle_watch::BACKSTOP`] (1 ms).
    ///
    /// [`ScstDriver::may_have_work`]: crate::scst::driver::ScstDriver::may_have_work
    /// [`idle_watch::BACKSTOP`]: crate::scst::idle_watch::BACKSTOP
    pub idle_backstop: Duration,
}

impl Default for ScstDeviceConfig {
    fn default() -> Self {
        Self {
            name: "scst".to_owned(),
            budget: 128,
            max_tasks: 0,
            unit: None,
            coalesce: CoalesceConfig::default(),
            track_latency: true,
            idle_poll_interval: Duration::from_micros(5),
            idle_backstop: crate::scst::idle_watch::BACKSTOP,
        }
    }
}

/// What the Control mode page of a unit served through scst_user must
/// report: the task-set model SCST's core runs for the device, which is the
/// registered options (`tst`, `queue_alg`, `qerr`, `tas`, `swp`; the core
/// applies them, the handler never sees task sets). D_SENSE is not
/// changeable: SCST builds sense for the errors it raises itself (BUSY,
/// RESERVATION CONFLICT, unit attentions, commands failed before or after
/// the handler) in the registered `d_sense` format, and a MODE SELECT the
/// unit answers cannot change it. Propagating it is no option: SET_OPTIONS
/// suspends the device's activity until every command in flight finished,
/// and the commands need this device's own poll loop to finish. So a MODE
/// SELECT that changes D_SENSE fails with ILLEGAL REQUEST, INVALID FIELD
/// IN PARAMETER LIST at the bit, as for any parameter that is not
/// changeable (SPC-4 6.13), and the format stays the one registered (set
/// `d_sense` in the device's options to choose it).
pub fn control_mode(options: &ScstUserOpt) -> ControlMode {
    ControlMode {
        tst: options.tst,
        queue_alg: options.queue_alg,
        qerr: options.qerr,
        tas: options.tas != 0,
        swp: options.swp != 0,
        d_sense_changeable: false,
    }
}

/// Refuses option combinations the device cannot serve.
pub(super) fn check_options(options: &ScstUserOpt, have_unit: bool) -> Result<(), DeviceError> {
    let unsupported = |msg: String| Err(DeviceError::UnsupportedOptions(msg));
    if options.partial_transfers_type != SCST_USER_PARTIAL_TRANSFERS_NOT_SUPPORTED {
        return unsupported(format!(
            "partial_transfers_type {} (only NOT_SUPPORTED is implemented)",
            options.partial_transfers_type
        ));
    }
    if options.parse_type > SCST_USER_PARSE_EXCEPTION {
        return unsupported(format!("parse_type {}", options.parse_type));
    }
    if options.memory_reuse_type > SCST_USER_MEM_REUSE_ALL {
        return unsupported(format!("memory_reuse_type {}", options.memory_reuse_type));
    }
    if options.on_free_cmd_type > SCST_USER_ON_FREE_CMD_IGNORE {
        return unsupported(format!("on_free_cmd_type {}", options.on_free_cmd_type));
    }
    if options.on_free_cmd_type == SCST_USER_ON_FREE_CMD_IGNORE
        && options.memory_reuse_type != SCST_USER_MEM_REUSE_ALL
    {
        return unsupported(format!(
            "on_free_cmd_type IGNORE with memory_reuse_type {}: buffers of the directions the \
             kernel does not cache would never be returned (use ON_FREE_CMD CALL, or memory \
             reuse ALL)",
            options.memory_reuse_type
        ));
    }
    if options.parse_type != SCST_USER_PARSE_STANDARD && !have_unit {
        return Err(DeviceError::InvalidConfig(
            "parse type CALL or EXCEPTION needs ScstDeviceConfig::unit to answer PARSE".to_owned(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use bdev::{Capabilities, Geometry};

    use super::*;
    use crate::lun::LunConfig;
    use crate::scsi::{cdb, emulate, ModeState, ModeValues, ScsiError, RESPONSE_BUFFER_LEN};
    use crate::scst::register::ScstOptions;

    /// The default registration (fileio_tgt's tst 1, tas 0) reported as it
    /// is by a unit built from it, and D_SENSE held to the registered one.
    #[test]
    fn the_unit_reports_the_registered_task_set_model() {
        let options = ScstOptions::default().to_abi();
        let control = control_mode(&options);
        assert_eq!(
            control,
            ControlMode {
                tst: 1,
                queue_alg: 1,
                qerr: 0,
                tas: false,
                swp: false,
                d_sense_changeable: false,
            }
        );
        let geometry = Geometry {
            block_size: 512,
            num_blocks: 1 << 10,
        };
        let caps = Capabilities {
            volatile_cache: false,
            unmap: false,
            unmap_reads_zeroes: false,
            write_zeroes: false,
            max_transfer_blocks: 0,
            max_unmap_blocks: 0,
            optimal_boundary_blocks: 0,
        };
        let mut config = LunConfig::new(geometry, caps);
        config.control = control;
        let unit = config.validate().unwrap();
        let mut mode = ModeState::new(ModeValues {
            write_cache: false,
            descriptor_sense: false,
        });
        let mut out = [0u8; RESPONSE_BUFFER_LEN];
        let sense = cdb::decode(&[0x1A, 0x08, 0x0A, 0, 0xFF, 0], &unit).unwrap();
        let len = emulate(&sense, &unit, &mut mode, &[], &mut out).unwrap();
        assert_eq!(len, 16);
        // TST 001b, QAM 1, TAS 0.
        assert_eq!(out[4 + 2..4 + 6], [0x20, 0x10, 0, 0]);
        let mut list = [0u8; 16];
        list[4..].copy_from_slice(&out[4..16]);
        list[4 + 2] |= 0x04;
        let select = cdb::decode(&[0x15, 0x10, 0, 0, 16, 0], &unit).unwrap();
        assert_eq!(
            emulate(&select, &unit, &mut mode, &list, &mut out),
            Err(ScsiError::param_bit(6, 2))
        );
        assert!(!mode.current.descriptor_sense);
    }
}
