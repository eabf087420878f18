//! The `netlink_event` target: TCM-USER generic netlink events as the
//! kernel multicasts them (`ADDED_DEVICE`, `REMOVED_DEVICE`,
//! `RECONFIG_DEVICE`), and the datagram splitter.
//!
//! Checks: no panic; the splitter yields messages inside the datagram and
//! stops; a decoded event answers its accessors.

use dataplane::tcmu::netlink::{decode_event, messages};

/// The family id the target decodes for (any value works; the corpus
/// uses this one).
pub const FAMILY: u16 = 0x1D;

/// The target.
pub fn run(data: &[u8]) {
    let mut count = 0;
    for message in messages(data) {
        count += 1;
        assert!(
            count <= data.len() / 16 + 1,
            "more messages than fit in {} bytes",
            data.len()
        );
        let Ok(message) = message else {
            continue;
        };
        assert!(message.len() <= data.len());
        if let Ok(Some(event)) = decode_event(message, FAMILY) {
            let _ = (event.kind(), event.minor(), event.device_id());
            let _ = event.device().len();
            let _ = event.uio_name();
        }
    }
}
