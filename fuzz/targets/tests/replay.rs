//! Runs every fuzz target on stable: first over its committed corpus
//! (`fuzz/corpus/<name>/`, what cargo-fuzz found worth keeping), then over
//! seeded random inputs. `fuzz/artifacts/` (crashing inputs of findings
//! not fixed yet) is not read.
//!
//! `FUZZ_REPLAY_INPUTS` sets the number of random inputs per target
//! (default 2000); `TEST_SEED` varies them (see `test_support::rng`).

use std::path::PathBuf;

use fuzz_targets::TARGETS;
use test_support::rng::seeded;

fn corpus_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../corpus")
        .join(name)
}

fn replay(name: &str) {
    let (_, run) = TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no target {name}"));
    let dir = corpus_dir(name);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "empty corpus {}", dir.display());
    for file in &files {
        let data = std::fs::read(file).unwrap();
        eprintln!("{name}: {}", file.display());
        run(&data);
    }
    let inputs: usize = std::env::var("FUZZ_REPLAY_INPUTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let mut rng = seeded(0xF022 ^ name.len() as u64);
    let mut data = Vec::new();
    for i in 0..inputs {
        // Mostly mutations of a corpus file, sometimes fresh bytes.
        if !files.is_empty() && rng.u8(..) < 200 {
            data = std::fs::read(&files[rng.usize(..files.len())]).unwrap();
            for _ in 0..=rng.usize(..8) {
                if data.is_empty() {
                    break;
                }
                let at = rng.usize(..data.len());
                data[at] = rng.u8(..);
            }
            if rng.bool() {
                data.truncate(rng.usize(..=data.len()));
            }
        } else {
            data.clear();
            data.resize(rng.usize(..2048), 0);
            rng.fill(&mut data);
        }
        if let Err(e) = std::panic::catch_unwind(|| run(&data)) {
            let saved = std::env::temp_dir().join(format!("fuzz-{name}-{i}"));
            let _ = std::fs::write(&saved, &data);
            panic!(
                "{name}: random input {i} failed ({:?}); input saved in {}",
                e.downcast_ref::<String>(),
                saved.display()
            );
        }
    }
}

#[test]
fn tcmu_ring() {
    replay("tcmu_ring");
}

#[test]
fn lun() {
    replay("lun");
}

#[test]
fn scsi_cdb() {
    replay("scsi_cdb");
}

#[test]
fn param_lists() {
    replay("param_lists");
}

#[test]
fn striped() {
    replay("striped");
}

#[test]
fn buffer_pool() {
    replay("buffer_pool");
}

#[test]
fn netlink_event() {
    replay("netlink_event");
}

#[test]
fn serve_config() {
    replay("serve_config");
}

#[test]
fn scst_device() {
    replay("scst_device");
}

/// The netlink corpus holds events that decode, so the fuzzer works on
/// the decoder's inside rather than its first length check.
#[test]
fn netlink_corpus_decodes() {
    use dataplane::tcmu::netlink::{decode_event, messages};
    let mut events = 0;
    for entry in std::fs::read_dir(corpus_dir("netlink_event")).unwrap() {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        for message in messages(&data).flatten() {
            if let Ok(Some(_)) = decode_event(message, fuzz_targets::netlink::FAMILY) {
                events += 1;
            }
        }
    }
    assert!(events >= 10, "only {events} events decode in the corpus");
}

/// Runs one input through one target: `FUZZ_TARGET=<name>
/// FUZZ_INPUT=<file> cargo test -p fuzz-targets --test replay one_input`
/// (a crash that cargo-fuzz saved in `fuzz/artifacts/<name>/`, on
/// stable). Does nothing unless both are set.
#[test]
fn one_input() {
    let (Ok(name), Ok(file)) = (std::env::var("FUZZ_TARGET"), std::env::var("FUZZ_INPUT")) else {
        return;
    };
    let (_, run) = TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no target {name}"));
    run(&std::fs::read(&file).unwrap_or_else(|e| panic!("{file}: {e}")));
}

/// The committed corpus gets deep: commands reach the ring target's
/// executor and complete with GOOD through the LUN (a target that stopped
/// at its first check would pass every other test).
#[test]
fn corpus_reaches_the_executors() {
    let total = |name: &str, f: fn(&[u8]) -> usize| -> usize {
        let dir = corpus_dir(name);
        std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| f(&std::fs::read(e.unwrap().path()).unwrap()))
            .sum()
    };
    let ring = total("tcmu_ring", fuzz_targets::ring::exercise);
    let lun = total("lun", fuzz_targets::lun::exercise);
    eprintln!("tcmu_ring: {ring} commands received; lun: {lun} commands GOOD");
    assert!(
        ring > 100,
        "the ring corpus hands over only {ring} commands"
    );
    assert!(lun > 1000, "the lun corpus completes only {lun} commands");
}
