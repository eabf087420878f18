//! The seeded pseudo-random generator of the tests.
//!
//! [`Rng`] is [`fastrand::Rng`] (wyrand: one multiply per number, no
//! allocation), the generator the bench's workload engine uses too. A test
//! takes its generator from [`seeded`] with a fixed seed, so every run sees
//! the same sequence, and a test may assert only what holds for any
//! sequence (that every byte read back matches the model, that each kind of
//! command occurred), never a particular draw.
//!
//! Setting `TEST_SEED` (decimal, or hexadecimal with `0x`) mixes it into
//! every seed, to try other sequences. [`seeded`] prints the seed it uses on
//! stderr, which the test harness shows when the test fails: the same
//! `TEST_SEED` replays the failure. A generator drawn from another
//! (`Rng::with_seed(parent.u64(..))`) is as reproducible as its parent and
//! needs no line of its own.

pub use fastrand::Rng;

/// The environment variable mixed into every seed.
pub const TEST_SEED: &str = "TEST_SEED";

/// A generator seeded with `seed`, or with `seed ^ TEST_SEED` when that is
/// set (and not empty); prints the seed used (shown when the test fails).
///
/// # Panics
/// If `TEST_SEED` is set but not a number: a typo must not silently run the
/// fixed sequence.
pub fn seeded(seed: u64) -> Rng {
    let used = match test_seed() {
        Some(mix) => {
            let used = seed ^ mix;
            eprintln!("rng: seed {used:#x} ({seed:#x} ^ {TEST_SEED}={mix:#x})");
            used
        }
        None => {
            eprintln!("rng: seed {seed:#x} (set {TEST_SEED} to try others)");
            seed
        }
    };
    Rng::with_seed(used)
}

/// `TEST_SEED`, if set and not empty.
fn test_seed() -> Option<u64> {
    let text = std::env::var(TEST_SEED).ok()?;
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let parsed = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    match parsed {
        Ok(n) => Some(n),
        Err(e) => panic!("{TEST_SEED}={text:?} is not a number: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_one_sequence() {
        // With TEST_SEED set, both mix it in alike.
        let draw = |mut rng: Rng| -> Vec<u64> { (0..100).map(|_| rng.u64(..)).collect() };
        assert_eq!(draw(seeded(7)), draw(seeded(7)));
        assert_ne!(draw(seeded(7)), draw(seeded(8)));
    }

    #[test]
    fn ranges_are_uniform_enough() {
        let mut rng = Rng::with_seed(7);
        let mut seen = [0u32; 10];
        for _ in 0..10_000 {
            seen[rng.usize(..10)] += 1;
        }
        // Every bucket is hit and none is wildly off a uniform 1000.
        assert!(seen.iter().all(|&c| (700..1300).contains(&c)), "{seen:?}");
    }
}
