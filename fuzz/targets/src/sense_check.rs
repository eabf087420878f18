//! Checks that a [`Response`] is well formed: status and sense agree, the
//! sense is fixed (18 bytes) or descriptor format (8 + additional length),
//! and a field pointer points inside the CDB or the parameter list.

use dataplane::exec::{status, Response};

/// Panics unless `response` to a command with a `cdb_len`-byte CDB and a
/// `param_len`-byte data buffer is well formed.
pub fn check_response(response: &Response, cdb_len: usize, param_len: usize) {
    match response.status {
        status::GOOD => assert_eq!(response.sense_len, 0, "{response:?}"),
        status::CHECK_CONDITION => {
            assert_eq!(response.data_in_len, 0, "{response:?}");
            check_sense(response.sense_bytes(), cdb_len, param_len);
        }
        status::BUSY | status::TASK_ABORTED | status::TASK_SET_FULL => {
            assert_eq!(response.sense_len, 0, "{response:?}")
        }
        other => panic!("unexpected status {other:#x}: {response:?}"),
    }
}

/// Panics unless `sense` is well-formed sense data whose field pointer (if
/// any) lies inside the CDB (`cdb_len` bytes) or the parameter list
/// (`param_len` bytes).
pub fn check_sense(sense: &[u8], cdb_len: usize, param_len: usize) {
    assert!(!sense.is_empty(), "CHECK CONDITION without sense");
    let (key, sks) = match sense[0] & 0x7F {
        0x70 => {
            assert_eq!(sense.len(), 18, "fixed sense {sense:02x?}");
            assert_eq!(sense[7], 10, "fixed sense additional length {sense:02x?}");
            (sense[2] & 0x0F, [sense[15], sense[16], sense[17]])
        }
        0x72 => {
            assert!(sense.len() >= 8, "descriptor sense {sense:02x?}");
            assert_eq!(sense.len(), 8 + usize::from(sense[7]), "{sense:02x?}");
            let mut sks = [0u8; 3];
            let mut at = 8;
            while at < sense.len() {
                assert!(at + 2 <= sense.len(), "truncated descriptor {sense:02x?}");
                let len = 2 + usize::from(sense[at + 1]);
                assert!(at + len <= sense.len(), "descriptor overruns {sense:02x?}");
                if sense[at] == 0x02 {
                    assert_eq!(len, 8, "sense key specific descriptor {sense:02x?}");
                    sks.copy_from_slice(&sense[at + 4..at + 7]);
                }
                at += len;
            }
            (sense[1] & 0x0F, sks)
        }
        _ => panic!("bad sense response code {sense:02x?}"),
    };
    assert!(key != 0, "CHECK CONDITION with NO SENSE {sense:02x?}");
    if sks[0] & 0x80 != 0 && key == 0x05 {
        // ILLEGAL REQUEST: a field pointer.
        let in_cdb = sks[0] & 0x40 != 0;
        let pointer = usize::from(u16::from_be_bytes([sks[1], sks[2]]));
        let limit = if in_cdb { cdb_len } else { param_len };
        assert!(
            pointer < limit,
            "field pointer {pointer} outside the {} ({limit} bytes): {sense:02x?}",
            if in_cdb { "CDB" } else { "parameter list" }
        );
    }
}
