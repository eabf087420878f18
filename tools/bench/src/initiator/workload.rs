//! What to run: access pattern, sizes, queue depth, read/write mix.

use std::fmt;
use std::str::FromStr;

use fastrand::Rng;

/// Access pattern, named as in fio's `--rw`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern {
    /// Sequential reads.
    Read,
    /// Sequential writes.
    Write,
    /// Random reads.
    RandRead,
    /// Random writes.
    RandWrite,
    /// Random mix of reads and writes (`rwmix_read` percent reads).
    RandRw,
}

impl Pattern {
    /// The fio-style name.
    pub fn name(self) -> &'static str {
        match self {
            Pattern::Read => "read",
            Pattern::Write => "write",
            Pattern::RandRead => "randread",
            Pattern::RandWrite => "randwrite",
            Pattern::RandRw => "randrw",
        }
    }

    /// True if the pattern issues writes.
    pub fn writes(self) -> bool {
        matches!(self, Pattern::Write | Pattern::RandWrite | Pattern::RandRw)
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Pattern {
    type Err = WorkloadError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "read" => Pattern::Read,
            "write" => Pattern::Write,
            "randread" => Pattern::RandRead,
            "randwrite" => Pattern::RandWrite,
            "randrw" => Pattern::RandRw,
            other => return Err(WorkloadError::UnknownPattern(other.to_string())),
        })
    }
}

/// A workload that cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkloadError {
    /// `--rw` names no known pattern.
    #[error("unknown access pattern '{0}' (expected read, write, randread, randwrite or randrw)")]
    UnknownPattern(String),
    /// The I/O size is zero or not a multiple of the block size.
    #[error("block size (bs) {io_size} is not a non-zero multiple of the device block size {block_size}")]
    BadIoSize {
        /// Requested I/O size.
        io_size: u64,
        /// Device block size.
        block_size: u32,
    },
    /// The I/O size is larger than one command may carry.
    #[error("block size (bs) {io_size} exceeds the largest transfer {max}")]
    IoTooLarge {
        /// Requested I/O size.
        io_size: u64,
        /// Largest allowed.
        max: u64,
    },
    /// The queue depth is zero or too large.
    #[error("iodepth {0} is out of range (1..={max})", max = Workload::MAX_IODEPTH)]
    BadIodepth(u32),
    /// The region is smaller than one I/O.
    #[error("size {size} is smaller than one I/O of {io_size} bytes")]
    SizeTooSmall {
        /// Region size.
        size: u64,
        /// I/O size.
        io_size: u64,
    },
    /// The read percentage is above 100.
    #[error("rwmix-read {0} is above 100")]
    BadRwMix(u32),
    /// A size of a split is not a multiple of the block size, or larger
    /// than the workload's I/O size.
    #[error(
        "bssplit size {size} is not a multiple of the device block size {block_size} of at most \
         {io_size} bytes"
    )]
    BadSplitSize {
        /// The size.
        size: u64,
        /// Device block size.
        block_size: u32,
        /// The workload's largest I/O.
        io_size: u64,
    },
}

/// A workload for one device.
#[derive(Debug, Clone)]
pub struct Workload {
    /// Access pattern.
    pub pattern: Pattern,
    /// Device logical block size in bytes.
    pub block_size: u32,
    /// Bytes per I/O (fio's `bs`); a multiple of `block_size`.
    pub io_size: u64,
    /// I/Os kept in flight.
    pub iodepth: u32,
    /// Bytes of the device the workload covers, from LBA 0.
    pub size: u64,
    /// Percent of reads for `RandRw`.
    pub rwmix_read: u32,
    /// Seed for offsets and data.
    pub seed: u64,
}

impl Workload {
    /// Highest queue depth a job accepts.
    pub const MAX_IODEPTH: u32 = 16384;

    /// Checks the workload; `max_io` is the largest transfer the target takes.
    pub fn validate(&self, max_io: u64) -> Result<(), WorkloadError> {
        let bs = u64::from(self.block_size);
        if self.io_size == 0 || bs == 0 || !self.io_size.is_multiple_of(bs) {
            return Err(WorkloadError::BadIoSize {
                io_size: self.io_size,
                block_size: self.block_size,
            });
        }
        if self.io_size > max_io {
            return Err(WorkloadError::IoTooLarge {
                io_size: self.io_size,
                max: max_io,
            });
        }
        if self.iodepth == 0 || self.iodepth > Self::MAX_IODEPTH {
            return Err(WorkloadError::BadIodepth(self.iodepth));
        }
        if self.size < self.io_size {
            return Err(WorkloadError::SizeTooSmall {
                size: self.size,
                io_size: self.io_size,
            });
        }
        if self.rwmix_read > 100 {
            return Err(WorkloadError::BadRwMix(self.rwmix_read));
        }
        Ok(())
    }

    /// Number of I/O-sized units in the region.
    pub fn units(&self) -> u64 {
        self.size / self.io_size
    }

    /// Blocks per I/O.
    pub fn blocks_per_io(&self) -> u32 {
        (self.io_size / u64::from(self.block_size)) as u32
    }
}

/// A mix of I/O sizes, fio's `bssplit` (`4k/50:64k/30:1m/20`): each I/O's
/// size is drawn by weight. A job with a split addresses the device in
/// units of its largest size (the workload's `io_size`) and an I/O covers
/// the start of its unit, so two I/Os in flight never overlap.
///
/// Invariants: at least one entry, every size non-zero, weights summing
/// to between 1 and `u32::MAX`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SizeSplit {
    /// (bytes, weight), in the order given.
    entries: Vec<(u64, u32)>,
    total: u32,
}

impl SizeSplit {
    /// The split of `text`: `SIZE/WEIGHT` entries joined by `:` (a size
    /// as `--bs` takes it; a missing weight shares what the others leave
    /// of 100, as fio does).
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut given = Vec::new();
        for part in text.split(':') {
            let (size, weight) = match part.split_once('/') {
                Some((size, weight)) => (size, Some(weight)),
                None => (part, None),
            };
            let bytes = bdev::parse_size(size.trim())
                .map_err(|e| format!("--bssplit {text:?}: {part:?}: {e}"))?;
            if bytes == 0 {
                return Err(format!("--bssplit {text:?}: {part:?}: a size of zero"));
            }
            let weight = weight
                .map(|w| {
                    w.trim().parse::<u32>().map_err(|_| {
                        format!("--bssplit {text:?}: {part:?}: weight {w:?} is not a whole number")
                    })
                })
                .transpose()?;
            given.push((bytes, weight));
        }
        let stated: u64 = given.iter().filter_map(|(_, w)| w.map(u64::from)).sum();
        let unstated = given.iter().filter(|(_, w)| w.is_none()).count() as u64;
        let share = 100u64
            .saturating_sub(stated)
            .checked_div(unstated)
            .unwrap_or(0);
        let entries: Vec<(u64, u32)> = given
            .into_iter()
            .map(|(bytes, w)| (bytes, w.unwrap_or(share as u32)))
            .collect();
        let total: u64 = entries.iter().map(|(_, w)| u64::from(*w)).sum();
        if total == 0 || total > u64::from(u32::MAX) {
            return Err(format!(
                "--bssplit {text:?}: the weights sum to {total}; give some weight, at most 2^32-1 in all"
            ));
        }
        Ok(Self {
            entries,
            total: total as u32,
        })
    }

    /// The largest size: the workload's `io_size` with this split.
    pub fn largest(&self) -> u64 {
        self.entries.iter().map(|(b, _)| *b).max().unwrap_or(0)
    }

    /// The sizes and their weights.
    pub fn entries(&self) -> &[(u64, u32)] {
        &self.entries
    }

    /// Checks the sizes against `workload`: each a multiple of its block
    /// size and at most its `io_size`.
    pub fn check(&self, workload: &Workload) -> Result<(), WorkloadError> {
        for &(bytes, _) in &self.entries {
            if !bytes.is_multiple_of(u64::from(workload.block_size)) || bytes > workload.io_size {
                return Err(WorkloadError::BadSplitSize {
                    size: bytes,
                    block_size: workload.block_size,
                    io_size: workload.io_size,
                });
            }
        }
        Ok(())
    }

    /// One size, drawn by weight.
    #[inline]
    pub(crate) fn draw(&self, rng: &mut Rng) -> u64 {
        let mut at = rng.u32(..self.total);
        for &(bytes, weight) in &self.entries {
            if at < weight {
                return bytes;
            }
            at -= weight;
        }
        self.entries[self.entries.len() - 1].0
    }
}

/// Generates the sequence of I/Os of a workload.
#[derive(Debug, Clone)]
pub(crate) struct Generator {
    pattern: Pattern,
    units: u64,
    rwmix_read: u32,
    cursor: u64,
}

impl Generator {
    pub(crate) fn new(workload: &Workload) -> Self {
        Self {
            pattern: workload.pattern,
            units: workload.units(),
            rwmix_read: workload.rwmix_read,
            cursor: 0,
        }
    }

    /// The next I/O: (is_write, unit index).
    #[inline]
    pub(crate) fn next(&mut self, rng: &mut Rng) -> (bool, u64) {
        match self.pattern {
            Pattern::Read | Pattern::Write => {
                let unit = self.cursor;
                self.cursor = if unit + 1 == self.units { 0 } else { unit + 1 };
                (self.pattern == Pattern::Write, unit)
            }
            Pattern::RandRead => (false, rng.u64(..self.units)),
            Pattern::RandWrite => (true, rng.u64(..self.units)),
            Pattern::RandRw => {
                let write = rng.u32(..100) >= self.rwmix_read;
                (write, rng.u64(..self.units))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_split_is_parsed_checked_and_drawn_by_weight() {
        let split = SizeSplit::parse("4k/50:64KiB/30:1m").unwrap();
        assert_eq!(split.entries(), [(4096, 50), (64 << 10, 30), (1 << 20, 20)]);
        assert_eq!(split.largest(), 1 << 20);
        let mut rng = Rng::with_seed(7);
        let mut counts = [0u32; 3];
        for _ in 0..10_000 {
            let size = split.draw(&mut rng);
            let at = split
                .entries()
                .iter()
                .position(|(b, _)| *b == size)
                .unwrap();
            counts[at] += 1;
        }
        // 50/30/20 of 10 000, each well within 10 % of its share.
        for (n, share) in counts.iter().zip([5000, 3000, 2000]) {
            assert!(n.abs_diff(share) < share / 10, "{counts:?}");
        }
        let w = Workload {
            io_size: 1 << 20,
            ..workload()
        };
        assert_eq!(split.check(&w), Ok(()));
        let small = Workload {
            io_size: 64 << 10,
            ..workload()
        };
        assert!(matches!(
            split.check(&small),
            Err(WorkloadError::BadSplitSize { size, .. }) if size == 1 << 20
        ));
        let odd = SizeSplit::parse("4k/50:1000/50").unwrap();
        assert!(odd.check(&w).is_err());
        for (bad, why) in [
            ("4k/x", "weight \"x\" is not a whole number"),
            ("0/10", "a size of zero"),
            ("4k/0:8k/0", "the weights sum to 0"),
            ("4q/10", "4q"),
        ] {
            let e = SizeSplit::parse(bad).unwrap_err();
            assert!(e.starts_with("--bssplit") && e.contains(why), "{bad}: {e}");
        }
    }

    fn workload() -> Workload {
        Workload {
            pattern: Pattern::RandRw,
            block_size: 512,
            io_size: 4096,
            iodepth: 32,
            size: 1 << 20,
            rwmix_read: 70,
            seed: 1,
        }
    }

    #[test]
    fn validation_names_the_problem() {
        assert_eq!(workload().validate(1 << 20), Ok(()));
        let w = Workload {
            io_size: 1000,
            ..workload()
        };
        assert_eq!(
            w.validate(1 << 20).unwrap_err().to_string(),
            "block size (bs) 1000 is not a non-zero multiple of the device block size 512"
        );
        let w = Workload {
            iodepth: 0,
            ..workload()
        };
        assert_eq!(w.validate(1 << 20), Err(WorkloadError::BadIodepth(0)));
        let w = Workload {
            size: 2048,
            ..workload()
        };
        assert!(matches!(
            w.validate(1 << 20),
            Err(WorkloadError::SizeTooSmall { .. })
        ));
        let w = Workload {
            io_size: 2 << 20,
            ..workload()
        };
        assert!(matches!(
            w.validate(1 << 20),
            Err(WorkloadError::IoTooLarge { .. })
        ));
        let w = Workload {
            rwmix_read: 101,
            ..workload()
        };
        assert_eq!(w.validate(1 << 20), Err(WorkloadError::BadRwMix(101)));
        assert!("rand".parse::<Pattern>().is_err());
        assert_eq!("randrw".parse::<Pattern>(), Ok(Pattern::RandRw));
    }

    #[test]
    fn sequential_wraps_and_mix_is_respected() {
        let mut rng = Rng::with_seed(3);
        let w = Workload {
            pattern: Pattern::Write,
            size: 3 * 4096,
            ..workload()
        };
        let mut g = Generator::new(&w);
        let units: Vec<_> = (0..5).map(|_| g.next(&mut rng)).collect();
        assert_eq!(
            units,
            [(true, 0), (true, 1), (true, 2), (true, 0), (true, 1)]
        );
        let mut g = Generator::new(&workload());
        let writes = (0..10_000).filter(|_| g.next(&mut rng).0).count();
        assert!((2_700..3_300).contains(&writes), "{writes}");
    }

    #[test]
    fn random_units_are_reproducible_and_cover_the_device_evenly() {
        let w = Workload {
            pattern: Pattern::RandRead,
            size: 10 * 4096,
            ..workload()
        };
        let draw = |seed| {
            let mut rng = Rng::with_seed(seed);
            let mut g = Generator::new(&w);
            (0..10_000).map(|_| g.next(&mut rng)).collect::<Vec<_>>()
        };
        let units = draw(w.seed);
        assert_eq!(units, draw(w.seed), "one seed, one sequence");
        let mut seen = [0u32; 10];
        for (write, unit) in units {
            assert!(!write);
            seen[unit as usize] += 1;
        }
        // Every unit is hit and none is wildly off a uniform 1000.
        assert!(seen.iter().all(|&c| (700..1300).contains(&c)), "{seen:?}");
    }
}
