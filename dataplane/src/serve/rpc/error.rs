//! The errors of the control socket: [`RpcError`], the JSON-RPC error a
//! request gets back, and [`SocketError`], why the socket could not be
//! served.

use std::path::PathBuf;

/// Codes of the JSON-RPC 2.0 specification, and the negative errnos SPDK
/// answers with for the application's own errors.
pub mod code {
    /// The message is not JSON.
    pub const PARSE_ERROR: i64 = -32700;
    /// JSON, but not a JSON-RPC 2.0 request object (or too large).
    pub const INVALID_REQUEST: i64 = -32600;
    /// No such method.
    pub const METHOD_NOT_FOUND: i64 = -32601;
    /// A parameter is missing, unknown or of the wrong type or value.
    pub const INVALID_PARAMS: i64 = -32602;
    /// The server could not answer (its control loop stopped or is stuck).
    pub const INTERNAL_ERROR: i64 = -32603;
    /// `-ENODEV`: no bdev or device of that name.
    pub const NO_SUCH_DEVICE: i64 = -19;
    /// `-EEXIST`: a bdev of that name exists already.
    pub const EXISTS: i64 = -17;
    /// `-EBUSY`: the bdev is in use.
    pub const BUSY: i64 = -16;
    /// `-EINVAL`: the request is well formed but cannot be carried out
    /// (e.g. a bdev could not be made).
    pub const INVALID: i64 = -22;
}

/// A JSON-RPC error: a code from [`code`] and a message naming the
/// problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} (code {code})")]
pub struct RpcError {
    /// The JSON-RPC error code.
    pub code: i64,
    /// What went wrong, naming the parameter, bdev or device.
    pub message: String,
}

impl RpcError {
    /// An error of `code` saying `message`.
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// [`code::INVALID_PARAMS`] about parameter `param`: the message starts
    /// with its name.
    pub fn param(param: &str, problem: impl std::fmt::Display) -> Self {
        Self::new(code::INVALID_PARAMS, format!("{param}: {problem}"))
    }
}

/// Why the control socket could not be served.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// A server answers on the path already.
    #[error("{}: a server is already listening on this socket", path.display())]
    InUse {
        /// The socket path.
        path: PathBuf,
    },
    /// Something other than a socket is at the path (it is left alone).
    #[error("{}: exists and is not a socket; remove it or choose another --rpc-socket", path.display())]
    NotASocket {
        /// The path.
        path: PathBuf,
    },
    /// A system call on the path or its directory failed.
    #[error("{}: {what}: {error}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// Why it failed.
        error: std::io::Error,
    },
}
