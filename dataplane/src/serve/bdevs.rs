//! The bdevs of the configuration: the plain ones first, then the striped
//! and fault ones over them, each once what it stands on is made.
//!
//! A `file` bdev opens a file or block device, an `nvme` bdev an NVMe
//! namespace's generic character device, an `rbd` bdev a Ceph RBD image
//! (`rbd.rs`); each can fail for reasons of the machine rather than of the
//! configuration (a missing path, the wrong kind
//! of file or device, a read-only device, O_DIRECT refused, a size that does
//! not match, no NVMe passthrough in the kernel, no permission for it, an
//! LBA format with metadata). Such a bdev is left out, with one log line
//! saying why, and so is a striped or fault bdev over it (or over children whose
//! block sizes, each its device's, turn out to differ); the server starts
//! without them and serves everything else. Devices that name a bdev left
//! out are refused with that reason (`tcmu.rs`, `scst.rs`). Every other
//! failure here (memory for a RAM bdev, a striped bdev whose configured
//! children do not fit together) stops the start.

use std::collections::HashMap;
use std::fs;
use std::path::Path;
use std::sync::Arc;

use bdev::fault::FaultRule;
use bdev::file::{FileBdev, FileOptions};
use bdev::null::NullBdev;
use bdev::nvme::{NvmeBdev, NvmeOptions};
use bdev::ram::RamBdev;
use bdev::striped::StripedBdev;
use bdev::{Bdev, BdevRef, FaultBdev};

use super::config::{BdevConfig, ServeConfig};
use super::error::{BdevChangeError, ServeError};
use super::rbd::open_rbd;
use super::stats::{NvmeNamespace, UringBdev};

/// What [`make_bdevs`] made.
pub(super) struct Bdevs {
    /// Every bdev that could be made, by name.
    pub bdevs: HashMap<String, BdevRef>,
    /// The `file` and `nvme` bdevs among them (for their statistics), by
    /// name.
    pub rings: HashMap<String, UringBdev>,
    /// The `fault` bdevs among them (for their statistics), by name.
    pub faults: HashMap<String, Arc<FaultBdev>>,
    /// The bdevs left out, by name, with why (the line that was logged).
    pub unavailable: HashMap<String, String>,
}

impl Bdevs {
    /// Leaves bdev `name` out for `why` (which names it), and logs that.
    fn leave_out(&mut self, name: &str, why: String, log: &mut dyn FnMut(&str)) {
        log(&format!(
            "{why}; the bdev is left out, and devices naming it are refused"
        ));
        self.unavailable.insert(name.to_string(), why);
    }
}

/// Creates every `[[bdev]]` of `config` (validated), by name. RAM is
/// committed now, so first writes do not page-fault on the data path, and
/// brought onto huge pages where the kernel can; a collapse that failed is
/// logged to `log`. A file or nvme bdev that cannot be opened, and a
/// striped or fault bdev over it, are logged and left out (module docs);
/// one that opens, and a fault bdev, is described in one line.
pub(super) fn make_bdevs(
    config: &ServeConfig,
    log: &mut dyn FnMut(&str),
) -> Result<Bdevs, ServeError> {
    let mut made = Bdevs {
        bdevs: HashMap::new(),
        rings: HashMap::new(),
        faults: HashMap::new(),
        unavailable: HashMap::new(),
    };
    // Plain bdevs first, then the striped ones over them.
    for b in &config.bdevs {
        let bdev: BdevRef = match b {
            BdevConfig::Ram { .. } | BdevConfig::Null { .. } => make_memory(b, log)?,
            BdevConfig::File { .. } | BdevConfig::Nvme { .. } => match open_device(b) {
                Ok((ring, line)) => {
                    log(&line);
                    let bdev = ring.bdev();
                    made.rings.insert(b.name().to_string(), ring);
                    bdev
                }
                Err(why) => {
                    made.leave_out(b.name(), why, log);
                    continue;
                }
            },
            BdevConfig::Rbd { .. } => match open_rbd(b) {
                Ok((rbd, line)) => {
                    log(&line);
                    rbd
                }
                Err(why) => {
                    made.leave_out(b.name(), why, log);
                    continue;
                }
            },
            BdevConfig::Striped { .. } | BdevConfig::Fault { .. } => continue,
        };
        made.bdevs.insert(b.name().to_string(), bdev);
    }
    // Then striped and fault bdevs, each once its children or base are
    // made or left out (the configuration has no cycles, so every round
    // makes at least one until none is left).
    let mut left: Vec<&BdevConfig> = config
        .bdevs
        .iter()
        .filter(|b| matches!(b, BdevConfig::Striped { .. } | BdevConfig::Fault { .. }))
        .collect();
    while !left.is_empty() {
        let before = left.len();
        let mut i = 0;
        while i < left.len() {
            let b = left[i];
            let settled = |n: &String| {
                made.bdevs.contains_key(n.as_str()) || made.unavailable.contains_key(n.as_str())
            };
            let ready = match b {
                BdevConfig::Striped { children, .. } => children.iter().all(settled),
                BdevConfig::Fault { base, .. } => settled(base),
                _ => true,
            };
            if ready {
                left.swap_remove(i);
                make_over(b, &mut made, log)?;
            } else {
                i += 1;
            }
        }
        if left.len() == before {
            // Unreachable for a checked configuration: a cycle or a
            // missing name.
            return Err(ServeError::Bdev {
                name: left[0].name().to_string(),
                source: bdev::Error::InvalidParameter(format!(
                    "bdev {} stands on bdevs that are never made",
                    left[0].name()
                )),
            });
        }
    }
    Ok(made)
}

/// Makes `ram` or `null` bdev `b` (another kind: `InvalidParameter`). RAM
/// is committed now, so first writes do not page-fault on the data path;
/// a failure to commit it is logged.
fn make_memory(b: &BdevConfig, log: &mut dyn FnMut(&str)) -> Result<BdevRef, ServeError> {
    let wrap = |source| ServeError::Bdev {
        name: b.name().to_string(),
        source,
    };
    match b {
        BdevConfig::Ram {
            name,
            size,
            block_size,
        } => {
            let ram = RamBdev::new(name.clone(), *block_size, size.0 / u64::from(*block_size))
                .map_err(wrap)?;
            if let Some(why) = ram.prefault().failure() {
                log(&format!("bdev {name}: {why}"));
            }
            Ok(Arc::new(ram))
        }
        BdevConfig::Null {
            name,
            size,
            block_size,
        } => Ok(Arc::new(
            NullBdev::new(name.clone(), *block_size, size.0 / u64::from(*block_size))
                .map_err(wrap)?,
        )),
        other => Err(wrap(bdev::Error::InvalidParameter(format!(
            "{other} is not a memory bdev"
        )))),
    }
}

/// A striped bdev `name` over `children` (all in `bdevs`) with strips of
/// `chunk` bytes.
fn stripe(
    name: &str,
    children: &[String],
    chunk: u64,
    bdevs: &HashMap<String, BdevRef>,
) -> Result<StripedBdev, bdev::Error> {
    let kids: Vec<BdevRef> = children.iter().map(|c| Arc::clone(&bdevs[c])).collect();
    let block_size = u64::from(kids[0].geometry().block_size);
    StripedBdev::new(name.to_string(), kids, (chunk / block_size) as u32)
}

/// Makes bdev `b` while the server runs, over the bdevs made (`bdevs`):
/// `ram`, `null`, `file`, `nvme` (with its ring, for the statistics), `rbd` and
/// `striped` (whose children are in `bdevs`; the configuration with `b`
/// was validated). A file or device that cannot be opened is
/// [`BdevChangeError::Unavailable`] (nothing is left out at run time);
/// `fault` bdevs are refused.
pub(super) fn make_at_run_time(
    b: &BdevConfig,
    bdevs: &HashMap<String, BdevRef>,
    log: &mut dyn FnMut(&str),
) -> Result<(BdevRef, Option<UringBdev>), BdevChangeError> {
    let made = match b {
        BdevConfig::File { .. } | BdevConfig::Nvme { .. } => {
            let (ring, line) = open_device(b).map_err(BdevChangeError::Unavailable)?;
            log(&line);
            return Ok((ring.bdev(), Some(ring)));
        }
        BdevConfig::Rbd { .. } => {
            let (rbd, line) = open_rbd(b).map_err(BdevChangeError::Unavailable)?;
            log(&line);
            return Ok((rbd, None));
        }
        other => make_over_at_run_time(other, bdevs, log),
    };
    made.map(|bdev| (bdev, None)).map_err(BdevChangeError::Make)
}

/// [`make_at_run_time`] for the bdevs that open nothing.
fn make_over_at_run_time(
    b: &BdevConfig,
    bdevs: &HashMap<String, BdevRef>,
    log: &mut dyn FnMut(&str),
) -> Result<BdevRef, ServeError> {
    match b {
        BdevConfig::Ram { .. } | BdevConfig::Null { .. } => make_memory(b, log),
        BdevConfig::Striped {
            name,
            children,
            chunk,
        } => {
            if let Some(missing) = children.iter().find(|c| !bdevs.contains_key(*c)) {
                return Err(ServeError::Bdev {
                    name: name.clone(),
                    source: bdev::Error::InvalidParameter(format!(
                        "its child {missing} is unavailable"
                    )),
                });
            }
            let striped =
                stripe(name, children, chunk.0, bdevs).map_err(|source| ServeError::Bdev {
                    name: name.clone(),
                    source,
                })?;
            Ok(Arc::new(striped))
        }
        other => Err(ServeError::Bdev {
            name: other.name().to_string(),
            source: bdev::Error::InvalidParameter(format!(
                "{other} cannot be created while serving"
            )),
        }),
    }
}

/// Makes striped or fault bdev `b`, whose children or base are made or
/// left out: left out too in the latter case.
fn make_over(
    b: &BdevConfig,
    made: &mut Bdevs,
    log: &mut dyn FnMut(&str),
) -> Result<(), ServeError> {
    let wrap = |name: &str| {
        let name = name.to_string();
        move |source| ServeError::Bdev { name, source }
    };
    match b {
        BdevConfig::Striped {
            name,
            children,
            chunk,
        } => {
            if let Some(child) = children.iter().find(|c| made.unavailable.contains_key(*c)) {
                let why = format!("bdev {name}: its child {child} is unavailable");
                made.leave_out(name, why, log);
                return Ok(());
            }
            let striped = match stripe(name, children, chunk.0, &made.bdevs) {
                Ok(striped) => striped,
                // Children over files or namespaces whose block sizes
                // turned out to differ (each its device's): a fact of the
                // machine, like a file that cannot be opened.
                Err(e) if children.iter().any(|c| made.rings.contains_key(c)) => {
                    made.leave_out(name, e.to_string(), log);
                    return Ok(());
                }
                Err(e) => return Err(wrap(name)(e)),
            };
            made.bdevs.insert(name.clone(), Arc::new(striped));
        }
        BdevConfig::Fault {
            name,
            base,
            seed,
            space,
            rules,
        } => {
            if made.unavailable.contains_key(base) {
                let why = format!("bdev {name}: its base {base} is unavailable");
                made.leave_out(name, why, log);
                return Ok(());
            }
            let rules: Vec<FaultRule> = rules
                .iter()
                .enumerate()
                .map(|(j, r)| r.rule(&format!("bdev {name}: rules[{j}]")))
                .collect::<Result<_, _>>()
                .map_err(|e| wrap(name)(bdev::Error::InvalidParameter(e.to_string())))?;
            let base_bdev = Arc::clone(&made.bdevs[base]);
            let block_size = u64::from(base_bdev.geometry().block_size);
            let mut fault =
                FaultBdev::new(name.clone(), base_bdev, rules, *seed).map_err(wrap(name))?;
            let mut room = String::new();
            if let Some(space) = space {
                fault = fault.with_space_limit(space.0 / block_size);
                room = format!(", room for {} blocks", space.0 / block_size);
            }
            log(&format!(
                "bdev {name}: faults injected into {base} ({} rules, seed {seed}{room})",
                fault.rules().len()
            ));
            let fault = Arc::new(fault);
            made.faults.insert(name.clone(), Arc::clone(&fault));
            made.bdevs.insert(name.clone(), fault);
        }
        _ => {}
    }
    Ok(())
}

/// Opens a `file` or `nvme` bdev: the bdev and the line that describes it,
/// or the line to log (it names the bdev, the path and the problem).
fn open_device(b: &BdevConfig) -> Result<(UringBdev, String), String> {
    match b {
        BdevConfig::Nvme { unmap, .. } => {
            let nvme = open_nvme(b)?;
            let line = describe_nvme(&nvme, b);
            Ok((
                UringBdev::Nvme {
                    bdev: nvme,
                    unmap: unmap.mode(),
                },
                line,
            ))
        }
        _ => {
            let file = open_file(b)?;
            let line = describe(&file, b);
            Ok((UringBdev::File(file), line))
        }
    }
}

/// The line to log for a bdev `name` at `path` that did not open: the
/// error names the bdev and the path already when it is an open problem.
fn open_error(name: &str, path: &Path, e: bdev::Error) -> String {
    match e {
        bdev::Error::Open { .. } => e.to_string(),
        other => format!("bdev {name}: {}: {other}", path.display()),
    }
}

/// The options of a `[[bdev]]` of type `nvme`.
fn nvme_options(b: &BdevConfig) -> Option<NvmeOptions> {
    let BdevConfig::Nvme {
        path,
        queue_depth,
        iopoll,
        max_transfer,
        unmap,
        ..
    } = b
    else {
        return None;
    };
    Some(NvmeOptions {
        queue_depth: *queue_depth,
        iopoll: *iopoll,
        // Checked by the configuration: at most 8 MiB.
        max_transfer_bytes: max_transfer.0 as u32,
        unmap: unmap.mode(),
        ..NvmeOptions::new(path.clone())
    })
}

/// Opens an nvme bdev; the error is the line to log.
fn open_nvme(b: &BdevConfig) -> Result<Arc<NvmeBdev>, String> {
    let name = b.name();
    let options = nvme_options(b).expect("an nvme bdev");
    let path = options.path.clone();
    NvmeBdev::open(name, options)
        .map(Arc::new)
        .map_err(|e| open_error(name, &path, e))
}

/// The line logged when the nvme bdev of `config` is open.
fn describe_nvme(nvme: &NvmeBdev, config: &BdevConfig) -> String {
    let options = nvme_options(config).expect("an nvme bdev");
    let namespace = NvmeNamespace::of(nvme, options.unmap);
    format!(
        "bdev {}: {} (NVMe passthrough: {}; queue depth {}, transfers of up to {} bytes{})",
        nvme.name(),
        nvme.path().display(),
        namespace.describe(),
        options.queue_depth,
        u64::from(nvme.capabilities().max_transfer_blocks) * u64::from(namespace.lba_size),
        if options.iopoll { ", IOPOLL" } else { "" },
    )
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
    let file = FileBdev::open(name, options).map_err(|e| open_error(name, &path, e))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_and_striped_bdevs_are_made_over_each_other_in_any_order() {
        let text = r#"
[reactors]
cores = [0]

[[bdev]]
name = "over"
type = "fault"
base = "s"
[[bdev.rules]]
range = [0, 8]
error = "not-ready"

[[bdev]]
name = "s"
type = "striped"
children = ["f0", "r1"]
chunk = 4096

[[bdev]]
name = "f0"
type = "fault"
base = "r0"

[[bdev]]
name = "r0"
type = "ram"
size = "1MiB"

[[bdev]]
name = "r1"
type = "ram"
size = "1MiB"
"#;
        let config = ServeConfig::parse(text).unwrap();
        config.validate(&[0]).unwrap();
        let mut lines = Vec::new();
        let made = make_bdevs(&config, &mut |l| lines.push(l.to_string())).unwrap();
        assert_eq!(made.bdevs.len(), 5);
        assert_eq!(made.bdevs["over"].geometry().num_blocks, 4096);
        assert!(lines
            .iter()
            .any(|l| l.contains("bdev over: faults injected into s")));
        assert!(made.unavailable.is_empty());
    }

    #[test]
    fn a_fault_bdev_over_a_bdev_left_out_is_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.img");
        let text = format!(
            r#"
[reactors]
cores = [0]

[[bdev]]
name = "disk0"
type = "file"
path = "{}"

[[bdev]]
name = "flaky"
type = "fault"
base = "disk0"
"#,
            missing.display()
        );
        let config = ServeConfig::parse(&text).unwrap();
        config.validate(&[0]).unwrap();
        let mut lines = Vec::new();
        let made = make_bdevs(&config, &mut |l| lines.push(l.to_string())).unwrap();
        assert!(made.bdevs.is_empty());
        assert_eq!(
            made.unavailable["flaky"],
            "bdev flaky: its base disk0 is unavailable"
        );
        assert_eq!(lines.len(), 2, "{lines:?}");
    }
}
