//! LIO configfs management for `dataplane lio`: create, delete and list TCMU
//! devices (`/sys/kernel/config/target/core/user_<hba>/<name>`), optionally
//! exported through a tcm_loop LUN so that a local `/dev/sdX` appears.
//!
//! # Create ([`Lio::create`])
//! Checks first, each with its own error: valid values ([`CreateSpec`]),
//! root, configfs mounted, `target_core_mod` / `target_core_user` (and
//! `tcm_loop` with `--loopback`) loaded, the name free. Modules are never
//! loaded implicitly: the error prints the `modprobe` command. Then, in
//! order (every change is one [`FsOp`]):
//! 1. `mkdir core/user_<hba>` (if missing) and `core/user_<hba>/<name>`;
//! 2. `control`, one item per write: `dev_config=<subtype>/<bdev>`,
//!    `dev_size=`, `hw_block_size=`, `hw_max_sectors=`,
//!    `nl_reply_supported=-1` (so enable never waits for a netlink reply),
//!    `max_data_area_mb=` (pre-enable only);
//! 3. `attrib/cmd_time_out` (it cannot change once the device is exported),
//!    `attrib/tmr_notification` = 1 so that aborts and resets reach the
//!    handler as TMR entries (a kernel without it, before 5.11, gets a
//!    [`Progress::NoTmrNotification`] line instead);
//! 4. `enable` = 1, then wait for the UIO device `tcm-user/<hba>/<name>/...`
//!    ([`Progress::Uio`]).
//!
//! With loopback, before anything is exported, wait until a handler has the
//! UIO device open (the kernel's SCSI scan sends INQUIRY while the LUN is
//! being linked, and would hang without one); then `mkdir
//! loopback/<wwn>/tpgt_1/lun/lun_<n>`, write `tpgt_1/nexus` (if no nexus
//! yet), symlink `lun_<n>/<name>` → the device, read `tpgt_1/address`
//! (`H:C:T`) and wait for `<sysfs>/bus/scsi/devices/H:C:T:n/block/<sdX>`
//! ([`Progress::Disk`]).
//!
//! If any step up to the link fails, what was created is undone in reverse
//! order and the error says which step failed, with the OS error, and what
//! was undone ([`LioError::RolledBack`]). If the disk does not appear in
//! time, everything is left in place ([`LioError::NoDisk`]).
//!
//! # Delete ([`Lio::delete`], [`Lio::delete_of_subtype`])
//! Only a device of our handler subtype (`dev_config=<subtype>/...`), or one
//! never configured, is deleted: another handler's device of the same name
//! is refused before any change ([`LioError::OtherHandler`]).
//! If no process has the UIO device open, `action/reset_ring` = 2 first (else
//! unlinking the LUN waits on commands nobody will complete); then for every
//! tcm_loop LUN of the device: unlink, `rmdir lun_<n>`, `tpgt_<t>` if it has
//! no LUN left, `<wwn>` if it has no TPG left; then `rmdir` the device and
//! `core/user_<hba>` if it has no device left. A device exported through
//! another fabric (e.g. iSCSI) is refused, naming the LUN.
//!
//! # List ([`Lio::list`])
//! Every TCMU device (or those of one subtype) with its configuration, UIO
//! device and tcm_loop disk.
//!
//! # Layout
//! [`Lio`] (`admin.rs`) holds the roots, the [`Fs`] and the change and wait
//! primitives; `checks.rs` the preconditions; `create.rs`, `delete.rs` and
//! `list.rs` the three commands; `tree.rs` the configfs walks they share;
//! [`CreateSpec`] and the name and WWN rules are in `spec.rs`, what the
//! commands report in `outcome.rs`, [`LioError`] in `error.rs`.
//!
//! [`Fs`]: dataplane::kernfs::Fs
//! [`FsOp`]: dataplane::kernfs::FsOp

mod admin;
mod checks;
mod create;
mod delete;
mod error;
mod list;
mod outcome;
mod spec;
mod tree;

pub use admin::Lio;
pub use error::LioError;
pub use list::LioDevice;
pub use outcome::{Created, Deleted, LoopbackLun, Progress, Rollback};
pub use spec::{
    default_wwn, initiator_wwn, parse_wwn, validate_name, CompletionCpu, CreateSpec, BLOCK_SIZES,
    DEFAULT_SUBTYPE,
};
