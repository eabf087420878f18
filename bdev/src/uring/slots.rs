//! Per-request state indexed by an SQE's `user_data`.

/// A fixed table of `T`, preallocated, with a free list: [`take`] hands out
/// the index of a free slot (the SQE's `user_data`), [`release`] returns
/// it. Neither allocates.
///
/// Invariant: an index is either on the free list or in use, never both.
///
/// [`take`]: Slots::take
/// [`release`]: Slots::release
#[derive(Debug)]
pub struct Slots<T> {
    slots: Vec<T>,
    free: Vec<u32>,
}

impl<T: Default> Slots<T> {
    /// `count` slots, all free.
    pub fn new(count: usize) -> Self {
        let count = count.max(1);
        Self {
            slots: (0..count).map(|_| T::default()).collect(),
            free: (0..count as u32).rev().collect(),
        }
    }
}

impl<T> Slots<T> {
    /// Slots in all.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Slots in use.
    pub fn in_use(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// True when no slot is free.
    pub fn is_full(&self) -> bool {
        self.free.is_empty()
    }

    /// The index of a free slot, now in use, or `None` when all are in
    /// use.
    #[inline]
    pub fn take(&mut self) -> Option<u32> {
        self.free.pop()
    }

    /// The slot at `index`, an index [`take`](Self::take) gave out.
    #[inline]
    pub fn slot_mut(&mut self, index: u32) -> &mut T {
        &mut self.slots[index as usize]
    }

    /// The slot at `index`, in use or not (`None` beyond the table: a
    /// `user_data` the channel never gave out).
    #[inline]
    pub fn get_mut(&mut self, index: u64) -> Option<&mut T> {
        self.slots.get_mut(usize::try_from(index).ok()?)
    }

    /// Returns the slot at `index` to the free list.
    #[inline]
    pub fn release(&mut self, index: u32) {
        debug_assert!(!self.free.contains(&index), "slot {index} released twice");
        debug_assert!(self.free.len() < self.slots.len());
        self.free.push(index);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn take_and_release_reuse_slots() {
        let mut slots: Slots<u64> = Slots::new(2);
        assert_eq!(slots.capacity(), 2);
        let a = slots.take().unwrap();
        *slots.slot_mut(a) = 7;
        let b = slots.take().unwrap();
        assert_ne!(a, b);
        assert!(slots.is_full() && slots.take().is_none());
        assert_eq!(*slots.get_mut(u64::from(a)).unwrap(), 7);
        assert!(slots.get_mut(99).is_none());
        slots.release(a);
        assert_eq!(slots.in_use(), 1);
        assert_eq!(slots.take(), Some(a));
    }
}
