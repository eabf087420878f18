//! [`ReplyQueue`]: the replies gathered for the next
//! REPLY_AND_GET_MULTI, with the storage their sense and remap descriptors
//! point into.
//!
//! Invariant: reply `i` points (through `psense_buffer` or
//! `remap_descriptors`) only into `payload[i]`, so the storage stays valid
//! until the ioctl carrying the reply returns; when consumed replies are
//! retired, the others move to the front with their payload and their
//! pointers are rewritten.

use crate::exec::{Response, SENSE_BUFFER_SIZE};
use crate::scst::abi::*;

/// Storage for the data a reply points to (sense, remap descriptor); one
/// per reply position, so it stays valid until the ioctl carrying the reply
/// returns.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
struct ReplyPayload([u8; SENSE_BUFFER_SIZE]);

const _: () = assert!(SENSE_BUFFER_SIZE >= std::mem::size_of::<ScstUserExtCopyDataDescr>());

/// The replies queued for the next exchange.
pub(super) struct ReplyQueue {
    list: Vec<ScstUserReplyCmd>,
    payload: Box<[ReplyPayload]>,
    /// A queued reply lets a command (or the kernel) make progress only
    /// when it arrives: PARSE, ALLOC_MEM, sessions, task management.
    urgent: bool,
}

impl ReplyQueue {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            list: Vec::with_capacity(capacity),
            payload: vec![ReplyPayload([0; SENSE_BUFFER_SIZE]); capacity].into_boxed_slice(),
            urgent: false,
        }
    }

    pub(super) fn push(&mut self, reply: ScstUserReplyCmd) {
        if !matches!(
            reply.subcode,
            subcode::EXEC | subcode::ON_FREE_CMD | subcode::ON_CACHED_MEM_FREE
        ) {
            self.urgent = true;
        }
        self.list.push(reply);
    }

    pub(super) fn len(&self) -> usize {
        self.list.len()
    }

    /// The queued replies, in order (what the next exchange sends).
    pub(super) fn as_slice(&self) -> &[ScstUserReplyCmd] {
        &self.list
    }

    /// True if a queued reply is one a command or the kernel waits for.
    pub(super) fn is_urgent(&self) -> bool {
        self.urgent
    }

    /// Drops every queued reply (the device faulted: none can be sent).
    pub(super) fn clear(&mut self) {
        self.list.clear();
        self.urgent = false;
    }

    /// Copies `bytes` into the payload storage of the next reply; returns
    /// its address and the length stored.
    fn stage_payload(&mut self, bytes: &[u8]) -> (u64, usize) {
        let Some(store) = self.payload.get_mut(self.list.len()) else {
            return (0, 0); // beyond the preallocated capacity: no payload
        };
        let len = bytes.len().min(SENSE_BUFFER_SIZE);
        store.0[..len].copy_from_slice(&bytes[..len]);
        (store.0.as_ptr() as u64, len)
    }

    /// Stages `sense` as a reply's sense (`None` when empty or out of
    /// payload room: the status goes without sense then).
    fn stage_sense(&mut self, sense: &[u8]) -> Option<ReplySense> {
        if sense.is_empty() {
            return None;
        }
        let (psense_buffer, len) = self.stage_payload(sense);
        (len > 0).then(|| ReplySense {
            sense_len: len as u8,
            psense_buffer,
            ..Default::default()
        })
    }

    pub(super) fn push_result(&mut self, cmd_h: u32, subcode: u32, result: i32) {
        let mut reply = ScstUserReplyCmd {
            cmd_h,
            subcode,
            ..Default::default()
        };
        reply.set_result(&result);
        self.push(reply);
    }

    pub(super) fn push_alloc(&mut self, cmd_h: u32, pbuf: u64) {
        let mut reply = ScstUserReplyCmd {
            cmd_h,
            subcode: subcode::ALLOC_MEM,
            ..Default::default()
        };
        reply.set_alloc_reply(&ScstUserScsiCmdReplyAllocMem { pbuf });
        self.push(reply);
    }

    pub(super) fn push_exec(
        &mut self,
        cmd_h: u32,
        resp_data_len: i32,
        pbuf: u64,
        status: u8,
        sense: &[u8],
    ) {
        let mut exec = ScstUserScsiCmdReplyExec {
            resp_data_len,
            pbuf,
            reply_type: SCST_EXEC_REPLY_COMPLETED,
            status,
            ..Default::default()
        };
        if let Some(sense) = self.stage_sense(sense) {
            exec.set_sense(&sense);
        }
        let mut reply = ScstUserReplyCmd {
            cmd_h,
            subcode: subcode::EXEC,
            ..Default::default()
        };
        reply.set_exec_reply(&exec);
        self.push(reply);
    }

    pub(super) fn push_parse_ok(&mut self, cmd_h: u32, result: &ParseResult) {
        let mut parse = ScstUserScsiCmdReplyParse::default();
        parse.set_result(result);
        let mut reply = ScstUserReplyCmd {
            cmd_h,
            subcode: subcode::PARSE,
            ..Default::default()
        };
        reply.set_parse_reply(&parse);
        self.push(reply);
    }

    pub(super) fn push_parse_error(&mut self, cmd_h: u32, response: &Response) {
        let mut parse = ScstUserScsiCmdReplyParse {
            status: response.status,
            ..Default::default()
        };
        if let Some(sense) = self.stage_sense(response.sense_bytes()) {
            parse.set_sense(&sense);
        }
        let mut reply = ScstUserReplyCmd {
            cmd_h,
            subcode: subcode::PARSE,
            ..Default::default()
        };
        reply.set_parse_reply(&parse);
        self.push(reply);
    }

    pub(super) fn push_identity_remap(&mut self, cmd_h: u32, descr: &ScstUserExtCopyDataDescr) {
        // The descriptor as the kernel lays it out: src_lba, dst_lba,
        // data_len, 4 bytes of padding.
        let mut bytes = [0u8; std::mem::size_of::<ScstUserExtCopyDataDescr>()];
        bytes[0..8].copy_from_slice(&descr.src_lba.to_ne_bytes());
        bytes[8..16].copy_from_slice(&descr.dst_lba.to_ne_bytes());
        bytes[16..20].copy_from_slice(&descr.data_len.to_ne_bytes());
        let (remap_descriptors, len) = self.stage_payload(&bytes);
        let remap = ScstUserExtCopyReplyRemap {
            remap_descriptors,
            remap_descriptors_len: len as u16,
            ..Default::default()
        };
        let mut reply = ScstUserReplyCmd {
            cmd_h,
            subcode: subcode::EXT_COPY_REMAP,
            ..Default::default()
        };
        reply.set_remap_reply(&remap);
        self.push(reply);
    }

    /// Removes the first `consumed` replies, and the one after them too if
    /// `drop_next`; the rest move to the front, their payload with them.
    pub(super) fn retire(&mut self, consumed: usize, drop_next: bool) {
        let n = self.list.len();
        let start = (consumed + usize::from(drop_next)).min(n);
        if start == 0 {
            return;
        }
        for from in start..n {
            self.relocate(from, from - start);
        }
        self.list.truncate(n - start);
        self.urgent = self.urgent && !self.list.is_empty();
    }

    /// Moves reply `from` to position `to` (< `from`), with its payload.
    fn relocate(&mut self, from: usize, to: usize) {
        let mut reply = self.list[from];
        if let (Some(&src), true) = (self.payload.get(from), to < self.payload.len()) {
            let old = self.payload[from].0.as_ptr() as u64;
            self.payload[to] = src;
            let new = self.payload[to].0.as_ptr() as u64;
            let fix = |p: &mut u64| {
                if *p == old {
                    *p = new;
                }
            };
            match reply.subcode {
                subcode::EXEC => {
                    let mut exec = reply.exec_reply();
                    if exec.reply_type != SCST_EXEC_REPLY_DO_WRITE_SAME {
                        let mut sense = exec.sense();
                        fix(&mut sense.psense_buffer);
                        exec.set_sense(&sense);
                        reply.set_exec_reply(&exec);
                    }
                }
                subcode::PARSE => {
                    let mut parse = reply.parse_reply();
                    if parse.status != 0 {
                        let mut sense = parse.sense();
                        fix(&mut sense.psense_buffer);
                        parse.set_sense(&sense);
                        reply.set_parse_reply(&parse);
                    }
                }
                subcode::EXT_COPY_REMAP => {
                    let mut remap = reply.remap_reply();
                    fix(&mut remap.remap_descriptors);
                    fix(&mut remap.psense_buffer);
                    reply.set_remap_reply(&remap);
                }
                _ => {}
            }
        }
        self.list[to] = reply;
    }
}
