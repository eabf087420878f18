//! The allocator of data blocks and `cmd_id`s: lowest free first, as the
//! kernel's `find_first_zero_bit`.

/// Lowest-first allocator over a bitmap (set bit = in use).
#[derive(Debug)]
pub(super) struct Bitmap {
    words: Vec<u64>,
    bits: usize,
    /// No word below this one has a clear bit.
    first_free_word: usize,
}

impl Bitmap {
    pub(super) fn new(bits: usize) -> Self {
        let mut words = vec![0u64; bits.div_ceil(64)];
        // Bits past the end are permanently "in use".
        if !bits.is_multiple_of(64) {
            if let Some(last) = words.last_mut() {
                *last = !0u64 << (bits % 64);
            }
        }
        Self {
            words,
            bits,
            first_free_word: 0,
        }
    }

    pub(super) fn alloc(&mut self) -> Option<u32> {
        while self.first_free_word < self.words.len() {
            let w = self.words[self.first_free_word];
            if w != u64::MAX {
                let bit = w.trailing_ones() as usize;
                self.words[self.first_free_word] |= 1 << bit;
                let index = self.first_free_word * 64 + bit;
                debug_assert!(index < self.bits);
                return Some(index as u32);
            }
            self.first_free_word += 1;
        }
        None
    }

    pub(super) fn set(&mut self, index: u32) {
        let i = index as usize;
        self.words[i / 64] |= 1 << (i % 64);
    }

    pub(super) fn free(&mut self, index: u32) {
        let i = index as usize;
        self.words[i / 64] &= !(1 << (i % 64));
        self.first_free_word = self.first_free_word.min(i / 64);
    }
}
