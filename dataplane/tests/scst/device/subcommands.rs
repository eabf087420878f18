//! PARSE, sessions, unknown subcodes and EXT_COPY_REMAP, the registered
//! options the device refuses, and the sense format.

use super::*;

#[test]
fn parse_call_answers_from_the_cdb() {
    let opts = options(
        SCST_USER_MEM_REUSE_ALL,
        SCST_USER_ON_FREE_CMD_CALL,
        SCST_USER_PARSE_CALL,
    );
    let (k, mut dev) = device_with(opts, 16, 32, small_pool(4 << 20, 1 << 20), Some(unit()));
    let parse = |k: &FakeKernel, cdb: &[u8], op_flags: u32| {
        k.queue(subcode::PARSE, |c| {
            let mut p = ScstUserScsiCmdParse {
                sess_h: SESS_A,
                cdb_len: cdb.len() as u16,
                queue_type: SCST_CMD_QUEUE_SIMPLE,
                op_flags,
                ..Default::default()
            };
            p.cdb[..cdb.len()].copy_from_slice(cdb);
            c.set_parse_cmd(&p);
        })
    };
    // READ (10) of 2 blocks at LBA 5.
    parse(&k, &[0x28, 0, 0, 0, 0, 5, 0, 0, 2, 0], 0);
    // WRITE (16) of 3 blocks at LBA 9.
    parse(
        &k,
        &[0x8A, 0, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 3, 0, 0],
        SCST_UNKNOWN_LENGTH,
    );
    // WRITE SAME (16) of 100 blocks: one block of data-out.
    parse(
        &k,
        &[0x93, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 100, 0, 0],
        0,
    );
    // INQUIRY, allocation length 96.
    parse(&k, &[0x12, 0, 0, 0, 96, 0], 0);
    // TEST UNIT READY.
    parse(&k, &[0, 0, 0, 0, 0, 0], 0);
    // A vendor opcode nobody knows.
    parse(&k, &[0xC0, 0, 0, 0, 0, 0], 0);
    // READ beyond the end of the unit.
    parse(&k, &[0x28, 0, 0, 0x01, 0, 0, 0, 0, 1, 0], 0);
    // REPORT LUNS: SCST's core executes it; its pre-parse values go back.
    parse(
        &k,
        &[0xA0, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0],
        SCST_INFO_VALID | SCST_LOCAL_CMD,
    );
    dev.poll();
    dev.poll();
    let replies = k.last_call().replies;
    assert_eq!(replies.len(), 8);
    let ok = |i: usize| {
        let p = replies[i].reply.parse_reply();
        assert_eq!(p.status, 0, "reply {i}");
        p.result()
    };
    let r = ok(0);
    assert_eq!(
        (r.data_direction, r.lba, r.data_len, r.bufflen),
        (SCST_DATA_READ, 5, 8192, 8192)
    );
    assert_eq!(r.op_flags, SCST_INFO_VALID);
    assert_eq!((r.queue_type, r.cdb_len), (SCST_CMD_QUEUE_SIMPLE, 10));
    let r = ok(1);
    assert_eq!(
        (r.data_direction, r.lba, r.data_len, r.bufflen),
        (SCST_DATA_WRITE, 9, 3 * 4096, 3 * 4096)
    );
    assert_eq!(r.op_flags, SCST_INFO_VALID | SCST_WRITE_MEDIUM);
    let r = ok(2);
    assert_eq!(
        (r.data_direction, r.lba, r.data_len, r.bufflen),
        (SCST_DATA_WRITE, 1, 100 * 4096, 4096)
    );
    let r = ok(3);
    assert_eq!(
        (r.data_direction, r.bufflen, r.data_len),
        (SCST_DATA_READ, 96, 96)
    );
    assert_eq!(r.op_flags, SCST_INFO_VALID | SCST_LBA_NOT_VALID);
    let r = ok(4);
    assert_eq!((r.data_direction, r.bufflen), (SCST_DATA_NONE, 0));
    let p = replies[5].reply.parse_reply();
    assert_eq!(p.status, status::CHECK_CONDITION);
    assert_eq!(replies[5].sense, fixed_sense(0x05, 0x20, 0x00));
    assert_eq!(replies[6].sense, fixed_sense(0x05, 0x21, 0x00));
    let r = ok(7);
    assert_eq!(r.op_flags, SCST_INFO_VALID | SCST_LOCAL_CMD);
    assert_eq!(dev.stats().snapshot().parse_errors, 2);
}

#[test]
fn sessions_are_tracked_and_answered() {
    let (k, mut dev) = device();
    let attach = |k: &FakeKernel, sess_h: u64, rd_only: u8, name: &str| {
        k.queue(subcode::ATTACH_SESS, |c| {
            let mut s = ScstUserSess {
                sess_h,
                lun: 3,
                threads_num: 0,
                rd_only,
                _pad0: 0,
                scsi_transport_version: 0,
                phys_transport_version: 0,
                initiator_name: [0; SCST_MAX_EXTERNAL_NAME],
                target_name: [0; SCST_MAX_EXTERNAL_NAME],
            };
            s.initiator_name[..name.len()].copy_from_slice(name.as_bytes());
            c.set_sess(&s);
        })
    };
    let a = attach(&k, SESS_A, 0, "iqn.a");
    attach(&k, SESS_B, 1, "iqn.b");
    dev.poll();
    assert_eq!(dev.sessions().len(), 2);
    assert_eq!(dev.sessions()[1].initiator_name, "iqn.b");
    assert!(dev.sessions()[1].rd_only);
    assert_eq!(dev.sessions()[0].lun, 3);
    k.queue(subcode::DETACH_SESS, |c| {
        let mut s = c.sess();
        s.sess_h = SESS_A;
        c.set_sess(&s);
    });
    dev.poll();
    let replies = k.last_call().replies;
    assert_eq!(replies.len(), 2);
    assert_eq!((replies[0].reply.cmd_h, replies[0].reply.result()), (a, 0));
    dev.poll();
    assert_eq!(dev.sessions().len(), 1);
    assert_eq!(dev.sessions()[0].sess_h, SESS_B);
    let st = dev.stats().snapshot();
    assert_eq!((st.attach_sess, st.detach_sess, st.sessions), (2, 1, 1));
}

#[test]
fn unknown_subcodes_get_einval_and_remap_gets_the_identity() {
    let (k, mut dev) = device();
    let odd = k.queue(0x8008_73ff, |_| {});
    let descr = ScstUserExtCopyDataDescr {
        src_lba: 10,
        dst_lba: 20,
        data_len: 4096,
        ..Default::default()
    };
    k.queue(subcode::EXT_COPY_REMAP, |c| {
        c.set_remap_cmd(&ScstUserExtCopyRemap {
            data_descr: descr,
            ..Default::default()
        })
    });
    dev.poll();
    dev.poll();
    let remap_before = k.last_call().replies;
    assert_eq!(remap_before[0].reply.cmd_h, odd);
    assert_eq!(remap_before[0].reply.subcode, 0x8008_73ff);
    assert_eq!(remap_before[0].reply.result(), -libc::EINVAL);
    let remap = remap_before[1].reply.remap_reply();
    assert_eq!(remap.remap_descriptors_len, 24);
    assert_eq!(remap.status, 0);
    assert_ne!(remap.remap_descriptors, 0);
    let st = dev.stats().snapshot();
    assert_eq!((st.unknown_subcodes, st.ext_copy_remap), (1, 1));
}

#[test]
fn options_the_device_cannot_serve_are_refused() {
    let make = |opts: ScstUserOpt, unit: Option<UnitInfo>| {
        let config = ScstDeviceConfig {
            unit,
            ..ScstDeviceConfig::default()
        };
        ScstDevice::new(
            FakeKernel::new(opts),
            Manual::new(4),
            small_pool(1 << 20, 1 << 20),
            config,
        )
        .map(|_| ())
    };
    let err = make(
        options(SCST_USER_MEM_NO_REUSE, SCST_USER_ON_FREE_CMD_IGNORE, 0),
        None,
    )
    .unwrap_err();
    assert!(matches!(err, DeviceError::UnsupportedOptions(_)), "{err}");
    assert!(err.to_string().contains("never be returned"));
    let partial = ScstUserOpt {
        partial_transfers_type: SCST_USER_PARTIAL_TRANSFERS_SUPPORTED,
        ..default_options()
    };
    assert!(matches!(
        make(partial, None),
        Err(DeviceError::UnsupportedOptions(_))
    ));
    let call = options(SCST_USER_MEM_REUSE_ALL, 0, SCST_USER_PARSE_CALL);
    assert!(matches!(
        make(call, None),
        Err(DeviceError::InvalidConfig(_))
    ));
    assert!(make(call, Some(unit())).is_ok());
    // IGNORE is fine with reuse ALL: every buffer comes back through
    // ON_CACHED_MEM_FREE.
    assert!(make(
        options(SCST_USER_MEM_REUSE_ALL, SCST_USER_ON_FREE_CMD_IGNORE, 0),
        None
    )
    .is_ok());
    // The unit's maximum transfer must fit the largest buffer.
    let mut big = unit();
    big.max_transfer_blocks = 512; // 2 MiB of 4 KiB blocks
    let err = make(default_options(), Some(big)).unwrap_err();
    assert!(err.to_string().contains("raise max_buffer_bytes"), "{err}");
    // A zero budget.
    let config = ScstDeviceConfig {
        budget: 0,
        ..ScstDeviceConfig::default()
    };
    assert!(matches!(
        ScstDevice::new(
            FakeKernel::new(default_options()),
            Manual::new(4),
            small_pool(1 << 20, 1 << 20),
            config
        ),
        Err(DeviceError::InvalidConfig(_))
    ));
}

#[test]
fn descriptor_sense_follows_d_sense() {
    let opts = ScstUserOpt {
        d_sense: 1,
        ..default_options()
    };
    let (k, mut dev) = device_with(opts, 4, 8, small_pool(1 << 20, 1 << 20), None);
    k.exec(SESS_A, &WRITE_10, SCST_DATA_WRITE, 4096, 0xdead_0000);
    dev.poll();
    dev.poll();
    let r = &k.last_call().replies[0];
    assert_eq!(r.sense, vec![0x72, 0x04, 0x44, 0x00, 0, 0, 0, 0]);
}
