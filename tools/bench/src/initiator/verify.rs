//! The per-block checksum model behind `--verify`.

use fastrand::Rng;

/// A mismatch found by [`VerifyModel::check_read`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mismatch {
    /// The block that read back wrong.
    pub lba: u64,
    /// CRC32C the model expected.
    pub expected: u32,
    /// CRC32C of what was read.
    pub actual: u32,
}

/// Expected CRC32C of every logical block of a device.
#[derive(Debug, Clone)]
pub struct VerifyModel {
    block_size: usize,
    expected: Vec<u32>,
    /// One bit per block: set when the content is unknown (e.g. after a
    /// failed write), so reads of it are not checked.
    unknown: Vec<u64>,
}

impl VerifyModel {
    /// A model of `num_blocks` blocks that all start as zeroes (a new RAM
    /// bdev) when `zeroed`, or as unknown otherwise.
    pub fn new(num_blocks: u64, block_size: usize, zeroed: bool) -> Self {
        let zero_crc = crc32c::crc32c(&vec![0u8; block_size]);
        let words = num_blocks.div_ceil(64) as usize;
        Self {
            block_size,
            expected: vec![zero_crc; num_blocks as usize],
            unknown: vec![if zeroed { 0 } else { u64::MAX }; words],
        }
    }

    /// Block size the model checks at.
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// Fills `buf` (a whole number of blocks starting at `lba`) with data
    /// unique to (`lba`, `seq`): each block starts with its LBA and `seq`, the
    /// rest is pseudo-random.
    pub fn fill(&self, buf: &mut [u8], lba: u64, seq: u64) {
        for (i, block) in buf.chunks_exact_mut(self.block_size).enumerate() {
            let block_lba = lba + i as u64;
            block[..8].copy_from_slice(&block_lba.to_le_bytes());
            block[8..16].copy_from_slice(&seq.to_le_bytes());
            let mut rng = Rng::with_seed(block_lba.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ seq);
            for word in block[16..].chunks_exact_mut(8) {
                word.copy_from_slice(&rng.u64(..).to_le_bytes());
            }
        }
    }

    /// Records a successful write of `buf` at `lba`.
    pub fn record_write(&mut self, buf: &[u8], lba: u64) {
        for (i, block) in buf.chunks_exact(self.block_size).enumerate() {
            let b = (lba + i as u64) as usize;
            self.expected[b] = crc32c::crc32c(block);
            self.unknown[b / 64] &= !(1 << (b % 64));
        }
    }

    /// Forgets what `blocks` blocks at `lba` hold (a write that failed or was
    /// aborted may or may not have reached the medium).
    pub fn invalidate(&mut self, lba: u64, blocks: u64) {
        for b in lba..lba + blocks {
            let b = b as usize;
            self.unknown[b / 64] |= 1 << (b % 64);
        }
    }

    /// Checks every known block of a read of `buf` at `lba`; calls `report`
    /// for each mismatch and returns how many there were.
    pub fn check_read(&self, buf: &[u8], lba: u64, mut report: impl FnMut(Mismatch)) -> u64 {
        let mut mismatches = 0;
        for (i, block) in buf.chunks_exact(self.block_size).enumerate() {
            let b = (lba + i as u64) as usize;
            if self.unknown[b / 64] & (1 << (b % 64)) != 0 {
                continue;
            }
            let actual = crc32c::crc32c(block);
            if actual != self.expected[b] {
                mismatches += 1;
                report(Mismatch {
                    lba: b as u64,
                    expected: self.expected[b],
                    actual,
                });
            }
        }
        mismatches
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_stale_and_torn_blocks() {
        let mut m = VerifyModel::new(16, 512, true);
        let mut disk = vec![0u8; 16 * 512];
        // Zeroes check out on a fresh model.
        assert_eq!(m.check_read(&disk[..1024], 0, |_| {}), 0);
        let mut buf = vec![0u8; 1024];
        m.fill(&mut buf, 4, 1);
        m.record_write(&buf, 4);
        // The device did not store it: both blocks mismatch.
        let mut seen = Vec::new();
        assert_eq!(m.check_read(&disk[2048..3072], 4, |x| seen.push(x.lba)), 2);
        assert_eq!(seen, [4, 5]);
        disk[2048..3072].copy_from_slice(&buf);
        assert_eq!(m.check_read(&disk[2048..3072], 4, |_| {}), 0);
        // A different sequence number yields different data.
        let mut other = vec![0u8; 1024];
        m.fill(&mut other, 4, 2);
        assert_ne!(other, buf);
        // A torn block (one byte off) is caught; an invalidated one is not.
        disk[2048 + 600] ^= 1;
        assert_eq!(m.check_read(&disk[2048..3072], 4, |_| {}), 1);
        m.invalidate(5, 1);
        assert_eq!(m.check_read(&disk[2048..3072], 4, |_| {}), 0);
    }
}
