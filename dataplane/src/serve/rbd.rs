//! `[[bdev]]` of type `rbd`: the bdev's options from the configuration,
//! and opening it (at start, by a reload, or over the control socket).
//!
//! Opening connects to the cluster and can fail for reasons of the host
//! or the cluster (librbd not installed, no monitor answering within the
//! operation timeout, the user refused, the pool or image missing): the
//! error is one line naming the bdev, `rbd:pool[/namespace]/image` and the
//! problem, and the bdev is left out like a file that cannot be opened.

use std::sync::Arc;
use std::time::Duration;

use bdev::rbd::{RbdBdev, RbdOptions};

use super::config::BdevConfig;

/// The options of a `[[bdev]]` of type `rbd`; `None` for another type.
pub(super) fn rbd_options(b: &BdevConfig) -> Option<RbdOptions> {
    let BdevConfig::Rbd {
        name,
        pool,
        image,
        namespace,
        conf,
        user,
        keyring,
        block_size,
        op_timeout_secs,
        options,
    } = b
    else {
        return None;
    };
    Some(RbdOptions {
        namespace: namespace.clone(),
        conf: conf.clone(),
        user: user.clone(),
        keyring: keyring.clone(),
        op_timeout: Duration::from_secs(*op_timeout_secs),
        block_size: *block_size,
        config: options
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        ..RbdOptions::new(name.clone(), pool.clone(), image.clone())
    })
}

/// Opens rbd bdev `b`: the bdev and the line that describes it, or the
/// line to log (it names the bdev, the image and the problem).
pub(super) fn open_rbd(b: &BdevConfig) -> Result<(Arc<RbdBdev>, String), String> {
    let Some(options) = rbd_options(b) else {
        return Err(format!("{b} is not an rbd bdev"));
    };
    let spec = options.spec();
    let name = options.name.clone();
    let rbd = RbdBdev::open(options).map_err(|e| match e {
        bdev::Error::Open { .. } => e.to_string(),
        other => format!("bdev {name}: rbd:{spec}: {other}"),
    })?;
    let (cache, policy) = rbd.cache();
    let (major, minor, extra) = rbd.librbd_version();
    let line = format!(
        "bdev {name}: rbd:{spec}, {} MiB, {}-byte blocks, {} KiB objects, cache {}, librbd {major}.{minor}.{extra}",
        rbd.image_size() >> 20,
        rbd.options().block_size,
        rbd.object_size() >> 10,
        if cache { policy } else { "off" },
    );
    Ok((Arc::new(rbd), line))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configuration_becomes_the_bdev_options() {
        let b: BdevConfig = toml::from_str(
            r#"
            name = "rbd0"
            type = "rbd"
            pool = "rbd"
            image = "disk0"
            namespace = "ns"
            conf = "/etc/ceph/ceph.conf"
            user = "dataplane"
            keyring = "/etc/ceph/dp.keyring"
            block_size = 4096
            op_timeout_secs = 5
            options = { rbd_cache = "false" }
            "#,
        )
        .unwrap();
        let o = rbd_options(&b).unwrap();
        assert_eq!(o.spec(), "rbd/ns/disk0");
        assert_eq!(o.name, "rbd0");
        assert_eq!(o.user.as_deref(), Some("dataplane"));
        assert_eq!(o.block_size, 4096);
        assert_eq!(o.op_timeout, Duration::from_secs(5));
        assert_eq!(o.config, [("rbd_cache".to_string(), "false".to_string())]);
        let defaults: BdevConfig =
            toml::from_str("name = \"r\"\ntype = \"rbd\"\npool = \"p\"\nimage = \"i\"\n").unwrap();
        let o = rbd_options(&defaults).unwrap();
        assert_eq!(o, RbdOptions::new("r", "p", "i"));
    }
}
