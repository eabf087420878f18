//! The simulator's settings and the `DEV_USER_VERSION` it is built with.

use std::time::Duration;

/// `DEV_USER_VERSION` of SCST 3.11.0-pre (master): `SCST_VERSION_NAME` +
/// sha1 of scst_user.h + sha1 of scst_const.h.
pub const DEV_USER_VERSION_3_11: &str =
    "3.11.0-pre230a30730ec749a9738ef33d6d17b1e6739bd195f03678ef2265294f64bc9fca39567ca80671f7d8";

/// The simulator's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScstSimConfig {
    /// The fd is opened with `O_NONBLOCK` (latched at REGISTER).
    pub nonblocking: bool,
    /// The `DEV_USER_VERSION` this "kernel" was built with.
    pub version: String,
    /// Budget of idle cached buffers (bytes); beyond it the oldest are
    /// evicted with ON_CACHED_MEM_FREE.
    pub sgv_cache_bytes: usize,
    /// Commands the initiator can have in flight (and as many internal
    /// commands of the core).
    pub max_cmds: usize,
    /// Largest data buffer one command may carry.
    pub max_transfer_bytes: usize,
    /// `DEV_USER_ATTACH_TIMEOUT`.
    pub attach_timeout: Duration,
    /// `SCST_SUSPEND_TIMEOUT_USER` (FLUSH_CACHE, SET_OPTIONS).
    pub suspend_timeout: Duration,
    /// How long a blocking REPLY_AND_GET_MULTI waits for work before it
    /// returns EINTR.
    pub blocking_wait: Duration,
    /// Target name in ATTACH_SESS.
    pub target_name: String,
    /// Largest internal WRITE the core issues for DO_WRITE_SAME.
    pub ws_max_write_bytes: usize,
}

impl Default for ScstSimConfig {
    fn default() -> Self {
        Self {
            nonblocking: true,
            version: DEV_USER_VERSION_3_11.to_string(),
            sgv_cache_bytes: 64 << 20,
            max_cmds: 1024,
            max_transfer_bytes: 8 << 20,
            attach_timeout: Duration::from_secs(5),
            suspend_timeout: Duration::from_secs(90),
            blocking_wait: Duration::from_secs(1),
            target_name: "scst_local_tgt".to_string(),
            ws_max_write_bytes: 1 << 20,
        }
    }
}
