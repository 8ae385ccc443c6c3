//! Shared helpers of the benchmarks: statistics and result tables.

use std::time::Duration;

/// Median of a non-empty sample.
pub fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
