//! Human-readable sizes for configuration and command lines.

use crate::Error;

/// Parses a size in bytes: a decimal integer, optionally followed by a binary
/// unit, case-insensitive: `k`/`KiB` (2^10), `M`/`MiB` (2^20), `G`/`GiB`
/// (2^30), `T`/`TiB` (2^40), `P`/`PiB` (2^50), or `B` (bytes). Surrounding
/// whitespace and whitespace between number and unit are allowed.
///
/// Examples: `4096`, `64k`, `512KiB`, `1M`, `1MiB`, `2G`, `1GiB`, `1T`.
///
/// Rejected, with [`Error::InvalidParameter`] naming the input: an empty
/// string, a missing, signed or fractional number, an unknown unit, the
/// decimal-looking units `kB`/`MB`/`GB`/`TB`/`PB` (ambiguous: 10^3 or 2^10?),
/// and values that overflow 64 bits. Zero is a valid size here; whoever uses
/// the value checks its range.
pub fn parse_size(input: &str) -> Result<u64, Error> {
    let invalid = |why: &str| Error::InvalidParameter(format!("size {input:?}: {why}"));
    let s = input.trim();
    let digits_end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(digits_end);
    if number.is_empty() {
        return Err(invalid(
            "expected a decimal number of bytes, optionally with a unit (k, M, G, T, KiB, MiB, ...)",
        ));
    }
    let unit = unit.trim_start();
    if unit.starts_with(['.', ',']) {
        return Err(invalid(
            "fractional sizes are not supported; use a smaller unit",
        ));
    }
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kib" => 10,
        "m" | "mib" => 20,
        "g" | "gib" => 30,
        "t" | "tib" => 40,
        "p" | "pib" => 50,
        "kb" | "mb" | "gb" | "tb" | "pb" => {
            return Err(invalid(&format!(
                "unit {unit:?} is ambiguous (decimal or binary?); use {} or {}iB",
                &unit[..1].to_ascii_uppercase(),
                &unit[..1].to_ascii_uppercase(),
            )))
        }
        _ => {
            return Err(invalid(&format!(
                "unknown unit {unit:?}; expected k, M, G, T, P or KiB, MiB, GiB, TiB, PiB"
            )))
        }
    };
    let value: u64 = number
        .parse()
        .map_err(|_| invalid("number does not fit in 64 bits"))?;
    value
        .checked_mul(1u64 << shift)
        .ok_or_else(|| invalid("size does not fit in 64 bits"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_bytes_and_binary_units() {
        let cases: [(&str, u64); 17] = [
            ("0", 0),
            ("4096", 4096),
            ("512B", 512),
            ("64k", 64 << 10),
            ("64K", 64 << 10),
            ("512KiB", 512 << 10),
            ("512kib", 512 << 10),
            ("1M", 1 << 20),
            ("1MiB", 1 << 20),
            ("3m", 3 << 20),
            ("2G", 2 << 30),
            ("1GiB", 1 << 30),
            ("1T", 1 << 40),
            ("7TiB", 7 << 40),
            ("1p", 1 << 50),
            (" 16 MiB ", 16 << 20),
            ("16383P", 16383 << 50),
        ];
        for (input, expected) in cases {
            assert_eq!(parse_size(input).unwrap(), expected, "{input}");
        }
    }

    fn message(input: &str) -> String {
        match parse_size(input) {
            Err(Error::InvalidParameter(msg)) => msg,
            other => panic!("{input:?}: expected InvalidParameter, got {other:?}"),
        }
    }

    #[test]
    fn rejects_junk_naming_the_input() {
        for input in ["", "  ", "k", "MiB", "-1", "+5", "abc"] {
            let msg = message(input);
            assert!(
                msg.starts_with(&format!("size {input:?}: expected a decimal number")),
                "{msg}"
            );
        }
        assert_eq!(
            message("1.5G"),
            "size \"1.5G\": fractional sizes are not supported; use a smaller unit"
        );
        assert_eq!(
            message("10MB"),
            "size \"10MB\": unit \"MB\" is ambiguous (decimal or binary?); use M or MiB"
        );
        assert_eq!(
            message("4kb"),
            "size \"4kb\": unit \"kb\" is ambiguous (decimal or binary?); use K or KiB"
        );
        assert!(message("12x").starts_with("size \"12x\": unknown unit \"x\""));
        assert!(message("1Mi").starts_with("size \"1Mi\": unknown unit \"Mi\""));
        assert!(message("0x10").starts_with("size \"0x10\": unknown unit \"x10\""));
        assert!(message("1 2").starts_with("size \"1 2\": unknown unit \"2\""));
        assert_eq!(
            message("18446744073709551616"),
            "size \"18446744073709551616\": number does not fit in 64 bits"
        );
        assert_eq!(
            message("16384P"),
            "size \"16384P\": size does not fit in 64 bits"
        );
    }
}
