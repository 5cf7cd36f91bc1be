//! MSTL with AutoETS, from the `augurs` crate: the series is split into a weekly
//! seasonal component (STL/LOESS) and the rest, the rest is forecast by AutoETS
//! (non-seasonal ETS chosen by AICc), and the weekly component is added back.
//! Intervals are the ones AutoETS gives for the deseasonalised series.

use augurs::ets::AutoETS;
use augurs::ets::trend::AutoETSTrendModel;
use augurs::mstl::MSTLModel;
use augurs::{Fit, Predict};

use super::{Forecast, Method, MethodError};

/// Fits MSTL(`season`; 7 for daily demand) + AutoETS and forecasts `horizon`
/// periods with 80% and 95% intervals.
pub fn mstl_ets(history: &[f64], horizon: usize, season: usize) -> Result<Forecast, MethodError> {
    let err = |e: &dyn std::fmt::Display| MethodError::Fit {
        method: Method::MstlEts,
        reason: e.to_string(),
    };
    let trend = AutoETSTrendModel::from(AutoETS::non_seasonal());
    let model = MSTLModel::new(vec![season], trend);
    let fitted = model.fit(history).map_err(|e| err(&e))?;
    let at80 = fitted.predict(horizon, 0.8).map_err(|e| err(&e))?;
    let at95 = fitted.predict(horizon, 0.95).map_err(|e| err(&e))?;
    let (Some(i80), Some(i95)) = (at80.intervals, at95.intervals) else {
        return Err(err(&"the fitted model gave no intervals"));
    };
    Ok(Forecast {
        mean: at80.point,
        lower80: i80.lower,
        upper80: i80.upper,
        lower95: i95.lower,
        upper95: i95.upper,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_a_weekly_pattern() {
        let week = [5.0, 8.0, 9.0, 10.0, 14.0, 30.0, 3.0];
        let y: Vec<f64> = (0..56)
            .map(|t| week[t % 7] + (t % 3) as f64 * 0.1)
            .collect();
        let f = mstl_ets(&y, 7, 7).expect("fits");
        for (h, v) in f.mean.iter().enumerate() {
            assert!((v - week[(56 + h) % 7]).abs() < 1.0, "day {h}: {v}");
        }
        assert!(f.lower95[0] <= f.lower80[0] && f.upper80[0] <= f.upper95[0]);
    }
}
