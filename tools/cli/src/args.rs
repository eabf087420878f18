//! Value parsers shared by the subcommands' arguments (clap `value_parser`s),
//! so that `--size` or `--timeout` read the same in every subcommand.

/// A size in bytes: digits with an optional unit (`512`, `4k`, `1GiB`); the
/// bdev crate's parser, whose error names the value.
pub use bdev::parse_size;

/// Longest wait a `--timeout` accepts: a day.
const MAX_SECONDS: f64 = 86_400.0;

/// A value that is not a number of seconds in range.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not a number of seconds between 0 and 86400")]
pub struct SecondsError(String);

/// A number of seconds from 0 to a day, fractions allowed.
pub fn parse_seconds(s: &str) -> Result<f64, SecondsError> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && (0.0..=MAX_SECONDS).contains(&v) => Ok(v),
        _ => Err(SecondsError(s.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_in_range_parse_and_others_are_named() {
        assert_eq!(parse_seconds("1.5").unwrap(), 1.5);
        assert_eq!(parse_seconds("0").unwrap(), 0.0);
        assert_eq!(parse_seconds("86400").unwrap(), 86_400.0);
        for bad in ["-1", "86401", "nan", "inf", "soon", ""] {
            let e = parse_seconds(bad).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("{bad:?} is not a number of seconds between 0 and 86400")
            );
        }
    }
}
