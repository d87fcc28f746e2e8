//! Code shared by the DHT examples (`dht_bench`, `dht_sim`): command-line
//! flags, a repeatable PRNG and percentiles. Each example uses a part of it.

#![allow(dead_code)]

/// `--name value` flags, looked up by name; unknown flags are ignored.
pub(crate) struct Args(Vec<String>);

impl Args {
    pub(crate) fn from_env() -> Self {
        Self(std::env::args().collect())
    }

    /// The value after `name`, if present.
    pub(crate) fn get(&self, name: &str) -> Option<String> {
        self.0
            .iter()
            .position(|a| a == name)
            .and_then(|i| self.0.get(i + 1))
            .cloned()
    }

    /// The value after `name` parsed, or `default` when absent or unparsable.
    pub(crate) fn parse_or<T: std::str::FromStr>(&self, name: &str, default: T) -> T {
        self.get(name)
            .and_then(|s| s.parse().ok())
            .unwrap_or(default)
    }

    /// Network sizes from `--nodes 100,500`: entries below 2 are dropped.
    pub(crate) fn sizes(&self, default: &str) -> Vec<usize> {
        self.get("--nodes")
            .unwrap_or_else(|| default.into())
            .split(',')
            .filter_map(|s| s.trim().parse().ok())
            .filter(|n| *n >= 2)
            .collect()
    }
}

/// Cheap deterministic PRNG (xorshift), so runs are repeatable.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in `0..n`; `n` must not be 0.
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Uniform in `[0, 1)`.
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub(crate) fn id(&mut self) -> [u8; 32] {
        let mut id = [0; 32];
        for chunk in id.chunks_mut(8) {
            chunk.copy_from_slice(&self.next().to_be_bytes());
        }
        id
    }
}

/// The `p`-quantile (0..=1, nearest rank) of `v`, which gets sorted;
/// `None` when empty. NaNs sort last.
pub(crate) fn percentile<T: Copy + PartialOrd>(v: &mut [T], p: f64) -> Option<T> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Greater));
    let i = ((v.len() as f64 - 1.0) * p.clamp(0.0, 1.0)).round() as usize;
    v.get(i).copied()
}
