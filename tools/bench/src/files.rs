//! The files of a file-backed run: which paths each device's bdev (or each
//! child of its striped bdev) uses, created sparse when missing, and
//! checked to hold the range the workload addresses. A block device is
//! written only with `--destroy-data`: what it holds is not the bench's.
//!
//! Resolved once, before anything is measured, so that the raw io_uring
//! reference loop and the devices use the same files.

use std::fs::{self, File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::config::BenchConfig;
use crate::error::{BenchConfigError, BenchError};

/// One file (or block device, or NVMe namespace) of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BenchFile {
    /// Where it is.
    pub path: PathBuf,
    /// Bytes the workload addresses in it (from offset 0).
    pub range: u64,
    /// Created sparse by this run (so it reads back zeroes).
    pub created: bool,
}

/// The files of each of `devices` devices, device by device (one per
/// device, or one per child of a striped bdev), created sparse where
/// missing. See [`FileConfig::paths`](crate::config::FileConfig::paths)
/// for how `--path` names them.
pub(crate) fn prepare(
    config: &BenchConfig,
    devices: usize,
) -> Result<Vec<Vec<BenchFile>>, BenchError> {
    let per_device = config.files_per_device() as usize;
    let needed = devices * per_device;
    let paths = &config.file.paths;
    let range = config.size / per_device as u64;
    let names: Vec<PathBuf> = match paths.as_slice() {
        [dir] if dir.is_dir() => (0..needed)
            .map(|i| {
                let (device, child) = (i / per_device, i % per_device);
                dir.join(if per_device == 1 {
                    format!("dataplane-bench-{device}.img")
                } else {
                    format!("dataplane-bench-{device}.{child}.img")
                })
            })
            .collect(),
        _ if paths.len() == needed => paths.clone(),
        _ => {
            return Err(BenchConfigError::PathCount {
                given: paths.len(),
                needed,
            }
            .into())
        }
    };
    let mut files = Vec::with_capacity(devices);
    for chunk in names.chunks(per_device) {
        let mut device = Vec::with_capacity(per_device);
        for path in chunk {
            device.push(prepare_one(config, path, range)?);
        }
        files.push(device);
    }
    Ok(files)
}

/// Creates `path` sparse of `range` bytes if it is missing; otherwise
/// checks that it is a regular file or block device of at least `range`,
/// and that a block device is written only with `--destroy-data`.
fn prepare_one(config: &BenchConfig, path: &Path, range: u64) -> Result<BenchFile, BenchError> {
    let fail = |problem: String| BenchError::File {
        path: path.to_path_buf(),
        problem,
    };
    let created = match fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| fail(format!("cannot create it: {e}")))?;
            file.set_len(range)
                .map_err(|e| fail(format!("cannot size it to {range} bytes: {e}")))?;
            true
        }
        Err(e) => return Err(fail(e.to_string())),
        Ok(meta) => {
            let kind = meta.file_type();
            let size = if kind.is_file() {
                meta.len()
            } else if kind.is_block_device() {
                if config.pattern.writes() && !config.file.destroy_data {
                    return Err(BenchConfigError::WritesDevice {
                        path: path.to_path_buf(),
                        rw: config.pattern.name(),
                    }
                    .into());
                }
                // A block device's size is where its end is.
                File::open(path)
                    .and_then(|mut f| f.seek(SeekFrom::End(0)))
                    .map_err(|e| fail(format!("cannot read its size: {e}")))?
            } else if kind.is_char_device() {
                return Err(fail(
                    "is a character device, not a regular file, a block device or a \
                     directory (an NVMe namespace's generic device /dev/ngXnY is served by \
                     --bdev nvme)"
                        .into(),
                ));
            } else {
                return Err(fail(
                    "is neither a regular file, a block device nor a directory".into(),
                ));
            };
            if size < range {
                return Err(fail(format!(
                    "holds {size} bytes, less than the {range} bytes the run addresses \
                     (--size, divided by the stripe width for a child)"
                )));
            }
            false
        }
    };
    Ok(BenchFile {
        path: path.to_path_buf(),
        range,
        created,
    })
}

/// The note a run gives for a file it created: it is sparse, so reads of
/// blocks never written do not reach the disk.
pub(crate) fn created_note(file: &BenchFile, reads: bool) -> String {
    let mut note = format!(
        "created sparse file {} ({} bytes)",
        file.path.display(),
        file.range
    );
    if reads {
        note.push_str(
            ": reads of blocks never written are answered by the filesystem without the \
             disk; write the file first (e.g. a --rw write run) to measure the disk",
        );
    }
    note
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BdevKind, FileConfig};

    fn config(paths: Vec<PathBuf>, bdev: BdevKind) -> BenchConfig {
        BenchConfig {
            bdev,
            size: 1 << 20,
            file: FileConfig {
                paths,
                ..FileConfig::default()
            },
            ..BenchConfig::default()
        }
    }

    #[test]
    fn a_directory_gets_one_file_per_device_or_child() {
        let dir = tempfile::tempdir().unwrap();
        let striped = BdevKind::Striped {
            width: 2,
            chunk: 65536,
        };
        let files = prepare(&config(vec![dir.path().into()], striped), 2).unwrap();
        let names: Vec<Vec<String>> = files
            .iter()
            .map(|d| {
                d.iter()
                    .map(|f| f.path.file_name().unwrap().to_string_lossy().into_owned())
                    .collect()
            })
            .collect();
        assert_eq!(
            names,
            [
                ["dataplane-bench-0.0.img", "dataplane-bench-0.1.img"],
                ["dataplane-bench-1.0.img", "dataplane-bench-1.1.img"]
            ]
        );
        for f in files.iter().flatten() {
            assert!(f.created && f.range == 512 << 10);
            assert_eq!(fs::metadata(&f.path).unwrap().len(), 512 << 10);
        }
        // The second run finds them.
        let again = prepare(&config(vec![dir.path().into()], striped), 2).unwrap();
        assert!(again.iter().flatten().all(|f| !f.created));
        let one = prepare(&config(vec![dir.path().into()], BdevKind::File), 1).unwrap();
        assert!(one[0][0].path.ends_with("dataplane-bench-0.img"));
    }

    #[test]
    fn paths_are_counted_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.img");
        let err = prepare(&config(vec![a.clone()], BdevKind::File), 2).unwrap_err();
        assert_eq!(
            err.to_string(),
            "--path: 1 paths for 2 files (devices x stripe width); give one path per file, \
             or a directory for the bench's files"
        );
        fs::write(&a, [0u8; 4096]).unwrap();
        let err = prepare(&config(vec![a.clone()], BdevKind::File), 1).unwrap_err();
        assert!(
            err.to_string()
                .ends_with("holds 4096 bytes, less than the 1048576 bytes the run addresses (--size, divided by the stripe width for a child)"),
            "{err}"
        );
        let err = prepare(&config(vec!["/dev/null".into()], BdevKind::File), 1).unwrap_err();
        assert_eq!(
            err.to_string(),
            "--path /dev/null: is a character device, not a regular file, a block device or \
             a directory (an NVMe namespace's generic device /dev/ngXnY is served by --bdev nvme)"
        );
        // A block device is written only when the user said so (refused
        // before it is opened).
        let block = fs::read_dir("/dev").ok().and_then(|entries| {
            entries
                .flatten()
                .find(|e| e.file_type().is_ok_and(|t| t.is_block_device()))
                .map(|e| e.path())
        });
        if let Some(block) = block {
            let mut writes = config(vec![block.clone()], BdevKind::File);
            writes.pattern = crate::initiator::Pattern::RandWrite;
            let err = prepare(&writes, 1).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "--path {}: --rw randwrite writes to this device, destroying the data on \
                     it; add --destroy-data if that is what you want",
                    block.display()
                )
            );
        }
        let b = dir.path().join("b.img");
        let files = prepare(&config(vec![b.clone()], BdevKind::File), 1).unwrap();
        assert!(files[0][0].created);
        assert!(created_note(&files[0][0], true).contains("write the file first"));
        assert!(!created_note(&files[0][0], false).contains("write the file first"));
    }
}
