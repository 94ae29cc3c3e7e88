//! Percentiles and the per-point summary of routebench.
//!
//! Pure arithmetic over finished request outcomes, after a point has run; never on a timed path.
//! A request that failed never produced a first token (or an end), so it counts as an infinite
//! latency: a percentile that falls on a failure is `None`, shown as "∞" in the report. That way
//! more than 1 % of failures makes TTFT p99 fail the SLO, as it should.

/// Nearest-rank percentile of `sorted` (ascending, `None` = infinite, sorted last): the value at
/// rank `ceil(p / 100 × n)`, 1-based. `p` in (0, 100]. `None` for an empty sample too.
pub fn percentile(sorted: &[Option<f64>], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let n = sorted.len();
    let rank = ((p / 100.0) * n as f64).ceil() as usize;
    sorted[rank.clamp(1, n) - 1]
}

/// Sorts latencies ascending with `None` (infinite) last.
pub fn sort_latencies(values: &mut [Option<f64>]) {
    values.sort_by(|a, b| match (a, b) {
        (Some(x), Some(y)) => x.total_cmp(y),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => std::cmp::Ordering::Equal,
    });
}

/// p50, p90 and p99 of `values` (infinite = `None`).
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Quantiles {
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
}

impl Quantiles {
    pub fn of(mut values: Vec<Option<f64>>) -> Self {
        sort_latencies(&mut values);
        Quantiles {
            p50: percentile(&values, 50.0),
            p90: percentile(&values, 90.0),
            p99: percentile(&values, 99.0),
        }
    }
}

/// Largest over smallest of per-server counts (`None` when a server got nothing but another
/// did: infinite skew; `Some(1.0)` for no requests at all).
pub fn skew(counts: &[u64]) -> Option<f64> {
    let max = counts.iter().copied().max().unwrap_or(0);
    let min = counts.iter().copied().min().unwrap_or(0);
    match (max, min) {
        (0, _) => Some(1.0),
        (_, 0) => None,
        (max, min) => Some(max as f64 / min as f64),
    }
}

/// `num / den`, `None` when `den` is 0.
pub fn ratio(num: f64, den: f64) -> Option<f64> {
    (den > 0.0).then(|| num / den)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn some(v: &[f64]) -> Vec<Option<f64>> {
        v.iter().copied().map(Some).collect()
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v = some(&(1..=100).map(f64::from).collect::<Vec<_>>());
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 90.0), Some(90.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&v, 100.0), Some(100.0));
        let v = some(&[3.0, 1.0, 2.0]);
        let q = Quantiles::of(v);
        assert_eq!((q.p50, q.p90, q.p99), (Some(2.0), Some(3.0), Some(3.0)));
        // Rank ceil(0.99 × 1000) = 990.
        let v = some(&(1..=1000).map(f64::from).collect::<Vec<_>>());
        assert_eq!(percentile(&v, 99.0), Some(990.0));
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&some(&[7.0]), 1.0), Some(7.0));
    }

    #[test]
    fn failures_count_as_infinite() {
        // 1 failure in 100: p99 is the 99th value, still finite; 2 failures make it infinite.
        let mut v = some(&(1..=99).map(f64::from).collect::<Vec<_>>());
        v.push(None);
        assert_eq!(Quantiles::of(v.clone()).p99, Some(99.0));
        v[0] = None;
        let q = Quantiles::of(v);
        assert_eq!(q.p99, None);
        assert_eq!(q.p50, Some(51.0));
    }

    #[test]
    fn skew_and_ratio() {
        assert_eq!(skew(&[10, 20, 5]), Some(4.0));
        assert_eq!(skew(&[0, 3]), None);
        assert_eq!(skew(&[0, 0]), Some(1.0));
        assert_eq!(skew(&[]), Some(1.0));
        assert_eq!(ratio(1.0, 0.0), None);
        assert_eq!(ratio(1.0, 4.0), Some(0.25));
    }
}
