//! `CTRL_CMD_GETFAMILY` and the controller's answer.

use super::*;

#[test]
fn get_family_request_bytes() {
    let bytes = encode_get_family("TCM-USER", 0x01020304);
    #[rustfmt::skip]
    let want: Vec<u8> = [
        &36u32.to_ne_bytes()[..],       // nlmsg_len
        &0x10u16.to_ne_bytes(),         // GENL_ID_CTRL
        &1u16.to_ne_bytes(),            // NLM_F_REQUEST
        &0x01020304u32.to_ne_bytes(),   // seq
        &0u32.to_ne_bytes(),            // port
        &[3, 2, 0, 0],                  // CTRL_CMD_GETFAMILY, version 2
        &13u16.to_ne_bytes(),           // nla_len = 4 + "TCM-USER\0"
        &2u16.to_ne_bytes(),            // CTRL_ATTR_FAMILY_NAME
        b"TCM-USER\0", &[0, 0, 0],      // value + padding to 4
    ]
    .concat();
    assert_eq!(bytes, want);
}

#[test]
fn newfamily_reply_gives_family_and_group_ids() {
    let msg = newfamily(5, &[("other", 11), ("config", 12)]);
    let ids = decode_family_reply(&msg, 5, "TCM-USER", "config").unwrap();
    assert_eq!(
        ids,
        Some(FamilyIds {
            family_id: 0x1a,
            group_id: 12,
            version: 2
        })
    );
}

#[test]
fn family_reply_with_another_seq_is_not_the_answer() {
    let msg = newfamily(5, &[("config", 12)]);
    assert_eq!(
        decode_family_reply(&msg, 6, "TCM-USER", "config").unwrap(),
        None
    );
}

#[test]
fn family_reply_without_the_group_is_group_not_found() {
    let msg = newfamily(5, &[("other", 11)]);
    let err = decode_family_reply(&msg, 5, "TCM-USER", "config").unwrap_err();
    assert!(
        matches!(&err, NetlinkError::GroupNotFound { family, group }
            if family == "TCM-USER" && group == "config"),
        "{err}"
    );
}

#[test]
fn family_reply_for_another_family_is_malformed() {
    let msg = newfamily(5, &[("config", 12)]);
    let err = decode_family_reply(&msg, 5, "nlctrl", "config").unwrap_err();
    assert!(matches!(err, NetlinkError::Malformed { .. }), "{err}");
}

#[test]
fn enoent_is_family_not_found_and_other_errors_are_kernel_errors() {
    let err =
        decode_family_reply(&nlmsg_error(9, -libc::ENOENT), 9, "TCM-USER", "config").unwrap_err();
    assert!(
        matches!(&err, NetlinkError::FamilyNotFound { family } if family == "TCM-USER"),
        "{err}"
    );
    assert!(err.to_string().contains("target_core_user"), "{err}");
    assert!(!err.is_recoverable());

    let err =
        decode_family_reply(&nlmsg_error(9, -libc::EPERM), 9, "TCM-USER", "config").unwrap_err();
    assert!(
        matches!(err, NetlinkError::Kernel { errno, .. } if errno == libc::EPERM),
        "{err}"
    );
    // An ACK (code 0) is not the answer.
    assert_eq!(
        decode_family_reply(&nlmsg_error(9, 0), 9, "TCM-USER", "config").unwrap(),
        None
    );
}
