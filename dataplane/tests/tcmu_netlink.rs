//! The TCM-USER listener against the real kernel. Where `target_core_user`
//! is not loaded (this machine, CI) the controller's GETFAMILY round trip
//! still happens for real and must end in `FamilyNotFound`; where it is
//! loaded the listener must open, with ids, and hold no stray events.

use std::os::fd::AsRawFd;

use dataplane::tcmu::netlink::{resolve_family, NetlinkError, TcmuNetlink};
use test_support::skip::{report, Need};

#[test]
fn open_finds_the_family_or_reports_it_missing() {
    match TcmuNetlink::open() {
        Err(NetlinkError::FamilyNotFound { family }) => {
            assert_eq!(family, "TCM-USER");
            assert!(
                !std::path::Path::new("/sys/module/target_core_user").exists(),
                "the module is loaded but the family was not found"
            );
            // What needs the family stays untested here.
            report(Need::KernelModule("target_core_user"));
        }
        Ok(mut listener) => {
            let ids = listener.ids();
            // Dynamic generic netlink ids start above GENL_ID_CTRL (0x10).
            assert!(ids.family_id > 0x10, "{ids:?}");
            assert!(ids.group_id > 0, "{ids:?}");
            assert_eq!(ids.version, 2);
            assert!(listener.as_raw_fd() >= 0);
            // Never blocks; an event may legitimately be in flight if LIO is
            // in use, so only a socket failure is an error here.
            if let Err(e) = listener.try_recv() {
                assert!(e.is_recoverable(), "{e}");
            }
        }
        Err(e) => panic!("opening the TCM-USER listener failed: {e}"),
    }
}

#[test]
fn the_controller_family_resolves_with_its_notify_group() {
    // nlctrl is always registered, with the static id 0x10, and its only
    // multicast group "notify" gets the same id.
    let ids = resolve_family("nlctrl", "notify").expect("resolve nlctrl");
    assert_eq!(ids.family_id, 0x10);
    assert_eq!(ids.group_id, 0x10);
    assert_eq!(ids.version, 2);
}
