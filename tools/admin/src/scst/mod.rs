//! SCST LUN management for `dataplane scst`, through SCST's sysfs tree
//! (`/sys/kernel/scst_tgt`): export a registered dataplane device as a LUN
//! of scst_local (a local `/dev/sdX`) or of an iSCSI target, remove it, and
//! list devices.
//!
//! # The tree (scst_sysfs.c, scst_local)
//! - `devices/<name>/handler` → `handlers/<handler>`. scst_user registers
//!   one handler per device, named like the device, and gives the device a
//!   `commands` attribute; `devices/<name>/exported/exportK` → each LUN.
//! - `targets/<driver>/<target>/luns/mgmt`: `add <device> <lun>`,
//!   `del <lun>`; `luns/<lun>/device` → `devices/<name>`.
//! - `targets/scst_local/<target>/sessions/<session>/host` → the SCSI host
//!   (`hostN`) of that session; its disks are
//!   `<sysfs>/bus/scsi/devices/N:C:T:<lun>/block/<sdX>`.
//! - A `mgmt` write returns the command's result as the write's errno, or
//!   EAGAIN if it takes longer than 15 s; the result is then polled from
//!   `last_sysfs_mgmt_res` (EAGAIN while pending, then `<errno or 0>`).
//!
//! # add-lun ([`ScstAdmin::add_lun`])
//! Checks first, each with its own error: the values, root, SCST loaded
//! (`modprobe scst`), the target driver loaded (`modprobe scst_local` /
//! `iscsi-scst`), the target present, the device registered (is `dataplane
//! serve` running with that `[[scst]]` device?), the LUN free. Then `add
//! <device> <lun>`: the kernel sends ATTACH_SESS to the handler and waits
//! up to 5 s for its answer inside the write. With scst_local, waits for
//! the disk of each session and reports it (`disk: /dev/sdX`).
//!
//! # del-lun ([`ScstAdmin::del_lun`])
//! With scst_local, first deletes the local SCSI disk of each LUN
//! (`<scsi device>/delete`: `del` alone leaves a dead `/dev/sdX`, and
//! unloading scst_local while it exists oopses), then `del <lun>`.
//!
//! # Layout
//! [`ScstAdmin`] (`admin.rs`) holds the roots, the [`Fs`] and the checks
//! every operation shares; `add.rs`, `del.rs` and `list.rs` are the three
//! commands; `mgmt.rs` writes management commands and waits for their
//! result; `disks.rs` finds scst_local's disks; [`LunSpec`] and the driver
//! defaults are in `spec.rs`, [`AdminProgress`] in `progress.rs`,
//! [`ScstAdminError`] in `error.rs`.
//!
//! Paths come from a [`Roots`]; writes go through an [`Fs`] so that tests
//! can play the kernel.
//!
//! [`Roots`]: dataplane::kernfs::Roots
//! [`Fs`]: dataplane::kernfs::Fs

mod add;
mod admin;
mod del;
mod error;
mod list;
mod mgmt;
mod progress;
mod spec;

pub use admin::ScstAdmin;
pub use error::ScstAdminError;
pub use list::ScstDeviceEntry;
pub use progress::{AddedLun, AdminProgress};
pub use spec::{
    default_target, driver_module, LunSpec, DEFAULT_DRIVER, DEFAULT_LOCAL_TARGET, MAX_LUN,
};
