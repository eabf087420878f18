//! The `tcmu_ring` target: a [`TcmuDevice`] walking a ring whose mailbox,
//! entries and data-area bytes come from the input, with a script of head
//! moves, peer tail moves, `reset_ring`s, byte pokes, completions and
//! polls. The script plays the kernel: it writes entries as
//! target_core_user does (padding at the ring's end, never filling the
//! ring), unless a step says to write something hostile.
//!
//! Checks: no panic; every iovec handed to the executor lies inside the
//! data area ([`RecordingExecutor`]); the published `cmd_tail` is always a
//! ring position, and while the ring since the last reset holds only
//! well-formed entries it is an entry boundary at or after the previous
//! tail and at or before the head; a device never faults on such a ring
//! unless the peer moved the tail or reset it; a faulted device no longer
//! moves `cmd_tail`.

use std::os::fd::{FromRawFd, OwnedFd};
use std::time::Duration;

use dataplane::frontend::CoalesceConfig;
use dataplane::tcmu::abi::*;
use dataplane::tcmu::{Doorbell, SharedRegion, TcmuDevice, TcmuDeviceConfig};

use crate::input::Input;
use crate::ring_exec::RecordingExecutor;

/// Whether the device detects a `cmd_head` that moves back behind the
/// entries it walked (a `reset_ring` while the published tail is 0). True
/// since the walker faults with `RingFault::HeadMovedBackwards`: the target
/// checks the tail after such resets too. Without the check the device
/// walked stale entries of the previous lap and published a tail that was
/// no boundary of the new ring; the three inputs that showed it are in the
/// corpus (`reset-at-tail-0-walks-stale-lap`, ...).
pub const HEAD_BACKWARDS_DETECTED: bool = true;

/// The kernel side's model of the ring since the last reset.
#[derive(Debug)]
struct Kernel {
    size: u32,
    head: u32,
    /// Bytes pushed since the last reset (the head's absolute position).
    head_abs: u64,
    /// Where the last reset (or attach) started, as a ring position.
    origin: u32,
    /// Absolute positions of every entry boundary since the last reset.
    boundaries: Vec<u64>,
    /// Absolute position of the last tail the device published.
    tail_abs: u64,
    /// Only well-formed entries, head and tail moves since the last reset.
    well_formed: bool,
    /// No reset and no peer tail move since attach: a fault is a bug.
    undisturbed: bool,
    /// A reset happened that the device cannot see in `cmd_tail`.
    blind: bool,
    /// The `cmd_tail` the device last published.
    published: u32,
    next_id: u16,
    data_off: usize,
    data_len: usize,
}

impl Kernel {
    fn pos(&self, abs: u64) -> u32 {
        ((u64::from(self.origin) + abs) % u64::from(self.size)) as u32
    }

    fn used(&self, tail: u32) -> u32 {
        if self.head >= tail {
            self.head - tail
        } else {
            self.size - tail + self.head
        }
    }

    fn reset(&mut self, region: &SharedRegion) {
        // A reset while the tail the device last published is 0 is
        // invisible in `cmd_tail` (whatever a peer wrote there since); only
        // a check that the head never moves back behind what was walked
        // catches it. Until the device has that check the tail after such
        // a reset would not be checked (see `HEAD_BACKWARDS_DETECTED`).
        let invisible = self.published == 0 && region.load_cmd_head() != 0;
        region.store_cmd_head(0);
        region.store_cmd_tail(0);
        self.head = 0;
        self.head_abs = 0;
        self.origin = 0;
        self.boundaries.clear();
        self.boundaries.push(0);
        self.tail_abs = 0;
        // The device may carry the stale lap through later resets too.
        self.blind |= invisible;
        self.well_formed = HEAD_BACKWARDS_DETECTED || !self.blind;
        self.undisturbed = false;
    }

    /// Writes one entry of `len` bytes (8-aligned) at the head, with a pad
    /// first if it does not fit before the ring's end; `body` fills it.
    /// False (nothing written) if the ring has no room.
    fn push(
        &mut self,
        region: &SharedRegion,
        len: u32,
        body: impl FnOnce(&SharedRegion, usize),
    ) -> bool {
        let tail = region.load_cmd_tail();
        if tail >= self.size || !tail.is_multiple_of(8) {
            // The kernel would call the ring broken.
            return false;
        }
        let pad = if self.head + len > self.size {
            self.size - self.head
        } else {
            0
        };
        let free = self.size - self.used(tail);
        if len > self.size || u64::from(pad) + u64::from(len) + 8 > u64::from(free) {
            return false;
        }
        if pad > 0 {
            let abs = CMDR_OFF as usize + self.head as usize;
            region
                .write_u32(abs + HDR_LEN_OP, tcmu_len_op(pad, TCMU_OP_PAD))
                .expect("inside the ring");
            self.advance(pad);
        }
        let abs = CMDR_OFF as usize + self.head as usize;
        region.fill(abs, len as usize, 0).expect("inside the ring");
        body(region, abs);
        self.advance(len);
        true
    }

    fn advance(&mut self, len: u32) {
        self.head = (self.head + len) % self.size;
        self.head_abs += u64::from(len);
        self.boundaries.push(self.head_abs);
    }

    /// A CMD, PAD, TMR or unknown entry from the input.
    fn push_entry(&mut self, region: &SharedRegion, input: &mut Input<'_>) -> bool {
        let kind = input.below(16);
        let hostile = input.chance(3);
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let ok = match kind {
            0 => {
                let len = 8 * (1 + input.below(8) as u32);
                self.push(region, len, |r, abs| {
                    let _ = r.write_u32(abs + HDR_LEN_OP, tcmu_len_op(len, TCMU_OP_PAD));
                })
            }
            1 => {
                let cnt = input.below(4);
                let ids: Vec<u16> = (0..cnt).map(|_| input.u16() % 64).collect();
                let tmr_type = input.below(8) as u8;
                let len = (TMR_ENTRY_SIZE + 2 * cnt).next_multiple_of(8) as u32;
                self.push(region, len, |r, abs| {
                    let _ = r.write_u32(abs + HDR_LEN_OP, tcmu_len_op(len, TCMU_OP_TMR));
                    let _ = r.write_u8(abs + TMR_TYPE, tmr_type);
                    let _ = r.write_u32(abs + TMR_CMD_CNT, cnt as u32);
                    for (i, id) in ids.iter().enumerate() {
                        let _ = r.write_u16(abs + TMR_CMD_IDS + 2 * i, *id);
                    }
                })
            }
            2 => {
                let op = 3 + input.below(5) as u32;
                let len = 8 * (1 + input.below(8) as u32);
                self.push(region, len, |r, abs| {
                    let _ = r.write_u32(abs + HDR_LEN_OP, tcmu_len_op(len, op));
                })
            }
            _ => self.push_cmd(region, input, id, hostile),
        };
        if ok && hostile {
            // A hostile length or id: the ring is no longer the kernel's.
            let last = self.boundaries[self.boundaries.len() - 2];
            let at = CMDR_OFF as usize + self.pos(last) as usize;
            let _ = region.write_u32(at + HDR_LEN_OP, input.u32());
            self.well_formed = false;
            self.undisturbed = false;
        }
        ok
    }

    fn push_cmd(
        &mut self,
        region: &SharedRegion,
        input: &mut Input<'_>,
        id: u16,
        bad_iov: bool,
    ) -> bool {
        let iov_cnt = input.below(4);
        let bidi = if input.chance(10) { 1 } else { 0 };
        let total = iov_cnt + bidi;
        let mut iovs = Vec::with_capacity(total);
        for _ in 0..total {
            let (base, len) = if bad_iov && input.chance(50) {
                (input.u64(), input.u64())
            } else {
                let off = input.below(self.data_len);
                let len = input.below(self.data_len - off + 1);
                ((self.data_off + off) as u64, len as u64)
            };
            iovs.push((base, len));
        }
        let mut cdb = [0u8; 16];
        input.fill(&mut cdb);
        let base = (REQ_IOV + total * IOVEC_SIZE).max(CMD_ENTRY_SIZE);
        let len = (base + 16).next_multiple_of(8) as u32;
        self.push(region, len, |r, abs| {
            let _ = r.write_u32(abs + HDR_LEN_OP, tcmu_len_op(len, TCMU_OP_CMD));
            let _ = r.write_u16(abs + HDR_CMD_ID, id);
            let _ = r.write_u32(abs + REQ_IOV_CNT, iov_cnt as u32);
            let _ = r.write_u32(abs + REQ_IOV_BIDI_CNT, bidi as u32);
            for (i, (b, l)) in iovs.iter().enumerate() {
                let at = abs + REQ_IOV + i * IOVEC_SIZE;
                let _ = r.write_u64(at + IOVEC_BASE, *b);
                let _ = r.write_u64(at + IOVEC_LEN, *l);
            }
            let _ = r.write_u64(abs + REQ_CDB_OFF, (abs + base) as u64);
            let _ = r.write_bytes(abs + base, &cdb);
        })
    }

    /// Checks the tail the device published against the boundaries.
    fn check_tail(&mut self, tail: u32) {
        assert!(
            tail < self.size && tail.is_multiple_of(8),
            "published tail {tail} is not a position of the {}-byte ring",
            self.size
        );
        if !self.well_formed {
            return;
        }
        let found = self
            .boundaries
            .iter()
            .copied()
            .filter(|&b| b >= self.tail_abs && b <= self.head_abs)
            .find(|&b| self.pos(b) == tail);
        match found {
            Some(b) => self.tail_abs = b,
            None => panic!(
                "published tail {tail} is no entry boundary between the previous tail {} and the head {} ({self:?})",
                self.pos(self.tail_abs),
                self.head
            ),
        }
    }
}

fn eventfd() -> Option<OwnedFd> {
    // SAFETY: eventfd takes no pointers; the result is checked.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return None;
    }
    // SAFETY: `fd` is a new descriptor this function owns.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The target.
pub fn run(data: &[u8]) {
    exercise(data);
}

/// The target's body; returns the number of commands the executor
/// received (how deep the input got).
pub fn exercise(data: &[u8]) -> usize {
    let mut input = Input::new(data);
    let size = 8 * (16 + input.below(496) as u32);
    let data_len = 4096 + input.below(8192);
    let map_len = CMDR_OFF as usize + size as usize + data_len;
    let Ok(region) = SharedRegion::anonymous(map_len) else {
        return 0;
    };
    let version = if input.chance(2) {
        input.u16()
    } else {
        TCMU_MAILBOX_VERSION
    };
    let flags = u16::from(input.u8() & 0x0F);
    let start = 8 * input.below(size as usize / 8) as u32;
    let _ = region.write_u16(MB_VERSION, version);
    let _ = region.write_u16(MB_FLAGS, flags);
    let _ = region.write_u32(MB_CMDR_OFF, CMDR_OFF);
    let _ = region.write_u32(MB_CMDR_SIZE, size);
    region.store_cmd_head(start);
    region.store_cmd_tail(start);
    // Leftover bytes of a previous owner in the ring and the data area.
    let junk = input.take(256);
    let _ = region.write_bytes(CMDR_OFF as usize, &junk[..junk.len().min(size as usize)]);

    let (Some(kick), Some(notify)) = (eventfd(), eventfd()) else {
        return 0;
    };
    let base = region.base_ptr() as usize;
    let data_off = CMDR_OFF as usize + size as usize;
    let executor = RecordingExecutor::new(
        1 + input.below(16) as u32,
        (base + data_off, base + map_len),
    );
    let config = TcmuDeviceConfig {
        name: "fuzz".into(),
        budget: 1 + input.below(16),
        allow_out_of_order: input.chance(50),
        iovecs_per_slot: 1 + input.below(4),
        acknowledge_on_idle: false,
        coalesce: CoalesceConfig {
            batch: 1 + input.below(8),
            max_hold: Duration::ZERO,
            fixed_hold: None,
            window: Duration::ZERO,
        },
        track_latency: false,
    };
    let Ok(mut device) =
        TcmuDevice::attach(region, Doorbell::event_fds(kick, notify), executor, config)
    else {
        return 0;
    };
    let mut kernel = Kernel {
        size,
        head: start,
        head_abs: 0,
        origin: start,
        boundaries: vec![0],
        tail_abs: 0,
        well_formed: true,
        undisturbed: true,
        blind: false,
        published: start,
        next_id: 1,
        data_off,
        data_len,
    };

    let mut rounds = 0;
    while !input.is_empty() && rounds < 512 {
        rounds += 1;
        let region = device.region().clone();
        match input.below(32) {
            0..=9 => {
                let n = 1 + input.below(4);
                let mut pushed = false;
                for _ in 0..n {
                    pushed |= kernel.push_entry(&region, &mut input);
                }
                if pushed {
                    region.store_cmd_head(kernel.head);
                }
            }
            10..=15 => {
                let index = input.below(64);
                let data_in = input.below(4096);
                let good = input.chance(90);
                device.executor_mut().complete(index, data_in, good);
            }
            16 => while device.executor_mut().complete(0, usize::MAX, true) {},
            17 => kernel.reset(&region),
            18 => {
                // The peer (or a stray write) moves the tail.
                region.store_cmd_tail(input.u32());
                kernel.well_formed = false;
                kernel.undisturbed = false;
            }
            19 => {
                // A head the kernel would never publish.
                let head = if input.chance(50) {
                    input.u32()
                } else {
                    8 * input.below(size as usize / 8) as u32
                };
                region.store_cmd_head(head);
                kernel.well_formed = false;
                kernel.undisturbed = false;
            }
            20 => {
                // Bytes poked anywhere in the ring.
                let at = input.below(size as usize);
                let n = 1 + input.below(16);
                let bytes = input.take(n);
                let n = bytes.len().min(size as usize - at);
                let _ = region.write_bytes(CMDR_OFF as usize + at, &bytes[..n]);
                kernel.well_formed = false;
                kernel.undisturbed = false;
            }
            _ => poll(&mut device, &mut kernel),
        }
    }
    // The kernel stops sending; everything completes and the device
    // consumes the ring up to the head.
    for _ in 0..256 {
        while device.executor_mut().complete(0, usize::MAX, true) {}
        poll(&mut device, &mut kernel);
        let r = device.region();
        if device.executor().pending() == 0
            && device.in_flight() == 0
            && r.load_cmd_tail() == r.load_cmd_head()
        {
            break;
        }
    }
    if device.fault().is_none() && kernel.well_formed {
        assert_eq!(
            device.executor().pending(),
            0,
            "commands left in the executor"
        );
        let r = device.region();
        assert_eq!(
            r.load_cmd_tail(),
            r.load_cmd_head(),
            "the ring was not consumed: {kernel:?}"
        );
    }
    device.executor().received
}

fn poll(device: &mut TcmuDevice<RecordingExecutor>, kernel: &mut Kernel) {
    let faulted = device.fault().is_some();
    let before = device.region().load_cmd_tail();
    device.poll();
    let tail = device.region().load_cmd_tail();
    if tail != before {
        kernel.published = tail;
    }
    if faulted {
        assert_eq!(tail, before, "a faulted device moved cmd_tail");
        return;
    }
    if let Some(fault) = device.fault() {
        assert!(
            !kernel.undisturbed,
            "fault {fault:?} on a well-formed, undisturbed ring: {kernel:?}"
        );
        return;
    }
    kernel.check_tail(tail);
}
