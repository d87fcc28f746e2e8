//! Per-peer transfer rate, measured only over the time the peer had work
//! from us: an idle peer keeps its last rate, a stalled one decays to zero.

use std::time::{Duration, Instant};

/// Busy time that closes one measurement window.
const WINDOW: Duration = Duration::from_millis(250);
/// Weight of a new window in the moving average.
const ALPHA: f64 = 0.4;

/// Bytes per second over busy time, as an exponential moving average of
/// fixed-length windows.
#[derive(Debug, Clone, Default)]
pub struct RateEstimator {
    rate: Option<f64>,
    window_bytes: u64,
    window_busy: Duration,
    last: Option<Instant>,
    busy: bool,
}

impl RateEstimator {
    /// The measured rate in bytes per second, once a window has closed.
    pub fn rate(&self) -> Option<f64> {
        self.rate
    }

    /// Accounts the time up to `now`, closing windows as they fill.
    pub fn advance(&mut self, now: Instant) {
        if let Some(last) = self.last {
            if self.busy {
                self.window_busy += now.saturating_duration_since(last);
            }
            if now < last {
                return;
            }
        }
        self.last = Some(now);
        if self.window_busy >= WINDOW {
            let sample = self.window_bytes as f64 / self.window_busy.as_secs_f64();
            // A long window counts as that many windows.
            let windows = self.window_busy.as_secs_f64() / WINDOW.as_secs_f64();
            let keep = (1.0 - ALPHA).powf(windows);
            self.rate = Some(match self.rate {
                None => sample,
                Some(r) => r * keep + sample * (1.0 - keep),
            });
            self.window_bytes = 0;
            self.window_busy = Duration::ZERO;
        }
    }

    /// `bytes` arrived at `now`.
    pub fn record(&mut self, bytes: u64, now: Instant) {
        self.advance(now);
        self.window_bytes += bytes;
    }

    /// Whether the peer has outstanding work from now on.
    pub fn set_busy(&mut self, busy: bool, now: Instant) {
        self.advance(now);
        self.busy = busy;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_busy_time_only() {
        let t0 = Instant::now();
        let mut r = RateEstimator::default();
        r.set_busy(true, t0);
        for i in 1..=10u64 {
            r.record(100_000, t0 + Duration::from_millis(100 * i));
        }
        let rate = r.rate().unwrap_or(0.0);
        assert!((800_000.0..1_200_000.0).contains(&rate), "{rate}");
        // Idle for a minute: the rate stays.
        r.set_busy(false, t0 + Duration::from_secs(1));
        r.advance(t0 + Duration::from_secs(61));
        assert_eq!(r.rate(), Some(rate));
        // Busy with nothing arriving: it decays.
        r.set_busy(true, t0 + Duration::from_secs(61));
        r.advance(t0 + Duration::from_secs(63));
        assert!(r.rate().unwrap_or(1e9) < rate / 2.0);
    }
}
