//! The bdevs of the configuration: the plain ones first, then the striped
//! ones over them.
//!
//! A `file` bdev opens a file or block device, which can fail for reasons
//! of the machine rather than of the configuration (a missing path, a
//! read-only device, O_DIRECT refused, a size that does not match). Such a
//! bdev is left out, with one log line saying why, and so is a striped bdev
//! over it; the server starts without them and serves everything else.
//! Devices that name a bdev left out are refused with that reason
//! (`tcmu.rs`, `scst.rs`). Every other failure here (memory for a RAM bdev,
//! a striped bdev whose children do not fit together) stops the start.

use std::collections::HashMap;
use std::fs;
use std::sync::Arc;

use bdev::file::{FileBdev, FileOptions};
use bdev::null::NullBdev;
use bdev::ram::RamBdev;
use bdev::striped::StripedBdev;
use bdev::{Bdev, BdevRef};

use super::config::{BdevConfig, ServeConfig};
use super::error::ServeError;

/// What [`make_bdevs`] made.
pub(super) struct Bdevs {
    /// Every bdev that could be made, by name.
    pub bdevs: HashMap<String, BdevRef>,
    /// The `file` bdevs among them (for their statistics), by name.
    pub files: HashMap<String, Arc<FileBdev>>,
    /// The bdevs left out, by name, with why (the line that was logged).
    pub unavailable: HashMap<String, String>,
}

/// Creates every `[[bdev]]` of `config` (validated), by name. RAM is
/// committed now, so first writes do not page-fault on the data path, and
/// brought onto huge pages where the kernel can; a collapse that failed is
/// logged to `log`. A file bdev that cannot be opened, and a striped bdev
/// over it, are logged and left out (module docs).
pub(super) fn make_bdevs(
    config: &ServeConfig,
    log: &mut dyn FnMut(&str),
) -> Result<Bdevs, ServeError> {
    let mut made = Bdevs {
        bdevs: HashMap::new(),
        files: HashMap::new(),
        unavailable: HashMap::new(),
    };
    let wrap = |name: &str| {
        let name = name.to_string();
        move |source| ServeError::Bdev { name, source }
    };
    // Plain bdevs first, then the striped ones over them.
    for b in &config.bdevs {
        let bdev: BdevRef = match b {
            BdevConfig::Ram {
                name,
                size,
                block_size,
            } => {
                let ram = RamBdev::new(name.clone(), *block_size, size.0 / u64::from(*block_size))
                    .map_err(wrap(name))?;
                // Commit the memory now, so first writes do not page-fault on
                // the data path.
                if let Some(why) = ram.prefault().failure() {
                    log(&format!("bdev {name}: {why}"));
                }
                Arc::new(ram)
            }
            BdevConfig::Null {
                name,
                size,
                block_size,
            } => Arc::new(
                NullBdev::new(name.clone(), *block_size, size.0 / u64::from(*block_size))
                    .map_err(wrap(name))?,
            ),
            BdevConfig::File { name, .. } => match open_file(b) {
                Ok(file) => {
                    log(&describe(&file, b));
                    made.files.insert(name.clone(), Arc::clone(&file));
                    file
                }
                Err(why) => {
                    log(&format!(
                        "{why}; the bdev is left out, and devices naming it are refused"
                    ));
                    made.unavailable.insert(name.clone(), why);
                    continue;
                }
            },
            BdevConfig::Striped { .. } => continue,
        };
        made.bdevs.insert(b.name().to_string(), bdev);
    }
    for b in &config.bdevs {
        if let BdevConfig::Striped {
            name,
            children,
            chunk,
        } = b
        {
            if let Some(child) = children.iter().find(|c| made.unavailable.contains_key(*c)) {
                let why = format!("bdev {name}: its child {child} is unavailable");
                log(&format!(
                    "{why}; the bdev is left out, and devices naming it are refused"
                ));
                made.unavailable.insert(name.clone(), why);
                continue;
            }
            let kids: Vec<BdevRef> = children
                .iter()
                .map(|c| Arc::clone(&made.bdevs[c]))
                .collect();
            let block_size = u64::from(kids[0].geometry().block_size);
            let striped = match StripedBdev::new(name.clone(), kids, (chunk.0 / block_size) as u32)
            {
                Ok(striped) => striped,
                // Children of file bdevs whose block sizes turned out to
                // differ (each its device's): a fact of the machine, like a
                // file that cannot be opened.
                Err(e) if children.iter().any(|c| made.files.contains_key(c)) => {
                    let why = e.to_string();
                    log(&format!(
                        "{why}; the bdev is left out, and devices naming it are refused"
                    ));
                    made.unavailable.insert(name.clone(), why);
                    continue;
                }
                Err(e) => return Err(wrap(name)(e)),
            };
            made.bdevs.insert(name.clone(), Arc::new(striped));
        }
    }
    Ok(made)
}

/// The options of a `[[bdev]]` of type `file`.
fn file_options(b: &BdevConfig) -> Option<FileOptions> {
    let BdevConfig::File {
        path,
        size,
        block_size,
        queue_depth,
        direct,
        iopoll,
        sqpoll,
        ..
    } = b
    else {
        return None;
    };
    Some(FileOptions {
        size: size.map(|s| s.0),
        block_size: *block_size,
        queue_depth: *queue_depth,
        direct: *direct,
        iopoll: *iopoll,
        sqpoll: *sqpoll,
        ..FileOptions::new(path.clone())
    })
}

/// Opens a file bdev; the error is the line to log (it names the bdev, the
/// path and the problem).
fn open_file(b: &BdevConfig) -> Result<Arc<FileBdev>, String> {
    let name = b.name();
    let options = file_options(b).expect("a file bdev");
    let path = options.path.clone();
    let wanted = options.size;
    // An existing regular file keeps its size: a different one configured
    // is a mistake to point out before anything is opened.
    if let (Some(size), Ok(meta)) = (wanted, fs::metadata(&path)) {
        if meta.is_file() && meta.len() != size {
            return Err(format!(
                "bdev {name}: {}: the file is {} bytes but size is {size}; \
                 remove size to use the file as it is, or resize the file",
                path.display(),
                meta.len()
            ));
        }
    }
    let file = FileBdev::open(name, options).map_err(|e| match e {
        bdev::Error::Open { .. } => e.to_string(),
        other => format!("bdev {name}: {}: {other}", path.display()),
    })?;
    if let Some(size) = wanted {
        let actual = file.geometry().size_bytes();
        if actual != size {
            return Err(format!(
                "bdev {name}: {}: the device is {actual} bytes but size is {size}; \
                 remove size to use the whole device",
                path.display()
            ));
        }
    }
    Ok(Arc::new(file))
}

/// The line logged when the file bdev of `config` is open.
fn describe(file: &FileBdev, config: &BdevConfig) -> String {
    let g = file.geometry();
    let alignment = file.alignment();
    let options = file_options(config).expect("a file bdev");
    let io = if options.direct {
        format!(
            "O_DIRECT (buffers aligned to {}, lengths to {})",
            alignment.mem, alignment.offset
        )
    } else {
        "through the page cache".to_string()
    };
    let mut extra = String::new();
    if options.iopoll {
        extra.push_str(", IOPOLL");
    }
    if options.sqpoll {
        extra.push_str(", SQPOLL");
    }
    format!(
        "bdev {}: {} ({}, {} bytes, {}-byte blocks, queue depth {}, {io}{extra})",
        file.name(),
        file.path().display(),
        if file.is_block_device() {
            "block device"
        } else {
            "regular file"
        },
        g.size_bytes(),
        g.block_size,
        options.queue_depth,
    )
}
