//! `dataplane rpc`: one call on the control socket of `dataplane serve`
//! (JSON-RPC 2.0), its result printed as JSON (a string result, such as
//! `server_get_config`'s TOML, as it is).
//!
//! Parameters are `key=value` (a number, `true`/`false`, else a string) or
//! `key:=JSON` (any JSON value, e.g. `base_bdevs:='["a","b"]'` or
//! `name:='"0"'` for a name that looks like a number). A JSON-RPC error is
//! printed with its code and message, and the exit status is 1.

use std::io::Write as _;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use clap::Args;
use serde_json::{json, Map, Value};

use crate::args::parse_seconds;

/// Flags of `dataplane rpc`.
#[derive(Debug, Args)]
pub struct RpcArgs {
    /// The control socket of `dataplane serve`.
    #[arg(long, short, default_value = dataplane::serve::rpc::DEFAULT_SOCKET, value_name = "PATH")]
    socket: PathBuf,
    /// Seconds to wait for the answer.
    #[arg(long, default_value = "60", value_parser = parse_seconds, value_name = "SECS")]
    timeout: f64,
    /// The method, e.g. bdev_get_bdevs (rpc_get_methods lists them).
    method: String,
    /// Parameters: key=value (number, true/false or string) or key:=JSON.
    #[arg(value_name = "KEY=VALUE")]
    params: Vec<String>,
}

/// A `key=value` or `key:=JSON` argument as a named parameter.
fn parse_param(arg: &str) -> Result<(String, Value)> {
    let Some((key, value)) = arg.split_once('=') else {
        bail!("parameter {arg:?}: expected key=value or key:=JSON");
    };
    if let Some(key) = key.strip_suffix(':') {
        let value = serde_json::from_str(value)
            .with_context(|| format!("parameter {key}: {value:?} is not JSON"))?;
        return Ok((key.to_owned(), value));
    }
    if key.is_empty() {
        bail!("parameter {arg:?}: the key is empty");
    }
    let value = match value {
        "true" => json!(true),
        "false" => json!(false),
        v => match serde_json::from_str::<serde_json::Number>(v) {
            Ok(n) => Value::Number(n),
            Err(_) => Value::String(v.to_owned()),
        },
    };
    Ok((key.to_owned(), value))
}

/// The request line of `method` with `params`.
fn request(method: &str, params: &[String]) -> Result<Vec<u8>> {
    let mut map = Map::new();
    for arg in params {
        let (key, value) = parse_param(arg)?;
        if map.insert(key.clone(), value).is_some() {
            bail!("parameter {key} given twice");
        }
    }
    let mut request = json!({"jsonrpc": "2.0", "id": 1, "method": method});
    if !map.is_empty() {
        request["params"] = Value::Object(map);
    }
    let mut line = serde_json::to_vec(&request)?;
    line.push(b'\n');
    Ok(line)
}

/// Runs `dataplane rpc`.
pub fn run(args: RpcArgs) -> Result<ExitCode> {
    let line = request(&args.method, &args.params)?;
    let mut stream = UnixStream::connect(&args.socket).with_context(|| {
        format!(
            "connecting to {} (is dataplane serve running with --rpc-socket there?)",
            args.socket.display()
        )
    })?;
    stream.set_read_timeout(Some(Duration::from_secs_f64(args.timeout.max(0.001))))?;
    stream.write_all(&line).context("sending the request")?;
    let mut answers = serde_json::Deserializer::from_reader(&stream).into_iter::<Value>();
    let answer = match answers.next() {
        Some(Ok(v)) => v,
        Some(Err(e)) => bail!("reading the answer: {e}"),
        None => bail!("the server closed the connection without answering"),
    };
    if let Some(error) = answer.get("error") {
        let code = error.get("code").and_then(Value::as_i64).unwrap_or(0);
        let message = error.get("message").and_then(Value::as_str).unwrap_or("");
        eprintln!(
            "dataplane rpc: {} failed: {message} (code {code})",
            args.method
        );
        return Ok(ExitCode::FAILURE);
    }
    match answer.get("result") {
        Some(Value::String(text)) if text.ends_with('\n') => print!("{text}"),
        Some(Value::String(text)) => println!("{text}"),
        Some(result) => println!("{}", serde_json::to_string_pretty(result)?),
        None => bail!("the answer has neither result nor error: {answer}"),
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_take_their_types() {
        assert_eq!(parse_param("n=12").unwrap(), ("n".into(), json!(12)));
        assert_eq!(parse_param("f=1.5").unwrap(), ("f".into(), json!(1.5)));
        assert_eq!(parse_param("b=true").unwrap(), ("b".into(), json!(true)));
        assert_eq!(
            parse_param("s=64MiB").unwrap(),
            ("s".into(), json!("64MiB"))
        );
        assert_eq!(parse_param("e=").unwrap(), ("e".into(), json!("")));
        assert_eq!(
            parse_param("l:=[\"a\",\"b\"]").unwrap(),
            ("l".into(), json!(["a", "b"]))
        );
        assert_eq!(parse_param("q:=\"0\"").unwrap(), ("q".into(), json!("0")));
        for bad in ["novalue", "=x", "j:={"] {
            assert!(parse_param(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn requests_carry_params_only_when_given() {
        let v: Value = serde_json::from_slice(&request("m", &[]).unwrap()).unwrap();
        assert_eq!(v, json!({"jsonrpc": "2.0", "id": 1, "method": "m"}));
        let v: Value = serde_json::from_slice(&request("m", &["a=1".into()]).unwrap()).unwrap();
        assert_eq!(v["params"], json!({"a": 1}));
        assert!(request("m", &["a=1".into(), "a=2".into()]).is_err());
    }
}
