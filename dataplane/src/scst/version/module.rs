//! The scst_user module file: finding it (`modinfo`, else a walk of the
//! kernel's module directory), reading it (decompressing `.xz`, `.zst`
//! and `.gz` with the distributions' tools) and finding DEV_USER_VERSION
//! candidates in its image ([`scan_module`]).

use std::path::{Path, PathBuf};
use std::process::Command;

use super::header::is_sha1_hex;
use super::miss::VersionMiss;
use super::{DEV_USER_INTF_VER, MODULE_FILE_NAMES};

/// Characters of an SCST version name (`3.11.0-pre`, `3.10.0`, ...).
fn is_version_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'+' | b'~')
}

/// Longest version name considered when scanning backwards.
const MAX_VERSION_NAME: usize = 64;

/// Every distinct DEV_USER_VERSION candidate in a module image, in order of
/// appearance: a C string `<name><DEV_USER_INTF_VER><40 lowercase hex>`
/// followed by NUL, where `<name>` is the run of version characters before
/// the hash, from its first digit on. The SCST core's look-alike (another
/// middle hash) and strings that merely end with the hash do not match.
pub fn scan_module(bytes: &[u8]) -> Vec<String> {
    let needle = DEV_USER_INTF_VER.as_bytes();
    let mut out: Vec<String> = Vec::new();
    let mut from = 0;
    while let Some(pos) = find_bytes(&bytes[from..], needle) {
        let start = from + pos;
        from = start + 1;
        let after = start + needle.len();
        let Some(tail) = bytes.get(after..after + 41) else {
            continue;
        };
        if !is_sha1_hex(&tail[..40]) || tail[40] != 0 {
            continue;
        }
        let mut begin = start;
        while begin > 0 && start - begin < MAX_VERSION_NAME && is_version_char(bytes[begin - 1]) {
            begin -= 1;
        }
        let run = &bytes[begin..start];
        let Some(first_digit) = run.iter().position(u8::is_ascii_digit) else {
            continue;
        };
        let mut candidate = String::with_capacity(run.len() - first_digit + 80);
        for part in [&run[first_digit..], needle, &tail[..40]] {
            // All ASCII (checked above).
            candidate.extend(part.iter().map(|&b| char::from(b)));
        }
        if !out.contains(&candidate) {
            out.push(candidate);
        }
    }
    out
}

fn find_bytes(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// `modinfo -n scst_user`, trying `modinfo` on PATH then `/sbin` and
/// `/usr/sbin` (not on a normal user's PATH on Debian).
pub(super) fn modinfo_path() -> Result<PathBuf, VersionMiss> {
    let mut last = None;
    for program in ["modinfo", "/sbin/modinfo", "/usr/sbin/modinfo"] {
        match Command::new(program).args(["-n", "scst_user"]).output() {
            Ok(out) if out.status.success() => {
                let text = String::from_utf8_lossy(&out.stdout);
                let path = text.lines().next().unwrap_or("").trim();
                if path.is_empty() || path.starts_with('(') {
                    // "(builtin)": no file to scan.
                    return Err(VersionMiss::ModinfoNoFile(path.to_owned()));
                }
                let path = PathBuf::from(path);
                if path.is_file() {
                    return Ok(path);
                }
                return Err(VersionMiss::ModinfoFileMissing(path));
            }
            Ok(out) => {
                let stderr = String::from_utf8_lossy(&out.stderr);
                return Err(VersionMiss::ModinfoFailed(
                    stderr
                        .trim()
                        .lines()
                        .next()
                        .unwrap_or("no such module")
                        .to_owned(),
                ));
            }
            Err(error) => last = Some(VersionMiss::CannotRun { program, error }),
        }
    }
    Err(last.unwrap_or(VersionMiss::NoModinfo))
}

/// Collects [`MODULE_FILE_NAMES`] under `dir`, not following symlinks
/// (`build` and `source` point at whole kernel trees).
pub(super) fn walk_for_modules(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
    if depth > 8 {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        let path = entry.path();
        if kind.is_dir() {
            walk_for_modules(&path, depth + 1, out);
        } else if kind.is_file()
            && entry
                .file_name()
                .to_str()
                .is_some_and(|n| MODULE_FILE_NAMES.contains(&n))
        {
            out.push(path);
        }
    }
}

/// The module image: the file itself, or its decompressed content for
/// `.xz`, `.zst` and `.gz` (through the `xz`, `zstd` and `gzip` tools).
pub(super) fn read_module(path: &Path) -> Result<Vec<u8>, VersionMiss> {
    let tool: Option<(&'static str, &[&str], &'static str)> =
        match path.extension().and_then(|e| e.to_str()) {
            Some("xz") => Some(("xz", &["-dc"], "xz-utils")),
            Some("zst") => Some(("zstd", &["-dcq"], "zstd")),
            Some("gz") => Some(("gzip", &["-dc"], "gzip")),
            _ => None,
        };
    let Some((program, args, package)) = tool else {
        return std::fs::read(path).map_err(|error| VersionMiss::Unreadable {
            path: path.to_owned(),
            error,
        });
    };
    match Command::new(program).args(args).arg(path).output() {
        Ok(out) if out.status.success() => Ok(out.stdout),
        Ok(out) => Err(VersionMiss::Decompress {
            program,
            path: path.to_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        }),
        Err(error) => Err(VersionMiss::NoDecompressor {
            path: path.to_owned(),
            program,
            package,
            error,
        }),
    }
}
