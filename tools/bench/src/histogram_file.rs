//! Latency distributions in HdrHistogram's percentile-distribution text
//! format (`--histogram FILE`), and a parser for it.
//!
//! The format is the one HdrHistogram's `outputPercentileDistribution`
//! writes (Java, with 5 percentile ticks per half distance and values
//! scaled from nanoseconds to microseconds) and its standard plotter and
//! the usual scripts read: a header line, one row per percentile step
//! (`Value Percentile TotalCount 1/(1-Percentile)`, the last row, at 100 %,
//! without the last column), and a footer of `#[Mean ...]`, `#[Max ...]`,
//! `#[Buckets ...]` lines. Files from different runs (or tools) can be
//! plotted together. One leading `#` comment line states the unit and what
//! was measured; plotters skip `#` lines.
//!
//! Values are printed with as many decimals as the histogram has
//! significant digits (3): in microseconds that is every nanosecond the
//! histogram holds, so the file loses nothing the report shows.

use std::io::{self, Write};

use dataplane::latency::Latencies;

/// Percentile steps per halving of the distance to 100 % (HdrHistogram's
/// default).
pub const TICKS_PER_HALF_DISTANCE: u32 = 5;

/// Nanoseconds per printed unit (values are in microseconds).
pub const NS_PER_UNIT: f64 = 1000.0;

/// Writes `latencies` (nanoseconds) as a percentile distribution in
/// microseconds; `what` goes into the leading comment (e.g. the frontend
/// and workload).
pub fn write(latencies: &Latencies, what: &str, out: &mut impl Write) -> io::Result<()> {
    let h = latencies.histogram();
    let digits = usize::from(h.sigfig());
    let us = |ns: u64| ns as f64 / NS_PER_UNIT;
    writeln!(
        out,
        "# Values: end-to-end command latency in microseconds; {what}"
    )?;
    writeln!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    )?;
    if !h.is_empty() {
        let mut total = 0u64;
        for v in h.iter_quantiles(TICKS_PER_HALF_DISTANCE) {
            total += v.count_since_last_iteration();
            let q = v.quantile_iterated_to();
            let value = us(v.value_iterated_to());
            if q < 1.0 {
                writeln!(
                    out,
                    "{value:12.digits$} {q:2.12} {total:10} {:14.2}",
                    1.0 / (1.0 - q)
                )?;
            } else {
                writeln!(out, "{value:12.digits$} {q:2.12} {total:10}")?;
            }
        }
    }
    let (mean, stdev, max) = if h.is_empty() {
        (0.0, 0.0, 0.0)
    } else {
        (h.mean() / NS_PER_UNIT, h.stdev() / NS_PER_UNIT, us(h.max()))
    };
    writeln!(
        out,
        "#[Mean    = {mean:12.digits$}, StdDeviation   = {stdev:12.digits$}]"
    )?;
    writeln!(
        out,
        "#[Max     = {max:12.digits$}, Total count    = {:12}]",
        h.len()
    )?;
    writeln!(
        out,
        "#[Buckets = {:12}, SubBuckets     = {:12}]",
        h.buckets(),
        sub_bucket_count(h.sigfig())
    )
}

/// HdrHistogram's sub-bucket count for `sigfig` significant digits: the
/// power of two at or above 2 x 10^sigfig.
fn sub_bucket_count(sigfig: u8) -> u64 {
    (2 * 10u64.pow(u32::from(sigfig))).next_power_of_two()
}

/// One row of a percentile distribution.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Row {
    /// Latency at this percentile, microseconds.
    pub value: f64,
    /// Fraction of samples at or below `value` (0..=1).
    pub percentile: f64,
    /// Samples at or below `value`.
    pub total_count: u64,
}

/// A parsed percentile distribution file.
#[derive(Debug, Clone, PartialEq)]
pub struct Distribution {
    /// The rows, in file order.
    pub rows: Vec<Row>,
    /// `#[Mean = ...]`, microseconds.
    pub mean: f64,
    /// `StdDeviation = ...`, microseconds.
    pub stdev: f64,
    /// `#[Max = ...]`, microseconds.
    pub max: f64,
    /// `Total count = ...`.
    pub total_count: u64,
    /// `#[Buckets = ...]`.
    pub buckets: u64,
    /// `SubBuckets = ...`.
    pub sub_buckets: u64,
}

/// Why a percentile distribution does not parse.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ParseError {
    /// The header line is missing.
    #[error("no \"Value Percentile TotalCount 1/(1-Percentile)\" header")]
    NoHeader,
    /// A row or footer line is malformed.
    #[error("line {line}: {problem}")]
    Line {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        problem: String,
    },
    /// A footer entry is missing.
    #[error("no {0} in the footer")]
    Missing(&'static str),
}

impl Distribution {
    /// Parses the text [`write`] (or HdrHistogram) writes.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let mut header = false;
        let mut rows = Vec::new();
        let mut footer: [Option<f64>; 6] = [None; 6];
        const KEYS: [&str; 6] = [
            "Mean",
            "StdDeviation",
            "Max",
            "Total count",
            "Buckets",
            "SubBuckets",
        ];
        for (i, line) in text.lines().enumerate() {
            let bad = |problem: String| ParseError::Line {
                line: i + 1,
                problem,
            };
            let line = line.trim();
            if let Some(inner) = line.strip_prefix("#[") {
                let inner = inner
                    .strip_suffix(']')
                    .ok_or_else(|| bad("footer line without ']'".into()))?;
                for entry in inner.split(',') {
                    let (key, value) = entry
                        .split_once('=')
                        .ok_or_else(|| bad(format!("{entry:?} is not key = value")))?;
                    let key = key.trim();
                    let slot = KEYS
                        .iter()
                        .position(|k| *k == key)
                        .ok_or_else(|| bad(format!("unknown footer entry {key:?}")))?;
                    let value = value.trim();
                    footer[slot] = Some(
                        value
                            .parse()
                            .map_err(|_| bad(format!("{key} = {value:?} is not a number")))?,
                    );
                }
            } else if line.is_empty() || line.starts_with('#') {
                continue;
            } else if line.starts_with("Value") {
                header = true;
            } else if !header {
                return Err(ParseError::NoHeader);
            } else {
                let fields: Vec<&str> = line.split_whitespace().collect();
                if !(3..=4).contains(&fields.len()) {
                    return Err(bad(format!("{} fields, not 3 or 4", fields.len())));
                }
                let number = |s: &str| -> Result<f64, ParseError> {
                    s.parse().map_err(|_| bad(format!("{s:?} is not a number")))
                };
                rows.push(Row {
                    value: number(fields[0])?,
                    percentile: number(fields[1])?,
                    total_count: fields[2]
                        .parse()
                        .map_err(|_| bad(format!("{:?} is not a count", fields[2])))?,
                });
            }
        }
        if !header {
            return Err(ParseError::NoHeader);
        }
        let get = |i: usize| footer[i].ok_or(ParseError::Missing(KEYS[i]));
        Ok(Self {
            rows,
            mean: get(0)?,
            stdev: get(1)?,
            max: get(2)?,
            total_count: get(3)? as u64,
            buckets: get(4)? as u64,
            sub_buckets: get(5)? as u64,
        })
    }

    /// True if values, percentiles and counts never decrease row to row.
    pub fn is_monotone(&self) -> bool {
        self.rows.windows(2).all(|w| {
            w[0].value <= w[1].value
                && w[0].percentile <= w[1].percentile
                && w[0].total_count <= w[1].total_count
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(l: &Latencies) -> String {
        let mut out = Vec::new();
        write(l, "test", &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn writes_the_standard_layout_and_parses_back() {
        let mut l = Latencies::new();
        for ns in 1..=10_000u64 {
            l.record(ns * 100);
        }
        let t = text(&l);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("# Values: "), "{t}");
        assert_eq!(
            lines[1],
            "       Value     Percentile TotalCount 1/(1-Percentile)"
        );
        assert_eq!(lines[2], "");
        // The first row: the smallest value, at percentile 0 with its count.
        assert_eq!(
            lines[3],
            "       0.100 0.000000000000          1           1.00"
        );
        let d = Distribution::parse(&t).unwrap();
        assert!(d.is_monotone());
        assert!(d.rows.len() > 50, "{}", d.rows.len());
        let last = d.rows.last().unwrap();
        assert_eq!(last.percentile, 1.0);
        assert_eq!(last.total_count, 10_000);
        assert_eq!(d.total_count, 10_000);
        let s = l.summary();
        assert!((d.mean - s.mean / 1000.0).abs() < 0.001, "{d:?} {s:?}");
        assert_eq!(d.max, s.max as f64 / 1000.0);
        assert_eq!(last.value, d.max);
        assert_eq!(d.sub_buckets, 2048);
        assert_eq!(d.buckets, u64::from(l.histogram().buckets()));
        // The last row has no 1/(1-Percentile): it would be infinite.
        assert_eq!(
            t.lines().rev().nth(3).unwrap().split_whitespace().count(),
            3
        );
    }

    #[test]
    fn empty_histogram_has_header_and_footer() {
        let d = Distribution::parse(&text(&Latencies::new())).unwrap();
        assert!(d.rows.is_empty());
        assert_eq!((d.total_count, d.max, d.mean), (0, 0.0, 0.0));
    }

    #[test]
    fn malformed_text_is_refused_with_the_line() {
        assert_eq!(Distribution::parse("1 2 3 4"), Err(ParseError::NoHeader));
        let err = Distribution::parse("Value Percentile\n1.0 x 3 4\n").unwrap_err();
        assert!(err.to_string().starts_with("line 2: \"x\""), "{err}");
        let err = Distribution::parse("Value\n#[Mean = 1.0, StdDeviation = 0]\n").unwrap_err();
        assert_eq!(err, ParseError::Missing("Max"));
    }
}
