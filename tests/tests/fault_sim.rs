//! The fault bdev under the whole TCMU path (simulated kernel, TCMU device,
//! SCSI logical unit, port, bdev poller): the initiator sees the sense of
//! each injected error, a delayed completion holds nothing else up, a stuck
//! command does not stop the others, and a bad `[[bdev]] type = "fault"` is
//! refused naming its key.

use std::sync::Arc;
use std::time::Instant;

use bdev::fault::{Clock, FaultAction, FaultError, FaultRule, ManualTime, OpSet};
use bdev::{Bdev, BdevRef, FaultBdev, IoOp, RamBdev};
use dataplane::lun::{Lun, LunConfig};
use dataplane::port::{port_pair, BdevPoller};
use dataplane::serve::config::ServeConfig;
use dataplane::tcmu::{TcmuDevice, TcmuDeviceConfig};
use reactor::Poller;
use sim::tcmu::{SimConfig, SimData, TcmuSim};

const BS: usize = 512;
const GOOD: u8 = 0x00;
const CHECK_CONDITION: u8 = 0x02;

struct Rig {
    sim: TcmuSim,
    device: TcmuDevice<Lun>,
    poller: BdevPoller,
    /// (tag, status, sense) of every command completed so far.
    done: Vec<(u64, u8, Vec<u8>)>,
}

fn rig(bdev: &dyn Bdev) -> Rig {
    let (port, end) = port_pair(64).unwrap();
    let mut poller = BdevPoller::new("bdev", bdev.open_channel(64).unwrap(), 64);
    poller.attach(end).unwrap();
    let mut config = LunConfig::for_bdev(bdev);
    config.max_tasks = 64;
    let lun = Lun::new(config, port).unwrap();
    let sim = TcmuSim::new(SimConfig {
        cmdr_size: (1 << 20) - 128,
        data_area_size: 4 << 20,
        ..SimConfig::default()
    })
    .unwrap();
    let (region, doorbell) = sim.device_endpoint().unwrap();
    let device = TcmuDevice::attach(region, doorbell, lun, TcmuDeviceConfig::default()).unwrap();
    Rig {
        sim,
        device,
        poller,
        done: Vec::new(),
    }
}

fn ram() -> BdevRef {
    Arc::new(RamBdev::new("ram0", BS as u32, 4096).unwrap())
}

fn rw10(opcode: u8, lba: u32, blocks: u16) -> [u8; 10] {
    let mut c = [0u8; 10];
    c[0] = opcode;
    c[2..6].copy_from_slice(&lba.to_be_bytes());
    c[7..9].copy_from_slice(&blocks.to_be_bytes());
    c
}

impl Rig {
    fn read(&mut self, lba: u32, blocks: u16, tag: u64) {
        let cdb = rw10(0x28, lba, blocks);
        self.sim
            .submit(&cdb, SimData::In(usize::from(blocks) * BS), tag)
            .unwrap();
        self.sim.notify();
    }

    fn write(&mut self, lba: u32, blocks: u16, tag: u64) {
        let cdb = rw10(0x2A, lba, blocks);
        let data = vec![0x5A; usize::from(blocks) * BS];
        self.sim.submit(&cdb, SimData::Out(&data), tag).unwrap();
        self.sim.notify();
    }

    /// One round of the reactor: device, bdev poller, device; then what
    /// the initiator got.
    fn step(&mut self) {
        self.device.poll();
        self.poller.poll();
        self.device.poll();
        let done = &mut self.done;
        self.sim
            .reap(|c| done.push((c.tag, c.status, c.sense.to_vec())))
            .unwrap();
    }

    /// Steps until `tag` completed (at most `steps` rounds).
    fn wait(&mut self, tag: u64, steps: usize) -> Option<(u8, Vec<u8>)> {
        for _ in 0..steps {
            if let Some(at) = self.done.iter().position(|d| d.0 == tag) {
                let (_, status, sense) = self.done.remove(at);
                return Some((status, sense));
            }
            self.step();
        }
        None
    }
}

/// Fixed-format sense: (VALID, key, ASC, ASCQ, INFORMATION).
type Decoded = (bool, u8, u8, u8, u32);

/// One command of a table: (tag, write?, lba, blocks, status, sense).
type Case = (u64, bool, u32, u16, u8, Option<Decoded>);

fn decode(sense: &[u8]) -> Decoded {
    assert_eq!(sense[0] & 0x7F, 0x70, "fixed format: {sense:02x?}");
    (
        sense[0] & 0x80 != 0,
        sense[2] & 0x0F,
        sense[12],
        sense[13],
        u32::from_be_bytes(sense[3..7].try_into().unwrap()),
    )
}

fn rule(ops: &[IoOp], start: u64, kind: FaultError) -> FaultRule {
    let ops = ops.iter().fold(OpSet::NONE, |set, &op| set.with(op));
    FaultRule::new(ops, FaultAction::Fail(kind)).in_range(start, start + 10)
}

#[test]
fn each_injected_error_reaches_the_initiator_as_its_sense() {
    let rules = vec![
        rule(&[IoOp::Read], 100, FaultError::Medium),
        rule(&[IoOp::Write], 200, FaultError::Medium),
        rule(&[IoOp::Write], 300, FaultError::NoSpace),
        rule(&[IoOp::Read, IoOp::Write], 400, FaultError::NotReady),
        rule(&[IoOp::Write], 500, FaultError::WriteProtected),
        rule(&[IoOp::Read], 600, FaultError::Hardware),
    ];
    let fault = FaultBdev::new("f", ram(), rules, 1).unwrap();
    let mut r = rig(&fault);
    let cases: [Case; 9] = [
        // MEDIUM ERROR, UNRECOVERED READ ERROR at the first bad block.
        (
            1,
            false,
            98,
            4,
            CHECK_CONDITION,
            Some((true, 0x3, 0x11, 0, 100)),
        ),
        (
            2,
            false,
            105,
            1,
            CHECK_CONDITION,
            Some((true, 0x3, 0x11, 0, 105)),
        ),
        // The rule is for reads: a write there is fine.
        (3, true, 100, 4, GOOD, None),
        // MEDIUM ERROR, WRITE ERROR.
        (
            4,
            true,
            209,
            8,
            CHECK_CONDITION,
            Some((true, 0x3, 0x0C, 0, 209)),
        ),
        // DATA PROTECT, SPACE ALLOCATION FAILED WRITE PROTECT.
        (
            5,
            true,
            300,
            1,
            CHECK_CONDITION,
            Some((false, 0x7, 0x27, 0x07, 0)),
        ),
        // NOT READY, LOGICAL UNIT NOT READY.
        (
            6,
            false,
            404,
            2,
            CHECK_CONDITION,
            Some((false, 0x2, 0x04, 0, 0)),
        ),
        // DATA PROTECT, WRITE PROTECTED.
        (
            7,
            true,
            509,
            1,
            CHECK_CONDITION,
            Some((false, 0x7, 0x27, 0, 0)),
        ),
        // HARDWARE ERROR, INTERNAL TARGET FAILURE.
        (
            8,
            false,
            600,
            1,
            CHECK_CONDITION,
            Some((false, 0x4, 0x44, 0, 0)),
        ),
        // Outside every range.
        (9, false, 0, 8, GOOD, None),
    ];
    for (tag, write, lba, blocks, status, sense) in cases {
        if write {
            r.write(lba, blocks, tag);
        } else {
            r.read(lba, blocks, tag);
        }
        let (got, bytes) = r.wait(tag, 1000).expect("completes");
        assert_eq!(got, status, "command {tag}");
        if let Some(expected) = sense {
            assert_eq!(decode(&bytes), expected, "command {tag}");
        }
    }
    assert_eq!(fault.stats().failed, 7);
}

fn delayed(clock: Clock, min_us: u64, max_us: u64) -> FaultBdev {
    let slow = FaultRule::new(
        OpSet::NONE.with(IoOp::Read),
        FaultAction::Delay { min_us, max_us },
    )
    .in_range(0, 8);
    FaultBdev::with_clock("f", ram(), vec![slow], 1, clock).unwrap()
}

#[test]
fn a_delayed_completion_holds_up_nothing_else() {
    let (clock, time): (Clock, ManualTime) = Clock::manual();
    let fault = delayed(clock, 500, 500);
    let mut r = rig(&fault);
    r.read(0, 1, 1); // delayed
    r.read(16, 1, 2);
    r.write(24, 1, 3);
    assert_eq!(r.wait(2, 1000).map(|d| d.0), Some(GOOD));
    assert_eq!(r.wait(3, 1000).map(|d| d.0), Some(GOOD));
    assert_eq!(r.wait(1, 1000), None, "held while the clock stands");
    time.advance_us(499);
    assert_eq!(r.wait(1, 100), None, "held until the delay has passed");
    time.advance_us(1);
    assert_eq!(r.wait(1, 1000).map(|d| d.0), Some(GOOD));
    assert_eq!(fault.stats().delayed, 1);
}

#[test]
fn latency_shows_in_completion_times_on_the_real_clock() {
    // 20 ms: the command cannot complete sooner, whatever the machine does;
    // how much later is reported, never asserted.
    let fault = delayed(Clock::monotonic(), 20_000, 20_000);
    let mut r = rig(&fault);
    let start = Instant::now();
    r.read(0, 1, 1);
    let mut polls = 0u64;
    while r.done.is_empty() {
        r.step();
        polls += 1;
    }
    let elapsed = start.elapsed();
    assert_eq!(r.done[0].1, GOOD);
    assert!(elapsed.as_micros() >= 20_000, "{elapsed:?}");
    assert!(polls > 1, "the reactor kept polling while it waited");
    eprintln!("20 ms delay: completed after {elapsed:?}, {polls} polls");
}

#[test]
fn a_stuck_command_does_not_stop_the_others() {
    let stuck = FaultRule::new(OpSet::NONE.with(IoOp::Read), FaultAction::Stick).in_range(50, 51);
    let fault = FaultBdev::new("f", ram(), vec![stuck], 1).unwrap();
    let mut r = rig(&fault);
    r.read(50, 1, 1);
    for tag in 2..40 {
        r.write(tag as u32 * 8 + 100, 8, tag);
        assert_eq!(r.wait(tag, 1000).map(|d| d.0), Some(GOOD));
    }
    assert_eq!(r.wait(1, 1000), None, "stuck until aborted");
    assert_eq!(fault.stats().stuck, 1);
}

#[test]
fn a_full_thin_device_reports_space_allocation_failed() {
    let fault = FaultBdev::new("f", ram(), Vec::new(), 1)
        .unwrap()
        .with_space_limit(16);
    let mut r = rig(&fault);
    r.write(0, 16, 1);
    assert_eq!(r.wait(1, 1000).map(|d| d.0), Some(GOOD));
    r.write(16, 1, 2);
    let (status, sense) = r.wait(2, 1000).unwrap();
    assert_eq!(status, CHECK_CONDITION);
    assert_eq!(decode(&sense), (false, 0x7, 0x27, 0x07, 0));
    // Rewriting allocated blocks still works.
    r.write(8, 8, 3);
    assert_eq!(r.wait(3, 1000).map(|d| d.0), Some(GOOD));
    assert_eq!(fault.space_used(), Some(16));
}

const CONFIG: &str = r#"
[reactors]
cores = [0]

[[bdev]]
name = "ram0"
type = "ram"
size = "1MiB"
"#;

fn config(fault: &str) -> Result<ServeConfig, String> {
    let text = format!("{CONFIG}\n[[bdev]]\nname = \"f0\"\ntype = \"fault\"\n{fault}");
    let c = ServeConfig::parse(&text).map_err(|e| e.to_string())?;
    c.validate(&[0]).map_err(|e| e.to_string())?;
    Ok(c)
}

#[test]
fn a_fault_bdev_configures_its_rules() {
    let c = config(
        r#"base = "ram0"
seed = 9
space = "512KiB"
[[bdev.rules]]
ops = ["read", "write"]
range = [100, 200]
error = "medium"
[[bdev.rules]]
probability = 0.25
latency_us = 100
latency_max_us = 300
[[bdev.rules]]
ops = ["flush"]
stuck = true
"#,
    )
    .unwrap();
    assert_eq!(c.bdevs.len(), 2);
}

#[test]
fn bad_fault_configurations_name_their_key() {
    let cases = [
        (
            "base = \"nope\"",
            "bdev[1] (\"f0\").base: no bdev named \"nope\"",
        ),
        (
            "base = \"f0\"",
            "bdev[1] (\"f0\").base: a fault bdev cannot wrap itself",
        ),
        (
            "base = \"ram0\"\nspace = 0",
            "bdev[1] (\"f0\").space: must be greater than zero",
        ),
        (
            "base = \"ram0\"\n[[bdev.rules]]\nprobability = 1.5\nerror = \"medium\"",
            "bdev[1] (\"f0\").rules[0].probability: 1.5 is not between 0 and 1",
        ),
        (
            "base = \"ram0\"\n[[bdev.rules]]\nprobability = -0.1\nerror = \"medium\"",
            "rules[0].probability: -0.1",
        ),
        (
            "base = \"ram0\"\n[[bdev.rules]]\nrange = [10, 10]\nerror = \"medium\"",
            "bdev[1] (\"f0\").rules[0].range: [10, 10] is empty",
        ),
        (
            "base = \"ram0\"\n[[bdev.rules]]\nerror = \"gremlins\"",
            "rules[0].error: unknown error \"gremlins\"",
        ),
        (
            "base = \"ram0\"\n[[bdev.rules]]\nops = [\"trim\"]\nstuck = true",
            "rules[0].ops[0]: unknown operation \"trim\"",
        ),
        (
            "base = \"ram0\"\n[[bdev.rules]]\nerror = \"medium\"\nstuck = true",
            "rules[0]: give exactly one of error, latency_us or stuck",
        ),
        (
            "base = \"ram0\"\n[[bdev.rules]]\nlatency_us = 10\nlatency_max_us = 5",
            "rules[0].latency_max_us: 5 is less than latency_us 10",
        ),
    ];
    for (text, expected) in cases {
        let e = config(text).unwrap_err();
        assert!(e.contains(expected), "{text:?}: {e}");
    }
    // Two fault bdevs over each other.
    let text = format!(
        "{CONFIG}\n[[bdev]]\nname = \"a\"\ntype = \"fault\"\nbase = \"b\"\n\
         [[bdev]]\nname = \"b\"\ntype = \"fault\"\nbase = \"a\"\n"
    );
    let e = ServeConfig::parse(&text)
        .unwrap()
        .validate(&[0])
        .unwrap_err()
        .to_string();
    assert!(e.contains("bdev[1] (\"a\").base: \"b\" wraps \"a\""), "{e}");
}
