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
//! the process: a control-path operation, never for a reactor.

use std::fs::File;
use std::io::{self, BufRead, BufReader};

/// Bytes of `[start, start + len)` mapped by transparent huge pages now, or
/// `None` when `/proc/self/smaps` cannot be read or has no mapping there.
pub(super) fn anon_huge_bytes(start: usize, len: usize) -> Option<u64> {
    let file = File::open("/proc/self/smaps").ok()?;
    anon_huge_bytes_in(BufReader::new(file), start, start.saturating_add(len))
        .ok()
        .flatten()
}

/// Parses smaps text from `reader`: the `AnonHugePages` of each mapping
/// that overlaps `[start, end)`, scaled by the share of the mapping inside
/// the range, summed. `None` when no mapping overlaps the range.
fn anon_huge_bytes_in(
    mut reader: impl BufRead,
    start: usize,
    end: usize,
) -> io::Result<Option<u64>> {
    // The mapping of the current block, when it overlaps the range.
    let mut current: Option<(usize, usize)> = None;
    let mut found = false;
    let mut total: u128 = 0;
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            break;
        }
        if let Some((lo, hi)) = header_range(&line) {
            if lo >= end {
                break; // blocks are in address order
            }
            current = (hi > start).then_some((lo, hi));
            found |= current.is_some();
            continue;
        }
        let (Some((lo, hi)), Some(value)) = (current, line.strip_prefix("AnonHugePages:")) else {
            continue;
        };
        let Some(kib) = value
            .trim()
            .strip_suffix("kB")
            .and_then(|n| n.trim().parse::<u64>().ok())
        else {
            continue;
        };
        let overlap = hi.min(end) - lo.max(start);
        total += u128::from(kib) * 1024 * overlap as u128 / (hi - lo) as u128;
    }
    Ok(found.then(|| total.min(u128::from(u64::MAX)) as u64))
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
    use super::*;

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
        anon_huge_bytes_in(SAMPLE.as_bytes(), start, end).unwrap()
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
        assert_eq!(anon_huge_bytes_in(&b""[..], 0, usize::MAX).unwrap(), None);
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
    fn this_process_has_a_readable_smaps() {
        // A page-aligned 4 MiB heap allocation lies in some mapping.
        let buffer = vec![1u8; 4 << 20];
        let bytes = anon_huge_bytes(buffer.as_ptr() as usize, buffer.len());
        if std::path::Path::new("/proc/self/smaps").exists() {
            assert!(bytes.is_some_and(|b| b <= 8 << 20), "{bytes:?}");
        }
    }
}
