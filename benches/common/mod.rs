//! Shared by the bench files: the interleaved round harness, statistics and
//! the result files the plot script reads.
//!
//! Every bench binary runs two parts:
//!
//! 1. The round harness (the headline figures). For each case it runs
//!    `rounds` rounds; in each round every comparator does the same fixed
//!    amount of work once, in an order that rotates from round to round
//!    (A B C, B C A, C A B, ...), so slow phases of a noisy machine hit all of
//!    them alike. Per round it computes the ratio ours / comparator; the
//!    headline is the median of those per-round ratios, with the min-max
//!    spread.
//! 2. Criterion groups for the same closures (per-comparator times with
//!    confidence intervals). They are not interleaved, so ratios are taken
//!    from part 1.
//!
//! Environment:
//! - `BENCH_ROUNDS` (default 7): rounds of the harness.
//! - `BENCH_QUICK=1`: smaller counts, for development.
//! - `BENCH_SKIP_CRITERION=1`: only the round harness.
//! - `BENCH_SKIP_ROUNDS=1`: only the criterion groups.
//! - `BENCH_RESULTS_DIR`: where the JSON results go (default
//!   `target/bench-results` under the crate).

#![allow(dead_code)]

pub mod echo;

use std::fmt::Write as _;
use std::time::Duration;

/// Settings read from the environment.
#[derive(Debug, Clone)]
pub struct Settings {
    pub rounds: usize,
    pub quick: bool,
    pub criterion: bool,
    pub harness: bool,
}

impl Settings {
    pub fn from_env() -> Settings {
        let flag = |k: &str| std::env::var(k).is_ok_and(|v| v != "0" && !v.is_empty());
        let rounds = std::env::var("BENCH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(7usize);
        Settings {
            rounds: rounds.max(1),
            quick: flag("BENCH_QUICK"),
            criterion: !flag("BENCH_SKIP_CRITERION"),
            harness: !flag("BENCH_SKIP_ROUNDS"),
        }
    }

    /// `full` normally, `quick` with `BENCH_QUICK=1`.
    pub fn pick<T>(&self, full: T, quick: T) -> T {
        if self.quick {
            quick
        } else {
            full
        }
    }
}

/// True when cargo asked the binary to run benchmarks (`cargo bench`), as
/// opposed to `cargo test --benches`, which passes no `--bench`.
pub fn benchmarking() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// What one comparator measured in one round.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// The figure compared: higher is better for rates, lower for times.
    pub value: f64,
}

/// Whether a higher figure is better (a rate) or a lower one (a time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    Higher,
    Lower,
}

/// One case (e.g. "W1 2 producers"): the per-round figures of each comparator.
#[derive(Debug, Clone)]
pub struct Case {
    pub workload: String,
    pub case: String,
    pub unit: String,
    pub better: Better,
    /// Comparator names; the first is ours.
    pub names: Vec<String>,
    /// values[c][r]: comparator c in round r.
    pub values: Vec<Vec<f64>>,
}

pub fn median(v: &[f64]) -> f64 {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return f64::NAN;
    }
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn min_max(v: &[f64]) -> (f64, f64) {
    v.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| (lo.min(x), hi.max(x)))
}

impl Case {
    pub fn new(workload: &str, case: &str, unit: &str, better: Better, names: &[&str]) -> Case {
        Case {
            workload: workload.into(),
            case: case.into(),
            unit: unit.into(),
            better,
            names: names.iter().map(|s| s.to_string()).collect(),
            values: vec![Vec::new(); names.len()],
        }
    }

    /// Ratio of ours to comparator `c` in each round, oriented so that
    /// > 1 means ours is better (rate: ours / theirs; time: theirs / ours).
    pub fn ratios(&self, c: usize) -> Vec<f64> {
        self.values[0]
            .iter()
            .zip(&self.values[c])
            .map(|(&o, &t)| match self.better {
                Better::Higher => o / t,
                Better::Lower => t / o,
            })
            .collect()
    }

    /// Runs `rounds` rounds, each comparator once per round in rotating
    /// order. `run(c)` performs comparator `c`'s fixed work and returns its figure.
    pub fn run_rounds(&mut self, rounds: usize, mut run: impl FnMut(usize) -> f64) {
        let n = self.names.len();
        for r in 0..rounds {
            let mut got = vec![f64::NAN; n];
            for k in 0..n {
                let c = (r + k) % n;
                got[c] = run(c);
            }
            for (values, g) in self.values.iter_mut().zip(&got) {
                values.push(*g);
            }
            let line: Vec<String> =
                (0..n).map(|c| format!("{} {}", self.names[c], fmt_value(got[c], &self.unit))).collect();
            eprintln!("  [{} {}] round {}/{}: {}", self.workload, self.case, r + 1, rounds, line.join(", "));
        }
    }

    /// A markdown table: one row per comparator, with its median, the
    /// median ratio and the ratio's spread over the rounds.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let rounds = self.values[0].len();
        let _ = writeln!(
            s,
            "\n{} {} ({} rounds, median; ratio > 1 means ours is better)\n",
            self.workload, self.case, rounds
        );
        let _ = writeln!(
            s,
            "| comparator | median {} | min-max | ours vs it (median ratio) | ratio min-max |",
            self.unit
        );
        let _ = writeln!(s, "| --- | ---: | ---: | ---: | ---: |");
        for c in 0..self.names.len() {
            let (lo, hi) = min_max(&self.values[c]);
            let (ratio, spread) = if c == 0 {
                ("-".to_string(), "-".to_string())
            } else {
                let r = self.ratios(c);
                let (rlo, rhi) = min_max(&r);
                (format!("{:.2}x", median(&r)), format!("{rlo:.2}-{rhi:.2}"))
            };
            let _ = writeln!(
                s,
                "| {} | {} | {}-{} | {} | {} |",
                self.names[c],
                fmt_value(median(&self.values[c]), &self.unit),
                fmt_value(lo, &self.unit),
                fmt_value(hi, &self.unit),
                ratio,
                spread
            );
        }
        s
    }

    fn json(&self) -> String {
        let arr = |v: &[f64]| {
            let items: Vec<String> =
                v.iter().map(|x| if x.is_finite() { format!("{x}") } else { "null".into() }).collect();
            format!("[{}]", items.join(","))
        };
        let values: Vec<String> = self.values.iter().map(|v| arr(v)).collect();
        let names: Vec<String> = self.names.iter().map(|n| format!("{n:?}")).collect();
        format!(
            "{{\"workload\":{:?},\"case\":{:?},\"unit\":{:?},\"better\":{:?},\"names\":[{}],\"values\":[{}]}}",
            self.workload,
            self.case,
            self.unit,
            if self.better == Better::Higher { "higher" } else { "lower" },
            names.join(","),
            values.join(",")
        )
    }
}

pub fn fmt_value(v: f64, unit: &str) -> String {
    if !v.is_finite() {
        return "n/a".into();
    }
    match unit {
        "us" | "s" => format!("{v:.2}"),
        "ms" => format!("{v:.0}"),
        _ if v >= 1e6 => format!("{:.3}M", v / 1e6),
        _ if v >= 1e3 => format!("{:.1}k", v / 1e3),
        _ => format!("{v:.1}"),
    }
}

/// Prints the tables of `cases` and writes them to `<results>/<file>.json`
/// and `<results>/<file>.md`.
pub fn report(file: &str, cases: &[Case]) {
    let mut md = String::new();
    for c in cases {
        md.push_str(&c.table());
    }
    println!("{md}");
    let dir = std::env::var("BENCH_RESULTS_DIR")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/target/bench-results").to_string());
    if std::fs::create_dir_all(&dir).is_ok() {
        let json: Vec<String> = cases.iter().map(Case::json).collect();
        let _ = std::fs::write(format!("{dir}/{file}.json"), format!("[\n{}\n]\n", json.join(",\n")));
        let _ = std::fs::write(format!("{dir}/{file}.md"), md);
        eprintln!("results written to {dir}/{file}.json");
    }
}

/// Latency percentiles of a set of samples in nanoseconds, in microseconds.
pub fn percentiles_us(samples: &mut [u64], ps: &[f64]) -> Vec<f64> {
    samples.sort_unstable();
    ps.iter()
        .map(|p| {
            if samples.is_empty() {
                return f64::NAN;
            }
            let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
            samples[i] as f64 / 1000.0
        })
        .collect()
}

/// A criterion configuration short enough for a 2-core shared machine;
/// command-line options (`--warm-up-time`, `--measurement-time`, filters)
/// still override it.
pub fn criterion() -> criterion::Criterion {
    criterion::Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args()
}

/// Raises the soft limit on open files to the hard limit (W3 opens two
/// sockets per connection and per server).
#[cfg(not(unix))]
pub fn raise_fd_limit() -> u64 {
    0
}

/// Raises the soft limit on open files to the hard limit (W3 opens two
/// sockets per connection and per server).
#[cfg(unix)]
#[allow(clippy::unnecessary_cast)] // rlim_t is u64 on Linux, i64 on FreeBSD
pub fn raise_fd_limit() -> u64 {
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return 0;
        }
        if r.rlim_cur < r.rlim_max {
            let want = libc::rlimit { rlim_cur: r.rlim_max, rlim_max: r.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                return want.rlim_cur as u64;
            }
        }
        r.rlim_cur as u64
    }
}
