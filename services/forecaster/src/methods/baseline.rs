//! The short-history fallback (mean) and the seasonal-naive baseline.
//!
//! - [`mean`]: the mean of the last four weeks (all of a shorter history) for every
//!   day; intervals from Student's t with the sample standard deviation, at least the
//!   Poisson one (`sqrt(mean)`: counts are never less dispersed than that as far as
//!   three days can tell), widened by `sqrt(1 + 1/n)` for the unknown mean.
//! - [`seasonal_naive`]: each day repeats the same weekday of the last week; normal
//!   intervals from the root mean square of the history's week-on-week differences,
//!   widened by `sqrt(k)` in the k-th week ahead.

use super::{Forecast, SEASON, Z80, Z95, mean_of};

/// Days the mean looks back.
pub const MEAN_WINDOW: usize = 4 * SEASON;

/// Student's t quantiles 0.9 and 0.975 for 1..=30 degrees of freedom.
const T90: [f64; 30] = [
    3.078, 1.886, 1.638, 1.533, 1.476, 1.440, 1.415, 1.397, 1.383, 1.372, 1.363, 1.356, 1.350,
    1.345, 1.341, 1.337, 1.333, 1.330, 1.328, 1.325, 1.323, 1.321, 1.319, 1.318, 1.316, 1.315,
    1.314, 1.313, 1.311, 1.310,
];
const T975: [f64; 30] = [
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
    2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
    2.052, 2.048, 2.045, 2.042,
];

/// t quantiles (0.9, 0.975) for `df` degrees of freedom; the normal ones past 30 or at 0.
pub fn t_quantiles(df: usize) -> (f64, f64) {
    match df {
        1..=30 => (T90[df - 1], T975[df - 1]),
        _ => (Z80, Z95),
    }
}

/// The mean of the recent history for every day of the horizon.
pub fn mean(history: &[f64], horizon: usize) -> Forecast {
    let window = &history[history.len().saturating_sub(MEAN_WINDOW)..];
    let n = window.len();
    let m = mean_of(window);
    let sample_sd = if n >= 2 {
        (window.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
    } else {
        0.0
    };
    let sd = sample_sd.max(m.max(0.0).sqrt());
    let (t80, t95) = t_quantiles(n.saturating_sub(1));
    let width = sd * (1.0 + 1.0 / n.max(1) as f64).sqrt();
    let mean = vec![m; horizon];
    Forecast {
        lower80: vec![m - t80 * width; horizon],
        upper80: vec![m + t80 * width; horizon],
        lower95: vec![m - t95 * width; horizon],
        upper95: vec![m + t95 * width; horizon],
        mean,
    }
}

/// Root mean square of the season-on-season (for daily demand: week-on-week)
/// differences of `history` (`None` for one season or less: no difference to take).
pub fn seasonal_difference_rms(history: &[f64], season: usize) -> Option<f64> {
    if history.len() <= season {
        return None;
    }
    let diffs = history.len() - season;
    let ss: f64 = (season..history.len())
        .map(|t| (history[t] - history[t - season]).powi(2))
        .sum();
    Some((ss / diffs as f64).sqrt())
}

/// Each period repeats the same period of the history's last season (for daily
/// demand: the same weekday of the last week). `history` has at least `season` periods.
pub fn seasonal_naive(history: &[f64], horizon: usize, season: usize) -> Forecast {
    let n = history.len();
    let last_season = &history[n - season..];
    let sigma = seasonal_difference_rms(history, season)
        .unwrap_or_else(|| mean_of(last_season).max(0.0).sqrt());
    let mean: Vec<f64> = (0..horizon).map(|h| last_season[h % season]).collect();
    let sigmas: Vec<f64> = (0..horizon)
        .map(|h| sigma * ((h / season + 1) as f64).sqrt())
        .collect();
    Forecast::normal(mean, &sigmas)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn mean_of_a_three_day_new_product_by_hand() {
        // mean 3, sample sd 1, Poisson sd sqrt(3) = 1.7321 wins; n = 3: df 2,
        // t = 1.886 / 4.303, width = 1.7321 * sqrt(4/3) = 2.0.
        let f = mean(&[2.0, 3.0, 4.0], 14);
        assert_eq!(f.len(), 14);
        assert!(f.mean.iter().all(|&m| m == 3.0));
        assert!(
            close(f.lower80[0], 3.0 - 1.886 * 2.0, 1e-9),
            "{:?}",
            f.lower80[0]
        );
        assert!(close(f.upper80[13], 3.0 + 1.886 * 2.0, 1e-9));
        assert!(close(f.upper95[0], 3.0 + 4.303 * 2.0, 1e-9));
    }

    #[test]
    fn mean_uses_the_sample_sd_when_wider_than_poisson() {
        // [0, 10]: mean 5, sample sd 7.0711 > sqrt(5); df 1: t = 3.078 / 12.706.
        let f = mean(&[0.0, 10.0], 1);
        let width = 50f64.sqrt() * 1.5f64.sqrt();
        assert!(close(f.upper80[0], 5.0 + 3.078 * width, 1e-9));
    }

    #[test]
    fn seasonal_naive_repeats_last_week_by_hand() {
        // Two weeks; differences week 2 - week 1: all 1 except one 3 → rms sqrt((6+9)/7).
        let w1 = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0];
        let w2 = [2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 10.0];
        let h: Vec<f64> = w1.iter().chain(&w2).copied().collect();
        let f = seasonal_naive(&h, 9, SEASON);
        assert_eq!(&f.mean[..7], &w2);
        assert_eq!(f.mean[7], 2.0);
        assert_eq!(f.mean[8], 3.0);
        let s = (15.0f64 / 7.0).sqrt();
        assert!(close(f.upper80[0], 2.0 + Z80 * s, 1e-9));
        assert!(close(f.upper80[7], 2.0 + Z80 * s * 2f64.sqrt(), 1e-9));
    }

    #[test]
    fn t_quantiles_fall_back_to_normal() {
        assert_eq!(t_quantiles(2), (1.886, 4.303));
        assert_eq!(t_quantiles(31), (Z80, Z95));
        assert_eq!(t_quantiles(0), (Z80, Z95));
    }
}
