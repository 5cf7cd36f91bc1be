//! Intermittent demand (slow movers, many days without a sale): Croston, the
//! Syntetos-Boylan approximation (SBA) and Teunter-Syntetos-Babai (TSB), written here
//! because no Rust crate has them.
//!
//! - Croston smooths the size of the non-zero demands `z` and the days between them
//!   `p`, updating both only on days with demand; the daily forecast is `z / p`.
//! - SBA multiplies that by `1 − α/2`, removing Croston's known upward bias.
//! - TSB smooths the probability `d` of a demand every day (so a product that stopped
//!   selling decays) and the size `z` on demand days; the forecast is `d · z`.
//!
//! The smoothing constants minimise the one-step squared error over small grids.
//! Intervals come from the predictive distribution these models imply: a day has no
//! demand with probability `1 − π` (`π = 1/p`, or `d`), else a size drawn from the
//! history's non-zero demands rescaled to the smoothed size — so an 80% interval of a
//! product selling on one day in five starts at 0 and ends at a plausible single sale.

use super::Forecast;

/// Which Croston forecast to give.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    Croston,
    Sba,
}

const ALPHAS: [f64; 4] = [0.05, 0.1, 0.2, 0.3];

/// Smoothed size and interval after running Croston over `y` with `alpha`, and the
/// one-step squared error from the first demand on; `None` without any demand.
fn croston_states(y: &[f64], alpha: f64, correction: f64) -> Option<(f64, f64, f64)> {
    let first = y.iter().position(|v| *v > 0.0)?;
    let (mut z, mut p) = (y[first], (first + 1) as f64);
    let mut last = first;
    let mut sse = 0.0;
    for (t, &v) in y.iter().enumerate().skip(first + 1) {
        let e = v - correction * z / p;
        sse += e * e;
        if v > 0.0 {
            z += alpha * (v - z);
            p += alpha * ((t - last) as f64 - p);
            last = t;
        }
    }
    Some((z, p, sse))
}

/// Croston's method, or SBA, with `alpha` chosen by one-step error.
pub fn croston(history: &[f64], horizon: usize, variant: Variant) -> Forecast {
    let mut best: Option<(f64, f64)> = None; // (sse, alpha)
    for a in ALPHAS {
        let corr = correction(variant, a);
        if let Some((_, _, sse)) = croston_states(history, a, corr)
            && best.is_none_or(|(b, _)| sse < b)
        {
            best = Some((sse, a));
        }
    }
    match best {
        Some((_, a)) => croston_with_alpha(history, horizon, variant, a),
        None => Forecast::normal(vec![0.0; horizon], &vec![0.0; horizon]),
    }
}

fn correction(variant: Variant, alpha: f64) -> f64 {
    match variant {
        Variant::Croston => 1.0,
        Variant::Sba => 1.0 - alpha / 2.0,
    }
}

/// Croston or SBA with a given smoothing constant.
pub fn croston_with_alpha(
    history: &[f64],
    horizon: usize,
    variant: Variant,
    alpha: f64,
) -> Forecast {
    let corr = correction(variant, alpha);
    let Some((z, p, _)) = croston_states(history, alpha, corr) else {
        return Forecast::normal(vec![0.0; horizon], &vec![0.0; horizon]);
    };
    let point = corr * z / p;
    let pi = (1.0 / p).min(1.0);
    mixture(history, horizon, point, pi)
}

/// Smoothed probability and size after running TSB over `y`, and the one-step squared error.
fn tsb_states(y: &[f64], alpha: f64, beta: f64) -> Option<(f64, f64, f64)> {
    let demands: Vec<f64> = y.iter().copied().filter(|v| *v > 0.0).collect();
    if demands.is_empty() {
        return None;
    }
    let mut d = demands.len() as f64 / y.len() as f64;
    let mut z = demands.iter().sum::<f64>() / demands.len() as f64;
    let mut sse = 0.0;
    for &v in y {
        let e = v - d * z;
        sse += e * e;
        if v > 0.0 {
            d += beta * (1.0 - d);
            z += alpha * (v - z);
        } else {
            d -= beta * d;
        }
    }
    Some((d, z, sse))
}

/// TSB with its two smoothing constants chosen by one-step error.
pub fn tsb(history: &[f64], horizon: usize) -> Forecast {
    let mut best: Option<(f64, f64, f64)> = None; // (sse, alpha, beta)
    for a in ALPHAS {
        for b in ALPHAS {
            if let Some((_, _, sse)) = tsb_states(history, a, b)
                && best.is_none_or(|(s, _, _)| sse < s)
            {
                best = Some((sse, a, b));
            }
        }
    }
    match best {
        Some((_, a, b)) => tsb_with_params(history, horizon, a, b),
        None => Forecast::normal(vec![0.0; horizon], &vec![0.0; horizon]),
    }
}

/// TSB with given smoothing constants for the size (`alpha`) and probability (`beta`).
pub fn tsb_with_params(history: &[f64], horizon: usize, alpha: f64, beta: f64) -> Forecast {
    let Some((d, z, _)) = tsb_states(history, alpha, beta) else {
        return Forecast::normal(vec![0.0; horizon], &vec![0.0; horizon]);
    };
    mixture(history, horizon, d * z, d.min(1.0))
}

/// Intervals from "no demand with probability 1 − π, else a size": the sizes are the
/// history's non-zero demands scaled so their mean is `point / π`.
fn mixture(history: &[f64], horizon: usize, point: f64, pi: f64) -> Forecast {
    let mut sizes: Vec<f64> = history.iter().copied().filter(|v| *v > 0.0).collect();
    sizes.sort_by(f64::total_cmp);
    let size_mean = sizes.iter().sum::<f64>() / sizes.len().max(1) as f64;
    let scale = if pi > 0.0 && size_mean > 0.0 {
        point / pi / size_mean
    } else {
        0.0
    };
    let quantile = |level: f64| -> f64 {
        if pi <= 0.0 || sizes.is_empty() || level <= 1.0 - pi {
            return 0.0;
        }
        let u = ((level - (1.0 - pi)) / pi).clamp(0.0, 1.0);
        let pos = u * (sizes.len() - 1) as f64;
        let (i, frac) = (pos.floor() as usize, pos.fract());
        let j = (i + 1).min(sizes.len() - 1);
        scale * (sizes[i] + frac * (sizes[j] - sizes[i]))
    };
    Forecast {
        mean: vec![point; horizon],
        lower80: vec![quantile(0.1); horizon],
        upper80: vec![quantile(0.9); horizon],
        lower95: vec![quantile(0.025); horizon],
        upper95: vec![quantile(0.975); horizon],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn croston_and_sba_by_hand() {
        // Demands 3 (day 2), 2 (day 6), 4 (day 8); α = 0.1:
        // start z = 3, p = 3; day 6: z = 2.9, p = 3.1; day 8: z = 3.01, p = 2.99.
        let y = [0.0, 0.0, 3.0, 0.0, 0.0, 0.0, 2.0, 0.0, 4.0];
        let c = croston_with_alpha(&y, 5, Variant::Croston, 0.1);
        assert!((c.mean[4] - 3.01 / 2.99).abs() < 1e-12, "{}", c.mean[4]);
        let s = croston_with_alpha(&y, 5, Variant::Sba, 0.1);
        assert!((s.mean[0] - 0.95 * 3.01 / 2.99).abs() < 1e-12);
        // π = 1/2.99: 80% interval from 0 (1 − π > 0.1) to a size.
        assert_eq!(c.lower80[0], 0.0);
        assert!(c.upper80[0] > 0.0 && c.upper95[0] >= c.upper80[0]);
    }

    #[test]
    fn tsb_by_hand() {
        // y = [0, 2, 0, 4]; start d = 0.5, z = 3; α = β = 0.5:
        // d 0.25; d 0.625, z 2.5; d 0.3125; d 0.65625, z 3.25 → 2.1328125.
        let f = tsb_with_params(&[0.0, 2.0, 0.0, 4.0], 3, 0.5, 0.5);
        assert!((f.mean[2] - 2.1328125).abs() < 1e-12, "{}", f.mean[2]);
    }

    #[test]
    fn tsb_decays_after_sales_stop_and_croston_does_not() {
        let mut y = vec![0.0; 60];
        for t in (0..30).step_by(3) {
            y[t] = 2.0;
        }
        let t = tsb(&y, 1).mean[0];
        let c = croston(&y, 1, Variant::Croston).mean[0];
        assert!(t < 0.5 * c, "tsb {t} croston {c}");
    }

    #[test]
    fn no_demand_at_all_forecasts_zero() {
        let f = croston(&[0.0; 10], 4, Variant::Sba);
        assert_eq!(f.mean, vec![0.0; 4]);
        assert_eq!(tsb(&[0.0; 10], 2).upper95, vec![0.0; 2]);
    }

    #[test]
    fn mixture_quantiles_by_hand() {
        // Sizes 1, 2, 3, 4 (mean 2.5); point 0.5 with π = 0.2 → scale 1.
        // 0.9: u = (0.9 − 0.8) / 0.2 = 0.5 → position 1.5 → 2.5.
        let y = [1.0, 0.0, 2.0, 0.0, 3.0, 4.0];
        let f = mixture(&y, 1, 0.5, 0.2);
        assert!((f.upper80[0] - 2.5).abs() < 1e-12, "{}", f.upper80[0]);
        assert_eq!(f.lower80[0], 0.0);
        // 0.975: u = 0.875 → position 2.625 → 3.625.
        assert!((f.upper95[0] - 3.625).abs() < 1e-12);
    }
}
