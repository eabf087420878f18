//! [`Input`]: reads typed values from the fuzzer's bytes.
//!
//! Every read succeeds: past the end of the data it yields zeroes, so a
//! target never has to handle a short input and a shorter input is always
//! a prefix of the same run (what libFuzzer's minimiser relies on).

use bdev::IoVec;

/// A cursor over the fuzz input.
#[derive(Debug)]
pub struct Input<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Input<'a> {
    /// A cursor at the start of `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Self { data, at: 0 }
    }

    /// True once every byte has been read.
    pub fn is_empty(&self) -> bool {
        self.at >= self.data.len()
    }

    /// The next byte (0 past the end).
    pub fn u8(&mut self) -> u8 {
        let b = self.data.get(self.at).copied().unwrap_or(0);
        self.at += 1;
        b
    }

    /// The next two bytes, big-endian.
    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }

    /// The next four bytes, big-endian.
    pub fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    /// The next eight bytes, big-endian.
    pub fn u64(&mut self) -> u64 {
        (u64::from(self.u32()) << 32) | u64::from(self.u32())
    }

    /// A value below `n` (`n > 0`), from one byte if `n <= 256`, else two.
    pub fn below(&mut self, n: usize) -> usize {
        debug_assert!(n > 0);
        if n <= 256 {
            usize::from(self.u8()) % n
        } else {
            usize::from(self.u16()) % n
        }
    }

    /// True with probability about `percent`/100.
    pub fn chance(&mut self, percent: u8) -> bool {
        self.u8() % 100 < percent
    }

    /// Fills `out` from the input (zeroes past the end).
    pub fn fill(&mut self, out: &mut [u8]) {
        for b in out {
            *b = self.u8();
        }
    }

    /// The next `n` bytes, as many as are left (possibly fewer than `n`).
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let start = self.at.min(self.data.len());
        let end = start.saturating_add(n).min(self.data.len());
        self.at = start.saturating_add(n);
        &self.data[start..end]
    }

    /// Everything not read yet.
    pub fn rest(&mut self) -> &'a [u8] {
        let start = self.at.min(self.data.len());
        self.at = self.data.len();
        &self.data[start..]
    }
}

impl Input<'_> {
    /// `buf` cut into at most `max_cuts + 1` iovecs, at offsets from the
    /// input (a request's scatter-gather list as a frontend might build it).
    pub fn iovecs(&mut self, buf: &mut [u8], max_cuts: usize) -> Vec<IoVec> {
        let mut cuts: Vec<usize> = (0..self.below(max_cuts))
            .filter(|_| buf.len() > 1)
            .map(|_| 1 + self.below(buf.len() - 1))
            .collect();
        cuts.sort_unstable();
        cuts.dedup();
        let mut iovs = Vec::new();
        let mut rest = buf;
        let mut at = 0;
        for cut in cuts {
            let (head, tail) = rest.split_at_mut(cut - at);
            iovs.push(IoVec::from_slice(head));
            rest = tail;
            at = cut;
        }
        iovs.push(IoVec::from_slice(rest));
        iovs
    }
}
