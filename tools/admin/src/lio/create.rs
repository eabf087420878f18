//! `dataplane lio create`.

use std::path::PathBuf;

use dataplane::kernfs::{read_trimmed, Fs, FsOp, KernfsError};
use dataplane::tcmu::discovery::{self, RingReset, UioDevice};

use super::admin::Lio;
use super::error::LioError;
use super::outcome::{Created, LoopbackLun, Progress, Rollback};
use super::spec::{default_wwn, initiator_wwn, parse_wwn, CreateSpec};
use super::tree::{numbered_subdirs, LunLink};

/// One thing to undo if `create` fails.
#[derive(Debug)]
enum Undo {
    /// Apply this change.
    Op(FsOp),
    /// Apply `reset` (`action/reset_ring` = 2) if no process has the UIO
    /// device open (before unlinking a LUN the kernel may have sent
    /// commands to).
    ResetRingIfUnattended { reset: FsOp, minor: u32 },
}

/// A linked LUN, before its disk has appeared.
struct Linked {
    wwn: String,
    link: LunLink,
    /// `H:C:T:L`.
    scsi_address: String,
    /// `<sysfs>/bus/scsi/devices/H:C:T:L/block`.
    scsi_dir: PathBuf,
}

impl<F: Fs> Lio<F> {
    /// Creates the TCMU device of `spec` (and its tcm_loop LUN with
    /// `spec.loopback`), reporting the UIO device and the disk through
    /// `progress` as soon as each is known. See the module docs for the
    /// exact steps, rollback, and errors.
    pub fn create(
        &mut self,
        spec: &CreateSpec,
        progress: &mut dyn FnMut(&Progress),
    ) -> Result<Created, LioError> {
        spec.validate()?;
        self.check_root()?;
        self.check_target_core()?;
        self.check_tcmu_module()?;
        if spec.loopback {
            self.check_tcm_loop()?;
        }
        let device_dir = self.roots.device_dir(spec.hba, &spec.name);
        if device_dir.symlink_metadata().is_ok() {
            return Err(LioError::NameInUse {
                name: spec.name.clone(),
                path: device_dir,
            });
        }

        let mut undo = Vec::new();
        let (uio, linked) = match self.create_steps(spec, &mut undo, progress) {
            Ok(done) => done,
            Err(cause) => {
                let rollback = self.rollback(undo);
                return Err(LioError::RolledBack {
                    cause: Box::new(cause),
                    rollback,
                });
            }
        };
        let mut created = Created {
            device_dir,
            uio: uio.uio(),
            loopback: None,
        };
        let Some(linked) = linked else {
            return Ok(created);
        };

        // From here on nothing is undone: the LUN is live.
        let disk = self.wait_for(self.timeout, || linked.link.disk(&self.roots));
        let Some(disk) = disk else {
            return Err(LioError::NoDisk {
                name: spec.name.clone(),
                bdev: spec.bdev.clone(),
                lun_dir: linked.link.lun_dir,
                scsi_dir: linked.scsi_dir,
                secs: self.timeout.as_secs_f64(),
            });
        };
        // sysfs shows the disk a moment before devtmpfs has its node; wait
        // for the node briefly, but report the disk either way (a /dev
        // without devtmpfs never gets one).
        let node_wait = self.timeout.min(std::time::Duration::from_secs(2));
        self.wait_for(node_wait, || disk.exists().then_some(()));
        progress(&Progress::Disk(disk.clone()));
        created.loopback = Some(LoopbackLun {
            wwn: linked.wwn,
            lun_dir: linked.link.lun_dir,
            scsi_address: linked.scsi_address,
            disk,
        });
        Ok(created)
    }

    /// The steps that are undone on failure: everything up to and including
    /// the LUN link. Pushes onto `undo` what each successful step made.
    fn create_steps(
        &mut self,
        spec: &CreateSpec,
        undo: &mut Vec<Undo>,
        progress: &mut dyn FnMut(&Progress),
    ) -> Result<(UioDevice, Option<Linked>), LioError> {
        let hba_dir = self.roots.hba_dir(spec.hba);
        if !hba_dir.is_dir() {
            self.apply(
                FsOp::Mkdir(hba_dir.clone()),
                "; the TCMU backend refuses it if target_core_user is not loaded",
            )?;
            undo.push(Undo::Op(FsOp::Rmdir(hba_dir)));
        }
        let device_dir = self.roots.device_dir(spec.hba, &spec.name);
        self.apply(FsOp::Mkdir(device_dir.clone()), "")?;
        undo.push(Undo::Op(FsOp::Rmdir(device_dir.clone())));

        let control = device_dir.join("control");
        for item in [
            format!("dev_config={}", spec.dev_config()),
            format!("dev_size={}", spec.size),
            format!("hw_block_size={}", spec.block_size),
            format!("hw_max_sectors={}", spec.max_sectors()),
            "nl_reply_supported=-1".to_owned(),
            format!("max_data_area_mb={}", spec.max_data_area_mb),
        ] {
            self.apply(
                FsOp::Write {
                    path: control.clone(),
                    value: item,
                },
                "",
            )?;
        }
        self.apply(
            FsOp::Write {
                path: device_dir.join("attrib/cmd_time_out"),
                value: spec.cmd_time_out.to_string(),
            },
            "",
        )?;
        // Task management reaches the handler only with TMR notifications
        // on (Linux 5.11+): the kernel then queues a TMR entry listing the
        // aborted commands, and the handler aborts their backend I/O.
        // Without it, a stuck command is only timed out by the kernel.
        let tmr_notification = device_dir.join("attrib/tmr_notification");
        if tmr_notification.exists() {
            self.apply(
                FsOp::Write {
                    path: tmr_notification,
                    value: "1".to_owned(),
                },
                "",
            )?;
        } else {
            progress(&Progress::NoTmrNotification);
        }
        self.apply(
            FsOp::Write {
                path: device_dir.join("enable"),
                value: "1".to_owned(),
            },
            "",
        )?;

        let uio = self
            .wait_for(self.uio_timeout, || {
                discovery::find_uio(&self.roots, spec.hba, &spec.name)
            })
            .ok_or_else(|| LioError::NoUio {
                hba: spec.hba,
                name: spec.name.clone(),
                class: self.roots.uio_class_dir(),
                secs: self.uio_timeout.as_secs_f64(),
            })?;
        progress(&Progress::Uio(uio.uio()));
        if !spec.loopback {
            return Ok((uio, None));
        }

        // The SCSI scan starts inside the symlink(2) below: a handler must
        // already be there to answer INQUIRY.
        self.wait_for(self.timeout, || {
            discovery::is_uio_open(&self.roots, uio.minor).then_some(())
        })
        .ok_or_else(|| LioError::NoHandler {
            uio: uio.uio(),
            subtype: spec.subtype.clone(),
            bdev: spec.bdev.clone(),
            secs: self.timeout.as_secs_f64(),
        })?;

        let wwn = match &spec.wwn {
            Some(w) => parse_wwn(w)?,
            None => default_wwn(spec.hba, &spec.name),
        };
        let loopback = self.roots.loopback_dir();
        if !loopback.is_dir() {
            // The fabric directory is shared and never removed by us.
            self.apply(FsOp::Mkdir(loopback.clone()), "")?;
        }
        let wwn_dir = loopback.join(&wwn);
        if !wwn_dir.is_dir() {
            self.apply(FsOp::Mkdir(wwn_dir.clone()), "")?;
            undo.push(Undo::Op(FsOp::Rmdir(wwn_dir.clone())));
        }
        if let Some(affinity) = spec.completion_cpu.affinity() {
            let attr = wwn_dir.join("param/cmd_completion_affinity");
            if !attr.exists() {
                return Err(LioError::Invalid(format!(
                    "this kernel's tcm_loop has no {} (cmd_completion_affinity came with Linux \
                     5.14): leave --completion-cpu at submitter",
                    attr.display()
                )));
            }
            self.apply(FsOp::write(attr, affinity), "")?;
        }
        let tpgt_dir = wwn_dir.join("tpgt_1");
        if !tpgt_dir.is_dir() {
            self.apply(FsOp::Mkdir(tpgt_dir.clone()), "")?;
            undo.push(Undo::Op(FsOp::Rmdir(tpgt_dir.clone())));
        }
        let used = numbered_subdirs(&tpgt_dir.join("lun"), "lun_");
        let lun = (0u64..).find(|n| !used.contains(n)).unwrap_or(0);
        let lun_dir = tpgt_dir.join(format!("lun/lun_{lun}"));
        self.apply(FsOp::Mkdir(lun_dir.clone()), "")?;
        undo.push(Undo::Op(FsOp::Rmdir(lun_dir.clone())));

        // tcm_loop answers ENODEV when reading `nexus` before one exists,
        // and EEXIST when writing a second one.
        let nexus = tpgt_dir.join("nexus");
        if read_trimmed(&nexus).map_or(true, |n| n.is_empty() || n == "NULL") {
            self.apply(
                FsOp::Write {
                    path: nexus,
                    value: initiator_wwn(&wwn),
                },
                "",
            )?;
        }
        let link = lun_dir.join(&spec.name);
        self.apply(
            FsOp::Symlink {
                target: device_dir.clone(),
                link: link.clone(),
            },
            "",
        )?;
        undo.push(Undo::Op(FsOp::Unlink(link.clone())));
        undo.push(Undo::ResetRingIfUnattended {
            reset: discovery::reset_ring_op(
                &self.roots,
                spec.hba,
                &spec.name,
                RingReset::CheckCondition,
            ),
            minor: uio.minor,
        });

        let link = LunLink {
            fabric: "loopback".to_owned(),
            wwn_dir,
            tpgt_dir: tpgt_dir.clone(),
            lun_dir,
            lun,
            link,
            hba_dir: format!("user_{}", spec.hba),
            device: spec.name.clone(),
        };
        let Some((scsi_address, scsi_dir)) = link.scsi_block_dir(&self.roots) else {
            let address = tpgt_dir.join("address");
            let content = read_trimmed(&address)?;
            return Err(KernfsError::Parse {
                path: address,
                content,
                why: "expected the SCSI address H:C:T",
            }
            .into());
        };
        Ok((
            uio,
            Some(Linked {
                wwn,
                link,
                scsi_address,
                scsi_dir,
            }),
        ))
    }

    /// Undoes `undo` in reverse order, carrying on past failures.
    fn rollback(&mut self, undo: Vec<Undo>) -> Rollback {
        let mut report = Rollback::default();
        for step in undo.into_iter().rev() {
            let op = match step {
                Undo::Op(op) => op,
                Undo::ResetRingIfUnattended { reset, minor } => {
                    if discovery::is_uio_open(&self.roots, minor) {
                        continue;
                    }
                    reset
                }
            };
            match self.fs.apply(&op) {
                Ok(()) => report.undone.push(op),
                Err(e) => report.failed.push((op, e)),
            }
        }
        report
    }
}
