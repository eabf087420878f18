//! One client connection, on its own thread: read a request, hand it to
//! the control loop, write the answer, until the client closes, times out,
//! or sends something that ends the stream (not JSON, too large).

use std::io::{BufReader, ErrorKind, Write};
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

use super::codec::{parse_request, response, MessageBudget, MessageReader};
use super::error::{code, RpcError};
use super::{Call, CallQueue};

/// Limits of one connection.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    pub max_message: usize,
    pub timeout: Duration,
    /// How long a request waits for the control loop's answer.
    pub answer_timeout: Duration,
}

/// Serves `stream` until it ends; requests go to `calls`.
pub(super) fn serve_client(stream: UnixStream, calls: &CallQueue, limits: Limits) {
    // A read blocks at most the timeout; the reader also enforces it for
    // the whole message.
    if stream.set_read_timeout(Some(limits.timeout)).is_err() {
        return;
    }
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut write_half = stream;
    let budget = MessageBudget::new(limits.max_message, limits.timeout);
    let reader = MessageReader::new(BufReader::new(read_half), budget.clone());
    let values = serde_json::Deserializer::from_reader(reader).into_iter::<Value>();
    for value in values {
        let reply = match value {
            Ok(value) => match parse_request(value) {
                Ok(request) => {
                    let result = ask(calls, request.method, request.params, limits);
                    request.id.map(|id| response(id, result))
                }
                Err((id, error)) => Some(response(id, Err(error))),
            },
            Err(e) => {
                if let Some(error) = stream_error(&e, &budget) {
                    let _ = write_half.write_all(&response(Value::Null, Err(error)));
                }
                return;
            }
        };
        if let Some(bytes) = reply {
            if write_half.write_all(&bytes).is_err() {
                return;
            }
        }
        budget.next_message();
    }
}

/// What to tell a client whose stream failed: nothing when it closed or
/// timed out, else why the connection is closed.
fn stream_error(e: &serde_json::Error, budget: &MessageBudget) -> Option<RpcError> {
    if budget.exceeded() {
        return Some(RpcError::new(
            code::INVALID_REQUEST,
            format!(
                "request larger than {} bytes; closing the connection",
                budget.max_bytes()
            ),
        ));
    }
    if e.is_io() || e.is_eof() {
        let kind = e.io_error_kind();
        let quiet = kind.is_none()
            || matches!(
                kind,
                Some(ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::UnexpectedEof)
            );
        return (!quiet).then(|| RpcError::new(code::PARSE_ERROR, format!("read failed: {e}")));
    }
    Some(RpcError::new(
        code::PARSE_ERROR,
        format!("not JSON: {e}; closing the connection"),
    ))
}

/// Hands a call to the control loop and waits for its answer.
fn ask(
    calls: &CallQueue,
    method: String,
    params: Option<serde_json::Map<String, Value>>,
    limits: Limits,
) -> Result<Value, RpcError> {
    let (reply, answer) = mpsc::sync_channel(1);
    let gone = || RpcError::new(code::INTERNAL_ERROR, "the server is shutting down");
    calls
        .send(Call {
            method,
            params,
            reply,
        })
        .map_err(|_| gone())?;
    match answer.recv_timeout(limits.answer_timeout) {
        Ok(result) => result,
        Err(mpsc::RecvTimeoutError::Disconnected) => Err(gone()),
        Err(mpsc::RecvTimeoutError::Timeout) => Err(RpcError::new(
            code::INTERNAL_ERROR,
            format!(
                "the control loop did not answer within {} s",
                limits.answer_timeout.as_secs()
            ),
        )),
    }
}
