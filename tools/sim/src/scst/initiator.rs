//! The initiator's end: [`ScstSimInitiator`] is the SCST core's other
//! side, a target driver and its initiator: it attaches sessions, submits
//! commands, issues task management and reaps completions.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::error::{SimError, SimSubmitError};
use super::io::{DataIn, SimCompletion, SimData};
use super::shared::Shared;
use super::state::{DeferredReap, SessState};
use super::stats::{DeviceInfo, SimStats};
use dataplane::exec::status;
use dataplane::scst::abi::SCST_CMD_QUEUE_SIMPLE;

/// A task management function in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TmHandle(u32);

/// Ends a reap's unlocked phase: frees the deferred commands and clears
/// `reaping`, on the normal path and when the completion callback panics.
struct FinishReap<'a> {
    shared: &'a Shared,
    deferred: &'a [DeferredReap],
}

impl Drop for FinishReap<'_> {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        for d in self.deferred {
            st.finish_reap(d);
        }
        st.reaping = false;
    }
}

/// The SCST core, a target driver and its initiator: submits commands and
/// collects their completions. See the module docs.
#[derive(Debug)]
pub struct ScstSimInitiator {
    shared: Arc<Shared>,
    /// Completions being reaped outside the lock (capacity kept).
    deferred: Vec<DeferredReap>,
}

impl ScstSimInitiator {
    pub(super) fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            deferred: Vec::new(),
        }
    }

    /// Starts adding a session (`attach_tgt`): queues ATTACH_SESS and
    /// returns its `sess_h`. Commands can be submitted once
    /// [`poll_attach`](Self::poll_attach) says it is attached.
    pub fn begin_attach_session(&mut self, lun: u64, initiator: &str) -> Result<u64, SimError> {
        let mut st = self.shared.lock();
        let sess_h = st.begin_attach(lun, initiator)?;
        self.shared.kick(&st);
        drop(st);
        self.shared.ring();
        Ok(sess_h)
    }

    /// Whether the ATTACH_SESS of `sess_h` was answered: `Ok(true)` once
    /// attached, `Ok(false)` while waiting, an error if the handler refused
    /// it or did not answer within the attach timeout.
    pub fn poll_attach(&mut self, sess_h: u64) -> Result<bool, SimError> {
        let mut st = self.shared.lock();
        let sess = st.session_index(sess_h).ok_or(SimError::UnknownSession)?;
        match st.session_state(sess) {
            SessState::Active => Ok(true),
            SessState::Failed(r) => Err(SimError::AttachFailed(r)),
            SessState::TimedOut => Err(SimError::AttachTimeout),
            SessState::Gone => Err(SimError::UnknownSession),
            SessState::Attaching => {
                if Instant::now() > st.session_deadline(sess) {
                    st.attach_timed_out(sess);
                    Err(SimError::AttachTimeout)
                } else {
                    Ok(false)
                }
            }
        }
    }

    /// Adds a session and waits (up to the attach timeout) for the handler's
    /// answer. The device must be polled by another thread meanwhile; on
    /// one thread use [`attach_session_with`](Self::attach_session_with).
    pub fn attach_session(&mut self, lun: u64, initiator: &str) -> Result<u64, SimError> {
        let sess_h = self.begin_attach_session(lun, initiator)?;
        loop {
            if self.poll_attach(sess_h)? {
                return Ok(sess_h);
            }
            let mut st = self.shared.lock();
            let Some(sess) = st.session_index(sess_h) else {
                return Err(SimError::UnknownSession);
            };
            if st.session_state(sess) != SessState::Attaching {
                continue;
            }
            let deadline = st.session_deadline(sess);
            st.attach_waiters += 1;
            let (mut st, _) = self.shared.wait_until(st, deadline);
            st.attach_waiters -= 1;
        }
    }

    /// Adds a session, calling `poll` (which should run the device once)
    /// until the handler answered or the attach timeout passed.
    pub fn attach_session_with(
        &mut self,
        lun: u64,
        initiator: &str,
        mut poll: impl FnMut(),
    ) -> Result<u64, SimError> {
        let sess_h = self.begin_attach_session(lun, initiator)?;
        loop {
            poll();
            if self.poll_attach(sess_h)? {
                return Ok(sess_h);
            }
        }
    }

    /// Removes a session (`detach_tgt`): queues DETACH_SESS. The session
    /// must have no command in flight.
    pub fn detach_session(&mut self, sess_h: u64) -> Result<(), SimError> {
        let mut st = self.shared.lock();
        let sess = st.session_index(sess_h).ok_or(SimError::UnknownSession)?;
        st.queued_since = false;
        st.detach(sess)?;
        let ring = st.queued_since;
        self.shared.kick(&st);
        drop(st);
        if ring {
            self.shared.ring();
        }
        Ok(())
    }

    /// Submits a SIMPLE command on session `sess_h`. The handler learns of
    /// it at its next call; [`notify`](Self::notify) wakes it.
    pub fn submit(
        &mut self,
        sess_h: u64,
        cdb: &[u8],
        data: SimData<'_>,
        tag: u64,
    ) -> Result<(), SimSubmitError> {
        self.submit_with_queue_type(sess_h, cdb, data, tag, SCST_CMD_QUEUE_SIMPLE)
    }

    /// [`submit`](Self::submit) with a queue type (`SCST_CMD_QUEUE_*`).
    pub fn submit_with_queue_type(
        &mut self,
        sess_h: u64,
        cdb: &[u8],
        data: SimData<'_>,
        tag: u64,
        queue_type: u8,
    ) -> Result<(), SimSubmitError> {
        let mut st = self.shared.lock();
        st.submit(sess_h, cdb, data, tag, queue_type)?;
        if st.fetch_waiters > 0 {
            self.shared.cond.notify_all();
        }
        Ok(())
    }

    /// Rings the wait fd once for the commands submitted since the last
    /// call. Returns whether it rang.
    pub fn notify(&mut self) -> bool {
        let mut st = self.shared.lock();
        if st.unnotified == 0 {
            return false;
        }
        st.unnotified = 0;
        drop(st);
        self.shared.ring();
        true
    }

    /// Hands every finished command to `f` and then frees it (which may
    /// queue ON_FREE_CMD or evict cached buffers). Returns the number of
    /// commands.
    pub fn reap(&mut self, mut f: impl FnMut(&SimCompletion<'_>)) -> Result<usize, SimError> {
        let mut st = self.shared.lock();
        st.queued_since = false;
        let mut deferred = std::mem::take(&mut self.deferred);
        let mut n = st.reap(&mut f, &mut deferred);
        if !deferred.is_empty() {
            // Data still in pinned handler buffers is read without the
            // lock (a target driver sends it from the command's pages
            // without holding the device's locks); the commands stay
            // allocated, and the handler's release waits, until then.
            st.reaping = true;
            drop(st);
            {
                // Frees the commands and ends `reaping` even if `f` panics
                // (a handler being dropped waits for that).
                let _finish = FinishReap {
                    shared: &self.shared,
                    deferred: &deferred,
                };
                for d in &deferred {
                    f(&SimCompletion {
                        tag: d.tag,
                        status: status::GOOD,
                        sense: &[],
                        data_in_len: d.data_in_len,
                        aborted: false,
                        data: DataIn::Pinned(d.addr),
                    });
                }
            }
            st = self.shared.lock();
            n += deferred.len();
            deferred.clear();
        }
        self.deferred = deferred;
        let ring = st.queued_since;
        self.shared.kick(&st);
        drop(st);
        if ring {
            self.shared.ring();
        }
        Ok(n)
    }

    /// A task management function on session `sess_h` (`SCST_ABORT_TASK`
    /// needs `tag_to_abort`). Its result comes from
    /// [`tm_result`](Self::tm_result).
    pub fn task_mgmt(
        &mut self,
        sess_h: u64,
        fn_: u32,
        tag_to_abort: Option<u64>,
    ) -> Result<TmHandle, SimError> {
        let mut st = self.shared.lock();
        let sess = st.session_index(sess_h).ok_or(SimError::UnknownSession)?;
        st.queued_since = false;
        let index = st.task_mgmt(sess, fn_, tag_to_abort)?;
        let ring = st.queued_since;
        self.shared.kick(&st);
        drop(st);
        if ring {
            self.shared.ring();
        }
        Ok(TmHandle(index))
    }

    /// The TM's result (`SCST_MGMT_STATUS_*`) once it finished.
    pub fn tm_result(&self, tm: TmHandle) -> Option<i32> {
        self.shared.lock().tm_result(tm.0)
    }

    /// The SGV purge timer / shrinker: evicts every idle cached buffer
    /// (ON_CACHED_MEM_FREE each). Returns how many.
    pub fn purge_cache(&mut self) -> usize {
        let mut st = self.shared.lock();
        st.queued_since = false;
        let n = st.flush_idle();
        let ring = st.queued_since;
        drop(st);
        if ring {
            self.shared.ring();
        }
        n
    }

    /// Driver calls so far (the handler's doorbells).
    pub fn ioctls(&self) -> u64 {
        self.shared.ioctls.load(Ordering::Relaxed)
    }

    /// Writes to the wait fd so far.
    pub fn notifications(&self) -> u64 {
        self.shared.notifications.load(Ordering::Relaxed)
    }

    /// Commands submitted and not reaped yet.
    pub fn in_flight(&self) -> usize {
        let st = self.shared.lock();
        (st.stats.submitted - st.stats.reaped) as usize
    }

    /// The counters.
    pub fn stats(&self) -> SimStats {
        let st = self.shared.lock();
        let mut s = st.stats;
        s.ioctls = self.ioctls();
        s.notifications = self.notifications();
        s.cached_buffers = st.idle_buffers() as u64;
        s.cached_bytes = st.idle_bytes() as u64;
        s.live_handles = st.live_ucmds() as u64;
        s
    }

    /// The registered device, if any.
    pub fn device(&self) -> Option<DeviceInfo> {
        let st = self.shared.lock();
        st.dev.as_ref().map(|d| DeviceInfo {
            name: d.name.clone(),
            type_: d.type_,
            block_size: d.block_size,
            options: d.opt,
            blocking: d.blocking,
        })
    }

    /// Whether the handler closed the fd.
    pub fn is_gone(&self) -> bool {
        self.shared.lock().gone
    }
}
