//! A backend's time to first token as this gateway sees it: a moving average over its streamed
//! responses that forgets with time, and the [`slowness`] `load_aware` weighs a backend's load
//! by.
//!
//! The average is exponentially weighted by time, as in Finagle's and tower's peak-EWMA
//! balancers: a sample `Δt` after the previous one weighs `1 − e^(−Δt/τ)` (`τ` = [`DECAY`]), so
//! a backend that answers often is averaged over many answers, and one outlier among them barely
//! moves it. (Following the lower edge instead, to leave out the queue, favoured whichever
//! backend answered most often: a minimum over more samples is lower. It starved the slow server
//! of the simulated fleet, loadtest/ROUTING.md.) Read, an average also decays with its age toward
//! the fleet's fastest: a backend that gets no traffic because it looked slow drifts back, gets
//! a request, and learns its speed again, instead of starving on a stale value.
//!
//! Lock-free: two atomics, written without a lock by whichever response arrives. Two answers of
//! one backend within the same instant can lose one sample; the average does not care.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

/// The time constant `τ` of the average and of its decay: six times Finagle's and tower's
/// default (10 s), since the average is to tell a backend's speed, which changes slowly. With
/// 10 s the averages of identical servers swung apart with the queue each had lately (which the
/// load already counts), and multi-turn traffic lost 2–5 % of TTFT p99 (loadtest/ROUTING.md).
pub const DECAY: Duration = Duration::from_secs(60);

/// The process's reference instant, so a time fits one atomic.
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

/// A decaying average of time to first token, in seconds.
#[derive(Debug, Default)]
pub struct TtfbAverage {
    /// `f64` bits of the average in seconds; 0 before the first sample.
    seconds: AtomicU64,
    /// Nanoseconds from [`EPOCH`] to the last sample.
    at: AtomicU64,
}

impl TtfbAverage {
    /// Fold in one response's time to first token, measured at `now`.
    pub fn observe(&self, sample: Duration, now: Instant) {
        let sample = sample.as_secs_f64();
        let at = nanos_since_epoch(now);
        let next = match self.last() {
            None => sample,
            Some((average, then)) => {
                let keep = kept(at.saturating_sub(then));
                average * keep + sample * (1.0 - keep)
            }
        };
        // Never 0 (the "no sample" mark): a sub-nanosecond answer is still an answer.
        self.seconds
            .store(next.max(1e-9).to_bits(), Ordering::Relaxed);
        self.at.store(at, Ordering::Relaxed);
    }

    /// The average as of its last sample, if there was one.
    pub fn raw(&self) -> Option<f64> {
        self.last().map(|(average, _)| average)
    }

    /// The average at `now`, decayed with its age toward `floor` (the fleet's fastest); `floor`
    /// without a sample.
    pub fn at(&self, now: Instant, floor: f64) -> f64 {
        let Some((average, then)) = self.last() else {
            return floor;
        };
        floor + (average - floor) * kept(nanos_since_epoch(now).saturating_sub(then))
    }

    fn last(&self) -> Option<(f64, u64)> {
        let seconds = f64::from_bits(self.seconds.load(Ordering::Relaxed));
        (seconds > 0.0).then(|| (seconds, self.at.load(Ordering::Relaxed)))
    }
}

/// A backend counts as slower from this multiple of the fastest's time to first token.
pub const SLOWER_FROM: f64 = 1.25;

/// How many times its load a backend with this time to first token counts: `ttfb` ÷
/// ([`SLOWER_FROM`] × the fastest's), at least 1. The averages of identical servers differ by
/// the queue each had lately (up to 29 % apart over ten seconds of the simulated fleet's
/// multi-turn traffic), which the load already counts; a server truly slower (2× there) stands
/// out of that.
pub fn slowness(ttfb: f64, fastest: f64) -> f64 {
    (ttfb / (SLOWER_FROM * fastest)).max(1.0)
}

/// What an average keeps of itself over `nanos`: `e^(−Δt/τ)`.
fn kept(nanos: u64) -> f64 {
    (-Duration::from_nanos(nanos).as_secs_f64() / DECAY.as_secs_f64()).exp()
}

fn nanos_since_epoch(t: Instant) -> u64 {
    u64::try_from(t.saturating_duration_since(*EPOCH).as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn the_first_sample_is_the_average_and_a_later_one_weighs_by_the_time_between() {
        let t = TtfbAverage::default();
        LazyLock::force(&EPOCH);
        let t0 = Instant::now();
        assert_eq!(t.raw(), None);
        t.observe(100 * MS, t0);
        assert_eq!(t.raw(), Some(0.1));
        // One time constant later: the new sample weighs 1 − 1/e.
        t.observe(200 * MS, t0 + DECAY);
        let want = 0.1 / std::f64::consts::E + 0.2 * (1.0 - 1.0 / std::f64::consts::E);
        assert!((t.raw().unwrap() - want).abs() < 1e-9, "{:?}", t.raw());
        // Right after: an outlier barely moves it.
        t.observe(Duration::from_secs(5), t0 + DECAY + MS);
        assert!((t.raw().unwrap() - want).abs() < 0.001, "{:?}", t.raw());
    }

    #[test]
    fn read_it_decays_toward_the_floor_with_age_and_is_the_floor_without_samples() {
        let t = TtfbAverage::default();
        assert_eq!(t.at(Instant::now(), 0.05), 0.05);
        LazyLock::force(&EPOCH);
        let t0 = Instant::now();
        t.observe(Duration::from_secs(1), t0);
        assert_eq!(t.at(t0, 0.05), 1.0);
        let later = t.at(t0 + 3 * DECAY, 0.05);
        let want = 0.05 + 0.95 * (-3.0f64).exp();
        assert!((later - want).abs() < 1e-9, "{later}");
    }
}
