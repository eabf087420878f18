//! What LIO's configfs says about one TCMU device: `attrib/*`, `enable`,
//! and the `info` file older kernels fall back to.

use std::path::{Path, PathBuf};

use crate::kernfs::{parse_u64_auto, read_trimmed, KernfsError, Roots};

use super::error::DiscoveryError;

/// What LIO's configfs says about one TCMU device (`core/user_<hba>/<name>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcmuDeviceFacts {
    /// `attrib/hw_block_size`: the logical block size in bytes.
    pub hw_block_size: u32,
    /// `attrib/hw_max_sectors`: the largest command, in blocks.
    pub hw_max_sectors: u32,
    /// `attrib/dev_size` (or `Size:` in `info`): the size in bytes.
    pub dev_size: u64,
    /// `attrib/cmd_time_out`: seconds, 0 = off.
    pub cmd_time_out: u32,
    /// `attrib/max_data_area_mb`.
    pub max_data_area_mb: u32,
    /// `enable` reads 1.
    pub enabled: bool,
    /// `attrib/dev_config` (or `Config:` in `info`); `None` if unset.
    pub dev_config: Option<String>,
}

/// Reads the facts of TCMU device `user_<hba>/<name>` from configfs. Each
/// error names the file that could not be read or parsed.
pub fn device_facts(
    roots: &Roots,
    hba: u32,
    name: &str,
) -> Result<TcmuDeviceFacts, DiscoveryError> {
    let dir = roots.device_dir(hba, name);
    let attrib = dir.join("attrib");
    let u32_of = |file: &str| -> Result<u32, DiscoveryError> {
        let path = attrib.join(file);
        let text = read_trimmed(&path)?;
        parse_u64_auto(&path, &text)?.try_into().map_err(|_| {
            KernfsError::Parse {
                path,
                content: text,
                why: "value does not fit in 32 bits",
            }
            .into()
        })
    };
    let hw_block_size = u32_of("hw_block_size")?;
    let hw_max_sectors = u32_of("hw_max_sectors")?;
    let cmd_time_out = u32_of("cmd_time_out")?;
    let max_data_area_mb = u32_of("max_data_area_mb")?;

    let info = InfoFile::new(&dir);
    let size_path = attrib.join("dev_size");
    let dev_size = match read_trimmed(&size_path) {
        Ok(text) => parse_u64_auto(&size_path, &text)?,
        Err(e) if e.is_not_found() => info.size()?,
        Err(e) => return Err(e.into()),
    };
    let config_path = attrib.join("dev_config");
    let dev_config = match read_trimmed(&config_path) {
        Ok(text) => Some(text).filter(|t| !t.is_empty()),
        Err(e) if e.is_not_found() => info.config()?,
        Err(e) => return Err(e.into()),
    };
    let enable_path = dir.join("enable");
    let enabled = match read_trimmed(&enable_path)?.as_str() {
        "0" => false,
        "1" => true,
        other => {
            return Err(KernfsError::Parse {
                path: enable_path,
                content: other.to_owned(),
                why: "expected 0 or 1",
            }
            .into())
        }
    };
    Ok(TcmuDeviceFacts {
        hw_block_size,
        hw_max_sectors,
        dev_size,
        cmd_time_out,
        max_data_area_mb,
        enabled,
        dev_config,
    })
}

/// The device's `info` file, read on first use. The kernel writes e.g.
/// `Status: ACTIVATED  Max Queue Depth: 128  SectorSize: 512  HwMaxSectors: 128`
/// then `Config: dataplane/ram0 Size: 67108864 MaxDataAreaMB: 64 ...`.
struct InfoFile {
    path: PathBuf,
}

impl InfoFile {
    fn new(device_dir: &Path) -> Self {
        Self {
            path: device_dir.join("info"),
        }
    }

    /// The whitespace-separated token after the token `key` (exact match, so
    /// `Size:` does not match `SectorSize:`).
    fn value_of(&self, key: &str) -> Result<Option<String>, KernfsError> {
        let text = read_trimmed(&self.path)?;
        let mut tokens = text.split_whitespace();
        while let Some(token) = tokens.next() {
            if token == key {
                return Ok(tokens.next().map(str::to_owned));
            }
        }
        Ok(None)
    }

    fn size(&self) -> Result<u64, KernfsError> {
        match self.value_of("Size:")? {
            Some(v) => parse_u64_auto(&self.path, &v),
            None => Err(KernfsError::Parse {
                path: self.path.clone(),
                content: read_trimmed(&self.path)?,
                why: "no \"Size: N\" (and no attrib/dev_size)",
            }),
        }
    }

    fn config(&self) -> Result<Option<String>, KernfsError> {
        Ok(self
            .value_of("Config:")?
            .filter(|v| v != "NULL" && !v.is_empty()))
    }
}
