//! The bdevs of the configuration: the plain ones first, then the striped
//! ones over them.

use std::collections::HashMap;
use std::sync::Arc;

use bdev::null::NullBdev;
use bdev::ram::RamBdev;
use bdev::striped::StripedBdev;
use bdev::BdevRef;

use super::config::{BdevConfig, ServeConfig};
use super::error::ServeError;

/// Creates every `[[bdev]]` of `config` (validated), by name. RAM is
/// committed now, so first writes do not page-fault on the data path, and
/// brought onto huge pages where the kernel can; a collapse that failed is
/// logged to `log`.
pub(super) fn make_bdevs(
    config: &ServeConfig,
    log: &mut dyn FnMut(&str),
) -> Result<HashMap<String, BdevRef>, ServeError> {
    let mut bdevs: HashMap<String, BdevRef> = HashMap::new();
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
            BdevConfig::Striped { .. } => continue,
        };
        bdevs.insert(b.name().to_string(), bdev);
    }
    for b in &config.bdevs {
        if let BdevConfig::Striped {
            name,
            children,
            chunk,
        } = b
        {
            let kids: Vec<BdevRef> = children.iter().map(|c| Arc::clone(&bdevs[c])).collect();
            let block_size = u64::from(kids[0].geometry().block_size);
            let striped = StripedBdev::new(name.clone(), kids, (chunk.0 / block_size) as u32)
                .map_err(wrap(name))?;
            bdevs.insert(name.clone(), Arc::new(striped));
        }
    }
    Ok(bdevs)
}
