//! `[[bdev]]`: the block devices, and lookups and checks across them.

use std::collections::HashMap;
use std::fmt;

use serde::Deserialize;

use super::error::{err, ConfigError};
use super::value::{check_name, Size};

fn default_block_size() -> u32 {
    512
}

/// One `[[bdev]]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum BdevConfig {
    /// Anonymous memory.
    Ram {
        /// Unique name.
        name: String,
        /// Bytes.
        size: Size,
        /// Logical block size.
        #[serde(default = "default_block_size")]
        block_size: u32,
    },
    /// Completes without storing data.
    Null {
        /// Unique name.
        name: String,
        /// Bytes.
        size: Size,
        /// Logical block size.
        #[serde(default = "default_block_size")]
        block_size: u32,
    },
    /// RAID0 over other bdevs of this file.
    Striped {
        /// Unique name.
        name: String,
        /// Names of `ram` or `null` bdevs.
        children: Vec<String>,
        /// Strip size in bytes (a power of two).
        chunk: Size,
    },
}

impl BdevConfig {
    /// The bdev's name.
    pub fn name(&self) -> &str {
        match self {
            BdevConfig::Ram { name, .. }
            | BdevConfig::Null { name, .. }
            | BdevConfig::Striped { name, .. } => name,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            BdevConfig::Ram { .. } => "ram",
            BdevConfig::Null { .. } => "null",
            BdevConfig::Striped { .. } => "striped",
        }
    }
}

impl fmt::Display for BdevConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} bdev {:?}", self.kind(), self.name())
    }
}

/// Checks the names (valid, unique), sizes and block sizes, and the
/// children and chunk of every striped bdev.
pub(super) fn check_bdevs(bdevs: &[BdevConfig]) -> Result<(), ConfigError> {
    let mut by_name: HashMap<&str, &BdevConfig> = HashMap::new();
    for (i, b) in bdevs.iter().enumerate() {
        let key = format!("bdev[{i}].name");
        check_name(&key, b.name())?;
        if by_name.insert(b.name(), b).is_some() {
            return err(format!("{key}: {:?} is defined twice", b.name()));
        }
    }
    let mut children_of: HashMap<&str, &str> = HashMap::new();
    for (i, b) in bdevs.iter().enumerate() {
        let at = format!("bdev[{i}] ({:?})", b.name());
        match b {
            BdevConfig::Ram {
                size, block_size, ..
            }
            | BdevConfig::Null {
                size, block_size, ..
            } => {
                if *block_size < 512 || *block_size > 65536 || !block_size.is_power_of_two() {
                    return err(format!(
                        "{at}.block_size: {block_size} is not a power of two between 512 and 65536"
                    ));
                }
                if size.0 == 0 {
                    return err(format!("{at}.size: must be greater than zero"));
                }
                if size.0 % u64::from(*block_size) != 0 {
                    return err(format!(
                        "{at}.size: {} is not a multiple of block_size {block_size}",
                        size.0
                    ));
                }
            }
            BdevConfig::Striped {
                name,
                children,
                chunk,
            } => {
                if children.is_empty() {
                    return err(format!("{at}.children: at least one child is required"));
                }
                let mut block_size = None;
                for (j, child) in children.iter().enumerate() {
                    let key = format!("{at}.children[{j}]");
                    let Some(c) = by_name.get(child.as_str()) else {
                        return err(format!("{key}: no bdev named {child:?}"));
                    };
                    let bs = match c {
                        BdevConfig::Ram { block_size, .. }
                        | BdevConfig::Null { block_size, .. } => *block_size,
                        BdevConfig::Striped { .. } => {
                            return err(format!(
                                "{key}: {child:?} is striped; children must be ram or null"
                            ))
                        }
                    };
                    if let Some(other) = children_of.insert(child, name) {
                        return err(format!("{key}: {child:?} is already a child of {other:?}"));
                    }
                    match block_size {
                        None => block_size = Some(bs),
                        Some(first) if first != bs => {
                            return err(format!(
                                "{key}: block size {bs} differs from the first child's {first}"
                            ))
                        }
                        Some(_) => {}
                    }
                }
                let bs = u64::from(block_size.unwrap_or(512));
                if chunk.0 < bs || !chunk.0.is_power_of_two() || chunk.0 / bs > u64::from(u32::MAX)
                {
                    return err(format!(
                        "{at}.chunk: {} is not a power of two of at least the block size {bs}",
                        chunk.0
                    ));
                }
            }
        }
    }
    Ok(())
}

/// The bdev named `name`.
pub(super) fn find<'a>(bdevs: &'a [BdevConfig], name: &str) -> Option<&'a BdevConfig> {
    bdevs.iter().find(|b| b.name() == name)
}

/// The parent of `name` if it is a child of a striped bdev.
pub(super) fn parent_of<'a>(bdevs: &'a [BdevConfig], name: &str) -> Option<&'a str> {
    bdevs.iter().find_map(|b| match b {
        BdevConfig::Striped {
            name: parent,
            children,
            ..
        } if children.iter().any(|c| c == name) => Some(parent.as_str()),
        _ => None,
    })
}

/// The logical block size of `bdev` (a striped bdev's is its children's);
/// `None` for a striped bdev without valid children.
pub(super) fn block_size_of(bdevs: &[BdevConfig], bdev: &BdevConfig) -> Option<u32> {
    match bdev {
        BdevConfig::Ram { block_size, .. } | BdevConfig::Null { block_size, .. } => {
            Some(*block_size)
        }
        BdevConfig::Striped { children, .. } => children
            .first()
            .and_then(|c| find(bdevs, c))
            .and_then(|c| match c {
                BdevConfig::Ram { block_size, .. } | BdevConfig::Null { block_size, .. } => {
                    Some(*block_size)
                }
                BdevConfig::Striped { .. } => None,
            }),
    }
}
