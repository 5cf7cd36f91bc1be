//! Per-series choice of method by rolling-origin backtest.
//!
//! The candidates depend on the history:
//! - under [`MIN_BACKTEST_HISTORY`] days: no backtest is possible; the mean of the
//!   history (the short-history fallback) is published, without a backtest error;
//! - a slow mover (at least [`INTERMITTENT_ZERO_SHARE`] of the last eight weeks without
//!   a sale): seasonal naive, mean, Croston, SBA, TSB;
//! - a regular seller: seasonal naive, mean, Holt-Winters, damped Holt-Winters (and
//!   MSTL+AutoETS when enabled).
//!
//! Each candidate is fitted at up to [`Selection::origins`] origins a week apart,
//! the latest `horizon` days before the end of the history, and forecasts the
//! `horizon` days after each origin; its score is the mean MASE (and sMAPE) over
//! the origins every candidate could be fitted at. The lowest MASE wins (ties go to
//! the simpler method, listed first); the winner is refitted on the whole history.
//!
//! The service's series are daily with a weekly season ([`Selection::default`]); a
//! backtest of other data sets [`Selection::season`] and [`Selection::origin_spacing`]
//! (weekly sales: 52 and 1), and "day" and "week" above read "period" and "the
//! spacing".

use super::accuracy::{mase, smape};
use super::{Forecast, Method, MethodError, SEASON};

/// Fewest days for a backtest: a week to fit and a week to score.
pub const MIN_BACKTEST_HISTORY: usize = 2 * SEASON;
/// Share of days without sales that makes a slow mover.
pub const INTERMITTENT_ZERO_SHARE: f64 = 0.3;

/// How methods are chosen.
#[derive(Debug, Clone, PartialEq)]
pub struct Selection {
    /// Days forecast (published and backtested).
    pub horizon: usize,
    /// Most backtest origins, a week apart.
    pub origins: usize,
    /// Offer MSTL + AutoETS (augurs) to regular sellers.
    pub mstl: bool,
    /// Periods in a season ([`SEASON`] for daily demand).
    pub season: usize,
    /// Periods between two backtest origins, and an eighth of the window that decides
    /// a slow mover ([`SEASON`]: a week of daily demand).
    pub origin_spacing: usize,
}

impl Default for Selection {
    fn default() -> Self {
        Self {
            horizon: 14,
            origins: 3,
            mstl: false,
            season: SEASON,
            origin_spacing: SEASON,
        }
    }
}

/// Backtest error of one method.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score {
    pub method: Method,
    /// Mean MASE over the origins.
    pub mase: f64,
    /// Mean sMAPE over the origins, percent.
    pub smape: f64,
    pub origins: usize,
}

/// The forecast of one series and how its method was chosen.
#[derive(Debug, Clone, PartialEq)]
pub struct Chosen {
    pub method: Method,
    pub forecast: Forecast,
    /// The chosen method's backtest score (`None`: history too short to backtest).
    pub score: Option<Score>,
    /// The seasonal-naive baseline's score on the same origins.
    pub baseline: Option<Score>,
}

/// True when the daily series is a slow mover (judged on its last eight weeks).
pub fn is_intermittent(history: &[f64]) -> bool {
    is_intermittent_over(history, 8 * SEASON)
}

/// True when the last `recent` periods of the series make it a slow mover.
pub fn is_intermittent_over(history: &[f64], recent: usize) -> bool {
    let recent = &history[history.len().saturating_sub(recent)..];
    let zeros = recent.iter().filter(|v| **v <= 0.0).count();
    !recent.is_empty() && zeros as f64 >= INTERMITTENT_ZERO_SHARE * recent.len() as f64
}

impl Selection {
    /// Candidate methods for `history`, simplest first.
    pub fn candidates(&self, history: &[f64]) -> Vec<Method> {
        if history.len() < 2 * self.season.max(1) {
            return vec![Method::Mean];
        }
        let mut c = vec![Method::SeasonalNaive, Method::Mean];
        if is_intermittent_over(history, 8 * self.origin_spacing.max(1)) {
            c.extend([Method::Croston, Method::Sba, Method::Tsb]);
        } else {
            c.extend([Method::HoltWinters, Method::HoltWintersDamped]);
            if self.mstl {
                c.push(Method::MstlEts);
            }
        }
        c
    }

    /// Backtest origins (days of history before each), latest first: up to
    /// `self.origins`, `origin_spacing` apart (a week), each leaving at least a
    /// season to fit on.
    pub fn origins_for(&self, days: usize) -> Vec<usize> {
        let spacing = self.origin_spacing.max(1);
        let season = self.season.max(1);
        (0..self.origins)
            .filter_map(|k| days.checked_sub(self.horizon.min(days) + k * spacing))
            .filter(|o| *o >= season)
            .collect()
    }

    /// Rolling-origin backtest of `methods` on `history`. Methods that cannot be
    /// fitted at every origin where all the others can are left out; so are origins
    /// too early for the simplest method.
    pub fn backtest(&self, history: &[f64], methods: &[Method]) -> Vec<Score> {
        let origins = self.origins_for(history.len());
        let mut scores = Vec::new();
        for &m in methods {
            let usable: Vec<usize> = origins
                .iter()
                .copied()
                .filter(|o| *o >= m.min_history_for(self.season))
                .collect();
            if usable.is_empty() || usable.len() < origins.len() {
                continue;
            }
            let (mut sum_mase, mut sum_smape, mut n) = (0.0, 0.0, 0);
            for &o in &usable {
                let train = &history[..o];
                let test = &history[o..(o + self.horizon).min(history.len())];
                let Ok(f) = m.forecast_seasonal(train, test.len(), self.season) else {
                    continue;
                };
                sum_mase += mase(test, &f.mean, train, self.season);
                sum_smape += smape(test, &f.mean);
                n += 1;
            }
            if n == usable.len() {
                scores.push(Score {
                    method: m,
                    mase: sum_mase / n as f64,
                    smape: sum_smape / n as f64,
                    origins: n,
                });
            }
        }
        scores
    }

    /// Chooses a method for `history` and forecasts `self.horizon` days.
    pub fn forecast(&self, history: &[f64]) -> Result<Chosen, MethodError> {
        let candidates = self.candidates(history);
        let scores = if candidates.len() > 1 {
            self.backtest(history, &candidates)
        } else {
            Vec::new()
        };
        let baseline = scores
            .iter()
            .find(|s| s.method == Method::SeasonalNaive)
            .copied();
        let mut ranked = scores.clone();
        ranked.sort_by(|a, b| a.mase.total_cmp(&b.mase)); // stable: ties keep simpler first
        for s in &ranked {
            if let Ok(forecast) = s
                .method
                .forecast_seasonal(history, self.horizon, self.season)
            {
                return Ok(Chosen {
                    method: s.method,
                    forecast,
                    score: Some(*s),
                    baseline,
                });
            }
        }
        Ok(Chosen {
            method: Method::Mean,
            forecast: Method::Mean.forecast_seasonal(history, self.horizon, self.season)?,
            score: None,
            baseline,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_a_week_apart_and_leave_a_week() {
        let s = Selection::default();
        assert_eq!(s.origins_for(100), vec![86, 79, 72]);
        assert_eq!(s.origins_for(22), vec![8]);
        assert_eq!(s.origins_for(20), Vec::<usize>::new());
    }

    #[test]
    fn a_new_product_with_three_days_gets_the_mean() {
        let c = Selection::default()
            .forecast(&[2.0, 3.0, 4.0])
            .expect("forecast");
        assert_eq!(c.method, Method::Mean);
        assert_eq!(c.forecast.len(), 14);
        assert_eq!(c.forecast.mean[0], 3.0);
        assert!(c.score.is_none());
    }

    #[test]
    fn a_slow_mover_gets_an_intermittent_method() {
        let y: Vec<f64> = (0..90)
            .map(|t| if t % 4 == 0 { 2.0 } else { 0.0 })
            .collect();
        let s = Selection::default();
        assert!(is_intermittent(&y));
        let c = s.forecast(&y).expect("forecast");
        assert!(
            matches!(
                c.method,
                Method::Croston | Method::Sba | Method::Tsb | Method::Mean | Method::SeasonalNaive
            ),
            "{}",
            c.method
        );
        assert!(s.candidates(&y).contains(&Method::Tsb));
        assert!(!s.candidates(&y).contains(&Method::HoltWinters));
    }
}
