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
