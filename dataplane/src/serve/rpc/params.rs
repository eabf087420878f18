//! Named parameters, taken one by one: each error names the parameter,
//! and [`Params::finish`] refuses the ones left over (unknown names).

use serde_json::{Map, Value};

use super::error::RpcError;

/// The parameters of one call.
#[derive(Debug)]
pub(super) struct Params {
    map: Map<String, Value>,
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn expected(key: &str, what: &str, got: &Value) -> RpcError {
    RpcError::param(key, format!("expected {what}, got {}", kind(got)))
}

impl Params {
    /// The parameters given (none: an empty set).
    pub(super) fn new(params: Option<Map<String, Value>>) -> Self {
        Self {
            map: params.unwrap_or_default(),
        }
    }

    fn take(&mut self, key: &str) -> Option<Value> {
        self.map.remove(key).filter(|v| !v.is_null())
    }

    fn required<T>(key: &str, v: Option<T>) -> Result<T, RpcError> {
        v.ok_or_else(|| RpcError::param(key, "missing"))
    }

    /// Every parameter left, for a method that hands them to a parser of
    /// its own (which names unknown keys and wrong types).
    pub(super) fn take_all(&mut self) -> Map<String, Value> {
        std::mem::take(&mut self.map)
    }

    /// An optional string.
    pub(super) fn opt_str(&mut self, key: &str) -> Result<Option<String>, RpcError> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(expected(key, "a string", &v)),
        }
    }

    /// A required string.
    pub(super) fn str(&mut self, key: &str) -> Result<String, RpcError> {
        let v = self.opt_str(key)?;
        Self::required(key, v)
    }

    /// An optional unsigned integer.
    pub(super) fn opt_u64(&mut self, key: &str) -> Result<Option<u64>, RpcError> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Number(n)) => n
                .as_u64()
                .map(Some)
                .ok_or_else(|| RpcError::param(key, format!("{n} is not an unsigned integer"))),
            Some(v) => Err(expected(key, "an unsigned integer", &v)),
        }
    }

    /// An optional unsigned 32-bit integer.
    pub(super) fn opt_u32(&mut self, key: &str) -> Result<Option<u32>, RpcError> {
        self.opt_u64(key)?
            .map(|n| {
                u32::try_from(n).map_err(|_| RpcError::param(key, format!("{n} is too large")))
            })
            .transpose()
    }

    /// An optional boolean.
    pub(super) fn opt_bool(&mut self, key: &str) -> Result<Option<bool>, RpcError> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(v) => Err(expected(key, "true or false", &v)),
        }
    }

    /// An optional byte count: an integer or a size string ("64MiB").
    pub(super) fn opt_size(&mut self, key: &str) -> Result<Option<u64>, RpcError> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::String(s)) => bdev::parse_size(&s)
                .map(Some)
                .map_err(|e| RpcError::param(key, e)),
            Some(Value::Number(n)) => n
                .as_u64()
                .map(Some)
                .ok_or_else(|| RpcError::param(key, format!("{n} is not a byte count"))),
            Some(v) => Err(expected(key, "a byte count (integer or \"64MiB\")", &v)),
        }
    }

    /// An optional object whose values are strings (none: empty).
    pub(super) fn opt_str_map(
        &mut self,
        key: &str,
    ) -> Result<std::collections::BTreeMap<String, String>, RpcError> {
        match self.take(key) {
            None => Ok(Default::default()),
            Some(Value::Object(items)) => items
                .into_iter()
                .map(|(k, v)| match v {
                    Value::String(s) => Ok((k, s)),
                    v => Err(expected(&format!("{key}.{k}"), "a string", &v)),
                })
                .collect(),
            Some(v) => Err(expected(key, "an object of strings", &v)),
        }
    }

    /// A required list of strings.
    pub(super) fn str_list(&mut self, key: &str) -> Result<Vec<String>, RpcError> {
        match self.take(key) {
            None => Err(RpcError::param(key, "missing")),
            Some(Value::Array(items)) => items
                .into_iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::String(s) => Ok(s),
                    v => Err(expected(&format!("{key}[{i}]"), "a string", &v)),
                })
                .collect(),
            Some(v) => Err(expected(key, "an array of strings", &v)),
        }
    }

    /// Refuses the parameters not taken: they are unknown to the method.
    pub(super) fn finish(self, method: &str) -> Result<(), RpcError> {
        match self.map.keys().next() {
            None => Ok(()),
            Some(key) => Err(RpcError::param(
                key,
                format!("unknown parameter of {method}"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::serve::rpc::error::code;

    fn params(v: Value) -> Params {
        let Value::Object(map) = v else {
            panic!("not an object")
        };
        Params::new(Some(map))
    }

    #[test]
    fn errors_name_the_parameter() {
        let mut p = params(json!({"a": "x", "b": -1, "c": [1], "d": "12 parsecs"}));
        let e = p.opt_u64("a").unwrap_err();
        assert_eq!(e.code, code::INVALID_PARAMS);
        assert_eq!(e.message, "a: expected an unsigned integer, got a string");
        assert_eq!(
            p.opt_u64("b").unwrap_err().message,
            "b: -1 is not an unsigned integer"
        );
        assert_eq!(
            p.str_list("c").unwrap_err().message,
            "c[0]: expected a string, got a number"
        );
        assert!(p.opt_size("d").unwrap_err().message.starts_with("d: "));
        assert_eq!(p.str("e").unwrap_err().message, "e: missing");
    }

    #[test]
    fn values_are_read_and_leftovers_refused() {
        let mut p = params(json!({"n": "name", "s": "4KiB", "k": 9, "x": true}));
        assert_eq!(p.str("n").unwrap(), "name");
        assert_eq!(p.opt_size("s").unwrap(), Some(4096));
        assert_eq!(p.opt_u32("k").unwrap(), Some(9));
        assert_eq!(p.opt_str("absent").unwrap(), None);
        let e = p.finish("m").unwrap_err();
        assert_eq!(e.message, "x: unknown parameter of m");
    }
}
