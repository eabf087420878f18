//! JSON-RPC 2.0 framing on a stream.
//!
//! Requests are read the way SPDK's server reads them: one JSON value after
//! another on the stream, with no length prefix and nothing required
//! between them (a streaming deserializer), so newline-delimited requests
//! work too. Each response is one JSON object followed by a newline.
//!
//! A request may be at most `max_message` bytes and must arrive whole
//! within the client timeout ([`MessageReader`]); past either the client
//! gets an error (or, for a timeout, is dropped) and the connection is
//! closed, since the stream cannot be resynchronised. So does a message
//! that is not JSON (`-32700`).
//!
//! Only single requests with named parameters (an object, or none) are
//! taken: a batch (array) is refused with `-32600`; positional parameters
//! with `-32602`. A request without `id` is a notification: it is carried
//! out and gets no response.

use std::cell::Cell;
use std::io::{self, Read};
use std::rc::Rc;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use super::error::{code, RpcError};

/// What [`MessageReader`] and the connection share: the bytes of the
/// current message and its deadline.
#[derive(Debug, Clone)]
pub(super) struct MessageBudget {
    bytes: Rc<Cell<usize>>,
    deadline: Rc<Cell<Instant>>,
    exceeded: Rc<Cell<bool>>,
    max_bytes: usize,
    timeout: Duration,
}

impl MessageBudget {
    /// A budget of `max_bytes` per message and `timeout` to send it.
    pub(super) fn new(max_bytes: usize, timeout: Duration) -> Self {
        Self {
            bytes: Rc::new(Cell::new(0)),
            deadline: Rc::new(Cell::new(Instant::now() + timeout)),
            exceeded: Rc::new(Cell::new(false)),
            max_bytes,
            timeout,
        }
    }

    /// Starts the next message: no bytes yet, the whole timeout ahead.
    pub(super) fn next_message(&self) {
        self.bytes.set(0);
        self.deadline.set(Instant::now() + self.timeout);
    }

    /// Whether the current message went over `max_bytes`.
    pub(super) fn exceeded(&self) -> bool {
        self.exceeded.get()
    }

    /// The most bytes a message may have.
    pub(super) fn max_bytes(&self) -> usize {
        self.max_bytes
    }
}

/// A reader that fails once the current message is over its byte budget
/// (`InvalidData`) or its deadline (`TimedOut`). Give it a buffered reader:
/// it counts what the parser consumes, not what the socket delivered.
#[derive(Debug)]
pub(super) struct MessageReader<R> {
    inner: R,
    budget: MessageBudget,
}

impl<R: Read> MessageReader<R> {
    pub(super) fn new(inner: R, budget: MessageBudget) -> Self {
        Self { inner, budget }
    }
}

impl<R: Read> Read for MessageReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let b = &self.budget;
        if Instant::now() >= b.deadline.get() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "request timed out"));
        }
        let room = b.max_bytes.saturating_sub(b.bytes.get());
        if room == 0 {
            b.exceeded.set(true);
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "request too large",
            ));
        }
        let len = buf.len().min(room);
        let n = self.inner.read(&mut buf[..len])?;
        b.bytes.set(b.bytes.get() + n);
        Ok(n)
    }
}

/// A request taken apart.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Request {
    /// `None`: a notification (no response).
    pub id: Option<Value>,
    pub method: String,
    /// Named parameters (`None` when absent or null).
    pub params: Option<Map<String, Value>>,
}

/// Takes a JSON value apart as a JSON-RPC 2.0 request; on error, the id to
/// answer with (null when it could not be read) and the error.
pub(super) fn parse_request(value: Value) -> Result<Request, (Value, RpcError)> {
    let invalid = |id: Value, message: &str| (id, RpcError::new(code::INVALID_REQUEST, message));
    let mut object = match value {
        Value::Object(o) => o,
        Value::Array(_) => {
            return Err(invalid(
                Value::Null,
                "batch requests are not supported; send one request object at a time",
            ))
        }
        _ => return Err(invalid(Value::Null, "a request must be a JSON object")),
    };
    let id = object.remove("id");
    let reply_id = id.clone().unwrap_or(Value::Null);
    match &id {
        None | Some(Value::Null | Value::Number(_) | Value::String(_)) => {}
        Some(_) => {
            return Err(invalid(
                Value::Null,
                "id: must be a string, a number or null",
            ))
        }
    }
    match object.remove("jsonrpc") {
        Some(Value::String(v)) if v == "2.0" => {}
        _ => return Err(invalid(reply_id, "jsonrpc: must be \"2.0\"")),
    }
    let method = match object.remove("method") {
        Some(Value::String(m)) => m,
        Some(_) => return Err(invalid(reply_id, "method: must be a string")),
        None => return Err(invalid(reply_id, "method: missing")),
    };
    let params = match object.remove("params") {
        None | Some(Value::Null) => None,
        Some(Value::Object(p)) => Some(p),
        Some(_) => return Err((
            reply_id,
            RpcError::param(
                "params",
                "must be an object of named parameters (positional parameters are not supported)",
            ),
        )),
    };
    if let Some(key) = object.keys().next() {
        return Err(invalid(reply_id, &format!("unknown member {key:?}")));
    }
    Ok(Request { id, method, params })
}

/// The response to request `id`: its result or its error, one line.
pub(super) fn response(id: Value, result: Result<Value, RpcError>) -> Vec<u8> {
    let body = match result {
        Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
        Err(e) => json!({
            "jsonrpc": "2.0",
            "id": id,
            "error": {"code": e.code, "message": e.message},
        }),
    };
    let mut line = serde_json::to_vec(&body).unwrap_or_default();
    line.push(b'\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Request, (Value, RpcError)> {
        parse_request(serde_json::from_str(text).unwrap())
    }

    #[test]
    fn requests_are_taken_apart() {
        let r = parse(r#"{"jsonrpc":"2.0","id":7,"method":"m","params":{"a":1}}"#).unwrap();
        assert_eq!(r.id, Some(json!(7)));
        assert_eq!(r.method, "m");
        assert_eq!(r.params.unwrap()["a"], 1);
        let n = parse(r#"{"jsonrpc":"2.0","method":"m"}"#).unwrap();
        assert_eq!((n.id, n.params), (None, None));
    }

    #[test]
    fn malformed_requests_name_the_member() {
        let cases = [
            (r#"[1]"#, code::INVALID_REQUEST, "batch requests"),
            (r#"3"#, code::INVALID_REQUEST, "must be a JSON object"),
            (r#"{"id":1,"method":"m"}"#, code::INVALID_REQUEST, "jsonrpc"),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":5}"#,
                code::INVALID_REQUEST,
                "method",
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"m","params":[1]}"#,
                code::INVALID_PARAMS,
                "params",
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"m","x":1}"#,
                code::INVALID_REQUEST,
                "\"x\"",
            ),
            (
                r#"{"jsonrpc":"2.0","id":[],"method":"m"}"#,
                code::INVALID_REQUEST,
                "id",
            ),
        ];
        for (text, want, needle) in cases {
            let (_, e) = parse(text).unwrap_err();
            assert_eq!(e.code, want, "{text}");
            assert!(e.message.contains(needle), "{text}: {}", e.message);
        }
        let (id, _) = parse(r#"{"jsonrpc":"1.0","id":"a","method":"m"}"#).unwrap_err();
        assert_eq!(id, json!("a"), "the id is kept once read");
    }

    #[test]
    fn the_reader_stops_at_the_budget() {
        let budget = MessageBudget::new(8, Duration::from_secs(60));
        let mut r = MessageReader::new(&b"0123456789"[..], budget.clone());
        let mut buf = [0u8; 16];
        assert_eq!(r.read(&mut buf).unwrap(), 8);
        let e = r.read(&mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(budget.exceeded());
        budget.next_message();
        assert_eq!(r.read(&mut buf).unwrap(), 2);
    }

    #[test]
    fn responses_are_one_line() {
        let ok = response(json!(1), Ok(json!({"a": 1})));
        assert_eq!(ok.iter().filter(|&&b| b == b'\n').count(), 1);
        let v: Value = serde_json::from_slice(&ok).unwrap();
        assert_eq!(v, json!({"jsonrpc":"2.0","id":1,"result":{"a":1}}));
        let err = response(Value::Null, Err(RpcError::new(-32601, "no")));
        let v: Value = serde_json::from_slice(&err).unwrap();
        assert_eq!(v["error"], json!({"code": -32601, "message": "no"}));
    }
}
