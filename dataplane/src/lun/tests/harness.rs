//! The harness the LUN tests drive a unit with: a [`Lun`] over the test
//! disk through a real port and bdev poller, and CDB and parameter-list
//! builders.
//!
//! [`Lun`]: super::super::Lun

use bdev::{Bdev, Capabilities, IoVec};
use reactor::Poller;
use test_support::rng::Rng;

use crate::exec::{CommandExecutor, Response};
use crate::port::{port_pair, BdevPoller};
use crate::scsi::{ScsiError, SenseFormat};

use super::super::{Lun, LunConfig};
use super::disk::TestDisk;

pub(super) fn caps() -> Capabilities {
    Capabilities {
        volatile_cache: true,
        unmap: true,
        unmap_reads_zeroes: true,
        write_zeroes: true,
        max_transfer_blocks: 256,
        max_unmap_blocks: 64,
        optimal_boundary_blocks: 8,
    }
}

pub(super) struct Harness {
    pub(super) lun: Lun,
    pub(super) poller: BdevPoller,
    pub(super) disk: TestDisk,
    pub(super) responses: Vec<(u32, Response)>,
}

impl Harness {
    pub(super) fn with(
        caps: Capabilities,
        depth: usize,
        seed: u64,
        configure: impl FnOnce(&mut LunConfig),
    ) -> Self {
        let disk = TestDisk::new(512, 4096, caps, seed);
        let mut config = LunConfig::for_bdev(&disk);
        config.max_tasks = 32;
        config.scratch_chunk_bytes = 4096;
        config.scratch_bytes = 4 * 4096;
        config.max_compare_write_blocks = 16;
        config.max_unmap_descriptors = 8;
        config.max_unmap_lba_count = 2048;
        config.max_write_same_blocks = 1024;
        config.max_transfer_bytes = 128 * 1024;
        config.lu_id = 0x1122_3344_5566_7788;
        configure(&mut config);
        let (port, end) = port_pair(depth).unwrap();
        let channel = disk.open_channel(depth).unwrap();
        let mut poller = BdevPoller::new("test", channel, 64);
        poller.attach(end).unwrap();
        let lun = Lun::new(config, port).unwrap();
        Harness {
            lun,
            poller,
            disk,
            responses: Vec::new(),
        }
    }

    pub(super) fn new() -> Self {
        Self::with(caps(), 16, 1, |_| {})
    }

    /// Submits with the data buffer split at `cuts`.
    pub(super) fn submit_split(&mut self, slot: u32, cdb: &[u8], buf: &mut [u8], cuts: &[usize]) {
        let iovs = split(buf, cuts);
        // SAFETY: every caller keeps `buf` alive and untouched until the
        // response for `slot` has been collected.
        unsafe { self.lun.submit(slot, cdb, &iovs) };
    }

    pub(super) fn submit(&mut self, slot: u32, cdb: &[u8], buf: &mut [u8]) {
        self.submit_split(slot, cdb, buf, &[]);
    }

    pub(super) fn step(&mut self) {
        self.lun.flush();
        self.poller.poll();
        let responses = &mut self.responses;
        self.lun
            .poll(usize::MAX, &mut |slot, r| responses.push((slot, *r)));
    }

    pub(super) fn run(&mut self) {
        for _ in 0..100_000 {
            if self.lun.in_flight() == 0 {
                return;
            }
            self.step();
        }
        panic!("the unit did not drain: {:?}", self.lun);
    }

    pub(super) fn take(&mut self, slot: u32) -> Response {
        let at = self
            .responses
            .iter()
            .position(|(s, _)| *s == slot)
            .unwrap_or_else(|| panic!("no response for slot {slot}"));
        self.responses.remove(at).1
    }

    /// Runs one command to completion.
    pub(super) fn exec(&mut self, cdb: &[u8], buf: &mut [u8]) -> Response {
        self.submit(0, cdb, buf);
        self.run();
        assert_eq!(self.responses.len(), 1);
        self.take(0)
    }
}

pub(super) fn split(buf: &mut [u8], cuts: &[usize]) -> Vec<IoVec> {
    let mut iovs = Vec::new();
    let mut rest = buf;
    let mut at = 0;
    for &cut in cuts {
        let (head, tail) = rest.split_at_mut(cut - at);
        iovs.push(IoVec::from_slice(head));
        rest = tail;
        at = cut;
    }
    iovs.push(IoVec::from_slice(rest));
    iovs
}

pub(super) fn cdb10(op: u8, b1: u8, lba: u32, len: u16) -> [u8; 10] {
    let mut c = [0u8; 10];
    c[0] = op;
    c[1] = b1;
    c[2..6].copy_from_slice(&lba.to_be_bytes());
    c[7..9].copy_from_slice(&len.to_be_bytes());
    c
}

pub(super) fn cdb16(op: u8, b1: u8, lba: u64, len: u32) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = op;
    c[1] = b1;
    c[2..10].copy_from_slice(&lba.to_be_bytes());
    c[10..14].copy_from_slice(&len.to_be_bytes());
    c
}

pub(super) fn caw(lba: u64, blocks: u8, fua: bool) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = 0x89;
    c[1] = if fua { 0x08 } else { 0 };
    c[2..10].copy_from_slice(&lba.to_be_bytes());
    c[13] = blocks;
    c
}

pub(super) fn unmap_list(descriptors: &[(u64, u32)]) -> Vec<u8> {
    let bd = (descriptors.len() * 16) as u16;
    let mut list = Vec::new();
    list.extend_from_slice(&(bd + 6).to_be_bytes());
    list.extend_from_slice(&bd.to_be_bytes());
    list.extend_from_slice(&[0; 4]);
    for &(lba, blocks) in descriptors {
        list.extend_from_slice(&lba.to_be_bytes());
        list.extend_from_slice(&blocks.to_be_bytes());
        list.extend_from_slice(&[0; 4]);
    }
    list
}

pub(super) fn unmap_cdb(len: u16) -> [u8; 10] {
    cdb10(0x42, 0, 0, len)
}

pub(super) fn check(error: ScsiError) -> Response {
    error.to_response(SenseFormat::Fixed)
}

pub(super) fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0; len];
    Rng::with_seed(seed).fill(&mut v);
    v
}

pub(super) fn random_cuts(rng: &mut Rng, len: usize) -> Vec<usize> {
    let mut cuts: Vec<usize> = (0..rng.u64(..4))
        .filter(|_| len > 1)
        .map(|_| rng.u64(1..=len as u64 - 1) as usize)
        .collect();
    cuts.sort();
    cuts.dedup();
    cuts
}
