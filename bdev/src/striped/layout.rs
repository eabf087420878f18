//! Where a parent block lives: the RAID0 address mapping of the [striped
//! module](super#layout), as pure functions of the child count `n` and the
//! chunk shift (`log2(chunk_blocks)`).

/// The child holding parent block `lba`, and the block's LBA on that child.
#[inline]
pub(super) fn locate(lba: u64, n: u64, shift: u32) -> (u64, u64) {
    let strip = lba >> shift;
    (
        strip % n,
        ((strip / n) << shift) + (lba & ((1 << shift) - 1)),
    )
}

/// The parent block at block `child_lba` of child `child`: the inverse of
/// [`locate`].
#[inline]
pub(super) fn parent_lba(child: u64, child_lba: u64, n: u64, shift: u32) -> u64 {
    let strip = (child_lba >> shift) * n + child;
    (strip << shift) + (child_lba & ((1 << shift) - 1))
}

/// Number of blocks of child `child` that hold parent LBAs below `lba`, which
/// is also the child LBA where the parent range starting at `lba` begins on
/// that child.
pub(super) fn blocks_on_child(lba: u64, child: u64, n: u64, shift: u32) -> u64 {
    let strip = lba >> shift;
    let offset = lba & ((1 << shift) - 1);
    let full_strips = strip / n + u64::from(child < strip % n);
    let partial = if strip % n == child { offset } else { 0 };
    (full_strips << shift) + partial
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_on_child_matches_mapping() {
        // Count by brute force: child c's blocks among parent LBAs below x.
        for n in 1..=4u64 {
            for shift in 0..=3u32 {
                for x in 0..((5 * n) << shift) {
                    for c in 0..n {
                        let brute = (0..x).filter(|l| (l >> shift) % n == c).count() as u64;
                        assert_eq!(
                            blocks_on_child(x, c, n, shift),
                            brute,
                            "{n} {shift} {x} {c}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn locate_follows_the_layout_formula() {
        // Every block of the first five rounds of stripes: the child is the
        // strip modulo n, and the child's blocks are filled in parent order.
        for n in 1..=4u64 {
            for shift in 0..=3u32 {
                for lba in 0..((5 * n) << shift) {
                    let (child, child_lba) = locate(lba, n, shift);
                    assert_eq!(parent_lba(child, child_lba, n, shift), lba);
                    assert_eq!(child, (lba >> shift) % n, "{n} {shift} {lba}");
                    assert_eq!(
                        child_lba,
                        blocks_on_child(lba, child, n, shift),
                        "{n} {shift} {lba}"
                    );
                }
            }
        }
    }
}
