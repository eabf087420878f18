//! Small reads of configfs/sysfs attributes and links, as the kernel
//! prints them.

use std::path::Path;

use super::error::KernfsError;

/// Reads a small text file and trims surrounding whitespace.
pub fn read_trimmed(path: &Path) -> Result<String, KernfsError> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .map_err(|source| KernfsError::Read {
            path: path.to_path_buf(),
            source,
        })
}

/// Parses `0x`-prefixed hex or decimal, as sysfs and configfs print numbers.
/// `path` is where `text` was read, for the error.
pub fn parse_u64_auto(path: &Path, text: &str) -> Result<u64, KernfsError> {
    let parsed = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) if !hex.is_empty() => u64::from_str_radix(hex, 16).ok(),
        Some(_) => None,
        None => text.parse::<u64>().ok(),
    };
    parsed.ok_or_else(|| KernfsError::Parse {
        path: path.to_path_buf(),
        content: text.to_owned(),
        why: "expected a decimal or 0x-prefixed hexadecimal number",
    })
}

/// The last component of a symlink's target (`devices/disk0/handler` →
/// `disk0`); `None` if `link` is not a readable symlink or that component
/// is not UTF-8.
pub fn link_name(link: &Path) -> Option<String> {
    let target = std::fs::read_link(link).ok()?;
    target.file_name()?.to_str().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_parse_in_hex_and_decimal() {
        let p = Path::new("x");
        assert_eq!(parse_u64_auto(p, "0x1000").unwrap(), 4096);
        assert_eq!(parse_u64_auto(p, "0X10").unwrap(), 16);
        assert_eq!(parse_u64_auto(p, "4096").unwrap(), 4096);
        assert!(parse_u64_auto(p, "0x").is_err());
        assert!(parse_u64_auto(p, "").is_err());
        assert!(parse_u64_auto(p, "-1").is_err());
        assert_eq!(
            parse_u64_auto(p, "12 MiB").unwrap_err().to_string(),
            "x: cannot parse \"12 MiB\": expected a decimal or 0x-prefixed hexadecimal number"
        );
    }

    #[test]
    fn reads_trim_and_name_the_file() {
        let tmp = tempfile::TempDir::new().unwrap();
        let file = tmp.path().join("attr");
        std::fs::write(&file, "  1\n").unwrap();
        assert_eq!(read_trimmed(&file).unwrap(), "1");
        let missing = tmp.path().join("missing");
        let err = read_trimmed(&missing).unwrap_err();
        assert!(err.is_not_found());
        assert!(err
            .to_string()
            .starts_with(&format!("cannot read {}: ", missing.display())));

        std::os::unix::fs::symlink("../handlers/disk0", tmp.path().join("handler")).unwrap();
        assert_eq!(
            link_name(&tmp.path().join("handler")).as_deref(),
            Some("disk0")
        );
        assert_eq!(link_name(&file), None);
    }
}
