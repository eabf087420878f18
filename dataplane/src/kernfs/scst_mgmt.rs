//! SCST's sysfs management commands: one write to a `mgmt` file, whose
//! errno is the command's result; when the command takes longer than 15 s
//! SCST answers EAGAIN and the result appears later in
//! `last_sysfs_mgmt_res` (EAGAIN while pending, then `0` or `-<errno>`).

use std::io;
use std::path::Path;
use std::time::Duration;

use super::{poll_until, Fs, FsOp, Roots};

/// How often a pending result is polled.
const POLL: Duration = Duration::from_millis(20);

/// Why a management command did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum MgmtError {
    /// The kernel refused it (the write's errno, or the one
    /// `last_sysfs_mgmt_res` gave).
    #[error(transparent)]
    Refused(io::Error),
    /// Still pending when the wait ended.
    #[error("still pending in {} after {} s", result.display(), secs)]
    Pending {
        /// `last_sysfs_mgmt_res`.
        result: std::path::PathBuf,
        /// How long it was waited for.
        secs: u64,
    },
}

impl MgmtError {
    /// The errno of a refusal.
    pub fn errno(&self) -> Option<i32> {
        match self {
            MgmtError::Refused(e) => e.raw_os_error(),
            MgmtError::Pending { .. } => None,
        }
    }
}

/// Writes `command` to the `mgmt` file `path`; on EAGAIN waits up to
/// `timeout` for its result in `last_sysfs_mgmt_res`.
pub fn scst_mgmt(
    fs: &mut dyn Fs,
    roots: &Roots,
    path: &Path,
    command: &str,
    timeout: Duration,
) -> Result<(), MgmtError> {
    match fs.apply(&FsOp::write(path, command)) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
            let result = roots.scst_mgmt_result();
            let outcome = poll_until(timeout, POLL, || match std::fs::read_to_string(&result) {
                Ok(text) => Some(parse_mgmt_result(&text)),
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => None,
                Err(e) => Some(Err(e)),
            });
            match outcome {
                Some(Ok(())) => Ok(()),
                Some(Err(e)) => Err(MgmtError::Refused(e)),
                None => Err(MgmtError::Pending {
                    result,
                    secs: timeout.as_secs(),
                }),
            }
        }
        Err(e) => Err(MgmtError::Refused(e)),
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
