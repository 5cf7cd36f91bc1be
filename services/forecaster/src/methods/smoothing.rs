//! Holt-Winters additive exponential smoothing with weekly seasonality (for daily
//! demand; any season of `m` periods for other data, e.g. 52 for weekly sales):
//! ETS(A,N,A) and ETS(A,Ad,A) in the error-correction form of Hyndman et al.,
//! *Forecasting with Exponential Smoothing* (2008), written here because no Rust crate
//! has seasonal ETS (augurs' AutoETS is non-seasonal).
//!
//! ```text
//! forecast_t = l + φ·b + s[t-7]        e = y_t − forecast_t
//! l ← l + φ·b + α·e     b ← φ·b + β·e     s[t] ← s[t-7] + γ·e
//! h days ahead: l + (φ + … + φ^h)·b + s[last of that weekday]
//! variance h days ahead: σ²·(1 + Σ_{j<h} c_j²),  c_j = α + β·(φ + … + φ^j) + γ·[7 | j]
//! ```
//!
//! Parameters minimise the sum of squared one-step errors by coordinate descent over
//! fixed grids (two passes; deterministic, and cheap enough for 1,000 series a second).
//! The states start from the first week (level: its mean; trend: the change of the
//! weekly mean between the first two weeks; season: the first week's deviations).

use super::{Forecast, mean_of};

/// Smoothing parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    pub alpha: f64,
    pub beta: f64,
    pub gamma: f64,
    pub phi: f64,
}

const ALPHAS: [f64; 10] = [0.01, 0.03, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.7];
const GAMMAS: [f64; 7] = [0.0, 0.01, 0.03, 0.05, 0.1, 0.2, 0.3];
const BETAS: [f64; 6] = [0.0, 0.005, 0.01, 0.02, 0.05, 0.1];
const PHIS: [f64; 4] = [0.8, 0.9, 0.95, 0.98];

/// A fitted model: its parameters and final states.
#[derive(Debug, Clone, PartialEq)]
pub struct HoltWinters {
    pub params: Params,
    pub damped: bool,
    level: f64,
    trend: f64,
    /// Seasonal states by absolute period modulo the season (7 for daily demand).
    season: Vec<f64>,
    /// Days fitted.
    n: usize,
    /// Variance of the one-step errors.
    pub sigma2: f64,
}

#[derive(Debug, Clone)]
struct Start {
    level: f64,
    trend: f64,
    season: Vec<f64>,
}

fn start(y: &[f64], damped: bool, m: usize) -> Start {
    let w1 = mean_of(&y[..m]);
    let trend = if damped && y.len() >= 2 * m {
        (mean_of(&y[m..2 * m]) - w1) / m as f64
    } else {
        0.0
    };
    // The first season's mean sits at its middle, period (m − 1)/2 (day 3 of a week).
    let middle = (m as f64 - 1.0) / 2.0;
    let season = (0..m)
        .map(|i| y[i] - (w1 + (i as f64 - middle) * trend))
        .collect();
    // The level "before period 0".
    Start {
        level: w1 - (middle + 1.0) * trend,
        trend,
        season,
    }
}

/// Runs the recursions over `y`, with `s` as the seasonal states (set from `s0`
/// first, left final); returns the sum of squared one-step errors and the final level
/// and trend.
fn filter(y: &[f64], p: Params, s0: &Start, s: &mut [f64]) -> (f64, f64, f64) {
    let (mut l, mut b) = (s0.level, s0.trend);
    s.copy_from_slice(&s0.season);
    let mut sse = 0.0;
    // Season by season (period t uses state t mod m), without a division per period:
    // this loop is most of the service's fitting time.
    for season in y.chunks(s.len().max(1)) {
        for (&v, sk) in season.iter().zip(s.iter_mut()) {
            let e = v - (l + p.phi * b + *sk);
            sse += e * e;
            l += p.phi * b + p.alpha * e;
            b = p.phi * b + p.beta * e;
            *sk += p.gamma * e;
        }
    }
    (sse, l, b)
}

impl HoltWinters {
    /// Fits ETS(A,Ad,A) when `damped`, else ETS(A,N,A), with a season of `m` periods
    /// (7 for daily demand). `history` has at least two seasons (checked by
    /// [`super::Method::forecast_seasonal`]).
    pub fn fit(history: &[f64], damped: bool, m: usize) -> Self {
        let s0 = start(history, damped, m);
        let mut states = vec![0.0; m];
        let mut best = Params {
            alpha: 0.1,
            beta: if damped { 0.01 } else { 0.0 },
            gamma: 0.05,
            phi: if damped { 0.9 } else { 1.0 },
        };
        let mut best_sse = filter(history, best, &s0, &mut states).0;
        let mut try_params = |p: Params, best: &mut Params| {
            let sse = filter(history, p, &s0, &mut states).0;
            if sse < best_sse {
                best_sse = sse;
                *best = p;
            }
        };
        for _ in 0..2 {
            for a in ALPHAS {
                let p = Params { alpha: a, ..best };
                if p.gamma <= 1.0 - a && p.beta <= a {
                    try_params(p, &mut best);
                }
            }
            for g in GAMMAS {
                if g <= 1.0 - best.alpha {
                    try_params(Params { gamma: g, ..best }, &mut best);
                }
            }
            if damped {
                for bt in BETAS {
                    if bt <= best.alpha {
                        try_params(Params { beta: bt, ..best }, &mut best);
                    }
                }
                for ph in PHIS {
                    try_params(Params { phi: ph, ..best }, &mut best);
                }
            }
        }
        Self::with_params(history, best, damped, m)
    }

    /// Runs the model with given parameters and a season of `m` periods (no search).
    pub fn with_params(history: &[f64], params: Params, damped: bool, m: usize) -> Self {
        let s0 = start(history, damped, m);
        let mut season = vec![0.0; m];
        let (sse, level, trend) = filter(history, params, &s0, &mut season);
        let free = if damped { 4 } else { 2 };
        let dof = history.len().saturating_sub(free).max(1);
        Self {
            params,
            damped,
            level,
            trend,
            season,
            n: history.len(),
            sigma2: sse / dof as f64,
        }
    }

    /// Point forecasts and normal intervals for `horizon` days.
    pub fn forecast(&self, horizon: usize) -> Forecast {
        let p = self.params;
        let mut mean = Vec::with_capacity(horizon);
        let mut sigma = Vec::with_capacity(horizon);
        let mut phi_h = 0.0; // φ + … + φ^h
        let mut phi_pow = 1.0;
        let mut sum_c2 = 0.0; // Σ_{j<h} c_j²
        for h in 1..=horizon {
            phi_pow *= p.phi;
            let phi_prev = phi_h; // φ_{h-1}
            phi_h += phi_pow;
            if h > 1 {
                let j = h - 1;
                let c = p.alpha
                    + p.beta * phi_prev
                    + if j % self.season.len() == 0 {
                        p.gamma
                    } else {
                        0.0
                    };
                sum_c2 += c * c;
            }
            mean.push(
                self.level + phi_h * self.trend + self.season[(self.n + h - 1) % self.season.len()],
            );
            sigma.push((self.sigma2 * (1.0 + sum_c2)).sqrt());
        }
        Forecast::normal(mean, &sigma)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::methods::Z80;

    #[test]
    fn a_level_step_by_hand() {
        // A flat week at 10, then a week at 12; α = 0.5, no seasonal or trend updates.
        // Week 1 has no error; in week 2 the error halves daily: 2, 1, 0.5, …
        let y: Vec<f64> = [10.0; 7].iter().chain(&[12.0; 7]).copied().collect();
        let p = Params {
            alpha: 0.5,
            beta: 0.0,
            gamma: 0.0,
            phi: 1.0,
        };
        let m = HoltWinters::with_params(&y, p, false, 7);
        let level = 12.0 - 2.0 * 0.5f64.powi(7);
        let sse: f64 = (0..7).map(|k| (2.0 * 0.5f64.powi(k)).powi(2)).sum();
        assert!((m.sigma2 - sse / 12.0).abs() < 1e-12);
        let f = m.forecast(3);
        for v in &f.mean {
            assert!((v - level).abs() < 1e-12, "{v} vs {level}");
        }
        // c_1 = α = 0.5: day 2's variance is σ²(1 + 0.25).
        let s2 = (sse / 12.0 * 1.25).sqrt();
        assert!((f.upper80[1] - (level + Z80 * s2)).abs() < 1e-12);
    }

    #[test]
    fn a_pure_weekly_pattern_is_forecast_exactly() {
        let week = [5.0, 8.0, 9.0, 10.0, 14.0, 30.0, 3.0];
        let y: Vec<f64> = week.iter().cycle().take(8 * 7 + 3).copied().collect();
        for damped in [false, true] {
            let f = HoltWinters::fit(&y, damped, 7).forecast(14);
            for (h, v) in f.mean.iter().enumerate() {
                let want = week[(y.len() + h) % 7];
                assert!(
                    (v - want).abs() < 1e-9,
                    "damped {damped} day {h}: {v} vs {want}"
                );
            }
            assert!(f.upper95[13] - f.lower95[13] < 1e-6);
        }
    }

    #[test]
    fn a_trend_is_followed_by_the_damped_model() {
        let week = [0.0, 2.0, 4.0, 6.0, 8.0, 10.0, -6.0];
        let y: Vec<f64> = (0..70)
            .map(|t| 20.0 + 0.5 * t as f64 + week[t % 7])
            .collect();
        let damped = HoltWinters::fit(&y, true, 7);
        let flat = HoltWinters::fit(&y, false, 7);
        let truth = |t: usize| 20.0 + 0.5 * t as f64 + week[t % 7];
        let err = |m: &HoltWinters| -> f64 {
            let f = m.forecast(7);
            (0..7)
                .map(|h| (f.mean[h] - truth(70 + h)).abs())
                .sum::<f64>()
                / 7.0
        };
        assert!(err(&damped) < 0.5, "damped error {}", err(&damped));
        assert!(
            err(&damped) < err(&flat),
            "{} vs {}",
            err(&damped),
            err(&flat)
        );
        assert!(damped.params.beta > 0.0);
    }
}
