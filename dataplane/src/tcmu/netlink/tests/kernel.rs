//! The real kernel, through the controller family `nlctrl` (always
//! present): resolve, listen, and a request the kernel rejects, which
//! exercises the send/ACK path without touching TCM-USER.

use std::os::fd::AsRawFd;
use std::time::Duration;

use super::*;

#[test]
fn real_kernel_controller_round_trips() {
    let mut nl = TcmuNetlink::open_family("nlctrl", "notify").expect("open nlctrl");
    // nlctrl has the static id GENL_ID_CTRL and its one group gets the
    // same id.
    assert_eq!(nl.ids().family_id, GENL_ID_CTRL);
    assert_eq!(nl.ids().group_id, u32::from(GENL_ID_CTRL));
    assert!(nl.as_raw_fd() >= 0);
    assert_eq!(nl.try_recv().unwrap(), None);
    assert_eq!(nl.recv(Some(Duration::from_millis(20))).unwrap(), None);
    // Command 4 is no nlctrl op: the kernel answers EOPNOTSUPP.
    let err = nl
        .reply_done(TcmuEventKind::Added, 1, 0)
        .expect_err("nlctrl has no command 4");
    assert!(
        matches!(err, NetlinkError::Kernel { request: "TCMU_CMD_ADDED_DEVICE_DONE", errno }
            if errno == libc::EOPNOTSUPP),
        "{err}"
    );
    assert!(err.is_recoverable());
    assert_eq!(nl.pending(), 0);
}

#[test]
fn real_kernel_unknown_family_is_family_not_found() {
    let err = resolve_family("dp-no-such-fam", "config").unwrap_err();
    assert!(
        matches!(&err, NetlinkError::FamilyNotFound { family }
            if family == "dp-no-such-fam"),
        "{err}"
    );
    let err = resolve_family("nlctrl", "no-such-group").unwrap_err();
    assert!(matches!(err, NetlinkError::GroupNotFound { .. }), "{err}");
}
