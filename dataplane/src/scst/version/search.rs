//! The DEV_USER_VERSION search: the configured string, else the loaded
//! module's memory, else the installed headers, else the module file (see
//! the module docs of
//! [`super`] for the order and why).

use std::fmt;
use std::path::{Path, PathBuf};

use super::header::version_from_headers;
use super::kernel_string::check_version_string;
use super::loaded::LoadedModule;
use super::miss::VersionMiss;
use super::module::{modinfo_path, read_module, scan_module, walk_for_modules};
use super::INCLUDE_DIRS;
use crate::scst::error::ScstError;

/// Where a DEV_USER_VERSION came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionSource {
    /// The device's configuration.
    Config,
    /// The installed SCST headers.
    Header {
        /// `scst_itf_ver.h`.
        itf_ver: PathBuf,
        /// `scst_const.h`.
        scst_const: PathBuf,
    },
    /// The scst_user module file.
    Module {
        /// The file scanned.
        path: PathBuf,
    },
    /// The loaded scst_user module's memory.
    Loaded {
        /// The kernel memory file read (`/proc/kcore`).
        kcore: PathBuf,
    },
}

impl fmt::Display for VersionSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VersionSource::Config => f.write_str("the configuration"),
            VersionSource::Header {
                itf_ver,
                scst_const,
            } => write!(f, "{} and {}", itf_ver.display(), scst_const.display()),
            VersionSource::Module { path } => write!(f, "module file {}", path.display()),
            VersionSource::Loaded { kcore } => write!(
                f,
                "the loaded scst_user module's memory (read through {})",
                kcore.display()
            ),
        }
    }
}

/// Where [`VersionSearch::find`] looks. [`VersionSearch::system`] is the
/// real machine; tests point it at temporary files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionSearch {
    /// Directories holding `scst_itf_ver.h` and `scst_const.h`, in order.
    pub include_dirs: Vec<PathBuf>,
    /// Module files to scan; when empty they are discovered (modinfo, then
    /// `modules_dir`).
    pub module_files: Vec<PathBuf>,
    /// `/lib/modules/<release>`, searched (without following symlinks) for
    /// [`MODULE_FILE_NAMES`](super::MODULE_FILE_NAMES).
    pub modules_dir: Option<PathBuf>,
    /// Ask `modinfo -n scst_user` first.
    pub use_modinfo: bool,
    /// The loaded module, read first when given (what the kernel runs, even
    /// if installed headers or module files are of another build).
    pub loaded: Option<LoadedModule>,
}

impl VersionSearch {
    /// The real machine: [`INCLUDE_DIRS`], modinfo, and
    /// `/lib/modules/<release from /proc/sys/kernel/osrelease>`.
    pub fn system() -> Self {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .ok()
            .map(|r| r.trim().to_owned())
            .filter(|r| !r.is_empty() && !r.contains('/'));
        Self {
            include_dirs: INCLUDE_DIRS.iter().map(PathBuf::from).collect(),
            module_files: Vec::new(),
            modules_dir: release.map(|r| Path::new("/lib/modules").join(r)),
            use_modinfo: true,
            loaded: Some(LoadedModule::system()),
        }
    }

    /// The DEV_USER_VERSION and where it came from (see the module docs for
    /// the order). A configured string is used as given (after checking it
    /// fits the kernel buffer); found strings have the form
    /// `<name><40 hex><40 hex>`.
    pub fn find(&self, configured: Option<&str>) -> Result<(String, VersionSource), ScstError> {
        if let Some(version) = configured {
            check_version_string(version).map_err(|why| ScstError::VersionUnusable {
                version: version.to_owned(),
                origin: VersionSource::Config.to_string(),
                why,
            })?;
            return Ok((version.to_owned(), VersionSource::Config));
        }
        let mut looked = Vec::new();
        if let Some(loaded) = &self.loaded {
            match loaded.scan() {
                Ok(mut found) if found.len() == 1 => {
                    let source = VersionSource::Loaded {
                        kcore: loaded.kcore.clone(),
                    };
                    return Ok((found.remove(0), source));
                }
                Ok(found) if found.is_empty() => looked.push(VersionMiss::NotInLoadedModule),
                Ok(found) => {
                    return Err(ScstError::VersionAmbiguous {
                        path: loaded.kcore.clone(),
                        candidates: found,
                    })
                }
                Err(why) => looked.push(why),
            }
        }
        for dir in &self.include_dirs {
            let itf_ver = dir.join("scst_itf_ver.h");
            let scst_const = dir.join("scst_const.h");
            if !itf_ver.exists() {
                looked.push(VersionMiss::NoHeader(itf_ver));
                continue;
            }
            match read_header_version(&itf_ver, &scst_const) {
                Ok(version) => {
                    return Ok((
                        version,
                        VersionSource::Header {
                            itf_ver,
                            scst_const,
                        },
                    ))
                }
                Err(why) => looked.push(why),
            }
        }
        let files = self.module_candidates(&mut looked);
        let mut found: Vec<(PathBuf, String)> = Vec::new();
        for path in files {
            let bytes = match read_module(&path) {
                Ok(bytes) => bytes,
                Err(why) => {
                    looked.push(why);
                    continue;
                }
            };
            let candidates = scan_module(&bytes);
            if candidates.is_empty() {
                looked.push(VersionMiss::NoVersionString(path.clone()));
            }
            for c in candidates {
                if !found.iter().any(|(_, v)| *v == c) {
                    found.push((path.clone(), c));
                }
            }
        }
        match found.len() {
            0 => Err(ScstError::VersionNotFound { looked }),
            1 => {
                let (path, version) = found.remove(0);
                Ok((version, VersionSource::Module { path }))
            }
            _ => {
                let mut paths: Vec<String> = Vec::new();
                for (p, _) in &found {
                    let p = p.display().to_string();
                    if !paths.contains(&p) {
                        paths.push(p);
                    }
                }
                Err(ScstError::VersionAmbiguous {
                    path: PathBuf::from(paths.join(", ")),
                    candidates: found.into_iter().map(|(_, v)| v).collect(),
                })
            }
        }
    }

    /// The module files to scan, noting in `looked` what gave none.
    fn module_candidates(&self, looked: &mut Vec<VersionMiss>) -> Vec<PathBuf> {
        if !self.module_files.is_empty() {
            return self.module_files.clone();
        }
        if self.use_modinfo {
            match modinfo_path() {
                Ok(path) => return vec![path],
                Err(why) => looked.push(why),
            }
        }
        let Some(dir) = &self.modules_dir else {
            looked.push(VersionMiss::UnknownRelease);
            return Vec::new();
        };
        let mut files = Vec::new();
        walk_for_modules(dir, 0, &mut files);
        files.sort();
        if files.is_empty() {
            looked.push(VersionMiss::NoModule(dir.clone()));
        }
        files
    }
}

/// [`VersionSearch::system`]`.find(configured)`: the DEV_USER_VERSION to
/// register with, and where it came from.
pub fn find_dev_user_version(
    configured: Option<&str>,
) -> Result<(String, VersionSource), ScstError> {
    VersionSearch::system().find(configured)
}

/// The DEV_USER_VERSION of the headers at `itf_ver` and `scst_const`.
fn read_header_version(itf_ver: &Path, scst_const: &Path) -> Result<String, VersionMiss> {
    let read = |path: &Path| {
        std::fs::read_to_string(path).map_err(|error| VersionMiss::Unreadable {
            path: path.to_owned(),
            error,
        })
    };
    let itf_text = read(itf_ver)?;
    let const_text = read(scst_const)?;
    version_from_headers(&itf_text, &const_text).map_err(|error| VersionMiss::BadHeaders {
        itf_ver: itf_ver.to_owned(),
        scst_const: scst_const.to_owned(),
        error,
    })
}
