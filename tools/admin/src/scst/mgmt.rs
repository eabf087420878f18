//! Management commands: one write to a `mgmt` file, and the wait for
//! `last_sysfs_mgmt_res` when SCST answers EAGAIN.

use std::io;
use std::path::Path;

use dataplane::kernfs::{Fs, FsOp};

use super::admin::ScstAdmin;
use super::error::ScstAdminError;

impl<F: Fs> ScstAdmin<F> {
    /// Writes a `mgmt` command; on EAGAIN polls `last_sysfs_mgmt_res` for
    /// its result. `hint` words the advice for a failing errno.
    pub(super) fn mgmt(
        &mut self,
        path: &Path,
        command: &str,
        hint: impl Fn(i32) -> String,
    ) -> Result<(), ScstAdminError> {
        let fail = |error: io::Error| {
            let h = error.raw_os_error().map(&hint).unwrap_or_default();
            ScstAdminError::Mgmt {
                path: path.to_path_buf(),
                command: command.to_owned(),
                error,
                hint: h,
            }
        };
        match self.fs.apply(&FsOp::write(path, command)) {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
                let result = self.roots.scst_mgmt_result();
                let outcome = self.wait_for(self.mgmt_timeout, || {
                    match std::fs::read_to_string(&result) {
                        Ok(text) => Some(parse_mgmt_result(&text)),
                        Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => None,
                        Err(e) => Some(Err(e)),
                    }
                });
                match outcome {
                    Some(Ok(())) => Ok(()),
                    Some(Err(e)) => Err(fail(e)),
                    None => Err(ScstAdminError::Mgmt {
                        path: path.to_path_buf(),
                        command: command.to_owned(),
                        error: io::Error::from_raw_os_error(libc::EAGAIN),
                        hint: format!(
                            "; still pending in {} after {} s",
                            result.display(),
                            self.mgmt_timeout.as_secs()
                        ),
                    }),
                }
            }
            Err(e) => Err(fail(e)),
        }
    }
}

/// `last_sysfs_mgmt_res` text: `0` or a negative errno.
fn parse_mgmt_result(text: &str) -> io::Result<()> {
    match text.trim().parse::<i32>() {
        Ok(0) => Ok(()),
        Ok(code) => Err(io::Error::from_raw_os_error(code.saturating_abs())),
        Err(_) => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("last_sysfs_mgmt_res reads {:?}", text.trim()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mgmt_results_are_zero_or_a_negative_errno() {
        assert!(parse_mgmt_result("0\n").is_ok());
        assert_eq!(
            parse_mgmt_result("-17\n").unwrap_err().raw_os_error(),
            Some(libc::EEXIST)
        );
        assert!(parse_mgmt_result("x").is_err());
    }
}
