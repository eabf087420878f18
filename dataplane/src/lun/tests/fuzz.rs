//! Tests: random CDBs and data buffers never panic and always get a
//! well-formed response.

use bdev::IoOp;
use test_support::rng::seeded;

use crate::exec::{status, CommandExecutor, Response};

use super::harness::{caps, random_cuts, split, Harness};

fn well_formed(response: &Response, buf_len: usize) {
    assert!(response.data_in_len as usize <= buf_len, "{response:?}");
    match response.status {
        status::GOOD => assert_eq!(response.sense_len, 0),
        status::CHECK_CONDITION => {
            let sense = response.sense_bytes();
            assert_eq!(response.data_in_len, 0);
            match sense[0] & 0x7F {
                0x70 => assert_eq!(sense.len(), 18),
                0x72 => assert_eq!(sense.len(), 8 + usize::from(sense[7])),
                _ => panic!("bad sense {sense:02x?}"),
            }
        }
        status::BUSY | status::TASK_ABORTED => assert_eq!(response.sense_len, 0),
        other => panic!("unexpected status {other:#x}"),
    }
}

#[test]
fn random_cdbs_never_panic() {
    let mut rng = seeded(12345);
    let mut h = Harness::with(caps(), 8, 77, |_| {});
    let opcodes: Vec<u8> = crate::scsi::opcodes::SUPPORTED
        .iter()
        .map(|i| i.opcode)
        .collect();
    let mut bufs: Vec<Option<Vec<u8>>> = (0..32).map(|_| None).collect();
    let mut good = 0;
    for round in 0..20_000 {
        let mut cdb = vec![0u8; rng.u64(..21) as usize];
        rng.fill(&mut cdb);
        if rng.u64(..100) < 80 {
            // A supported operation code with its CDB length.
            let opcode = opcodes[rng.u64(..opcodes.len() as u64) as usize];
            let len = crate::scsi::opcodes::cdb_len(opcode).unwrap();
            cdb.resize(len, 0);
            rng.fill(&mut cdb);
            cdb[0] = opcode;
            if rng.u64(..100) < 70 {
                // Tame it: small LBAs and lengths, fewer unsupported bits.
                let c = &mut cdb;
                match len {
                    6 => {
                        c[1] &= 0x01;
                        c[2] &= 0x0F;
                        c[4] &= 0x07;
                    }
                    10 => {
                        c[1] &= 0x1F;
                        c[2] = 0;
                        c[3] = 0;
                        c[4] &= 0x0F;
                        c[7] = 0;
                        c[8] &= 0x3F;
                    }
                    12 => {
                        c[2] = 0;
                        c[3] = 0;
                        c[4] &= 0x0F;
                        c[6..9].fill(0);
                        c[9] &= 0x07;
                    }
                    _ => {
                        c[2..8].fill(0);
                        c[8] &= 0x0F;
                        c[10..13].fill(0);
                        c[13] &= 0x07;
                    }
                }
                if opcode != 0x9E && opcode != 0xA3 {
                    c[1] &= 0x0F;
                }
                c[len - 1] = 0;
            }
        }
        let slot = rng.u64(..32) as usize;
        if bufs[slot].is_none() {
            let mut buf = vec![0u8; rng.u64(..6 * 512) as usize];
            rng.fill(&mut buf);
            let buf = bufs[slot].insert(buf);
            let cuts = random_cuts(&mut rng, buf.len());
            let iovs = split(buf, &cuts);
            // SAFETY: the buffer stays in `bufs[slot]` until its response.
            unsafe { h.lun.submit(slot as u32, &cdb, &iovs) };
        }
        if round % 4 == 0 {
            h.step();
        }
        if rng.u64(..100) < 2 {
            h.lun.abort(rng.u64(..40) as u32);
        }
        for (slot, response) in h.responses.drain(..) {
            let buf = bufs[slot as usize].take().unwrap();
            well_formed(&response, buf.len());
            if response.status == status::GOOD {
                good += 1;
            }
        }
    }
    h.run();
    for (slot, response) in h.responses.drain(..) {
        let buf = bufs[slot as usize].take().unwrap();
        well_formed(&response, buf.len());
    }
    assert!(bufs.iter().all(Option::is_none));
    assert_eq!(h.lun.outstanding_requests(), 0);
    // The fuzz reached every kind of bdev operation, not only the decoder.
    let log = h.disk.log();
    for op in [
        IoOp::Read,
        IoOp::Write,
        IoOp::Flush,
        IoOp::Unmap,
        IoOp::WriteZeroes,
    ] {
        assert!(log.iter().any(|l| l.op == op), "no {op:?} reached the bdev");
    }
    assert!(
        log.len() > 2000,
        "only {} requests reached the bdev",
        log.len()
    );
    assert!(good > 3000, "only {good} commands succeeded");
}
