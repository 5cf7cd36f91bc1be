//! Forecast error measures: MASE (scaled by the in-sample seasonal naive error — for
//! daily demand week-on-week — so 1.0 means "as good as repeating last season in the
//! history") and sMAPE.

/// Mean absolute error of the naive forecast on `training`: season-on-season (`season`
/// periods; 7 for daily demand) when it has more than a season, else period-on-period;
/// when the history is constant (zero naive error) its mean, and 1 for an all-zero
/// history — so the scale is never zero.
pub fn naive_scale(training: &[f64], season: usize) -> f64 {
    let lag_mae = |lag: usize| -> Option<f64> {
        (training.len() > lag).then(|| {
            (lag..training.len())
                .map(|t| (training[t] - training[t - lag]).abs())
                .sum::<f64>()
                / (training.len() - lag) as f64
        })
    };
    let scale = lag_mae(season.max(1)).or_else(|| lag_mae(1)).unwrap_or(0.0);
    if scale > 0.0 {
        return scale;
    }
    let mean = training.iter().map(|v| v.abs()).sum::<f64>() / training.len().max(1) as f64;
    if mean > 0.0 { mean } else { 1.0 }
}

/// Mean absolute scaled error of `forecast` against `actual`, scaled by [`naive_scale`]
/// of `training` with a season of `season` periods.
pub fn mase(actual: &[f64], forecast: &[f64], training: &[f64], season: usize) -> f64 {
    mae(actual, forecast) / naive_scale(training, season)
}

/// Mean absolute error over the common length.
pub fn mae(actual: &[f64], forecast: &[f64]) -> f64 {
    let n = actual.len().min(forecast.len());
    if n == 0 {
        return 0.0;
    }
    actual
        .iter()
        .zip(forecast)
        .map(|(a, f)| (a - f).abs())
        .sum::<f64>()
        / n as f64
}

/// Symmetric mean absolute percentage error in percent (0..200): mean of
/// `200·|a − f| / (|a| + |f|)`, a day with `a = f = 0` counting 0.
pub fn smape(actual: &[f64], forecast: &[f64]) -> f64 {
    let n = actual.len().min(forecast.len());
    if n == 0 {
        return 0.0;
    }
    actual
        .iter()
        .zip(forecast)
        .map(|(a, f)| {
            let d = a.abs() + f.abs();
            if d == 0.0 {
                0.0
            } else {
                200.0 * (a - f).abs() / d
            }
        })
        .sum::<f64>()
        / n as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn by_hand() {
        // Training: two weeks, week 2 = week 1 + 2 → scale 2. Errors 1 and 3 → MAE 2 → MASE 1.
        let training: Vec<f64> = (0..14)
            .map(|t| (t % 7) as f64 + if t >= 7 { 2.0 } else { 0.0 })
            .collect();
        assert_eq!(naive_scale(&training, 7), 2.0);
        assert_eq!(mase(&[5.0, 5.0], &[4.0, 8.0], &training, 7), 1.0);
        // sMAPE: 200·1/9 and 200·3/13, and a zero day counting 0.
        let s = smape(&[5.0, 5.0, 0.0], &[4.0, 8.0, 0.0]);
        assert!((s - (200.0 / 9.0 + 600.0 / 13.0) / 3.0).abs() < 1e-12);
    }

    #[test]
    fn the_scale_is_never_zero() {
        assert_eq!(naive_scale(&[3.0; 10], 7), 3.0);
        assert_eq!(naive_scale(&[0.0; 10], 7), 1.0);
        assert_eq!(naive_scale(&[1.0, 3.0], 7), 2.0);
    }
}
