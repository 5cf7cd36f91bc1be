//! Forecasting methods for daily retail demand, and the per-series choice between them.
//!
//! Every method takes a daily history (oldest first, one value per day, zeros for
//! days without sales) and returns a [`Forecast`]: for each day of the horizon a
//! point forecast and 80% and 95% prediction intervals, all finite and with
//! `0 <= lower95 <= lower80 <= mean <= upper80 <= upper95` (demand is never negative).
//!
//! - [`baseline`]: the mean of a short history and the seasonal-naive baseline;
//! - [`smoothing`]: Holt-Winters additive with weekly seasonality, with or without
//!   a damped trend (ETS(A,N,A) and ETS(A,Ad,A)) — written here because no crate has
//!   seasonal ETS;
//! - [`intermittent`]: Croston, SBA and TSB for slow movers, written here too;
//! - [`decomposition`]: MSTL (weekly) with AutoETS on the deseasonalised series,
//!   from the `augurs` crate;
//! - [`selection`]: rolling-origin backtest, MASE and sMAPE, and the choice of method
//!   per series;
//! - [`synthetic`]: demand series of known structure for tests and benchmarks.

pub mod accuracy;
pub mod baseline;
pub mod decomposition;
pub mod intermittent;
pub mod selection;
pub mod smoothing;
pub mod synthetic;

#[cfg(test)]
mod tests;

use std::fmt;

/// Periods in a season of daily demand: it repeats weekly. The service always uses
/// this; other seasons (e.g. 52 for weekly sales) are for backtests of other data
/// ([`Method::forecast_seasonal`]).
pub const SEASON: usize = 7;
/// Standard normal quantile of 0.9 (the 80% central interval).
pub const Z80: f64 = 1.281_551_565_544_600_4;
/// Standard normal quantile of 0.975 (the 95% central interval).
pub const Z95: f64 = 1.959_963_984_540_054;

/// A forecasting method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Method {
    /// Mean of the history: the fallback for a history shorter than a week.
    Mean,
    /// The same weekday of the last week: the baseline every method is scored against.
    SeasonalNaive,
    /// Holt-Winters additive, weekly seasonality, no trend: ETS(A,N,A).
    HoltWinters,
    /// Holt-Winters additive with a damped trend: ETS(A,Ad,A).
    HoltWintersDamped,
    /// Croston's method for intermittent demand.
    Croston,
    /// Syntetos-Boylan approximation: Croston with its bias corrected.
    Sba,
    /// Teunter-Syntetos-Babai: demand probability and size smoothed every day.
    Tsb,
    /// MSTL weekly decomposition with AutoETS on the rest (`augurs`).
    MstlEts,
}

impl Method {
    /// Every method, in the order used to break ties (simplest first).
    pub const ALL: [Method; 8] = [
        Method::Mean,
        Method::SeasonalNaive,
        Method::HoltWinters,
        Method::HoltWintersDamped,
        Method::Croston,
        Method::Sba,
        Method::Tsb,
        Method::MstlEts,
    ];

    /// The name published in `DemandForecast.method`.
    pub fn name(self) -> &'static str {
        match self {
            Method::Mean => "mean",
            Method::SeasonalNaive => "seasonal-naive",
            Method::HoltWinters => "holt-winters",
            Method::HoltWintersDamped => "holt-winters-damped",
            Method::Croston => "croston",
            Method::Sba => "croston-sba",
            Method::Tsb => "tsb",
            Method::MstlEts => "mstl-ets",
        }
    }

    /// The method of a published name.
    pub fn from_name(name: &str) -> Option<Method> {
        Method::ALL.into_iter().find(|m| m.name() == name)
    }

    /// Fewest days of history the method needs (daily demand, weekly season).
    pub fn min_history(self) -> usize {
        self.min_history_for(SEASON)
    }

    /// Fewest periods of history the method needs when a season is `season` periods.
    pub fn min_history_for(self, season: usize) -> usize {
        let season = season.max(1);
        match self {
            Method::Mean => 1,
            Method::SeasonalNaive => season,
            Method::HoltWinters | Method::HoltWintersDamped => 2 * season,
            Method::Croston | Method::Sba | Method::Tsb => season,
            Method::MstlEts => 3 * season,
        }
    }

    /// Fits the method to a daily `history` and forecasts `horizon` days after it.
    pub fn forecast(self, history: &[f64], horizon: usize) -> Result<Forecast, MethodError> {
        self.forecast_seasonal(history, horizon, SEASON)
    }

    /// Fits the method to `history`, whose season is `season` periods (7 for daily
    /// demand, 52 for weekly sales with a yearly pattern, 1 for none), and forecasts
    /// `horizon` periods after it.
    pub fn forecast_seasonal(
        self,
        history: &[f64],
        horizon: usize,
        season: usize,
    ) -> Result<Forecast, MethodError> {
        let season = season.max(1);
        let needed = self.min_history_for(season);
        if history.len() < needed {
            return Err(MethodError::TooShort {
                method: self,
                days: history.len(),
                needed,
            });
        }
        if let Some(i) = history.iter().position(|v| !v.is_finite()) {
            return Err(MethodError::NotFinite { day: i });
        }
        let f = match self {
            Method::Mean => baseline::mean(history, horizon),
            Method::SeasonalNaive => baseline::seasonal_naive(history, horizon, season),
            Method::HoltWinters => {
                smoothing::HoltWinters::fit(history, false, season).forecast(horizon)
            }
            Method::HoltWintersDamped => {
                smoothing::HoltWinters::fit(history, true, season).forecast(horizon)
            }
            Method::Croston => {
                intermittent::croston(history, horizon, intermittent::Variant::Croston)
            }
            Method::Sba => intermittent::croston(history, horizon, intermittent::Variant::Sba),
            Method::Tsb => intermittent::tsb(history, horizon),
            Method::MstlEts => decomposition::mstl_ets(history, horizon, season)?,
        };
        Ok(f.sanitised())
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a method could not forecast a series.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MethodError {
    #[error("{method} needs at least {needed} periods of history, the series has {days}")]
    TooShort {
        method: Method,
        days: usize,
        needed: usize,
    },
    #[error("day {day} of the history is not a finite number")]
    NotFinite { day: usize },
    #[error("{method}: {reason}")]
    Fit { method: Method, reason: String },
}

/// Point forecasts and prediction intervals for the days after the history.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Forecast {
    pub mean: Vec<f64>,
    pub lower80: Vec<f64>,
    pub upper80: Vec<f64>,
    pub lower95: Vec<f64>,
    pub upper95: Vec<f64>,
}

impl Forecast {
    /// Normal intervals `mean ± z·sigma` for each day.
    pub fn normal(mean: Vec<f64>, sigma: &[f64]) -> Self {
        let band = |z: f64, sign: f64| -> Vec<f64> {
            mean.iter()
                .zip(sigma)
                .map(|(m, s)| m + sign * z * s)
                .collect()
        };
        Self {
            lower80: band(Z80, -1.0),
            upper80: band(Z80, 1.0),
            lower95: band(Z95, -1.0),
            upper95: band(Z95, 1.0),
            mean,
        }
    }

    /// Days forecast.
    pub fn len(&self) -> usize {
        self.mean.len()
    }

    /// No day forecast.
    pub fn is_empty(&self) -> bool {
        self.mean.is_empty()
    }

    /// Demand is never negative and intervals nest around the point:
    /// `0 <= lower95 <= lower80 <= mean <= upper80 <= upper95`, every value finite.
    fn sanitised(mut self) -> Self {
        for i in 0..self.mean.len() {
            let fin = |v: f64| if v.is_finite() { v } else { 0.0 };
            let m = fin(self.mean[i]).max(0.0);
            let l80 = fin(self.lower80[i]).max(0.0).min(m);
            let l95 = fin(self.lower95[i]).max(0.0).min(l80);
            let u80 = fin(self.upper80[i]).max(m);
            let u95 = fin(self.upper95[i]).max(u80);
            self.mean[i] = m;
            self.lower80[i] = l80;
            self.lower95[i] = l95;
            self.upper80[i] = u80;
            self.upper95[i] = u95;
        }
        self
    }

    /// Standard deviation of each day's demand implied by the 80% interval
    /// (normal approximation), used for stock-out probabilities.
    pub fn sigma(&self) -> Vec<f64> {
        self.lower80
            .iter()
            .zip(&self.upper80)
            .map(|(l, u)| (u - l) / (2.0 * Z80))
            .collect()
    }
}

/// Mean of a slice (0 when empty).
pub(crate) fn mean_of(v: &[f64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}
