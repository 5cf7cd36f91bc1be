//! Daily demand series of known structure, drawn from a seeded generator (so every
//! run draws the same): Poisson demand around a weekly pattern with an optional trend,
//! and intermittent demand (a sale on a day with a given probability, of a random size).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A seeded generator.
pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// One Poisson draw with mean `lambda` (Knuth's product method; normal approximation
/// above 60, rounded and kept non-negative).
pub fn poisson(rng: &mut impl Rng, lambda: f64) -> f64 {
    if lambda <= 0.0 {
        return 0.0;
    }
    if lambda > 60.0 {
        // Box-Muller.
        let (u1, u2): (f64, f64) = (rng.random::<f64>().max(f64::MIN_POSITIVE), rng.random());
        let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
        return (lambda + z * lambda.sqrt()).round().max(0.0);
    }
    let limit = (-lambda).exp();
    let (mut k, mut p) = (0.0, 1.0);
    loop {
        p *= rng.random::<f64>();
        if p <= limit {
            return k;
        }
        k += 1.0;
    }
}

/// Weekly multipliers of a typical shop (Monday first: quiet early week, busy Saturday).
pub const WEEKLY_PROFILE: [f64; 7] = [0.8, 0.85, 0.9, 1.0, 1.2, 1.5, 0.75];

/// Expected demand on day `t`: `level · profile[t mod 7] + trend · t`.
pub fn regular_mean(level: f64, trend: f64, t: usize) -> f64 {
    (level * WEEKLY_PROFILE[t % 7] + trend * t as f64).max(0.0)
}

/// `days` of Poisson demand around [`regular_mean`].
pub fn regular(rng: &mut impl Rng, days: usize, level: f64, trend: f64) -> Vec<f64> {
    (0..days)
        .map(|t| poisson(rng, regular_mean(level, trend, t)))
        .collect()
}

/// `days` of intermittent demand: a sale with probability `p`, of 1 + Poisson(`size − 1`) units.
pub fn intermittent(rng: &mut impl Rng, days: usize, p: f64, size: f64) -> Vec<f64> {
    (0..days)
        .map(|_| {
            if rng.random::<f64>() < p {
                1.0 + poisson(rng, (size - 1.0).max(0.0))
            } else {
                0.0
            }
        })
        .collect()
}
