//! Timing helpers.

use std::time::{Duration, Instant};

/// The median of `runs` timings of `f`.
pub fn median_of(runs: usize, mut f: impl FnMut() -> Duration) -> Duration {
    let mut v: Vec<Duration> = (0..runs).map(|_| f()).collect();
    v.sort();
    v[v.len() / 2]
}

/// How long `f` takes.
pub fn time(f: impl FnOnce()) -> Duration {
    let start = Instant::now();
    f();
    start.elapsed()
}

/// Microseconds, for printing.
pub fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// `a / b`.
pub fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64()
}

/// The median of `runs` ratios `f() / baseline()`, each pair measured back to back: on a
/// machine shared with other work, a ratio of two measurements taken minutes apart says more
/// about the load than about the code.
pub fn paired_ratio(
    runs: usize,
    mut baseline: impl FnMut() -> Duration,
    mut f: impl FnMut() -> Duration,
) -> (f64, Duration) {
    let mut v: Vec<(f64, Duration)> = (0..runs)
        .map(|_| {
            let b = baseline();
            let t = f();
            (ratio(t, b), t)
        })
        .collect();
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    v[v.len() / 2]
}
