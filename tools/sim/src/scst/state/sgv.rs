//! The SGV buffer cache (`scst_mem.c`, as scst_user uses it): handler
//! buffers the kernel keeps after their command is freed, per power-of-two
//! page class, to hand to the next command of the class without ALLOC_MEM.
//! Each cached buffer is owned by the ucmd that supplied it (`buf_ucmd`),
//! which lives until ON_CACHED_MEM_FREE tells the handler, by that ucmd's
//! handle, that the buffer is released. Idle buffers beyond
//! `ScstSimConfig::sgv_cache_bytes` are evicted oldest first.

use std::collections::VecDeque;

use nix::errno::Errno;

use super::ucmd::{OwnBuf, UState};
use super::{State, NONE, PAGE_SIZE};
use crate::scst::copy;
use dataplane::scst::abi::*;

/// Size classes of the SGV cache: orders 0..SGV_ORDERS pages.
pub(super) const SGV_ORDERS: usize = 20;

/// Whether a handler address is page-aligned (cached buffers must be).
pub(super) fn page_aligned(addr: u64) -> bool {
    addr.is_multiple_of(PAGE_SIZE as u64)
}

/// Pages of `len` bytes, rounded up.
pub(super) fn pages(len: usize) -> usize {
    len.div_ceil(PAGE_SIZE)
}

/// SGV size class (`get_order`) of a buffer of `len` bytes.
pub(super) fn order_of(len: usize) -> u8 {
    let p = pages(len.max(1)).next_power_of_two();
    p.trailing_zeros() as u8
}

/// Bytes of a buffer of SGV class `order`.
pub(super) fn class_bytes(order: u8) -> usize {
    PAGE_SIZE << order
}

impl State {
    /// Whether the device's memory-reuse type caches the buffers of
    /// commands of direction `dir` (`buff_cached`).
    pub(super) fn is_buff_cached(&self, dir: u8) -> bool {
        match self.dev().opt.memory_reuse_type {
            SCST_USER_MEM_REUSE_ALL => true,
            SCST_USER_MEM_REUSE_READ => dir == SCST_DATA_READ,
            SCST_USER_MEM_REUSE_WRITE => dir == SCST_DATA_WRITE,
            _ => false,
        }
    }

    /// A cached buffer of `order` (the most recently freed one): its owner
    /// and address.
    pub(super) fn cache_get(&mut self, order: u8) -> Option<(u32, u64)> {
        let (_, owner, pbuf) = self.idle.get_mut(usize::from(order))?.pop_back()?;
        self.idle_bytes -= class_bytes(order);
        Some((owner, pbuf))
    }

    /// `sgv_pool_free`: the buffer of `owner` goes idle; over budget, the
    /// oldest idle buffers are evicted.
    fn cache_put(&mut self, owner: u32) {
        let Some(own) = self.ucmds[owner as usize].own.as_mut() else {
            return;
        };
        if self.gone {
            // The pools are flushed on release; nothing is cached any more.
            self.ucmds[owner as usize].own = None;
            self.maybe_free_ucmd(owner);
            return;
        }
        let (order, pbuf) = (own.order, own.pbuf);
        self.idle_seq += 1;
        self.idle[usize::from(order)].push_back((self.idle_seq, owner, pbuf));
        self.idle_bytes += class_bytes(order);
        while self.idle_bytes > self.cfg.sgv_cache_bytes {
            if !self.evict_oldest() {
                break;
            }
        }
    }

    /// Evicts the buffer that has been idle longest, of any class. Returns
    /// false when the cache is empty.
    fn evict_oldest(&mut self) -> bool {
        let Some(order) = (0..SGV_ORDERS)
            .filter_map(|o| self.idle[o].front().map(|&(seq, _, _)| (seq, o)))
            .min()
            .map(|(_, o)| o)
        else {
            return false;
        };
        let (_, owner, _) = self.idle[order].pop_front().expect("non-empty");
        self.idle_bytes -= class_bytes(order as u8);
        self.evict(owner);
        true
    }

    /// `dev_user_on_cached_mem_free`: tell the handler, by the handle of
    /// the command that supplied the buffer.
    fn evict(&mut self, owner: u32) {
        self.stats.evictions += 1;
        if self.gone {
            self.ucmds[owner as usize].own = None;
            self.maybe_free_ucmd(owner);
            return;
        }
        self.add_to_ready(owner, UState::OnCacheFreeing, subcode::ON_CACHED_MEM_FREE);
    }

    /// `sgv_pool_flush`: evicts every idle buffer. Returns how many.
    pub(in crate::scst) fn flush_idle(&mut self) -> usize {
        let mut n = 0;
        while self.evict_oldest() {
            n += 1;
        }
        n
    }

    /// `dev_user_free_sgv`: a cached buffer returns to the cache.
    pub(super) fn free_sgv(&mut self, ui: u32) {
        let u = &mut self.ucmds[ui as usize];
        let owner = u.buf_owner;
        u.buf_owner = NONE;
        if u.buff_cached && owner != NONE {
            self.cache_put(owner);
        }
    }

    /// Bytes of idle buffers in the cache.
    pub(in crate::scst) fn idle_bytes(&self) -> usize {
        self.idle_bytes
    }

    /// `dev_user_prealloc_buffer` after the argument checks: a cached
    /// buffer owned by a new ucmd. Returns its handle.
    pub(in crate::scst) fn prealloc(&mut self, pbuf: u64, len: u32) -> Result<u32, Errno> {
        let ui = self.alloc_ucmd();
        let fail = |st: &mut State, e: Errno| {
            st.maybe_free_ucmd(ui);
            Err(e)
        };
        if !page_aligned(pbuf) {
            return fail(self, Errno::EINVAL);
        }
        let n = pages(len as usize);
        // The SGV object takes 1 << order pages from the mapped ones; a
        // length that is not a power of two of pages runs out of pages.
        if n == 0 || !n.is_power_of_two() || order_of(len as usize) as usize >= SGV_ORDERS {
            return fail(self, Errno::ENOMEM);
        }
        if let Err(e) = copy::probe_writable(pbuf, len as usize, PAGE_SIZE) {
            return fail(self, e);
        }
        let u = &mut self.ucmds[ui as usize];
        u.buff_cached = true;
        u.ubuff = pbuf;
        u.own = Some(OwnBuf {
            pbuf,
            order: order_of(len as usize),
        });
        let h = u.h;
        self.cache_put(ui);
        Ok(h)
    }

    /// ON_CACHED_MEM_FREE answered (or unjammed): the owner no longer
    /// holds a buffer.
    pub(super) fn cache_free_processed(&mut self, ui: u32) {
        self.ucmds[ui as usize].own = None;
        self.maybe_free_ucmd(ui);
    }

    /// Idle buffers in the cache.
    pub(in crate::scst) fn idle_buffers(&self) -> usize {
        self.idle.iter().map(VecDeque::len).sum()
    }
}
