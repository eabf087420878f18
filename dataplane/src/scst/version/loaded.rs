//! The DEV_USER_VERSION in the memory of the loaded scst_user module, for a
//! module that was not loaded from the kernel's module directory (`insmod`
//! of an SCST build tree, as many SCST users run it): nothing records where
//! a loaded module's file was, but the string sits in the module's
//! read-only data.
//!
//! - `/sys/module/scst_user/sections/<name>` gives each section's load
//!   address (root only: others read 0). The `.rodata*` sections are
//!   scanned, each up to the next section's address (at most
//!   [`MAX_SECTION`]).
//! - `/proc/kcore` is the kernel's memory as an ELF64 core file (root only;
//!   absent without `CONFIG_PROC_KCORE`, refused under kernel lockdown):
//!   its `PT_LOAD` program headers map virtual addresses to file offsets.
//!
//! The ELF header and program headers are read by hand: two fixed-layout
//! records of which four fields are used, every offset checked; a parsing
//! crate would add a dependency for less code than its glue.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::miss::VersionMiss;
use super::module::scan_module;

/// Most bytes read for one section.
pub(super) const MAX_SECTION: u64 = 1 << 20;

/// `PT_LOAD`.
const PT_LOAD: u32 = 1;

/// Where the loaded module is looked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedModule {
    /// `/sys/module/scst_user/sections`.
    pub sections: PathBuf,
    /// `/proc/kcore`.
    pub kcore: PathBuf,
}

impl LoadedModule {
    /// The real machine's paths.
    pub fn system() -> Self {
        Self {
            sections: PathBuf::from("/sys/module/scst_user/sections"),
            kcore: PathBuf::from("/proc/kcore"),
        }
    }

    /// The distinct DEV_USER_VERSION candidates in the module's read-only
    /// data, in order of appearance.
    pub(super) fn scan(&self) -> Result<Vec<String>, VersionMiss> {
        let sections = read_sections(&self.sections)?;
        let kcore = File::open(&self.kcore).map_err(|error| VersionMiss::Unreadable {
            path: self.kcore.clone(),
            error,
        })?;
        let segments = load_segments(&kcore).map_err(|why| VersionMiss::BadKcore {
            path: self.kcore.clone(),
            why,
        })?;
        let mut found: Vec<String> = Vec::new();
        for (name, start, end) in rodata_ranges(&sections) {
            let Some(seg) = segments
                .iter()
                .find(|s| start >= s.vaddr && end <= s.vaddr.saturating_add(s.filesz))
            else {
                return Err(VersionMiss::BadKcore {
                    path: self.kcore.clone(),
                    why: format!("no PT_LOAD segment holds section {name} at {start:#x}"),
                });
            };
            let Some(at) = seg.offset.checked_add(start - seg.vaddr) else {
                return Err(VersionMiss::BadKcore {
                    path: self.kcore.clone(),
                    why: format!("section {name} maps past the end of the file"),
                });
            };
            let mut bytes = vec![0u8; (end - start) as usize];
            kcore
                .read_exact_at(&mut bytes, at)
                .map_err(|error| VersionMiss::Unreadable {
                    path: self.kcore.clone(),
                    error,
                })?;
            for c in scan_module(&bytes) {
                if !found.contains(&c) {
                    found.push(c);
                }
            }
        }
        Ok(found)
    }
}

/// Every section of the loaded module: (name, load address).
fn read_sections(dir: &Path) -> Result<Vec<(String, u64)>, VersionMiss> {
    let entries = std::fs::read_dir(dir).map_err(|_| VersionMiss::NotLoaded(dir.to_path_buf()))?;
    let mut sections = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(text) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        let text = text.trim();
        let hex = text.strip_prefix("0x").unwrap_or(text);
        if let Ok(addr) = u64::from_str_radix(hex, 16) {
            sections.push((name, addr));
        }
    }
    if !sections
        .iter()
        .any(|(n, a)| n.starts_with(".rodata") && *a != 0)
    {
        return Err(VersionMiss::NoSectionAddresses(dir.to_path_buf()));
    }
    Ok(sections)
}

/// The `.rodata*` sections as (name, start, end): each ends where the next
/// section (by address) starts, or [`MAX_SECTION`] after its start.
fn rodata_ranges(sections: &[(String, u64)]) -> Vec<(&str, u64, u64)> {
    let mut out = Vec::new();
    for (name, start) in sections {
        if !name.starts_with(".rodata") || *start == 0 {
            continue;
        }
        let next = sections
            .iter()
            .map(|(_, a)| *a)
            .filter(|a| a > start)
            .min()
            .unwrap_or(u64::MAX);
        let end = next.min(start.saturating_add(MAX_SECTION));
        out.push((name.as_str(), *start, end));
    }
    out
}

/// A `PT_LOAD` program header's mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Segment {
    vaddr: u64,
    offset: u64,
    filesz: u64,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap_or_default())
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or_default())
}

/// The `PT_LOAD` segments of a little-endian ELF64 file.
fn load_segments(file: &File) -> Result<Vec<Segment>, String> {
    let mut ehdr = [0u8; 64];
    file.read_exact_at(&mut ehdr, 0)
        .map_err(|e| format!("cannot read the ELF header: {e}"))?;
    if ehdr[..4] != *b"\x7fELF" || ehdr[4] != 2 || ehdr[5] != 1 {
        return Err("not a little-endian ELF64 file".into());
    }
    let phoff = u64_at(&ehdr, 32);
    let phentsize = u64::from(u16_at(&ehdr, 54));
    let phnum = u64::from(u16_at(&ehdr, 56));
    if phentsize < 56 || phnum == 0 || phnum > 4096 {
        return Err(format!(
            "implausible program headers ({phnum} of {phentsize} bytes)"
        ));
    }
    let mut table = vec![0u8; (phentsize * phnum) as usize];
    file.read_exact_at(&mut table, phoff)
        .map_err(|e| format!("cannot read the program headers: {e}"))?;
    let mut segments = Vec::new();
    for ph in table.chunks_exact(phentsize as usize) {
        if u32_at(ph, 0) == PT_LOAD {
            segments.push(Segment {
                offset: u64_at(ph, 8),
                vaddr: u64_at(ph, 16),
                filesz: u64_at(ph, 32),
            });
        }
    }
    Ok(segments)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_end_at_the_next_section() {
        let s = vec![
            (".text".to_string(), 0x1000),
            (".rodata".to_string(), 0x3000),
            (".rodata.str1.1".to_string(), 0x3400),
            (".data".to_string(), 0x5000),
            (".bss".to_string(), 0),
        ];
        assert_eq!(
            rodata_ranges(&s),
            [
                (".rodata", 0x3000, 0x3400),
                (".rodata.str1.1", 0x3400, 0x5000)
            ]
        );
        let last = vec![(".rodata".to_string(), 0x3000)];
        assert_eq!(
            rodata_ranges(&last),
            [(".rodata", 0x3000, 0x3000 + MAX_SECTION)]
        );
    }

    #[test]
    fn a_file_that_is_not_elf64_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kcore");
        std::fs::write(&path, [0u8; 200]).unwrap();
        let err = load_segments(&File::open(&path).unwrap()).unwrap_err();
        assert_eq!(err, "not a little-endian ELF64 file");
        std::fs::write(&path, b"\x7fELF").unwrap();
        assert!(load_segments(&File::open(&path).unwrap())
            .unwrap_err()
            .starts_with("cannot read the ELF header"));
    }
}
