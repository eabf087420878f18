//! The namespaces of an nvme run (`--bdev nvme`): one NVMe namespace's
//! generic character device (`/dev/ngXnY`) per device, opened as the
//! `nvme` bdev opens it (so a path it refuses, or a kernel without
//! passthrough, is said before anything runs, in the bdev's words), checked
//! to hold the range the workload addresses, all of one LBA size, which is
//! the devices' block size.
//!
//! Resolved once, before anything is measured, so that the raw passthrough
//! reference loop and the devices use the same namespaces.

use std::path::Path;

use bdev::nvme::{NvmeBdev, NvmeOptions};
use bdev::Bdev as _;

use crate::config::{BenchConfig, MAX_IO_BYTES};
use crate::error::{BenchConfigError, BenchError};
use crate::files::BenchFile;

/// What the namespaces of a run are: one per device, and their LBA size.
#[derive(Debug)]
pub(crate) struct Namespaces {
    /// Each device's namespace (as the one file of the device).
    pub files: Vec<Vec<BenchFile>>,
    /// Bytes per logical block, the same on every namespace.
    pub block_size: u32,
}

/// Opens the namespace at `path` as the nvme bdev `name`, with the run's
/// queue depth and IOPOLL setting; its ring holds the run's queue depth,
/// and it takes the bench's largest transfer (split into commands as the
/// namespace requires). An error the bdev gives about the path is the
/// bench's `--path` error.
pub(crate) fn open(
    name: String,
    config: &BenchConfig,
    path: &Path,
) -> Result<NvmeBdev, BenchError> {
    let options = NvmeOptions {
        queue_depth: config.iodepth.clamp(1, 32768),
        iopoll: config.file.iopoll,
        max_transfer_bytes: MAX_IO_BYTES as u32,
        ..NvmeOptions::new(path)
    };
    NvmeBdev::open(name, options).map_err(|e| match e {
        bdev::Error::Open { path, problem, .. } => BenchError::File {
            path,
            problem: problem.to_string(),
        },
        other => BenchError::Bdev(other),
    })
}

/// The namespaces of `devices` devices, one per path of `--path`.
pub(crate) fn prepare(config: &BenchConfig, devices: usize) -> Result<Namespaces, BenchError> {
    let paths = &config.file.paths;
    if paths.len() != devices {
        return Err(BenchConfigError::NvmePathCount {
            given: paths.len(),
            needed: devices,
        }
        .into());
    }
    let mut files = Vec::with_capacity(devices);
    let mut block_size = None;
    for (index, path) in paths.iter().enumerate() {
        let bdev = open(format!("nvme{index}"), config, path)?;
        let fail = |problem: String| BenchError::File {
            path: path.clone(),
            problem,
        };
        let geometry = bdev.geometry();
        let lba = geometry.block_size;
        if *block_size.get_or_insert(lba) != lba {
            return Err(fail(format!(
                "has {lba}-byte LBAs, the namespace before it {}-byte ones; the devices of \
                 a run share one block size",
                block_size.unwrap_or_default()
            )));
        }
        let capacity = geometry.size_bytes();
        if capacity < config.size {
            return Err(fail(format!(
                "holds {capacity} bytes, less than the {} bytes the run addresses (--size)",
                config.size
            )));
        }
        files.push(vec![BenchFile {
            path: path.clone(),
            range: config.size,
            created: false,
        }]);
    }
    Ok(Namespaces {
        files,
        block_size: block_size.unwrap_or(config.block_size),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BdevKind, FileConfig};
    use test_support::skip::{can_run, nvme_device, Need};

    fn config(paths: Vec<std::path::PathBuf>) -> BenchConfig {
        BenchConfig {
            bdev: BdevKind::Nvme,
            size: 1 << 20,
            file: FileConfig {
                paths,
                ..FileConfig::default()
            },
            ..BenchConfig::default()
        }
    }

    #[test]
    fn one_path_per_device() {
        let err = prepare(&config(vec!["/dev/ng0n1".into()]), 2).unwrap_err();
        assert_eq!(
            err.to_string(),
            "--path: 1 namespaces for 2 devices; give one NVMe generic device (/dev/ngXnY) \
             per device"
        );
    }

    #[test]
    fn what_is_not_a_namespace_is_named_and_said() {
        if !can_run(&[Need::IoUring]) {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("disk.img");
        std::fs::write(&file, [0u8; 4096]).unwrap();
        let missing = dir.path().join("ng9n9");
        for (path, problem) in [
            ("/dev/null".into(), "is a character device"),
            (
                file.clone(),
                "is a regular file (the `file` bdev serves files)",
            ),
            (missing.clone(), "does not exist"),
            (dir.path().to_path_buf(), "is a directory"),
        ] {
            let err = prepare(&config(vec![path.clone()]), 1).unwrap_err();
            assert!(
                matches!(err, BenchError::File { .. }),
                "{path:?}: not a path error: {err:?}"
            );
            let text = err.to_string();
            assert!(
                text.starts_with(&format!("--path {}: {problem}", path.display())),
                "{text}"
            );
        }
    }

    /// The namespace `DATAPLANE_TEST_NVME` names: its LBA size, and a
    /// range larger than it refused.
    #[test]
    fn a_namespace_gives_its_block_size_and_must_hold_the_range() {
        if !can_run(&[Need::IoUring, Need::NvmeGeneric]) {
            return;
        }
        let device = nvme_device().unwrap();
        let found = prepare(&config(vec![device.clone()]), 1).unwrap();
        assert!(found.block_size >= 512 && found.block_size.is_power_of_two());
        assert_eq!(found.files[0][0].path, device);
        assert!(!found.files[0][0].created);
        let huge = BenchConfig {
            size: 1 << 50,
            ..config(vec![device])
        };
        let err = prepare(&huge, 1).unwrap_err().to_string();
        assert!(
            err.contains("less than the 1125899906842624 bytes"),
            "{err}"
        );
    }
}
