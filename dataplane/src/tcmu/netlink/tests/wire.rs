//! The datagram walk, and input that is truncated or corrupt.

use super::*;

#[test]
fn truncated_and_corrupt_inputs_never_panic() {
    let good = event_msg(
        TCMU_CMD_RECONFIG_DEVICE,
        &[nla(TCMU_ATTR_DEV_SIZE, &4096u64.to_ne_bytes())],
    );
    // Every prefix, as one datagram and as one message.
    for cut in 0..good.len() {
        let prefix = &good[..cut];
        for m in messages(prefix) {
            let _ = m.map(|m| decode_event(m, FAMILY));
        }
        assert!(decode_event(prefix, FAMILY).is_err(), "cut at {cut}");
        let _ = decode_family_reply(prefix, 0, "TCM-USER", "config");
    }
    // Every single-byte corruption of every position.
    for pos in 0..good.len() {
        for value in [0u8, 1, 3, 0x7f, 0xff] {
            let mut bad = good.clone();
            bad[pos] = value;
            for m in messages(&bad).flatten() {
                let _ = decode_event(m, FAMILY);
                let _ = decode_family_reply(m, 0, "TCM-USER", "config");
            }
        }
    }
    let family = newfamily(1, &[("config", 3)]);
    for cut in 0..family.len() {
        let _ = decode_family_reply(&family[..cut], 1, "TCM-USER", "config");
    }
    // An attribute whose length runs past the message.
    let mut overlong = event_msg(TCMU_CMD_ADDED_DEVICE, &[]);
    overlong[20] = 0xff; // DEVICE nla_len low byte
    overlong[21] = 0x00;
    let err = decode_event(&overlong, FAMILY).unwrap_err();
    assert!(matches!(err, NetlinkError::Malformed { .. }), "{err}");
}

#[test]
fn datagram_walk_splits_aligned_messages_and_stops_at_a_bad_header() {
    let a = event_msg(TCMU_CMD_ADDED_DEVICE, &[]);
    let mut b = event_msg(TCMU_CMD_REMOVED_DEVICE, &[]);
    // A message length that is not a multiple of 4: the next one starts
    // at the aligned offset.
    let mut odd = genl(FAMILY, 99, 0, &[]);
    odd.push(0xaa);
    let odd_len = odd.len() as u32;
    odd[..4].copy_from_slice(&odd_len.to_ne_bytes());
    let mut datagram = [a.clone(), odd.clone()].concat();
    datagram.extend_from_slice(&[0, 0, 0]); // NLMSG_ALIGN padding
    datagram.extend_from_slice(&b);
    let parts: Vec<&[u8]> = messages(&datagram).map(Result::unwrap).collect();
    assert_eq!(parts, vec![&a[..], &odd[..], &b[..]]);

    // A bad nlmsg_len (below 16) yields one error and ends the walk.
    b[..4].copy_from_slice(&8u32.to_ne_bytes());
    let datagram = [a.clone(), b, a.clone()].concat();
    let items: Vec<_> = messages(&datagram).collect();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0].as_ref().unwrap(), &&a[..]);
    assert!(matches!(items[1], Err(NetlinkError::Malformed { .. })));
}
