//! A tiny deterministic PRNG for workload generation.
//!
//! Written by hand on purpose: the workload generator needs one multiply per
//! number on the simulator's hot loop, a seed for reproducible runs, and no
//! allocation; `wyrand` (public domain) is the standard choice for that.

/// wyrand: 64-bit state, one multiply-xor per output.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x853c_49e6_748f_ea9b)
    }

    /// The next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0xa076_1d64_78bd_642f);
        let t = u128::from(self.0) * u128::from(self.0 ^ 0xe703_7ed1_a0b4_28db);
        (t as u64) ^ ((t >> 64) as u64)
    }

    /// A number in `0..n` (`n > 0`), by multiply-shift (bias < 2^-32 for
    /// the ranges used here).
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0);
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// A number in `0..100`.
    #[inline]
    pub fn percent(&mut self) -> u32 {
        self.below(100) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_in_range() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        for _ in 0..1000 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        let mut seen = [0u32; 10];
        for _ in 0..10_000 {
            let v = a.below(10);
            assert!(v < 10);
            seen[v as usize] += 1;
        }
        // Every bucket is hit and none is wildly off a uniform 1000.
        assert!(seen.iter().all(|&c| (700..1300).contains(&c)), "{seen:?}");
    }
}
