//! How many bytes of an address range the kernel maps with transparent huge
//! pages: the `AnonHugePages` of the mappings that cover it, from
//! `/proc/self/smaps`.
//!
//! smaps has one block per mapping (VMA), in address order: a header line
//! `start-end perms offset dev inode [path]` (hexadecimal addresses, `end`
//! exclusive) and then `Key: value` lines, among them
//! `AnonHugePages:  <n> kB`, the memory of that mapping mapped by PMD-sized
//! transparent huge pages. A [`RamMapping`](super::RamMapping) is its own
//! VMA (its guards keep the kernel from merging it with a neighbour), so the
//! range asked about is exactly one block; a mapping that only partly
//! overlaps the range counts in proportion to the overlap.
//!
//! Reading smaps makes the kernel walk the page tables of every mapping of
//! the process: a control-path operation, never for a reactor. A caller
//! that asks about several ranges at once (a statistics report over every
//! RAM bdev) wraps the asks in [`one_read`], which answers all of them from
//! one read of the file.

use std::cell::RefCell;
use std::fs::File;
use std::io::{self, BufRead, BufReader};

/// One smaps block: its mapping `[lo, hi)` and that mapping's
/// `AnonHugePages`, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Block {
    lo: usize,
    hi: usize,
    anon_huge: u64,
}

/// This thread's answers inside [`one_read`].
enum Snapshot {
    /// Not inside `one_read`: each ask reads the file.
    Off,
    /// Inside, before the first ask.
    Unread,
    /// Inside: the blocks the first ask read (`None`: it could not).
    Read(Option<Vec<Block>>),
}

thread_local! {
    static SNAPSHOT: RefCell<Snapshot> = const { RefCell::new(Snapshot::Off) };
}

/// Runs `f`, answering every [`anon_huge_bytes`] it asks on this thread from
/// one read of `/proc/self/smaps` (made at the first ask, so figures are as
/// of then). Nested calls share the outer read.
pub fn one_read<R>(f: impl FnOnce() -> R) -> R {
    let outer = SNAPSHOT.with(|s| !matches!(*s.borrow(), Snapshot::Off));
    if outer {
        return f();
    }
    SNAPSHOT.with(|s| *s.borrow_mut() = Snapshot::Unread);
    // Cleared however `f` ends, so that a panic caught above does not
    // leave later asks on a stale snapshot.
    struct Clear;
    impl Drop for Clear {
        fn drop(&mut self) {
            SNAPSHOT.with(|s| *s.borrow_mut() = Snapshot::Off);
        }
    }
    let _clear = Clear;
    f()
}

/// Bytes of `[start, start + len)` mapped by transparent huge pages now (or
/// as of [`one_read`]'s read), or `None` when `/proc/self/smaps` cannot be
/// read or has no mapping there.
pub(super) fn anon_huge_bytes(start: usize, len: usize) -> Option<u64> {
    let end = start.saturating_add(len);
    SNAPSHOT.with(|s| {
        let mut s = s.borrow_mut();
        if matches!(*s, Snapshot::Unread) {
            *s = Snapshot::Read(read_blocks(usize::MAX));
        }
        match &*s {
            Snapshot::Read(blocks) => blocks
                .as_deref()
                .and_then(|b| anon_huge_bytes_of(b, start, end)),
            _ => read_blocks(end).and_then(|b| anon_huge_bytes_of(&b, start, end)),
        }
    })
}

/// The blocks of `/proc/self/smaps` whose mappings start below `until`, or
/// `None` when it cannot be read.
fn read_blocks(until: usize) -> Option<Vec<Block>> {
    #[cfg(test)]
    tests::READS.with(|r| r.set(r.get() + 1));
    let file = File::open("/proc/self/smaps").ok()?;
    blocks_in(BufReader::new(file), until).ok()
}

/// Parses smaps text from `reader` into its blocks, stopping at the first
/// whose mapping starts at or above `until` (blocks are in address order).
/// A block without an `AnonHugePages` line counts none.
fn blocks_in(mut reader: impl BufRead, until: usize) -> io::Result<Vec<Block>> {
    let mut blocks: Vec<Block> = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            break;
        }
        if let Some((lo, hi)) = header_range(&line) {
            if lo >= until {
                break;
            }
            blocks.push(Block {
                lo,
                hi,
                anon_huge: 0,
            });
            continue;
        }
        let (Some(block), Some(value)) = (blocks.last_mut(), line.strip_prefix("AnonHugePages:"))
        else {
            continue;
        };
        if let Some(kib) = value
            .trim()
            .strip_suffix("kB")
            .and_then(|n| n.trim().parse::<u64>().ok())
        {
            block.anon_huge = kib.saturating_mul(1024);
        }
    }
    Ok(blocks)
}

/// The `AnonHugePages` of each block whose mapping overlaps `[start, end)`,
/// scaled by the share of the mapping inside the range, summed. `None` when
/// no mapping overlaps the range.
fn anon_huge_bytes_of(blocks: &[Block], start: usize, end: usize) -> Option<u64> {
    let mut found = false;
    let mut total: u128 = 0;
    for b in blocks.iter().filter(|b| b.lo < end && b.hi > start) {
        found = true;
        let overlap = b.hi.min(end) - b.lo.max(start);
        total += u128::from(b.anon_huge) * overlap as u128 / (b.hi - b.lo) as u128;
    }
    found.then(|| total.min(u128::from(u64::MAX)) as u64)
}

/// The address range of a block's header line (`start-end perms ...`), or
/// `None` for a `Key: value` line.
fn header_range(line: &str) -> Option<(usize, usize)> {
    let (lo, hi) = line.split_ascii_whitespace().next()?.split_once('-')?;
    let lo = usize::from_str_radix(lo, 16).ok()?;
    let hi = usize::from_str_radix(hi, 16).ok()?;
    (lo < hi).then_some((lo, hi))
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    thread_local! {
        /// Reads of smaps on this thread (each test runs on its own).
        pub(super) static READS: Cell<u32> = const { Cell::new(0) };
    }

    /// Three mappings as the kernel prints them (fields trimmed): a heap,
    /// a 6 MiB anonymous mapping with two huge pages, and a file mapping.
    const SAMPLE: &str = "\
55d0c8a00000-55d0c8a21000 rw-p 00000000 00:00 0                          [heap]
Size:                132 kB
KernelPageSize:        4 kB
AnonHugePages:         0 kB
VmFlags: rd wr mr mw me ac
7f0000000000-7f0000600000 rw-p 00000000 00:00 0 
Size:               6144 kB
KernelPageSize:        4 kB
MMUPageSize:           4 kB
Rss:                6144 kB
AnonHugePages:      4096 kB
ShmemPmdMapped:        0 kB
THPeligible:           1
VmFlags: rd wr mr mw me ac hg
7f0000800000-7f0000a00000 r--p 00000000 08:01 1234                       /usr/lib/x86_64-linux-gnu/libc.so.6
Size:               2048 kB
AnonHugePages:      2048 kB
VmFlags: rd mr mw me
";

    fn parse(start: usize, end: usize) -> Option<u64> {
        let blocks = blocks_in(SAMPLE.as_bytes(), end).unwrap();
        anon_huge_bytes_of(&blocks, start, end)
    }

    #[test]
    fn a_whole_mapping_counts_its_anon_huge_pages() {
        assert_eq!(parse(0x7f00_0000_0000, 0x7f00_0060_0000), Some(4 << 20));
        // Its neighbours' figures do not leak in.
        assert_eq!(parse(0x55d0_c8a0_0000, 0x55d0_c8a2_1000), Some(0));
    }

    #[test]
    fn a_partial_overlap_counts_in_proportion() {
        // Half of the 6 MiB mapping: half of its 4 MiB.
        assert_eq!(
            parse(0x7f00_0030_0000, 0x7f00_0090_0000),
            Some((2 << 20) + (1 << 20))
        );
    }

    #[test]
    fn no_mapping_in_the_range_is_none() {
        assert_eq!(parse(0x7f00_0060_0000, 0x7f00_0080_0000), None);
        assert_eq!(parse(0x1000, 0x2000), None);
        assert_eq!(blocks_in(&b""[..], usize::MAX).unwrap(), []);
        assert_eq!(anon_huge_bytes_of(&[], 0, usize::MAX), None);
    }

    #[test]
    fn parsing_stops_at_the_first_mapping_past_the_range() {
        let blocks = blocks_in(SAMPLE.as_bytes(), 0x7f00_0000_0001).unwrap();
        assert_eq!(
            blocks,
            [
                Block {
                    lo: 0x55d0_c8a0_0000,
                    hi: 0x55d0_c8a2_1000,
                    anon_huge: 0
                },
                Block {
                    lo: 0x7f00_0000_0000,
                    hi: 0x7f00_0060_0000,
                    anon_huge: 4 << 20
                },
            ]
        );
    }

    #[test]
    fn header_lines_are_told_from_fields() {
        assert_eq!(
            header_range("7f0000000000-7f0000600000 rw-p 00000000 00:00 0 \n"),
            Some((0x7f00_0000_0000, 0x7f00_0060_0000))
        );
        assert_eq!(header_range("AnonHugePages:      4096 kB\n"), None);
        assert_eq!(header_range("VmFlags: rd wr mr mw me ac hg\n"), None);
        assert_eq!(header_range("\n"), None);
    }

    #[test]
    fn one_read_answers_every_ask_from_one_read() {
        let buffer = vec![1u8; 4 << 20];
        let ask = || anon_huge_bytes(buffer.as_ptr() as usize, buffer.len());
        let reads = || READS.with(Cell::get);
        let before = reads();
        let (first, second, nested) = one_read(|| (ask(), ask(), one_read(ask)));
        assert_eq!(reads() - before, 1, "three asks inside one_read, one read");
        assert_eq!(second, first);
        assert_eq!(nested, first, "a nested one_read shares the outer read");
        // Outside, every ask reads the file.
        ask();
        ask();
        assert_eq!(reads() - before, 3);
    }

    #[test]
    fn this_process_has_a_readable_smaps() {
        // A page-aligned 4 MiB heap allocation lies in some mapping.
        let buffer = vec![1u8; 4 << 20];
        let bytes = anon_huge_bytes(buffer.as_ptr() as usize, buffer.len());
        if std::path::Path::new("/proc/self/smaps").exists() {
            assert!(bytes.is_some_and(|b| b <= 8 << 20), "{bytes:?}");
        }
    }
}
