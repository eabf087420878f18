//! The simulator's error paths, each as scst_user.c takes it: reply
//! validation (subcode echo, state, data direction and `resp_data_len`
//! rules, BACKGROUND, page alignment of cached buffers, parse replies),
//! ESRCH/EINVAL/EFAULT with `replies_done`, EAGAIN with consumed replies,
//! blocking mode, registration (version, license, block size, options,
//! one device per fd) and the options round trip.

use std::time::Duration;

use crate::handler::*;
use dataplane::scst::abi::*;
use dataplane::scst::driver::{MultiBuf, ScstDriver};
use nix::errno::Errno;
use sim::scst::{ScstSim, ScstSimConfig, ScstSimInitiator, SimData, DEV_USER_VERSION_3_11};

const READ10_1: [u8; 10] = [0x28, 0, 0, 0, 0, 8, 0, 0, 1, 0];
const WRITE10_1: [u8; 10] = [0x2A, 0, 0, 0, 0, 8, 0, 0, 1, 0];

/// The completions waiting, in completion order; none may be aborted.
fn reap(ini: &mut ScstSimInitiator) -> Vec<Done> {
    let done = reap_all(ini);
    assert!(done.iter().all(|d| !d.aborted), "{done:?}");
    done
}

fn opt_std(reuse: u8) -> ScstUserOpt {
    options(reuse, SCST_USER_ON_FREE_CMD_CALL, SCST_USER_PARSE_STANDARD)
}

fn reply(cmd: &ScstUserGetCmd) -> ScstUserReplyCmd {
    ScstUserReplyCmd {
        cmd_h: cmd.cmd_h,
        subcode: cmd.subcode,
        ..Default::default()
    }
}

fn exec_reply(cmd: &ScstUserGetCmd, reply_type: u8, resp: i32, pbuf: u64) -> ScstUserReplyCmd {
    let mut r = reply(cmd);
    r.set_exec_reply(&ScstUserScsiCmdReplyExec {
        resp_data_len: resp,
        pbuf,
        reply_type,
        ..Default::default()
    });
    r
}

/// Fetches the one new subcommand of a command, answering any
/// ON_FREE_CMD / ON_CACHED_MEM_FREE that come with it.
fn one(h: &mut Handler) -> ScstUserGetCmd {
    let (res, _, cmds) = h.raw(&[], 8);
    assert_eq!(res, Ok(()));
    let mut rest = Vec::new();
    for c in cmds {
        if matches!(
            c.subcode,
            subcode::ON_FREE_CMD | subcode::ON_CACHED_MEM_FREE
        ) {
            h.drv.reply_cmd(&reply(&c)).unwrap();
        } else {
            rest.push(c);
        }
    }
    assert_eq!(rest.len(), 1, "{rest:?}");
    rest[0]
}

fn sim(opt: ScstUserOpt) -> (Handler, ScstSimInitiator, u64) {
    let config = ScstSimConfig {
        suspend_timeout: Duration::from_millis(20),
        ..ScstSimConfig::default()
    };
    setup(config, opt, 64, 512)
}

#[test]
fn wrong_subcode_or_state_is_einval_and_unjams_the_command() {
    let (mut h, mut ini, s) = sim(opt_std(SCST_USER_MEM_NO_REUSE));
    for (i, bad_subcode) in [
        subcode::ALLOC_MEM,        // another subcommand
        subcode::PARSE,            // _IOC_NR 1 while the state is 3
        subcode::EXEC ^ (1 << 16), // same _IOC_NR, wrong size bits
    ]
    .into_iter()
    .enumerate()
    {
        ini.submit(s, &READ10_1, SimData::In(512), i as u64)
            .unwrap();
        let cmd = one(&mut h);
        assert_eq!(cmd.subcode, subcode::EXEC);
        let mut bad = exec_reply(&cmd, SCST_EXEC_REPLY_COMPLETED, 0, 0);
        bad.subcode = bad_subcode;
        let (res, done, _) = h.raw(&[bad], 0);
        assert_eq!((res, done), (Err(Errno::EINVAL), 0));
        // Unjammed: a (correct) reply to it is now ignored, not an error ...
        let good = exec_reply(&cmd, SCST_EXEC_REPLY_COMPLETED, 0, 0);
        let (res, done, _) = h.raw(&[good], 0);
        assert_eq!((res, done), (Ok(()), 1));
        // ... and the command completed with ILLEGAL REQUEST 25/00.
        let d = reap(&mut ini);
        assert_eq!(d.len(), 1);
        assert_eq!(kcq(&d[0]), (5, 0x25, 0));
        // The handler saw it, so ON_FREE_CMD follows (a new state: an EXEC
        // reply now is EINVAL); after its reply the handle is gone.
        let (res, _, cmds) = h.raw(&[], 8);
        assert_eq!(res, Ok(()));
        assert_eq!(cmds.len(), 1);
        assert_eq!(cmds[0].subcode, subcode::ON_FREE_CMD);
        assert_eq!(cmds[0].cmd_h, cmd.cmd_h);
        assert_eq!(cmds[0].on_free_cmd().status, 2);
        // Its reply frees the handle: a late EXEC reply is ESRCH.
        let (res, _, _) = h.raw(&[reply(&cmds[0])], 4);
        assert_eq!(res, Err(Errno::EAGAIN));
        let (res, done, _) = h.raw(&[good], 0);
        assert_eq!((res, done), (Err(Errno::ESRCH), 0));
    }
    assert_eq!(ini.stats().replies_einval, 3);
}

#[test]
fn reply_to_a_command_that_awaits_none_is_einval() {
    let (mut h, mut ini, s) = sim(opt_std(SCST_USER_MEM_NO_REUSE));
    ini.submit(s, &WRITE10_1, SimData::Out(&[7; 512]), 1)
        .unwrap();
    let alloc = one(&mut h);
    assert_eq!(alloc.subcode, subcode::ALLOC_MEM);
    assert_eq!(alloc.alloc_cmd().alloc_len, 512);
    let pbuf = h.alloc(512, true);
    let mut r = reply(&alloc);
    r.set_alloc_reply(&ScstUserScsiCmdReplyAllocMem { pbuf });
    let (res, done, _) = h.raw(&[r], 0);
    assert_eq!((res, done), (Ok(()), 1));
    // The EXEC is queued, not sent: the ucmd awaits no reply.
    let (res, done, _) = h.raw(&[r], 0);
    assert_eq!((res, done), (Err(Errno::EINVAL), 0));
    // Not unjammed: the EXEC still comes, with the data in the buffer.
    let exec = one(&mut h);
    assert_eq!(exec.subcode, subcode::EXEC);
    assert_eq!(exec.exec_cmd().pbuf, pbuf);
    // SAFETY: `pbuf` is a live 512-byte buffer of the handler.
    let first = unsafe { *(pbuf as *const u8) };
    assert_eq!(first, 7);
    let ok = exec_reply(&exec, SCST_EXEC_REPLY_COMPLETED, 0, 0);
    let (res, done, _) = h.raw(&[ok], 0);
    assert_eq!((res, done), (Ok(()), 1));
    let d = reap(&mut ini);
    assert_eq!(d[0].status, 0);
    // A second EXEC reply: the ucmd (now queued for ON_FREE_CMD) awaits
    // none.
    let (res, _, _) = h.raw(&[ok], 0);
    assert_eq!(res, Err(Errno::EINVAL));
    assert_eq!(ini.stats().unjammed, 0);
}

#[test]
fn resp_data_len_rules() {
    let (mut h, mut ini, s) = sim(opt_std(SCST_USER_MEM_NO_REUSE));
    // Beyond bufflen on a READ.
    ini.submit(s, &READ10_1, SimData::In(512), 1).unwrap();
    let cmd = one(&mut h);
    let pbuf = h.alloc(4096, true);
    let (res, _, _) = h.raw(&[exec_reply(&cmd, SCST_EXEC_REPLY_COMPLETED, 513, pbuf)], 0);
    assert_eq!(res, Err(Errno::EINVAL));
    assert_eq!(kcq(&reap(&mut ini)[0]), (0x0B, 0x44, 0));
    // Negative.
    ini.submit(s, &READ10_1, SimData::In(512), 2).unwrap();
    let cmd = one(&mut h);
    let (res, _, _) = h.raw(&[exec_reply(&cmd, SCST_EXEC_REPLY_COMPLETED, -1, pbuf)], 0);
    assert_eq!(res, Err(Errno::EINVAL));
    assert_eq!(kcq(&reap(&mut ini)[0]), (0x0B, 0x44, 0));
    // Any data-in on a WRITE.
    ini.submit(s, &WRITE10_1, SimData::Out(&[1; 512]), 3)
        .unwrap();
    let alloc = one(&mut h);
    let mut r = reply(&alloc);
    r.set_alloc_reply(&ScstUserScsiCmdReplyAllocMem { pbuf });
    let (_, _, cmds) = h.raw(&[r], 8);
    let (res, _, _) = h.raw(
        &[exec_reply(&cmds[0], SCST_EXEC_REPLY_COMPLETED, 512, 0)],
        0,
    );
    assert_eq!(res, Err(Errno::EINVAL));
    assert_eq!(kcq(&reap(&mut ini)[0]), (0x0B, 0x44, 0));
    // Exactly bufflen on a READ is fine, and the data arrive.
    ini.submit(s, &READ10_1, SimData::In(512), 4).unwrap();
    let cmd = one(&mut h);
    assert_eq!(cmd.exec_cmd().pbuf, 0);
    assert_eq!(cmd.exec_cmd().alloc_len, 512);
    let data = pattern(4, 512);
    let buf = h.alloc(512, false);
    // SAFETY: `buf` is a live 512-byte buffer of the handler.
    unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), buf as *mut u8, 512) };
    let (res, _, _) = h.raw(&[exec_reply(&cmd, SCST_EXEC_REPLY_COMPLETED, 512, buf)], 4);
    assert_eq!(res, Err(Errno::EAGAIN));
    let d = reap(&mut ini);
    assert_eq!((d[0].status, &d[0].data), (0, &data));
    // An unknown reply type.
    ini.submit(s, &READ10_1, SimData::In(512), 5).unwrap();
    let cmd = one(&mut h);
    let (res, _, _) = h.raw(&[exec_reply(&cmd, 7, 0, 0)], 0);
    assert_eq!(res, Err(Errno::EINVAL));
    assert_eq!(kcq(&reap(&mut ini)[0]), (0x0B, 0x44, 0));
}

#[test]
fn background_only_for_non_reads() {
    let (mut h, mut ini, s) = sim(opt_std(SCST_USER_MEM_NO_REUSE));
    ini.submit(s, &READ10_1, SimData::In(512), 1).unwrap();
    let cmd = one(&mut h);
    let (res, _, _) = h.raw(&[exec_reply(&cmd, SCST_EXEC_REPLY_BACKGROUND, 0, 0)], 0);
    assert_eq!(res, Err(Errno::EINVAL));
    assert_eq!(kcq(&reap(&mut ini)[0]), (0x0B, 0x44, 0));
    h.run_until_idle();

    // SYNCHRONIZE CACHE (no data) in the background: GOOD goes out now.
    let sync = [0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    ini.submit(s, &sync, SimData::None, 2).unwrap();
    let cmd = one(&mut h);
    let (res, done, _) = h.raw(&[exec_reply(&cmd, SCST_EXEC_REPLY_BACKGROUND, 0, 0)], 0);
    assert_eq!((res, done), (Ok(()), 1));
    let d = reap(&mut ini);
    assert_eq!((d[0].tag, d[0].status), (2, 0));
    // The command is freed: ON_FREE_CMD. The background ucmd still waits
    // for its COMPLETED, which is any later reply to the handle (the
    // kernel checks no subcode then).
    let (_, _, cmds) = h.raw(&[], 8);
    assert_eq!(cmds[0].subcode, subcode::ON_FREE_CMD);
    let (res, done, _) = h.raw(&[exec_reply(&cmd, SCST_EXEC_REPLY_COMPLETED, 0, 0)], 4);
    assert_eq!((res, done), (Err(Errno::EAGAIN), 1));
    let (res, _, _) = h.raw(&[reply(&cmds[0])], 4);
    assert_eq!(res, Err(Errno::EAGAIN));
    assert_eq!(ini.stats().live_handles, 0);
}

#[test]
fn cached_buffers_must_be_page_aligned() {
    let (mut h, mut ini, s) = sim(opt_std(SCST_USER_MEM_REUSE_ALL));
    // ALLOC_MEM for a cached write: alloc_len is the class size.
    ini.submit(s, &WRITE10_1, SimData::Out(&[1; 512]), 1)
        .unwrap();
    let alloc = one(&mut h);
    assert_eq!(alloc.alloc_cmd().alloc_len, 4096);
    let bad = h.alloc(4096, false);
    let mut r = reply(&alloc);
    r.set_alloc_reply(&ScstUserScsiCmdReplyAllocMem { pbuf: bad });
    let (res, done, _) = h.raw(&[r], 0);
    assert_eq!((res, done), (Err(Errno::EINVAL), 0));
    assert_eq!(kcq(&reap(&mut ini)[0]), (0x04, 0x44, 0));
    h.run_until_idle();
    // EXEC reply of a cached read with an unaligned buffer.
    ini.submit(s, &READ10_1, SimData::In(512), 2).unwrap();
    let cmd = one(&mut h);
    assert_eq!((cmd.exec_cmd().pbuf, cmd.exec_cmd().alloc_len), (0, 4096));
    let (res, _, _) = h.raw(&[exec_reply(&cmd, SCST_EXEC_REPLY_COMPLETED, 512, bad)], 0);
    assert_eq!(res, Err(Errno::EINVAL));
    assert_eq!(kcq(&reap(&mut ini)[0]), (0x0B, 0x44, 0));
}

#[test]
fn unknown_handle_is_esrch() {
    let (mut h, _ini, _s) = sim(opt_std(SCST_USER_MEM_REUSE_ALL));
    let r = ScstUserReplyCmd {
        cmd_h: 0x7777,
        subcode: subcode::EXEC,
        ..Default::default()
    };
    let (res, done, _) = h.raw(&[r], 4);
    assert_eq!((res, done), (Err(Errno::ESRCH), 0));
    assert_eq!(h.drv.reply_cmd(&r), Err(Errno::ESRCH));
}

#[test]
fn a_failure_in_the_middle_of_a_batch_stops_it() {
    let (mut h, mut ini, s) = sim(opt_std(SCST_USER_MEM_NO_REUSE));
    for tag in 0..3 {
        ini.submit(s, &[0, 0, 0, 0, 0, 0], SimData::None, tag)
            .unwrap();
    }
    let (res, _, cmds) = h.raw(&[], 8);
    assert_eq!((res, cmds.len()), (Ok(()), 3));
    let good0 = exec_reply(&cmds[0], SCST_EXEC_REPLY_COMPLETED, 0, 0);
    let mut bad1 = exec_reply(&cmds[1], SCST_EXEC_REPLY_COMPLETED, 0, 0);
    bad1.subcode = subcode::PARSE;
    let good2 = exec_reply(&cmds[2], SCST_EXEC_REPLY_COMPLETED, 0, 0);
    // Another command is ready, but a failing batch returns none.
    ini.submit(s, &[0, 0, 0, 0, 0, 0], SimData::None, 3)
        .unwrap();
    let (res, done, _) = h.raw(&[good0, bad1, good2], 8);
    assert_eq!((res, done), (Err(Errno::EINVAL), 1));
    let mut d = reap(&mut ini);
    d.sort_by_key(|d| d.tag);
    assert_eq!(d.len(), 2, "{d:?}");
    assert_eq!((d[0].tag, d[0].status), (0, 0));
    assert_eq!((d[1].tag, kcq(&d[1])), (1, (5, 0x25, 0)));
    // The replies after the failed one are sent again; the failed one not.
    let (res, done, cmds) = h.raw(&[good2], 8);
    assert_eq!((res, done), (Ok(()), 1));
    let d = reap(&mut ini);
    assert_eq!((d[0].tag, d[0].status), (2, 0));
    // The fourth command's EXEC (the ON_FREE_CMDs of 0..2 come too).
    assert!(cmds.iter().any(|c| c.subcode == subcode::EXEC));
}

#[test]
fn eagain_consumes_the_replies() {
    let (mut h, mut ini, s) = sim(opt_std(SCST_USER_MEM_NO_REUSE));
    // No replies: replies_done is written as 0 (commit 40f36a687).
    let (res, done, _) = h.raw(&[], 4);
    assert_eq!((res, done), (Err(Errno::EAGAIN), 0));
    for tag in 0..2 {
        ini.submit(s, &[0, 0, 0, 0, 0, 0], SimData::None, tag)
            .unwrap();
    }
    let (_, _, cmds) = h.raw(&[], 8);
    let replies: Vec<_> = cmds
        .iter()
        .map(|c| exec_reply(c, SCST_EXEC_REPLY_COMPLETED, 0, 0))
        .collect();
    h.opt.on_free_cmd_type = SCST_USER_ON_FREE_CMD_IGNORE;
    h.drv.set_options(&h.opt).unwrap_err(); // commands in flight: EBUSY
    let (res, done, _) = h.raw(&replies, 4);
    assert_eq!((res, done), (Err(Errno::EAGAIN), 2));
    assert_eq!(reap(&mut ini).len(), 2);
    // Asking for no command is not EAGAIN.
    let (res, done, _) = h.raw(&[], 0);
    assert_eq!((res, done), (Ok(()), 0));
}

#[test]
fn replies_not_backed_by_preplies_are_efault() {
    let (mut h, mut ini, s) = sim(opt_std(SCST_USER_MEM_NO_REUSE));
    ini.submit(s, &[0, 0, 0, 0, 0, 0], SimData::None, 0)
        .unwrap();
    let cmd = one(&mut h);
    let r = [exec_reply(&cmd, SCST_EXEC_REPLY_COMPLETED, 0, 0)];
    let mut buf = MultiBuf::new(4);
    let hdr = buf.header_mut();
    hdr.preplies = 0; // forgotten
    hdr.replies_cnt = 1;
    hdr.cmds_cnt = 4;
    assert_eq!(h.drv.reply_and_get_multi(&mut buf, &r), Err(Errno::EFAULT));
    assert_eq!(buf.header().replies_done, 0);
    // More replies announced than given.
    buf.header_mut().preplies = r.as_ptr() as u64;
    buf.header_mut().replies_cnt = 2;
    assert_eq!(h.drv.reply_and_get_multi(&mut buf, &r), Err(Errno::EFAULT));
    let (res, done, _) = h.raw(&r, 4);
    assert_eq!((res, done), (Err(Errno::EAGAIN), 1));
}

fn parse_reply(cmd: &ScstUserGetCmd, f: impl FnOnce(&mut ParseResult)) -> ScstUserReplyCmd {
    let mut pr = ParseResult::passthrough(&cmd.parse_cmd());
    f(&mut pr);
    let mut rp = ScstUserScsiCmdReplyParse::default();
    rp.set_result(&pr);
    let mut r = reply(cmd);
    r.set_parse_reply(&rp);
    r
}

#[test]
fn parse_replies_are_validated() {
    let opt = options(
        SCST_USER_MEM_NO_REUSE,
        SCST_USER_ON_FREE_CMD_CALL,
        SCST_USER_PARSE_CALL,
    );
    let (mut h, mut ini, s) = sim(opt);
    let bad: [fn(&mut ParseResult); 9] = [
        |p| p.queue_type = 5,
        |p| p.data_direction = 0,
        |p| p.data_direction = 5,
        |p| p.bufflen = 0, // with READ
        |p| p.bufflen = -1,
        |p| p.lba = -1,
        |p| p.data_len = -1,
        |p| p.cdb_len = 11, // the CDB has 10
        |p| p.op_flags &= !SCST_INFO_VALID,
    ];
    for (tag, f) in bad.into_iter().enumerate() {
        ini.submit(s, &READ10_1, SimData::In(512), tag as u64)
            .unwrap();
        let cmd = one(&mut h);
        assert_eq!(cmd.subcode, subcode::PARSE);
        let p = cmd.parse_cmd();
        assert_eq!(
            (
                p.data_direction,
                p.bufflen,
                p.lba,
                p.cdb_len,
                p.expected_transfer_len
            ),
            (SCST_DATA_READ, 512, 8, 10, 512)
        );
        assert_ne!(p.op_flags & SCST_INFO_VALID, 0);
        let (res, done, _) = h.raw(&[parse_reply(&cmd, f)], 0);
        assert_eq!((res, done), (Err(Errno::EINVAL), 0), "case {tag}");
        let d = reap(&mut ini);
        assert_eq!(kcq(&d[0]), (0x04, 0x44, 0), "case {tag}: HARDWARE ERROR");
        h.run_until_idle();
    }
    // A valid reply may change the command: NONE direction, no buffer.
    ini.submit(s, &READ10_1, SimData::In(512), 20).unwrap();
    let cmd = one(&mut h);
    let r = parse_reply(&cmd, |p| {
        p.data_direction = SCST_DATA_NONE;
        p.bufflen = 0;
        p.cdb_len = 0; // keeps the original
    });
    let (res, done, cmds) = h.raw(&[r], 4);
    assert_eq!((res, done), (Ok(()), 1));
    let e = cmds[0].exec_cmd();
    assert_eq!(
        (e.data_direction, e.bufflen, e.cdb_len, e.alloc_len),
        (4, 0, 10, 0)
    );
    // A status instead: the sense goes to the initiator, at most 252 bytes.
    h.run_until_idle();
    reap(&mut ini);
    ini.submit(s, &READ10_1, SimData::In(512), 21).unwrap();
    let cmd = one(&mut h);
    let mut sense = vec![0x55u8; 300];
    sense[0] = 0x70;
    sense[2] = 0x03;
    let mut rp = ScstUserScsiCmdReplyParse {
        status: 2,
        ..Default::default()
    };
    rp.set_sense(&ReplySense {
        sense_len: 255,
        psense_buffer: sense.as_ptr() as u64,
        ..Default::default()
    });
    let mut r = reply(&cmd);
    r.set_parse_reply(&rp);
    let (res, done, _) = h.raw(&[r], 4);
    assert_eq!((res, done), (Err(Errno::EAGAIN), 1));
    let d = reap(&mut ini);
    assert_eq!(d[0].status, 2);
    assert_eq!(d[0].sense.len(), 252);
    assert_eq!(&d[0].sense[..], &sense[..252]);
}

#[test]
fn bad_handler_pointers() {
    let (mut h, mut ini, s) = sim(opt_std(SCST_USER_MEM_NO_REUSE));
    let unmapped = 0x1000u64; // page 1 is never mapped
                              // ALLOC_MEM reply with a buffer that cannot be mapped: EFAULT at that
                              // reply, HARDWARE ERROR for the command.
    ini.submit(s, &WRITE10_1, SimData::Out(&[9; 512]), 1)
        .unwrap();
    let alloc = one(&mut h);
    let mut r = reply(&alloc);
    r.set_alloc_reply(&ScstUserScsiCmdReplyAllocMem { pbuf: unmapped });
    let (res, done, _) = h.raw(&[r], 0);
    assert_eq!((res, done), (Err(Errno::EFAULT), 0));
    assert_eq!(kcq(&reap(&mut ini)[0]), (0x04, 0x44, 0));
    h.run_until_idle();
    // pbuf 0 in ALLOC_MEM: BUSY.
    ini.submit(s, &WRITE10_1, SimData::Out(&[9; 512]), 2)
        .unwrap();
    let alloc = one(&mut h);
    let (res, _, _) = h.raw(&[reply(&alloc)], 4);
    assert_eq!(res, Err(Errno::EAGAIN));
    assert_eq!(reap(&mut ini)[0].status, 0x08);
    h.run_until_idle();
    // EXEC reply of a read with an unreadable buffer: the reply is taken,
    // the command fails (ABORTED COMMAND 44/00).
    ini.submit(s, &READ10_1, SimData::In(512), 3).unwrap();
    let cmd = one(&mut h);
    let (res, done, _) = h.raw(
        &[exec_reply(&cmd, SCST_EXEC_REPLY_COMPLETED, 512, unmapped)],
        4,
    );
    assert_eq!((res, done), (Err(Errno::EAGAIN), 1));
    assert_eq!(kcq(&reap(&mut ini)[0]), (0x0B, 0x44, 0));
    h.run_until_idle();
    // Data-in without a buffer: BUSY.
    ini.submit(s, &READ10_1, SimData::In(512), 4).unwrap();
    let cmd = one(&mut h);
    let (res, _, _) = h.raw(&[exec_reply(&cmd, SCST_EXEC_REPLY_COMPLETED, 512, 0)], 4);
    assert_eq!(res, Err(Errno::EAGAIN));
    assert_eq!(reap(&mut ini)[0].status, 0x08);
    h.run_until_idle();
    // A sense that cannot be read: EFAULT, ABORTED COMMAND.
    ini.submit(s, &[0, 0, 0, 0, 0, 0], SimData::None, 5)
        .unwrap();
    let cmd = one(&mut h);
    let mut er = ScstUserScsiCmdReplyExec {
        reply_type: SCST_EXEC_REPLY_COMPLETED,
        status: 2,
        ..Default::default()
    };
    er.set_sense(&ReplySense {
        sense_len: 18,
        psense_buffer: unmapped,
        ..Default::default()
    });
    let mut r = reply(&cmd);
    r.set_exec_reply(&er);
    let (res, done, _) = h.raw(&[r], 0);
    assert_eq!((res, done), (Err(Errno::EFAULT), 0));
    assert_eq!(kcq(&reap(&mut ini)[0]), (0x0B, 0x44, 0));
    assert_eq!(ini.stats().replies_efault, 2);
}

/// A 2-page mapping whose second page is inaccessible, with `text` at the
/// very end of the first page.
struct EdgeString {
    base: std::ptr::NonNull<std::ffi::c_void>,
    at: u64,
}

impl EdgeString {
    fn new(text: &[u8]) -> Self {
        use nix::sys::mman::{mmap_anonymous, mprotect, MapFlags, ProtFlags};
        let len = std::num::NonZeroUsize::new(2 * PAGE).unwrap();
        // SAFETY: a fresh private anonymous mapping; nothing else uses it.
        let base = unsafe {
            mmap_anonymous(
                None,
                len,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_PRIVATE,
            )
        }
        .unwrap();
        let second = (base.as_ptr() as usize + PAGE) as *mut std::ffi::c_void;
        // SAFETY: the second page belongs to the mapping made above.
        unsafe {
            mprotect(
                std::ptr::NonNull::new(second).unwrap(),
                PAGE,
                ProtFlags::PROT_NONE,
            )
        }
        .unwrap();
        let at = base.as_ptr() as usize + PAGE - text.len();
        // SAFETY: `at..at + text.len()` lies in the first, writable page.
        unsafe { std::ptr::copy_nonoverlapping(text.as_ptr(), at as *mut u8, text.len()) };
        Self {
            base,
            at: at as u64,
        }
    }
}

impl Drop for EdgeString {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`.
        let _ = unsafe { nix::sys::mman::munmap(self.base, 2 * PAGE) };
    }
}

#[test]
fn registration_errors() {
    let reg = |version: &str, license: &str, bs: u32, opt: ScstUserOpt| {
        let (mut drv, _ini) = ScstSim::new(ScstSimConfig::default()).unwrap();
        let s = DescStrings::new(version, license);
        drv.register(&desc(&s, "disk0", bs, opt))
    };
    let opt = opt_std(SCST_USER_MEM_REUSE_ALL);
    assert_eq!(reg(DEV_USER_VERSION_3_11, "GPL", 512, opt), Ok(()));
    for lic in ["GPL v2", "Dual BSD/GPL", "Dual MIT/GPL", "Dual MPL/GPL"] {
        assert_eq!(reg(DEV_USER_VERSION_3_11, lic, 4096, opt), Ok(()), "{lic}");
    }
    // One character off: EINVAL ("Incorrect version").
    let mut wrong = DEV_USER_VERSION_3_11.to_string();
    wrong.replace_range(0..1, "4");
    assert_eq!(reg(&wrong, "GPL", 512, opt), Err(Errno::EINVAL));
    assert_eq!(
        reg(&DEV_USER_VERSION_3_11[..89], "GPL", 512, opt),
        Err(Errno::EINVAL)
    );
    // The license is checked first.
    assert_eq!(
        reg(DEV_USER_VERSION_3_11, "MIT", 512, opt),
        Err(Errno::EPERM)
    );
    assert_eq!(reg(&wrong, "Proprietary", 512, opt), Err(Errno::EPERM));
    // Block size: a power of two of at least 512.
    for bs in [0, 256, 1000, 3 * 512] {
        assert_eq!(
            reg(DEV_USER_VERSION_3_11, "GPL", bs, opt),
            Err(Errno::EINVAL),
            "{bs}"
        );
    }
    // Options (__dev_user_set_opt).
    let bad_opts: [fn(&mut ScstUserOpt); 8] = [
        |o| o.parse_type = 3,
        |o| o.on_free_cmd_type = 2,
        |o| o.memory_reuse_type = 4,
        |o| o.partial_transfers_type = 3,
        |o| o.tst = 2,
        |o| o.qerr = 2,
        |o| o.d_sense = 2,
        |o| o.tas = 2,
    ];
    for f in bad_opts {
        let mut o = opt;
        f(&mut o);
        assert_eq!(
            reg(DEV_USER_VERSION_3_11, "GPL", 512, o),
            Err(Errno::EINVAL)
        );
    }
}

#[test]
fn version_strings_are_read_as_91_bytes() {
    // "GPL\0" in the last 4 bytes before an inaccessible page: the kernel
    // copies 91 bytes (`dev_user_check_version` reads
    // max(sizeof(DEV_USER_VERSION), 20) bytes of each string), so this is
    // EFAULT.
    let (mut drv, _ini) = ScstSim::new(ScstSimConfig::default()).unwrap();
    let edge = EdgeString::new(b"GPL\0");
    let s = DescStrings::new(DEV_USER_VERSION_3_11, "GPL");
    let mut d = desc(&s, "disk0", 512, opt_std(SCST_USER_MEM_REUSE_ALL));
    d.license_str = edge.at;
    assert_eq!(drv.register(&d), Err(Errno::EFAULT));
    // The same string 91 bytes before the end is fine.
    let edge91 = EdgeString::new(&{
        let mut v = b"GPL".to_vec();
        v.resize(91, 0);
        v
    });
    d.license_str = edge91.at;
    assert_eq!(drv.register(&d), Ok(()));
    // The version string too.
    let (mut drv, _ini) = ScstSim::new(ScstSimConfig::default()).unwrap();
    let short = EdgeString::new(DEV_USER_VERSION_3_11.as_bytes());
    d.version_str = short.at; // 90 bytes, no room for the 91st
    assert_eq!(drv.register(&d), Err(Errno::EFAULT));
    assert_eq!(drv.ioctls(), 1);
}

#[test]
fn one_device_per_fd_and_enodev_before_register() {
    let (mut drv, ini) = ScstSim::new(ScstSimConfig::default()).unwrap();
    let mut buf = MultiBuf::new(2);
    buf.header_mut().cmds_cnt = 2;
    assert_eq!(drv.reply_and_get_multi(&mut buf, &[]), Err(Errno::ENODEV));
    assert_eq!(drv.get_options(), Err(Errno::ENODEV));
    assert_eq!(drv.flush_cache(), Err(Errno::ENODEV));
    assert_eq!(drv.capacity_changed(), Err(Errno::ENODEV));
    assert_eq!(drv.prealloc_buffer(0, 4096, false), Err(Errno::ENODEV));
    let s = DescStrings::new(DEV_USER_VERSION_3_11, "GPL");
    let d = desc(&s, "disk0", 512, opt_std(SCST_USER_MEM_REUSE_ALL));
    assert_eq!(drv.register(&d), Ok(()));
    assert_eq!(drv.register(&d), Err(Errno::EINVAL));
    // Every call counted, failures included.
    assert_eq!(drv.ioctls(), 7);
    assert_eq!(ini.ioctls(), 7);
    let dev = ini.device().unwrap();
    assert_eq!(
        (dev.name.as_str(), dev.block_size, dev.blocking),
        ("disk0", 512, false)
    );
}

#[test]
fn options_round_trip() {
    let (mut h, mut ini, s) = sim(opt_std(SCST_USER_MEM_REUSE_ALL));
    assert_eq!(h.drv.get_options().unwrap(), h.opt);
    let mut o = options(
        SCST_USER_MEM_REUSE_READ,
        SCST_USER_ON_FREE_CMD_IGNORE,
        SCST_USER_PARSE_EXCEPTION,
    );
    o.qerr = 3;
    o.d_sense = 1;
    o.tas = 1;
    h.drv.set_options(&o).unwrap();
    assert_eq!(h.drv.get_options().unwrap(), o);
    let mut bad = o;
    bad.queue_alg = 2;
    assert_eq!(h.drv.set_options(&bad), Err(Errno::EINVAL));
    assert_eq!(h.drv.get_options().unwrap(), o);
    // d_sense = 1: the simulator's own sense is in descriptor format.
    ini.submit(s, &[0xC1, 0, 0, 0, 0, 0], SimData::None, 1)
        .unwrap();
    h.opt = o;
    h.run_until_idle(); // EXCEPTION: PARSE, the handler refuses 0xC1
    let d = reap(&mut ini);
    assert_eq!(
        (d[0].status, d[0].sense[2] & 0x0F, d[0].sense[12]),
        (2, 5, 0x20)
    );
    o.parse_type = SCST_USER_PARSE_STANDARD;
    h.drv.set_options(&o).unwrap();
    ini.submit(s, &[0xC1, 0, 0, 0, 0, 0], SimData::None, 2)
        .unwrap();
    h.run_until_idle();
    let d = reap(&mut ini);
    // STANDARD: INVALID COMMAND OPERATION CODE from the core, 0x72 format.
    assert_eq!(
        (d[0].sense[0], d[0].sense[1], d[0].sense[2]),
        (0x72, 5, 0x20)
    );
}

#[test]
fn blocking_mode_waits_then_eintr() {
    let config = ScstSimConfig {
        nonblocking: false,
        blocking_wait: Duration::from_millis(50),
        ..ScstSimConfig::default()
    };
    let (drv, mut ini) = ScstSim::new(config).unwrap();
    let mut h = Handler::new(drv, opt_std(SCST_USER_MEM_NO_REUSE), 64, 512);
    h.register().unwrap();
    assert!(ini.device().unwrap().blocking);
    let sess = ini
        .attach_session_with(0, "i", || {
            h.poll();
        })
        .unwrap();
    // Flush the ATTACH reply; nothing else comes: EINTR after the wait,
    // the reply consumed.
    h.poll();
    assert_eq!(h.last_result, Err(Errno::EINTR));
    assert!(h.pending.is_empty());
    // A command submitted while the handler sleeps wakes it.
    let t = std::thread::spawn(move || {
        let (res, _, cmds) = h.raw(&[], 4);
        (h, res, cmds)
    });
    std::thread::sleep(Duration::from_millis(10));
    ini.submit(sess, &[0, 0, 0, 0, 0, 0], SimData::None, 1)
        .unwrap();
    let (mut h, res, cmds) = t.join().unwrap();
    // Either it slept and was woken, or the command was already there.
    assert_eq!(res, Ok(()));
    assert_eq!(cmds.len(), 1);
    // Only the first command may block: one ready, four asked → 1, Ok.
    ini.submit(sess, &[0, 0, 0, 0, 0, 0], SimData::None, 2)
        .unwrap();
    let (res, _, more) = h.raw(&[exec_reply(&cmds[0], SCST_EXEC_REPLY_COMPLETED, 0, 0)], 4);
    assert_eq!(res, Ok(()));
    assert!(more.iter().any(|c| c.subcode == subcode::EXEC));
}
