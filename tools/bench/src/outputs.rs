//! The files a run writes beside its report (`--histogram`, `--plot`):
//! named and opened before the run starts, so that a bad path is an error
//! at once rather than after minutes of benchmarking, and written once the
//! run has produced its [`RunTrace`]s.
//!
//! Naming: `--histogram FILE` is the file of the frontend the run asked
//! for. With `--compare`, each frontend gets its own file, named by putting
//! the frontend's name before the extension: `--histogram run.hgrm` writes
//! `run.tcmu.hgrm` and `run.scst.hgrm` (`run` → `run.tcmu`, `run.scst`).
//! The plot is always one file: with `--compare` it draws both frontends.

use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use crate::config::Frontend;
use crate::histogram_file;
use crate::plot::{self, PlotError};
use crate::report::BenchReport;
use crate::trace::RunTrace;

/// Why an output file cannot be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// The file cannot be created or written.
    #[error("{flag} {path}: {error}", path = path.display())]
    Io {
        /// The flag that named it.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        error: io::Error,
    },
    /// A plot must be an SVG file.
    #[error("--plot {path}: the plot is SVG: give a file name ending in .svg", path = path.display())]
    NotSvg {
        /// The name given.
        path: PathBuf,
    },
    /// Two outputs would be the same file.
    #[error("{path} is named by both --histogram and --plot", path = path.display())]
    Clash {
        /// The file.
        path: PathBuf,
    },
    /// The picture could not be drawn.
    #[error("--plot {path}: {error}", path = path.display())]
    Plot {
        /// The file.
        path: PathBuf,
        /// Why.
        error: PlotError,
    },
}

/// One output file, created (or opened, untouched) before the run and
/// written, from its start, after it.
#[derive(Debug)]
struct Output {
    flag: &'static str,
    path: PathBuf,
    file: File,
    /// True if the file did not exist before: removed if the run fails.
    created: bool,
}

impl Output {
    fn open(flag: &'static str, path: PathBuf) -> Result<Self, OutputError> {
        let io = |error| OutputError::Io {
            flag,
            path: path.clone(),
            error,
        };
        let created = !path.exists();
        // Not truncated yet: an existing file keeps its contents if the run
        // fails.
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        Ok(Self {
            flag,
            path,
            file,
            created,
        })
    }

    fn write(mut self, bytes: &[u8]) -> Result<PathBuf, OutputError> {
        let result = self
            .file
            .set_len(0)
            .and_then(|()| self.file.write_all(bytes))
            .and_then(|()| self.file.flush());
        match result {
            Ok(()) => Ok(self.path),
            Err(error) => Err(OutputError::Io {
                flag: self.flag,
                path: self.path,
                error,
            }),
        }
    }

    fn discard(self) {
        if self.created {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The histogram file of `frontend` for `--histogram path`: `path` itself
/// for a single run; with `compare`, the frontend's name before the
/// extension (see the module docs).
pub fn histogram_path(path: &Path, frontend: Frontend, compare: bool) -> PathBuf {
    if !compare {
        return path.to_path_buf();
    }
    let name = frontend.name();
    let mut file = path.file_stem().unwrap_or_default().to_os_string();
    file.push(".");
    file.push(name);
    if let Some(ext) = path.extension() {
        file.push(".");
        file.push(ext);
    }
    path.with_file_name(file)
}

/// The output files of one run, open until [`Outputs::write`] fills them
/// (or [`Outputs::discard`] removes those it created).
#[derive(Debug, Default)]
pub struct Outputs {
    histograms: Vec<Output>,
    plot: Option<Output>,
}

impl Outputs {
    /// Checks and creates the files named by `--histogram` and `--plot`
    /// for a run of `frontend` (and, with `compare`, the other one).
    pub fn open(
        histogram: Option<&Path>,
        plot: Option<&Path>,
        frontend: Frontend,
        compare: bool,
    ) -> Result<Self, OutputError> {
        let mut frontends = vec![frontend];
        if compare {
            frontends.push(frontend.other());
        }
        let histogram_paths: Vec<PathBuf> = histogram
            .map(|h| {
                frontends
                    .iter()
                    .map(|f| histogram_path(h, *f, compare))
                    .collect()
            })
            .unwrap_or_default();
        if let Some(p) = plot {
            let svg = p.extension().is_some_and(|e| e.eq_ignore_ascii_case("svg"));
            if !svg {
                return Err(OutputError::NotSvg { path: p.into() });
            }
            if let Some(clash) = histogram_paths.iter().find(|h| h.as_path() == p) {
                return Err(OutputError::Clash {
                    path: clash.clone(),
                });
            }
        }
        let mut outputs = Self::default();
        let opened = (|| {
            for path in histogram_paths {
                outputs.histograms.push(Output::open("--histogram", path)?);
            }
            if let Some(p) = plot {
                outputs.plot = Some(Output::open("--plot", p.into())?);
            }
            Ok(())
        })();
        match opened {
            Ok(()) => Ok(outputs),
            Err(e) => {
                outputs.discard();
                Err(e)
            }
        }
    }

    /// True if no file was asked for.
    pub fn is_empty(&self) -> bool {
        self.histograms.is_empty() && self.plot.is_none()
    }

    /// Writes the files from the run's `report` and `traces` (as
    /// [`crate::run_traced`] returns them, the same frontends in the same
    /// order); returns the paths written.
    pub fn write(
        self,
        report: &BenchReport,
        traces: &[RunTrace],
    ) -> Result<Vec<PathBuf>, OutputError> {
        let mut written = Vec::new();
        let workload = workload(report);
        for (output, trace) in self.histograms.into_iter().zip(traces) {
            let mut text = Vec::new();
            let what = format!("dataplane bench, frontend {}, {workload}", trace.frontend);
            histogram_file::write(&trace.latencies, &what, &mut text)
                .expect("writing to memory does not fail");
            written.push(output.write(&text)?);
        }
        if let Some(output) = self.plot {
            let title = format!("dataplane bench: {workload}");
            match plot::svg(traces, &title) {
                Ok(svg) => written.push(output.write(svg.as_bytes())?),
                Err(error) => {
                    let path = output.path.clone();
                    output.discard();
                    return Err(OutputError::Plot { path, error });
                }
            }
        }
        Ok(written)
    }

    /// Removes the files that did not exist before [`Outputs::open`] (for a
    /// run that failed).
    pub fn discard(self) {
        for output in self.histograms.into_iter().chain(self.plot) {
            output.discard();
        }
    }
}

/// The workload in a few words, for titles and comments.
fn workload(r: &BenchReport) -> String {
    format!(
        "{} {} QD {} x {} device{}, bdev {}, {:.1} s",
        r.rw,
        bytes(r.block_size),
        r.iodepth,
        r.devices,
        if r.devices == 1 { "" } else { "s" },
        r.bdev,
        r.runtime_s,
    )
}

/// A size as people write it: 4096 → "4 KiB", 1000 → "1000 B".
fn bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{} MiB", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{} KiB", n >> 10),
        n => format!("{n} B"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(bytes(4096), "4 KiB");
        assert_eq!(bytes(1 << 20), "1 MiB");
        assert_eq!(bytes(1000), "1000 B");
    }

    #[test]
    fn compare_names_one_file_per_frontend() {
        let p = Path::new("/tmp/x/run.hgrm");
        assert_eq!(histogram_path(p, Frontend::Tcmu, false), p);
        assert_eq!(
            histogram_path(p, Frontend::Scst, true),
            Path::new("/tmp/x/run.scst.hgrm")
        );
        assert_eq!(
            histogram_path(Path::new("run"), Frontend::Tcmu, true),
            Path::new("run.tcmu")
        );
    }

    #[test]
    fn bad_paths_are_refused_before_anything_runs() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no/such/dir/run.hgrm");
        let e = Outputs::open(Some(&missing), None, Frontend::Tcmu, false).unwrap_err();
        assert!(
            e.to_string()
                .starts_with(&format!("--histogram {}: ", missing.display())),
            "{e}"
        );
        let png = dir.path().join("plot.png");
        let e = Outputs::open(None, Some(&png), Frontend::Tcmu, false).unwrap_err();
        assert!(
            e.to_string().contains("give a file name ending in .svg"),
            "{e}"
        );
        assert!(!png.exists());
        let same = dir.path().join("same.svg");
        let e = Outputs::open(Some(&same), Some(&same), Frontend::Tcmu, false).unwrap_err();
        assert!(matches!(e, OutputError::Clash { .. }), "{e}");
        // A directory is no file: the histogram opened first is removed.
        let hgrm = dir.path().join("run.hgrm");
        let e = Outputs::open(Some(&hgrm), Some(dir.path()), Frontend::Tcmu, false);
        assert!(e.is_err());
        let e = Outputs::open(
            Some(&hgrm),
            Some(&dir.path().join("d.svg/x.svg")),
            Frontend::Tcmu,
            false,
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("--plot "), "{e}");
        assert!(
            !hgrm.exists(),
            "a file created for a refused run is removed"
        );
        // A file that existed keeps its contents when the run fails.
        std::fs::write(&hgrm, "older run").unwrap();
        Outputs::open(Some(&hgrm), None, Frontend::Tcmu, false)
            .unwrap()
            .discard();
        assert_eq!(std::fs::read_to_string(&hgrm).unwrap(), "older run");
        let both = Outputs::open(Some(&hgrm), None, Frontend::Tcmu, true).unwrap();
        for name in ["run.tcmu.hgrm", "run.scst.hgrm"] {
            assert!(
                dir.path().join(name).exists(),
                "{name} opened before the run"
            );
        }
        both.discard();
        for name in ["run.tcmu.hgrm", "run.scst.hgrm"] {
            assert!(!dir.path().join(name).exists(), "{name} removed");
        }
    }
}
