//! Management commands ([`scst_mgmt`]), with advice for the errno.

use std::io;
use std::path::Path;

use dataplane::kernfs::{scst_mgmt, Fs, MgmtError};

use super::admin::ScstAdmin;
use super::error::ScstAdminError;

impl<F: Fs> ScstAdmin<F> {
    /// Writes a `mgmt` command and waits for its result. `hint` words the
    /// advice for a failing errno.
    pub(super) fn mgmt(
        &mut self,
        path: &Path,
        command: &str,
        hint: impl Fn(i32) -> String,
    ) -> Result<(), ScstAdminError> {
        scst_mgmt(&mut self.fs, &self.roots, path, command, self.mgmt_timeout).map_err(|e| {
            let (error, hint) = match e {
                MgmtError::Refused(error) => {
                    let h = error.raw_os_error().map(&hint).unwrap_or_default();
                    (error, h)
                }
                pending @ MgmtError::Pending { .. } => (
                    io::Error::from_raw_os_error(libc::EAGAIN),
                    format!("; {pending}"),
                ),
            };
            ScstAdminError::Mgmt {
                path: path.to_path_buf(),
                command: command.to_owned(),
                error,
                hint,
            }
        })
    }
}
