//! Device events in, `*_DONE` and `SET_FEATURES` out.

use netlink_packet_generic::GenlMessage;

use super::super::wire::encode_genl;
use super::*;

#[test]
fn added_removed_and_reconfig_messages_become_events() {
    let added = event_msg(TCMU_CMD_ADDED_DEVICE, &[]);
    let want_added = TcmuEvent::Added {
        device: "tcm-user/0/disk0/dataplane/ram0".into(),
        minor: 3,
        device_id: 7,
    };
    assert_eq!(
        decode_event(&added, FAMILY).unwrap(),
        Some(want_added.clone())
    );
    assert_eq!(want_added.kind(), TcmuEventKind::Added);
    assert_eq!(want_added.uio_name(), "uio3");

    let removed = event_msg(TCMU_CMD_REMOVED_DEVICE, &[]);
    assert_eq!(
        decode_event(&removed, FAMILY).unwrap(),
        Some(TcmuEvent::Removed {
            device: "tcm-user/0/disk0/dataplane/ram0".into(),
            minor: 3,
            device_id: 7,
        })
    );

    let cfg = event_msg(
        TCMU_CMD_RECONFIG_DEVICE,
        &[nla(TCMU_ATTR_DEV_CFG, &cstr("dataplane/ram1"))],
    );
    let size = event_msg(
        TCMU_CMD_RECONFIG_DEVICE,
        // nla_put_u64_64bit may put an empty PAD first: skipped.
        &[
            nla(TCMU_ATTR_PAD, &[]),
            nla(TCMU_ATTR_DEV_SIZE, &(1u64 << 33).to_ne_bytes()),
        ],
    );
    let wc = event_msg(TCMU_CMD_RECONFIG_DEVICE, &[nla(TCMU_ATTR_WRITECACHE, &[1])]);
    let change = |bytes: &[u8]| match decode_event(bytes, FAMILY).unwrap() {
        Some(TcmuEvent::Reconfig {
            device,
            minor: 3,
            device_id: 7,
            change,
        }) if device == "tcm-user/0/disk0/dataplane/ram0" => change,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        change(&cfg),
        ReconfigChange::DevConfig("dataplane/ram1".into())
    );
    assert_eq!(change(&size), ReconfigChange::DevSize(1 << 33));
    assert_eq!(change(&wc), ReconfigChange::WriteCache(1));
}

#[test]
#[cfg(target_endian = "little")]
fn exact_bytes_of_an_added_event_decode() {
    // Written out by hand, little-endian x86_64, as the kernel sends it.
    #[rustfmt::skip]
    let bytes: [u8; 60] = [
        60, 0, 0, 0,  0x1a, 0,  0, 0,  0, 0, 0, 0,  0, 0, 0, 0, // nlmsghdr
        1, 2, 0, 0,                                            // ADDED_DEVICE, v2
        15, 0, 1, 0,  b't', b'c', b'm', b'-', b'u', b's', b'e', b'r', b'/', b'0', 0, 0, // DEVICE
        8, 0, 2, 0,   4, 0, 0, 0,                              // MINOR 4
        8, 0, 8, 0,   9, 0, 0, 0,                              // DEVICE_ID 9
        8, 0, 0x40, 0,   0, 0, 0, 0,                           // unknown attr 0x40
    ];
    assert_eq!(
        decode_event(&bytes, 0x1a).unwrap(),
        Some(TcmuEvent::Added {
            device: "tcm-user/0".into(),
            minor: 4,
            device_id: 9
        })
    );
}

#[test]
fn other_families_and_commands_are_skipped() {
    let added = event_msg(TCMU_CMD_ADDED_DEVICE, &[]);
    assert_eq!(decode_event(&added, FAMILY + 1).unwrap(), None);
    for cmd in [
        TCMU_CMD_UNSPEC,
        TCMU_CMD_ADDED_DEVICE_DONE,
        TCMU_CMD_SET_FEATURES,
        42,
    ] {
        assert_eq!(decode_event(&event_msg(cmd, &[]), FAMILY).unwrap(), None);
    }
    // Control messages.
    assert_eq!(decode_event(&nlmsg_error(0, 0), FAMILY).unwrap(), None);
}

#[test]
fn events_missing_attributes_or_with_bad_sizes_are_malformed() {
    let no_minor = genl(
        FAMILY,
        TCMU_CMD_ADDED_DEVICE,
        0,
        &[
            nla(TCMU_ATTR_DEVICE, &cstr("tcm-user/0/a")),
            nla(TCMU_ATTR_DEVICE_ID, &1u32.to_ne_bytes()),
        ],
    );
    let short_minor = genl(
        FAMILY,
        TCMU_CMD_ADDED_DEVICE,
        0,
        &[
            nla(TCMU_ATTR_DEVICE, &cstr("tcm-user/0/a")),
            nla(TCMU_ATTR_MINOR, &[1, 0]),
            nla(TCMU_ATTR_DEVICE_ID, &1u32.to_ne_bytes()),
        ],
    );
    let bad_utf8 = genl(
        FAMILY,
        TCMU_CMD_ADDED_DEVICE,
        0,
        &[
            nla(TCMU_ATTR_DEVICE, &[0xff, 0xfe, 0]),
            nla(TCMU_ATTR_MINOR, &1u32.to_ne_bytes()),
            nla(TCMU_ATTR_DEVICE_ID, &1u32.to_ne_bytes()),
        ],
    );
    let reconfig_without_change = event_msg(TCMU_CMD_RECONFIG_DEVICE, &[]);
    let reconfig_with_two = event_msg(
        TCMU_CMD_RECONFIG_DEVICE,
        &[
            nla(TCMU_ATTR_WRITECACHE, &[1]),
            nla(TCMU_ATTR_DEV_SIZE, &4096u64.to_ne_bytes()),
        ],
    );
    for (name, msg, needle) in [
        ("no minor", no_minor, "TCMU_ATTR_MINOR"),
        ("short minor", short_minor, "TCMU_ATTR_MINOR"),
        ("bad utf8", bad_utf8, "UTF-8"),
        ("no change", reconfig_without_change, "carries 0"),
        ("two changes", reconfig_with_two, "carries 2"),
    ] {
        let err = decode_event(&msg, FAMILY).unwrap_err();
        assert!(
            matches!(&err, NetlinkError::Malformed { reason } if reason.contains(needle)),
            "{name}: {err}"
        );
        assert!(err.is_recoverable());
    }
}

#[test]
fn done_reply_bytes() {
    let bytes = encode_done(0x1a, 77, TcmuEventKind::Added, 9, -libc::ENOENT);
    #[rustfmt::skip]
    let want: Vec<u8> = [
        &36u32.to_ne_bytes()[..],       // nlmsg_len
        &0x1au16.to_ne_bytes(),         // family id
        &5u16.to_ne_bytes(),            // NLM_F_REQUEST | NLM_F_ACK
        &77u32.to_ne_bytes(),           // seq
        &0u32.to_ne_bytes(),            // port
        &[4, 2, 0, 0],                  // ADDED_DEVICE_DONE, version 2
        &8u16.to_ne_bytes(), &7u16.to_ne_bytes(), &(-2i32).to_ne_bytes(), // CMD_STATUS
        &8u16.to_ne_bytes(), &8u16.to_ne_bytes(), &9u32.to_ne_bytes(),    // DEVICE_ID
    ]
    .concat();
    assert_eq!(bytes, want);
    assert_eq!(
        encode_done(0x1a, 1, TcmuEventKind::Removed, 9, 0)[16],
        TCMU_CMD_REMOVED_DEVICE_DONE
    );
    assert_eq!(
        encode_done(0x1a, 1, TcmuEventKind::Reconfig, 9, 0)[16],
        TCMU_CMD_RECONFIG_DEVICE_DONE
    );
}

#[test]
fn set_features_bytes() {
    let bytes = encode_set_features(0x1a, 3, true);
    #[rustfmt::skip]
    let want: Vec<u8> = [
        &28u32.to_ne_bytes()[..], &0x1au16.to_ne_bytes(), &5u16.to_ne_bytes(),
        &3u32.to_ne_bytes(), &0u32.to_ne_bytes(),
        &[7, 2, 0, 0],                                   // SET_FEATURES
        &5u16.to_ne_bytes(), &9u16.to_ne_bytes(), &[1, 0, 0, 0], // SUPP_KERN_CMD_REPLY
    ]
    .concat();
    assert_eq!(bytes, want);
    assert_eq!(encode_set_features(0x1a, 3, false)[24], 0);
}

#[test]
fn encoded_messages_decode_back() {
    let message = TcmuGenlMessage {
        cmd: TCMU_CMD_RECONFIG_DEVICE,
        attrs: vec![
            TcmuAttr::Device("tcm-user/1/x/dataplane/y".into()),
            TcmuAttr::Minor(12),
            TcmuAttr::DeviceId(34),
            TcmuAttr::DevConfig("dataplane/z".into()),
        ],
    };
    let mut genl = GenlMessage::from_payload(message);
    genl.set_resolved_family_id(FAMILY);
    let bytes = encode_genl(genl, 0, 0);
    assert_eq!(
        decode_event(&bytes, FAMILY).unwrap(),
        Some(TcmuEvent::Reconfig {
            device: "tcm-user/1/x/dataplane/y".into(),
            minor: 12,
            device_id: 34,
            change: ReconfigChange::DevConfig("dataplane/z".into()),
        })
    );
}
