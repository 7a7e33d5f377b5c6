//! What one run measured: throughput, errors and the latency distribution, printed as text (a
//! percentile summary and a bucketed histogram) or as JSON.
//!
//! Latencies are recorded in microseconds into an HDR histogram with three significant digits.

use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// The largest latency recorded exactly; slower requests saturate at this value.
const MAX_MICROS: u64 = 3_600_000_000;

/// An empty latency histogram in microseconds.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("valid histogram bounds")
}

/// Records one latency.
pub fn record(histogram: &mut Histogram<u64>, latency: Duration) {
    let micros = u64::try_from(latency.as_micros()).unwrap_or(MAX_MICROS).max(1);
    histogram.saturating_record(micros);
}

/// Latency percentiles, in microseconds.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Percentiles {
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Slowest.
    pub max: u64,
    /// Arithmetic mean.
    pub mean: f64,
}

/// One bar of the bucketed histogram: the requests at most `upper_us` and above the previous
/// bucket's bound.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Bucket {
    /// Upper bound, in microseconds.
    pub upper_us: u64,
    /// Requests in the bucket.
    pub count: u64,
}

/// The outcome of one workload run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    /// The workload, as named on the command line.
    pub workload: String,
    /// Concurrent clients.
    pub clients: usize,
    /// gRPC connections they share.
    pub conns: usize,
    /// Operations that succeeded (for watch: events delivered).
    pub ops: u64,
    /// Operations that failed (for watch: events never delivered, and failed puts).
    pub errors: u64,
    /// A few error messages, for the reader.
    pub error_samples: Vec<String>,
    /// Wall-clock length of the measured phase, in seconds.
    pub elapsed_secs: f64,
    /// Successful operations per second.
    pub throughput: f64,
    /// Latency of the successful operations, in microseconds.
    pub latency_us: Percentiles,
    /// The bucketed histogram (powers of two from 64 µs).
    pub buckets: Vec<Bucket>,
}

impl Report {
    /// Summarizes a finished run.
    pub fn new(
        workload: &str,
        clients: usize,
        conns: usize,
        histogram: &Histogram<u64>,
        errors: u64,
        error_samples: Vec<String>,
        elapsed: Duration,
    ) -> Report {
        let ops = histogram.len();
        let elapsed_secs = elapsed.as_secs_f64();
        let latency_us = if ops == 0 {
            Percentiles::default()
        } else {
            Percentiles {
                p50: histogram.value_at_quantile(0.5),
                p90: histogram.value_at_quantile(0.9),
                p99: histogram.value_at_quantile(0.99),
                p999: histogram.value_at_quantile(0.999),
                max: histogram.max(),
                mean: histogram.mean(),
            }
        };
        Report {
            workload: workload.to_string(),
            clients,
            conns,
            ops,
            errors,
            error_samples,
            elapsed_secs,
            throughput: if elapsed_secs > 0.0 { ops as f64 / elapsed_secs } else { 0.0 },
            latency_us,
            buckets: buckets(histogram),
        }
    }

    /// The human-readable form.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let l = &self.latency_us;
        let _ = writeln!(out, "workload    {} ({} clients, {} connections)", self.workload, self.clients, self.conns);
        let _ = writeln!(out, "ops         {} in {:.2} s: {:.0} ops/s", self.ops, self.elapsed_secs, self.throughput);
        let _ = writeln!(out, "errors      {}", self.errors);
        for sample in &self.error_samples {
            let _ = writeln!(out, "            {sample}");
        }
        let _ = writeln!(
            out,
            "latency     p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  mean {}",
            micros(l.p50),
            micros(l.p90),
            micros(l.p99),
            micros(l.p999),
            micros(l.max),
            micros(l.mean as u64)
        );
        let widest = self.buckets.iter().map(|b| b.count).max().unwrap_or(0).max(1);
        for bucket in &self.buckets {
            let bar = "#".repeat(((bucket.count * 50).div_ceil(widest)) as usize);
            let _ = writeln!(out, "  <= {:>9}  {:>9}  {bar}", micros(bucket.upper_us), bucket.count);
        }
        out
    }
}

/// Powers of two from 64 µs up to the slowest request; empty leading buckets are left out.
fn buckets(histogram: &Histogram<u64>) -> Vec<Bucket> {
    let mut buckets = Vec::new();
    if histogram.is_empty() {
        return buckets;
    }
    let mut lower = 0;
    let mut upper = 64;
    loop {
        let count = histogram.count_between(lower + 1, upper);
        if count > 0 || !buckets.is_empty() {
            buckets.push(Bucket { upper_us: upper, count });
        }
        if upper >= histogram.max() {
            return buckets;
        }
        lower = upper;
        upper *= 2;
    }
}

/// A latency for people: µs below a millisecond, ms below a second, then s.
pub fn micros(us: u64) -> String {
    match us {
        0..1_000 => format!("{us}µs"),
        1_000..1_000_000 => format!("{:.2}ms", us as f64 / 1e3),
        _ => format!("{:.2}s", us as f64 / 1e6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_buckets_describe_the_recorded_latencies() {
        let mut histogram = new_histogram();
        for us in 1..=1000u64 {
            record(&mut histogram, Duration::from_micros(us * 10));
        }
        let report = Report::new("put", 4, 2, &histogram, 1, vec!["boom".into()], Duration::from_secs(2));
        assert_eq!(report.ops, 1000);
        assert_eq!(report.throughput, 500.0);
        let l = &report.latency_us;
        assert!((4990..=5010).contains(&l.p50), "p50 {}", l.p50);
        assert!((9890..=9910).contains(&l.p99), "p99 {}", l.p99);
        assert!((9995..=10010).contains(&l.max), "max {}", l.max);
        assert_eq!(report.buckets.iter().map(|b| b.count).sum::<u64>(), 1000);
        assert_eq!(report.buckets.first().map(|b| b.upper_us), Some(64));
        assert_eq!(report.buckets.last().map(|b| b.upper_us), Some(16384));
        let text = report.to_text();
        assert!(text.contains("p50 5.00ms"), "{text}");
        assert!(text.contains("boom"));
        let json: Report = serde_json::from_str(&serde_json::to_string(&report).unwrap()).unwrap();
        assert_eq!(json.latency_us.p99, l.p99);
    }

    #[test]
    fn an_empty_run_reports_zeroes() {
        let report = Report::new("get", 1, 1, &new_histogram(), 3, Vec::new(), Duration::from_secs(1));
        assert_eq!((report.ops, report.errors, report.latency_us.max), (0, 3, 0));
        assert!(report.buckets.is_empty());
    }
}
