//! The Kumar–Ross lower bound on the time for a swarm to finish.
//!
//! R. Kumar and K. W. Ross, "Peer-assisted file distribution: the minimum
//! distribution time" (2006): one seed with upload `u_s`, `N` downloaders
//! with uploads `u_i` and downloads `d_i`, a file of `F` bits. No schedule
//! finishes sooner than `max(F/u_s, F/d_min, N·F/(u_s + Σu_i))`.

use serde::Serialize;

/// The bound and which term set it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Bound {
    pub seconds: f64,
    /// `F/u_s`: the seed must send every bit once.
    pub seed_term: f64,
    /// `F/d_min`: the slowest downloader must receive every bit.
    pub download_term: f64,
    /// `N·F/(u_s+Σu_i)`: all N copies come out of the total upload.
    pub aggregate_term: f64,
}

/// `file_bytes` is F; rates are bits per second; `leechers` are `(up, down)`.
/// Returns `None` for an empty swarm or a rate that is not positive.
pub fn kumar_ross(file_bytes: u64, seed_up_bps: f64, leechers: &[(f64, f64)]) -> Option<Bound> {
    if leechers.is_empty()
        || seed_up_bps.is_nan()
        || seed_up_bps <= 0.0
        || leechers
            .iter()
            .any(|(u, d)| u.is_nan() || *u < 0.0 || d.is_nan() || *d <= 0.0)
    {
        return None;
    }
    let f = file_bytes as f64 * 8.0;
    let n = leechers.len() as f64;
    let d_min = leechers.iter().map(|l| l.1).fold(f64::INFINITY, f64::min);
    let total_up = seed_up_bps + leechers.iter().map(|l| l.0).sum::<f64>();
    let seed_term = f / seed_up_bps;
    let download_term = f / d_min;
    let aggregate_term = n * f / total_up;
    Some(Bound {
        seconds: seed_term.max(download_term).max(aggregate_term),
        seed_term,
        download_term,
        aggregate_term,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_design_swarm_is_bound_by_total_upload() {
        // 1 GiB, seed 200 Mbit/s up, 8 leechers at 100 up / 1000 down
        let b = kumar_ross(1 << 30, 200e6, &[(100e6, 1000e6); 8]).unwrap();
        let f = (1u64 << 30) as f64 * 8.0;
        assert!((b.seed_term - f / 200e6).abs() < 1e-9);
        assert!((b.aggregate_term - 8.0 * f / 1000e6).abs() < 1e-9);
        assert_eq!(b.seconds, b.aggregate_term);
        assert!((b.seconds - 68.72).abs() < 0.01, "{}", b.seconds);
    }

    #[test]
    fn a_slow_downloader_or_seed_sets_the_bound() {
        let b = kumar_ross(1_000_000, 8e6, &[(100e6, 1e6), (100e6, 100e6)]).unwrap();
        assert_eq!(b.seconds, 8.0); // 8 Mbit over 1 Mbit/s
        assert_eq!(b.seconds, b.download_term);
        let b = kumar_ross(1_000_000, 1e6, &[(100e6, 100e6)]).unwrap();
        assert_eq!(b.seconds, b.seed_term);
    }

    #[test]
    fn degenerate_swarms_have_no_bound() {
        assert!(kumar_ross(1, 1e6, &[]).is_none());
        assert!(kumar_ross(1, 0.0, &[(1.0, 1.0)]).is_none());
        assert!(kumar_ross(1, 1e6, &[(1.0, 0.0)]).is_none());
    }
}
