//! `dataplane bench --histogram FILE --plot FILE.svg`: the files of a short
//! run agree with its report, `--compare` writes one histogram per frontend
//! and draws both, and a bad path is refused before the run starts.

use std::path::Path;
use std::process::{Command, Output};

use bench::histogram_file::Distribution;

fn dataplane(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dataplane"))
        .args(args)
        .output()
        .expect("runs the dataplane binary")
}

/// A short RAM run with `extra` flags; returns its JSON report.
fn short_run(extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "bench",
        "--quiet",
        "--json",
        "--size",
        "64MiB",
        "--iodepth",
        "16",
        "--runtime",
        "0.3",
        "--ramp",
        "0",
    ];
    args.extend_from_slice(extra);
    let out = dataplane(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

fn distribution(path: &Path) -> Distribution {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{} was not written: {e}", path.display()));
    assert!(text.contains("Value     Percentile TotalCount 1/(1-Percentile)"));
    assert!(text.starts_with("# Values: end-to-end command latency in microseconds"));
    let d = Distribution::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(d.is_monotone(), "{d:?}");
    let last = d.rows.last().expect("rows");
    assert_eq!(last.percentile, 1.0);
    assert_eq!(last.total_count, d.total_count);
    assert_eq!(last.value, d.max);
    d
}

fn svg(path: &Path) -> String {
    let text = std::fs::read_to_string(path).expect("the plot was written");
    assert!(text.starts_with("<svg"), "{}", &text[..text.len().min(80)]);
    assert!(text.trim_end().ends_with("</svg>"));
    assert!(text.contains("Latency by percentile") && text.contains("IOPS"));
    text
}

#[test]
fn histogram_and_plot_agree_with_the_report() {
    let dir = tempfile::tempdir().unwrap();
    let hgrm = dir.path().join("run.hgrm");
    let plot = dir.path().join("run.svg");
    // An older, longer file is replaced whole.
    std::fs::write(&hgrm, "junk ".repeat(20_000)).unwrap();
    let report = short_run(&[
        "--histogram",
        hgrm.to_str().unwrap(),
        "--plot",
        plot.to_str().unwrap(),
    ]);
    let d = distribution(&hgrm);
    let ios = report["ios"].as_u64().unwrap();
    assert!(ios > 0);
    assert_eq!(d.total_count, ios, "every completion of the window");
    let latency = &report["latency_ns"];
    let us = |key: &str| latency[key].as_f64().unwrap() / 1000.0;
    assert_eq!(d.max, us("max"));
    assert!(
        (d.mean - us("mean")).abs() <= 0.001,
        "{} vs {}",
        d.mean,
        us("mean")
    );
    // The report's p50 is a row of the file or lies between two of them.
    let p50 = us("p50");
    assert!(d.rows.iter().any(|r| r.percentile >= 0.5 && r.value >= p50));
    assert!(d.rows[0].value <= p50);
    let text = svg(&plot);
    assert!(text.contains("tcmu") && !text.contains("scst"));
}

#[test]
fn compare_writes_one_histogram_per_frontend_and_draws_both() {
    let dir = tempfile::tempdir().unwrap();
    let hgrm = dir.path().join("cmp.hgrm");
    let plot = dir.path().join("cmp.svg");
    let report = short_run(&[
        "--frontend",
        "scst",
        "--compare",
        "--histogram",
        hgrm.to_str().unwrap(),
        "--plot",
        plot.to_str().unwrap(),
    ]);
    assert!(
        !hgrm.exists(),
        "with --compare the name gets the frontend's"
    );
    let scst = distribution(&dir.path().join("cmp.scst.hgrm"));
    let tcmu = distribution(&dir.path().join("cmp.tcmu.hgrm"));
    assert_eq!(report["frontend"], "scst");
    assert_eq!(scst.total_count, report["ios"].as_u64().unwrap());
    assert_eq!(
        scst.max,
        report["latency_ns"]["max"].as_f64().unwrap() / 1000.0
    );
    assert!(tcmu.total_count > 0);
    let text = svg(&plot);
    assert!(text.contains("tcmu") && text.contains("scst"));
}

#[test]
fn bad_output_paths_are_refused_before_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-dir/run.hgrm");
    let missing = missing.to_str().unwrap();
    let png = dir.path().join("plot.png");
    let png = png.to_str().unwrap();
    let cases: [(&[&str], String); 3] = [
        (
            &["--histogram", missing],
            format!("--histogram {missing}: No such file or directory"),
        ),
        (
            &["--plot", png],
            format!("--plot {png}: the plot is SVG: give a file name ending in .svg"),
        ),
        (
            &["--compare", "--histogram", missing],
            format!(
                "--histogram {}: No such file or directory",
                missing.replace("run.hgrm", "run.tcmu.hgrm")
            ),
        ),
    ];
    for (flags, message) in cases {
        // Not quiet, with a warm-up longer than a progress interval: a run
        // that had started would have printed a warm-up line.
        let mut args = vec!["bench", "--runtime", "0.2", "--ramp", "1.5"];
        args.extend_from_slice(flags);
        let out = dataplane(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flags:?} succeeded");
        assert!(stderr.contains(&message), "{flags:?}: {stderr}");
        assert!(
            !stderr.contains("warm-up") && !stderr.contains("panicked"),
            "{stderr}"
        );
        assert!(out.stdout.is_empty(), "{flags:?} printed a report");
    }
    assert!(!Path::new(png).exists());
}
