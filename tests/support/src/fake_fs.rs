//! A fake of the kernel's control filesystems (configfs, sysfs, procfs,
//! `/dev`) for tests of the code that administers them.
//!
//! The machine is a temporary directory laid out like the real one
//! ([`dataplane::kernfs::Roots::under`]). The code under test reads that
//! tree directly, as it reads the real configfs and sysfs; every change it
//! makes goes through a [`FakeFs`], which
//! 1. fails it with an injected errno if the test asked for that
//!    ([`FakeFs::fail_on`]), else
//! 2. hands it to a [`Kernel`] model that changes the tree as the kernel
//!    would (default groups on `mkdir`, a disk when a LUN is linked, an
//!    errno where the kernel refuses; [`PlainTree`] just applies it), and
//! 3. records it in its log ([`FakeFs::log`]), with the outcome.

use std::io;
use std::path::{Path, PathBuf};

use dataplane::kernfs::{Fs, FsOp, RealFs};

/// The kernel's part: performs a change on the tree the way the kernel
/// would, or refuses it with the kernel's errno.
pub trait Kernel {
    /// Performs `op` (or refuses it).
    fn apply(&mut self, op: &FsOp) -> io::Result<()>;
}

/// No kernel behaviour: each change is made to the tree as the real
/// filesystem would make it.
#[derive(Debug, Default, Clone, Copy)]
pub struct PlainTree;

impl Kernel for PlainTree {
    fn apply(&mut self, op: &FsOp) -> io::Result<()> {
        RealFs.apply(op)
    }
}

/// An [`Fs`] that records every attempted change and lets a [`Kernel`]
/// model play the kernel's part.
///
/// Log entries name paths relative to the base given at construction (paths
/// outside it as they are): `mkdir <dir>`, `rmdir <dir>`, `write <file>
/// <value>`, `symlink <link> -> <target>`, `unlink <link>`, with ` FAILED`
/// appended when the change failed.
#[derive(Debug)]
pub struct FakeFs<K> {
    kernel: K,
    base: PathBuf,
    log: Vec<String>,
    fail_on: Option<(String, i32)>,
}

impl<K: Kernel> FakeFs<K> {
    /// A fake whose log names paths relative to `base`, with `kernel`
    /// playing the kernel's part.
    pub fn new(base: impl Into<PathBuf>, kernel: K) -> Self {
        Self {
            kernel,
            base: base.into(),
            log: Vec::new(),
            fail_on: None,
        }
    }

    /// The kernel model.
    pub fn kernel(&self) -> &K {
        &self.kernel
    }

    /// The kernel model, mutably (to change how it behaves mid-test).
    pub fn kernel_mut(&mut self) -> &mut K {
        &mut self.kernel
    }

    /// Every change attempted so far, in order (see the type's docs for the
    /// format).
    pub fn log(&self) -> &[String] {
        &self.log
    }

    /// Makes the change whose log entry (without ` FAILED`) is `entry` fail
    /// with `errno`, without reaching the kernel model.
    pub fn fail_on(&mut self, entry: impl Into<String>, errno: i32) {
        self.fail_on = Some((entry.into(), errno));
    }

    /// `op` as it appears in the log.
    pub fn describe(&self, op: &FsOp) -> String {
        match op {
            FsOp::Mkdir(p) => format!("mkdir {}", self.rel(p).display()),
            FsOp::Rmdir(p) => format!("rmdir {}", self.rel(p).display()),
            FsOp::Write { path, value } => format!("write {} {value}", self.rel(path).display()),
            FsOp::Symlink { target, link } => format!(
                "symlink {} -> {}",
                self.rel(link).display(),
                self.rel(target).display()
            ),
            FsOp::Unlink(p) => format!("unlink {}", self.rel(p).display()),
        }
    }

    fn rel<'a>(&self, p: &'a Path) -> &'a Path {
        p.strip_prefix(&self.base).unwrap_or(p)
    }
}

impl<K: Kernel> Fs for FakeFs<K> {
    fn apply(&mut self, op: &FsOp) -> io::Result<()> {
        let entry = self.describe(op);
        let injected = self
            .fail_on
            .as_ref()
            .filter(|(e, _)| *e == entry)
            .map(|(_, code)| *code);
        let result = match injected {
            Some(code) => Err(errno(code)),
            None => self.kernel.apply(op),
        };
        self.log.push(if result.is_ok() {
            entry
        } else {
            format!("{entry} FAILED")
        });
        result
    }
}

/// The OS error `code` (e.g. `libc::EINVAL`), as the kernel returns it.
pub fn errno(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

/// Visits every entry under `dir` (not `dir` itself) in sorted order,
/// depth first: `kind` is `d`, `f` or `l` (symlinks are not followed).
/// Nothing happens if `dir` cannot be read.
pub fn walk(dir: &Path, visit: &mut dyn FnMut(&Path, char)) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        let t = meta.file_type();
        if t.is_symlink() {
            visit(&p, 'l');
        } else if t.is_dir() {
            visit(&p, 'd');
            walk(&p, visit);
        } else {
            visit(&p, 'f');
        }
    }
}

/// Every path under `base` with its kind (`d docs`, `f docs/a.md`, ...),
/// for before/after comparisons.
pub fn snapshot(base: &Path) -> Vec<String> {
    let mut out = Vec::new();
    walk(base, &mut |p, kind| {
        let rel = p.strip_prefix(base).unwrap_or(p);
        out.push(format!("{kind} {}", rel.display()));
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Touches nothing; refuses every `rmdir` with EPERM, as configfs
    /// refuses to remove a default group.
    #[derive(Default)]
    struct NoRmdir {
        seen: usize,
    }

    const EPERM: i32 = 1;
    const EINVAL: i32 = 22;

    impl Kernel for NoRmdir {
        fn apply(&mut self, op: &FsOp) -> io::Result<()> {
            self.seen += 1;
            match op {
                FsOp::Rmdir(_) => Err(errno(EPERM)),
                _ => Ok(()),
            }
        }
    }

    #[test]
    fn every_change_is_logged_relative_to_the_base_with_its_outcome() {
        let base = Path::new("/fake");
        let mut fs = FakeFs::new(base, NoRmdir::default());
        fs.apply(&FsOp::Mkdir(base.join("d"))).unwrap();
        fs.apply(&FsOp::write(base.join("d/attr"), "1")).unwrap();
        fs.apply(&FsOp::Symlink {
            target: base.join("d"),
            link: base.join("l"),
        })
        .unwrap();
        fs.apply(&FsOp::Unlink(base.join("l"))).unwrap();
        fs.apply(&FsOp::write("/elsewhere/x", "v")).unwrap();
        let err = fs.apply(&FsOp::Rmdir(base.join("d"))).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(EPERM));
        assert_eq!(
            fs.log(),
            [
                "mkdir d",
                "write d/attr 1",
                "symlink l -> d",
                "unlink l",
                "write /elsewhere/x v",
                "rmdir d FAILED",
            ]
        );
        assert_eq!(fs.kernel().seen, 6);
    }

    #[test]
    fn injected_failures_never_reach_the_kernel_model() {
        let base = Path::new("/fake");
        let mut fs = FakeFs::new(base, NoRmdir::default());
        fs.fail_on("mkdir b", EINVAL);
        fs.apply(&FsOp::Mkdir(base.join("a"))).unwrap();
        let err = fs.apply(&FsOp::Mkdir(base.join("b"))).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(EINVAL));
        assert_eq!(fs.log(), ["mkdir a", "mkdir b FAILED"]);
        assert_eq!(fs.kernel().seen, 1);
        fs.kernel_mut().seen = 0;
        assert_eq!(fs.describe(&FsOp::Mkdir(base.join("b"))), "mkdir b");
    }

    #[test]
    fn a_missing_tree_walks_empty() {
        assert!(snapshot(Path::new("/nonexistent/fake/tree")).is_empty());
    }
}
