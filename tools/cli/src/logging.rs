//! Logs of the `dataplane` binary: `tracing` events written to stderr by
//! `tracing-subscriber`.
//!
//! - Level: `--log-level`, else `DATAPLANE_LOG`, else `info`; either in
//!   env-filter syntax (`debug`, `warn,dataplane::serve=debug`). A bare
//!   word that is not a level is refused (env-filter would read it as a
//!   target name and silence everything else).
//! - Format: `text` (the default) writes one human line per event,
//!   `<time> <LEVEL> <target>: <message>`, in colour only on a terminal;
//!   `json` writes one JSON object per line with `timestamp`, `level`,
//!   `target` and `message` at the top level.
//! - serve's events have the target `dataplane serve`, so their text lines
//!   read `... INFO dataplane serve: <message>` as before.
//!
//! Nothing on a reactor's per-command path logs: the events are the
//! control plane's (attach, detach, faults, netlink, start and stop).

use std::io::IsTerminal as _;
use std::sync::OnceLock;

use clap::ValueEnum;
use tracing_subscriber::filter::EnvFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{reload, Layer as _, Registry};

/// The environment variable read when `--log-level` is not given.
pub const LOG_ENV: &str = "DATAPLANE_LOG";

/// The level when neither `--log-level` nor `DATAPLANE_LOG` says one.
const DEFAULT_LEVEL: &str = "info";

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event (colour on a terminal).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    /// The level is not in env-filter syntax.
    #[error("{source_name} {spec:?}: not a log level or filter ({reason}); use error, warn, info, debug, trace, off, or directives such as \"info,dataplane::serve=debug\"")]
    Filter {
        /// `--log-level` or `DATAPLANE_LOG`.
        source_name: &'static str,
        /// What was given.
        spec: String,
        /// Why it does not parse.
        reason: String,
    },
    /// A subscriber was installed already.
    #[error("cannot install the log subscriber: {0}")]
    Install(String),
    /// The level could not be changed.
    #[error("cannot change the log level: {0}")]
    Reload(String),
}

/// Parses `spec` (from `source_name`) as an env-filter.
fn parse_filter(source_name: &'static str, spec: &str) -> Result<EnvFilter, LoggingError> {
    let error = |reason: String| LoggingError::Filter {
        source_name,
        spec: spec.to_owned(),
        reason,
    };
    let trimmed = spec.trim();
    let levels = ["error", "warn", "info", "debug", "trace", "off"];
    let bare_word = !trimmed.is_empty()
        && trimmed
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare_word && !levels.contains(&trimmed.to_ascii_lowercase().as_str()) {
        return Err(error("not a level".into()));
    }
    EnvFilter::builder()
        .parse(trimmed)
        .map_err(|e| error(e.to_string()))
}

/// The filter asked for: `--log-level`, else `DATAPLANE_LOG` (as `env`
/// gives it), else `info`.
pub fn choose_filter(flag: Option<&str>, env: Option<&str>) -> Result<EnvFilter, LoggingError> {
    match (flag, env) {
        (Some(spec), _) => parse_filter("--log-level", spec),
        (None, Some(spec)) if !spec.trim().is_empty() => parse_filter(LOG_ENV, spec),
        _ => parse_filter("default", DEFAULT_LEVEL),
    }
}

/// Changes the level of the installed subscriber (for a control socket).
#[derive(Debug, Clone)]
pub struct LogControl {
    handle: reload::Handle<EnvFilter, Registry>,
}

impl LogControl {
    /// Replaces the filter with `spec` (env-filter syntax).
    pub fn set_level(&self, spec: &str) -> Result<(), LoggingError> {
        let filter = parse_filter("level", spec)?;
        self.handle
            .reload(filter)
            .map_err(|e| LoggingError::Reload(e.to_string()))
    }
}

/// The subscriber's level control, once [`init`] installed it.
static CONTROL: OnceLock<LogControl> = OnceLock::new();

/// The level control of the installed subscriber, if [`init`] ran.
pub fn control() -> Option<&'static LogControl> {
    CONTROL.get()
}

/// The target of `dataplane serve`'s events.
pub const SERVE_TARGET: &str = "dataplane serve";

/// How serve logs one of the server's lines, which come without a level:
/// WARN for a line that reports something wrong (a warning, a fault, a
/// refusal, an error, something that cannot be done, a ring reset), INFO
/// otherwise: a heuristic on the text until the server's log callback
/// carries a level.
pub fn server_line_level(line: &str) -> tracing::Level {
    const WRONG: [&str; 10] = [
        "warning",
        "fault",
        "refus",
        "error",
        "cannot",
        "failed",
        "not ",
        "giving up",
        "resetting",
        "blocking",
    ];
    let lower = line.to_ascii_lowercase();
    if WRONG.iter().any(|w| lower.contains(w)) {
        tracing::Level::WARN
    } else {
        tracing::Level::INFO
    }
}

/// Logs one of serve's lines at the level [`server_line_level`] gives it.
pub fn serve_line(line: &str) {
    if server_line_level(line) == tracing::Level::WARN {
        tracing::warn!(target: SERVE_TARGET, "{line}");
    } else {
        tracing::info!(target: SERVE_TARGET, "{line}");
    }
}

/// Installs the subscriber for the whole process: `level` (the
/// `--log-level` flag) or `DATAPLANE_LOG` decides the filter, `format`
/// the lines, written to stderr.
pub fn init(level: Option<&str>, format: LogFormat) -> Result<LogControl, LoggingError> {
    let env = std::env::var(LOG_ENV).ok();
    let filter = choose_filter(level, env.as_deref())?;
    let (filter, handle) = reload::Layer::new(filter);
    let output = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(std::io::stderr)
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(output)
        .try_init()
        .map_err(|e| LoggingError::Install(e.to_string()))?;
    let control = LogControl { handle };
    let _ = CONTROL.set(control.clone());
    Ok(control)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_wins_over_the_environment_and_info_is_the_default() {
        let shown = |f: EnvFilter| f.to_string();
        assert_eq!(
            shown(choose_filter(Some("debug"), Some("warn")).unwrap()),
            "debug"
        );
        assert_eq!(shown(choose_filter(None, Some("warn")).unwrap()), "warn");
        assert_eq!(shown(choose_filter(None, None).unwrap()), "info");
        assert_eq!(shown(choose_filter(None, Some(" ")).unwrap()), "info");
        assert!(choose_filter(Some("info,dataplane::serve=trace"), None).is_ok());
    }

    #[test]
    fn lines_that_report_trouble_are_warnings() {
        for line in [
            "warning: RAM bdev memory not wholly on huge pages",
            "disk0 (uio0): ring fault: cmd_tail moved; recovering",
            "disk1: refused: block size 512 differs",
            "cannot write /x: denied",
            "some commands did not finish before the drain deadline",
            "disk0 (uio0): stale entries; blocking it and resetting its ring",
        ] {
            assert_eq!(server_line_level(line), tracing::Level::WARN, "{line}");
        }
        for line in [
            "listening to TCM-USER netlink events",
            "attached disk0 (uio0) on reactor 0",
            "all devices drained; exiting",
        ] {
            assert_eq!(server_line_level(line), tracing::Level::INFO, "{line}");
        }
    }

    #[test]
    fn bad_levels_are_named() {
        let e = choose_filter(Some("loud"), None).unwrap_err().to_string();
        assert!(
            e.starts_with("--log-level \"loud\": not a log level"),
            "{e}"
        );
        let e = choose_filter(None, Some("x=lots")).unwrap_err().to_string();
        assert!(
            e.starts_with("DATAPLANE_LOG \"x=lots\": not a log level"),
            "{e}"
        );
    }
}
