//! The `serve_config` target: `dataplane serve`'s TOML configuration.
//!
//! Checks: no panic on any text; a configuration that parses validates
//! (or fails to) without panicking, and its queries answer for every bdev
//! and device it names.

use dataplane::serve::config::ServeConfig;

/// The target.
pub fn run(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let Ok(config) = ServeConfig::parse(&text) else {
        return;
    };
    let _ = config.validate(&[0, 1]);
    let _ = config.validate(&[]);
    for line in text.lines() {
        let name = line.split('"').nth(1).unwrap_or(line);
        if let Some(bdev) = config.bdev(name) {
            let _ = config.block_size_of(bdev);
        }
        let _ = config.fixed_buffers(name);
        let _ = config.parent_of(name);
        let _ = config.pinned_reactor(name);
    }
}
