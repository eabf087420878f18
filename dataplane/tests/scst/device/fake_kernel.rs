//! `FakeKernel`: a scripted scst_user kernel. Subcommands are queued by the
//! test; every REPLY_AND_GET_MULTI is recorded (the replies as the kernel saw
//! them, with the sense bytes their pointers named during the call).

use super::*;

/// A reply as the kernel saw it, with the bytes its pointers named at the
/// time of the call.
#[derive(Clone)]
pub struct SeenReply {
    pub reply: ScstUserReplyCmd,
    /// Sense bytes (EXEC or PARSE with sense).
    pub sense: Vec<u8>,
}

impl SeenReply {
    pub fn exec(&self) -> ScstUserScsiCmdReplyExec {
        assert_eq!(self.reply.subcode, subcode::EXEC);
        self.reply.exec_reply()
    }
}

#[derive(Clone)]
pub struct Call {
    pub replies: Vec<SeenReply>,
    pub asked: usize,
    pub delivered: usize,
    pub result: Result<(), Errno>,
}

#[derive(Default)]
pub struct KernelState {
    pub options: ScstUserOpt,
    pub queue: VecDeque<ScstUserGetCmd>,
    /// cmd_h -> subcode of every subcommand delivered and not yet replied.
    pub awaiting: HashMap<u32, u32>,
    pub calls: Vec<Call>,
    /// Refuse the reply for this cmd_h with this errno (once).
    pub refuse: Option<(u32, Errno)>,
    /// Fail every call with this errno before looking at anything.
    pub fail_all: Option<Errno>,
    /// EFAULT copying command `n` of the next call to the user (once): the
    /// `n` before it are delivered and `cmds_cnt` says so, that one goes
    /// back to the head of the queue (`dev_user_get_cmd_to_user`).
    pub fault_at_cmd: Option<usize>,
    pub next_h: u32,
    /// What `may_have_work` answers.
    pub watch: Watch,
    /// `may_have_work` calls.
    pub watch_asks: usize,
}

/// What the fake kernel's `may_have_work` answers.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub enum Watch {
    /// Always "ask" (a driver without a watch).
    #[default]
    Absent,
    /// Whether a subcommand is queued.
    Truthful,
    /// "Nothing queued", whatever is (a wake-up that never came).
    Lost,
}

#[derive(Clone, Default)]
pub struct FakeKernel(Arc<Mutex<KernelState>>);

impl FakeKernel {
    pub fn new(options: ScstUserOpt) -> Self {
        let k = FakeKernel::default();
        k.state().options = options;
        k
    }

    pub fn state(&self) -> MutexGuard<'_, KernelState> {
        self.0.lock().unwrap()
    }

    /// Queues a subcommand; returns its cmd_h.
    pub fn queue(&self, subcode: u32, fill: impl FnOnce(&mut ScstUserGetCmd)) -> u32 {
        let mut s = self.state();
        let cmd_h = s.next_h;
        s.next_h += 1;
        let mut cmd = ScstUserGetCmd {
            cmd_h,
            subcode,
            ..Default::default()
        };
        fill(&mut cmd);
        s.queue.push_back(cmd);
        cmd_h
    }

    pub fn exec(&self, sess_h: u64, cdb: &[u8], dir: u8, bufflen: i32, pbuf: u64) -> u32 {
        self.queue(subcode::EXEC, |c| {
            let mut e = ScstUserScsiCmdExec {
                sess_h,
                cdb_len: cdb.len() as u16,
                data_direction: dir,
                bufflen,
                data_len: i64::from(bufflen),
                alloc_len: if pbuf == 0 { bufflen } else { 0 },
                pbuf,
                queue_type: SCST_CMD_QUEUE_SIMPLE,
                ..Default::default()
            };
            e.cdb[..cdb.len()].copy_from_slice(cdb);
            c.set_exec_cmd(&e);
        })
    }

    pub fn calls(&self) -> Vec<Call> {
        self.state().calls.clone()
    }

    pub fn last_call(&self) -> Call {
        self.state().calls.last().cloned().unwrap()
    }

    pub fn awaiting(&self) -> usize {
        self.state().awaiting.len()
    }
}

impl ScstDriver for FakeKernel {
    fn register(&mut self, _desc: &ScstUserDevDesc) -> Result<(), Errno> {
        Ok(())
    }
    fn set_options(&mut self, opt: &ScstUserOpt) -> Result<(), Errno> {
        self.state().options = *opt;
        Ok(())
    }
    fn get_options(&mut self) -> Result<ScstUserOpt, Errno> {
        Ok(self.state().options)
    }

    fn reply_and_get_multi(
        &mut self,
        buf: &mut MultiBuf,
        replies: &[ScstUserReplyCmd],
    ) -> Result<(), Errno> {
        let mut s = self.state();
        let header = *buf.header();
        assert_eq!(header.replies_cnt as usize, replies.len());
        if !replies.is_empty() {
            assert_eq!(header.preplies, replies.as_ptr() as u64);
        }
        let asked = header.cmds_cnt as usize;
        assert!(asked <= buf.capacity());
        let mut call = Call {
            replies: Vec::new(),
            asked,
            delivered: 0,
            result: Ok(()),
        };
        if let Some(e) = s.fail_all {
            call.result = Err(e);
            s.calls.push(call);
            return Err(e);
        }
        for (i, r) in replies.iter().enumerate() {
            let refused = match s.refuse {
                Some((h, e)) if h == r.cmd_h => Some(e),
                _ => None,
            };
            let known = s.awaiting.get(&r.cmd_h).copied();
            let error = refused.or(match known {
                None => Some(Errno::ESRCH),
                Some(sub) if sub != r.subcode => Some(Errno::EINVAL),
                Some(_) => None,
            });
            if let Some(e) = error {
                if refused.is_some() {
                    s.refuse = None;
                    s.awaiting.remove(&r.cmd_h);
                }
                buf.header_mut().replies_done = i as i16;
                buf.header_mut().cmds_cnt = 0;
                call.result = Err(e);
                s.calls.push(call);
                return Err(e);
            }
            s.awaiting.remove(&r.cmd_h);
            call.replies.push(SeenReply {
                reply: *r,
                sense: read_sense(r),
            });
        }
        buf.header_mut().replies_done = replies.len() as i16;
        let mut n = asked.min(s.queue.len());
        let fault = s.fault_at_cmd.take().filter(|&at| at < n);
        if let Some(at) = fault {
            n = at;
            call.result = Err(Errno::EFAULT);
        }
        for i in 0..n {
            let cmd = s.queue.pop_front().unwrap();
            s.awaiting.insert(cmd.cmd_h, cmd.subcode);
            buf.cmds_mut()[i] = cmd;
        }
        buf.header_mut().cmds_cnt = n as i16;
        call.delivered = n;
        if n == 0 && fault.is_none() {
            call.result = Err(Errno::EAGAIN);
        }
        let result = call.result;
        s.calls.push(call);
        result
    }

    fn reply_cmd(&mut self, _reply: &ScstUserReplyCmd) -> Result<(), Errno> {
        Err(Errno::ENOSYS)
    }
    fn flush_cache(&mut self) -> Result<(), Errno> {
        Ok(())
    }
    fn capacity_changed(&mut self) -> Result<(), Errno> {
        Ok(())
    }
    fn prealloc_buffer(&mut self, _: u64, _: u32, _: bool) -> Result<u32, Errno> {
        Err(Errno::ENOSYS)
    }
    fn wait_fd(&self) -> Option<RawFd> {
        None
    }
    fn ioctls(&self) -> u64 {
        self.state().calls.len() as u64
    }
    fn may_have_work(&mut self, _now: u64, _interval: u64) -> bool {
        let mut s = self.state();
        s.watch_asks += 1;
        match s.watch {
            Watch::Absent => true,
            Watch::Truthful => !s.queue.is_empty(),
            Watch::Lost => false,
        }
    }
}

/// Copies the sense a reply points to, as the kernel does during the call.
pub fn read_sense(r: &ScstUserReplyCmd) -> Vec<u8> {
    let sense = match r.subcode {
        subcode::EXEC => r.exec_reply().sense(),
        subcode::PARSE if r.parse_reply().status != 0 => r.parse_reply().sense(),
        _ => return Vec::new(),
    };
    if sense.sense_len == 0 {
        return Vec::new();
    }
    assert_ne!(sense.psense_buffer, 0);
    // SAFETY: the device promises that psense_buffer names sense_len
    // readable bytes until the call carrying the reply returns; this is
    // exactly what the test checks (a dangling pointer would read garbage
    // or fault, and the bytes are compared with the expected sense).
    unsafe {
        std::slice::from_raw_parts(
            sense.psense_buffer as *const u8,
            usize::from(sense.sense_len),
        )
        .to_vec()
    }
}
