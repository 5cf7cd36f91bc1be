//! Stock-out risk of one store/sku from its on-hand stock and its demand forecast.
//!
//! - **Days of cover**: how many days the stock lasts at the forecast mean demand —
//!   the day the cumulative mean forecast reaches the stock, interpolated within the
//!   day; past the horizon, the stock over the horizon's mean daily demand. `None`
//!   when no demand is forecast (the stock never runs out).
//! - **Probability of running out within the lead time** `L` days:
//!   `P(D_1 + … + D_L > on hand)`, with the sum taken as normal with the forecast
//!   means and the days' variances (read off the 80% intervals) added as if the days
//!   were independent — which understates the spread of a model whose errors persist,
//!   so read it as a ranking more than a calibrated probability. A lead time beyond
//!   the horizon is cut to the horizon.

use crate::methods::Forecast;

/// Risk figures published with a forecast.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StockRisk {
    pub on_hand: f64,
    pub days_of_cover: Option<f64>,
    pub stock_out_probability: f64,
    pub lead_time_days: usize,
}

/// Standard normal distribution function (Abramowitz & Stegun 7.1.26 for erf,
/// absolute error below 1.5e-7).
pub fn normal_cdf(x: f64) -> f64 {
    let z = x.abs() / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * z);
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let erf = 1.0 - poly * (-z * z).exp();
    if x >= 0.0 {
        0.5 * (1.0 + erf)
    } else {
        0.5 * (1.0 - erf)
    }
}

/// Days of cover and stock-out probability of `on_hand` units against `forecast`.
pub fn stock_risk(on_hand: f64, forecast: &Forecast, lead_time_days: usize) -> StockRisk {
    let lead = lead_time_days.clamp(1, forecast.len().max(1));
    let sigma = forecast.sigma();
    let days_of_cover = if on_hand <= 0.0 {
        Some(0.0)
    } else {
        let mut cum = 0.0;
        let mut cover = None;
        for (d, m) in forecast.mean.iter().enumerate() {
            if *m > 0.0 && cum + m >= on_hand {
                cover = Some(d as f64 + (on_hand - cum) / m);
                break;
            }
            cum += m;
        }
        cover.or_else(|| {
            let total: f64 = forecast.mean.iter().sum();
            (total > 0.0).then(|| on_hand / (total / forecast.len() as f64))
        })
    };
    let mu: f64 = forecast.mean.iter().take(lead).sum();
    let var: f64 = sigma.iter().take(lead).map(|s| s * s).sum();
    let stock_out_probability = if on_hand <= 0.0 {
        1.0
    } else if var <= 0.0 {
        if mu > on_hand { 1.0 } else { 0.0 }
    } else {
        1.0 - normal_cdf((on_hand - mu) / var.sqrt())
    };
    StockRisk {
        on_hand,
        days_of_cover,
        stock_out_probability: stock_out_probability.clamp(0.0, 1.0),
        lead_time_days: lead,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::methods::Z80;

    fn flat(mean: f64, sigma: f64, days: usize) -> Forecast {
        Forecast::normal(vec![mean; days], &vec![sigma; days])
    }

    #[test]
    fn normal_cdf_by_table() {
        assert!((normal_cdf(0.0) - 0.5).abs() < 1e-7);
        assert!((normal_cdf(1.959_963_984_540_054) - 0.975).abs() < 1e-6);
        assert!((normal_cdf(-Z80) - 0.1).abs() < 1e-6);
    }

    #[test]
    fn cover_and_risk_by_hand() {
        // 10 a day, sd 2 a day; 25 on hand: cover 2.5 days.
        // Lead time 4: mean 40, sd sqrt(4·4) = 4 → P(D > 25) = Φ(15/4) ≈ 0.99991.
        let r = stock_risk(25.0, &flat(10.0, 2.0, 14), 4);
        assert!((r.days_of_cover.expect("runs out") - 2.5).abs() < 1e-9);
        assert!((r.stock_out_probability - normal_cdf(15.0 / 4.0)).abs() < 1e-9);
        // 40 on hand, lead time 4: exactly at the mean → one half.
        let r = stock_risk(40.0, &flat(10.0, 2.0, 14), 4);
        assert!((r.stock_out_probability - 0.5).abs() < 1e-6);
    }

    #[test]
    fn beyond_the_horizon_and_without_demand() {
        let r = stock_risk(280.0, &flat(10.0, 0.0, 14), 7);
        assert_eq!(r.days_of_cover, Some(28.0));
        assert_eq!(r.stock_out_probability, 0.0);
        let r = stock_risk(5.0, &flat(0.0, 0.0, 14), 7);
        assert_eq!(r.days_of_cover, None);
        let r = stock_risk(0.0, &flat(1.0, 1.0, 14), 30);
        assert_eq!(
            (r.days_of_cover, r.stock_out_probability, r.lead_time_days),
            (Some(0.0), 1.0, 14)
        );
    }
}
