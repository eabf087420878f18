//! `dataplane lio delete`.

use dataplane::kernfs::{Fs, FsOp};
use dataplane::tcmu::discovery::{self, RingReset};

use super::admin::Lio;
use super::error::LioError;
use super::outcome::Deleted;
use super::spec::{validate_name, DEFAULT_SUBTYPE};
use super::tree::{dev_config, lun_links, numbered_subdirs, subdirs, user_hbas};

impl<F: Fs> Lio<F> {
    /// [`Lio::delete_of_subtype`] for the default subtype
    /// ([`DEFAULT_SUBTYPE`]).
    pub fn delete(&mut self, name: &str, hba: Option<u32>) -> Result<Deleted, LioError> {
        self.delete_of_subtype(name, hba, DEFAULT_SUBTYPE)
    }

    /// Deletes TCMU device `name` of HBA `hba` (`None`: the one HBA that has
    /// a device of that name) and its tcm_loop LUNs, in reverse order of
    /// creation; see the module docs. Stops at the first failing change.
    ///
    /// Only a device of handler `subtype` (its `dev_config` is
    /// `<subtype>/...`) or one never configured (no handler can claim it)
    /// is deleted; another handler's device is refused before any change
    /// ([`LioError::OtherHandler`]).
    pub fn delete_of_subtype(
        &mut self,
        name: &str,
        hba: Option<u32>,
        subtype: &str,
    ) -> Result<Deleted, LioError> {
        validate_name("device name", name)?;
        self.check_root()?;
        self.check_target_core()?;
        let hba = self.resolve_hba(name, hba)?;
        let device_dir = self.roots.device_dir(hba, name);
        if let (Some(theirs), _) = dev_config(&device_dir) {
            if theirs != subtype {
                return Err(LioError::OtherHandler {
                    name: name.to_owned(),
                    dir: device_dir,
                    theirs,
                    ours: subtype.to_owned(),
                });
            }
        }

        let links: Vec<_> = lun_links(&self.roots)
            .into_iter()
            .filter(|l| l.is_tcmu_device(hba, name))
            .collect();
        if let Some(foreign) = links.iter().find(|l| l.fabric != "loopback") {
            return Err(LioError::ForeignExport {
                name: name.to_owned(),
                link: foreign.link.clone(),
            });
        }

        let mut ops = Vec::new();
        // Without a handler, commands queued by the SCSI layer would keep
        // the LUN's reference (and the unlink) waiting until cmd_time_out,
        // or forever with cmd_time_out = 0.
        if let Some(uio) = discovery::find_uio(&self.roots, hba, name) {
            if !discovery::is_uio_open(&self.roots, uio.minor) {
                let reset =
                    discovery::reset_ring_op(&self.roots, hba, name, RingReset::CheckCondition);
                self.delete_step(&mut ops, reset, "")?;
            }
        }
        for link in &links {
            self.delete_step(&mut ops, FsOp::Unlink(link.link.clone()), "")?;
            self.delete_step(&mut ops, FsOp::Rmdir(link.lun_dir.clone()), "")?;
            if numbered_subdirs(&link.tpgt_dir.join("lun"), "lun_").is_empty() {
                self.delete_step(&mut ops, FsOp::Rmdir(link.tpgt_dir.clone()), "")?;
                if numbered_subdirs(&link.wwn_dir, "tpgt_").is_empty() {
                    self.delete_step(&mut ops, FsOp::Rmdir(link.wwn_dir.clone()), "")?;
                }
            }
        }
        self.delete_step(
            &mut ops,
            FsOp::Rmdir(device_dir),
            "; LIO refuses while the device is still exported (a LUN link) or held",
        )?;
        let hba_dir = self.roots.hba_dir(hba);
        if subdirs(&hba_dir).is_empty() {
            self.delete_step(&mut ops, FsOp::Rmdir(hba_dir), "")?;
        }
        Ok(Deleted { hba, ops })
    }

    fn delete_step(&mut self, ops: &mut Vec<FsOp>, op: FsOp, hint: &str) -> Result<(), LioError> {
        let done = if ops.is_empty() {
            String::new()
        } else {
            let list: Vec<String> = ops.iter().map(ToString::to_string).collect();
            format!("; already done: {}", list.join(", "))
        };
        self.apply(op.clone(), &format!("{hint}{done}"))?;
        ops.push(op);
        Ok(())
    }

    /// The HBA of device `name`: `hba` if given (the device must exist
    /// there), else the only `core/user_*` that has it.
    fn resolve_hba(&self, name: &str, hba: Option<u32>) -> Result<u32, LioError> {
        if let Some(hba) = hba {
            let dir = self.roots.device_dir(hba, name);
            if dir.is_dir() {
                return Ok(hba);
            }
            return Err(LioError::NoSuchDevice {
                name: name.to_owned(),
                looked_in: format!("{} does not exist", dir.display()),
            });
        }
        let found: Vec<(u32, String)> = user_hbas(&self.roots)
            .into_iter()
            .filter(|(_, dir)| dir.join(name).is_dir())
            .map(|(hba, dir)| (hba, dir.display().to_string()))
            .collect();
        match found.as_slice() {
            [] => Err(LioError::NoSuchDevice {
                name: name.to_owned(),
                looked_in: format!("no {}/user_*/{name}", self.roots.core_dir().display()),
            }),
            [(hba, _)] => Ok(*hba),
            more => Err(LioError::Ambiguous {
                name: name.to_owned(),
                hbas: more
                    .iter()
                    .map(|(_, d)| d.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }
}
