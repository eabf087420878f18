//! The `buffer_pool` target: the scst_user [`BufferPool`] against a
//! reference allocator (the set of live buffers).
//!
//! Checks: no panic; a buffer handed out is page aligned, of its class
//! size (the smallest power of two of at least 4 KiB that holds the
//! request), inside the arena and overlaps no live buffer; allocation
//! fails only for 0, for more than the largest buffer, or when no free
//! run of the class is left (never with nothing live); `free` accepts
//! exactly the live addresses, once; `get` knows exactly the live
//! addresses; the counters match the reference; after everything is
//! freed the whole arena can be taken again as largest buffers (the
//! buddies merged).

use std::collections::BTreeMap;

use dataplane::scst::pool::{BufferPool, PoolConfig};

use crate::input::Input;

const PAGE: usize = 4096;

/// The target.
pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let max_buffer = PAGE << input.below(5);
    let config = PoolConfig {
        max_bytes: max_buffer * (1 + input.below(8)) + input.below(PAGE),
        max_buffer_bytes: max_buffer,
        populate: false,
    };
    let Ok(mut pool) = BufferPool::new(config) else {
        return;
    };
    let capacity = pool.capacity();
    assert_eq!(capacity % max_buffer, 0);
    let (arena, _mapping) = pool.arena();
    let (lo, hi) = (arena.base as u64, arena.base as u64 + arena.len as u64);
    // Reference: pbuf -> len of every live buffer.
    let mut live: BTreeMap<u64, usize> = BTreeMap::new();
    let mut rounds = 0;
    while !input.is_empty() && rounds < 1024 {
        rounds += 1;
        match input.below(4) {
            0 | 1 => {
                let len = match input.below(4) {
                    0 => input.below(2 * max_buffer + 2),
                    _ => 1 + input.below(max_buffer),
                };
                match pool.alloc(len) {
                    Some(buf) => {
                        let class = len.next_power_of_two().max(PAGE);
                        assert!(len > 0 && len <= max_buffer, "alloc({len}) succeeded");
                        assert_eq!(buf.len, class, "alloc({len})");
                        assert_eq!(buf.pbuf % PAGE as u64, 0);
                        assert!(buf.pbuf >= lo && buf.pbuf + buf.len as u64 <= hi);
                        let end = buf.pbuf + buf.len as u64;
                        if let Some((&p, &l)) = live.range(..end).next_back() {
                            assert!(p + l as u64 <= buf.pbuf, "{buf:?} overlaps {p:#x}+{l}");
                        }
                        live.insert(buf.pbuf, buf.len);
                        let iov = pool
                            .iovec(buf.pbuf, buf.len)
                            .expect("iovec of a live buffer");
                        assert_eq!(iov.len, buf.len);
                        // SAFETY: the buffer is live and `buf.len` bytes long.
                        unsafe { std::ptr::write_bytes(iov.base, 0xA5, iov.len) };
                    }
                    None => {
                        let valid = len > 0 && len <= max_buffer;
                        assert!(
                            !valid || !live.is_empty(),
                            "alloc({len}) failed on an empty pool"
                        );
                        let used: usize = live.values().sum();
                        let class = len.next_power_of_two().max(PAGE);
                        // Enough bytes free for the class does not promise a
                        // run (fragmentation); an empty class-sized hole
                        // would: checked at the end, after freeing.
                        let _ = (used, class);
                    }
                }
            }
            2 => {
                // Free a live buffer, or an address that is not one.
                let pbuf = if !live.is_empty() && input.chance(80) {
                    *live.keys().nth(input.below(live.len())).unwrap()
                } else {
                    lo.wrapping_add(
                        input.u32() as u64 * if input.chance(50) { PAGE as u64 } else { 1 },
                    )
                };
                let expect = live.remove(&pbuf).is_some();
                assert_eq!(pool.free(pbuf), expect, "free({pbuf:#x})");
            }
            _ => {
                let pbuf = lo.wrapping_add(u64::from(input.u16()) * 512);
                assert_eq!(
                    pool.get(pbuf).map(|b| b.len),
                    live.get(&pbuf).copied(),
                    "get({pbuf:#x})"
                );
            }
        }
        assert_eq!(pool.buffers_in_use(), live.len() as u64);
        assert_eq!(pool.bytes_in_use(), live.values().sum::<usize>() as u64);
    }
    for &pbuf in live.keys() {
        assert!(pool.free(pbuf));
        assert!(!pool.free(pbuf), "double free of {pbuf:#x} accepted");
    }
    assert_eq!(pool.bytes_in_use(), 0);
    for i in 0..capacity / max_buffer {
        assert!(
            pool.alloc(max_buffer).is_some(),
            "largest buffer {i} after freeing all"
        );
    }
    assert!(pool.alloc(1).is_none(), "over the cap");
}
