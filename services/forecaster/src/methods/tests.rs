//! Methods on simulated series of known structure: the choice per series, accuracy
//! against the seasonal-naive baseline, and interval coverage near the nominal level.

use super::selection::Selection;
use super::synthetic::{intermittent, regular, rng};
use super::{Method, SEASON};

/// Share of held-out days inside the 80% and 95% intervals, over many series, when
/// forecasting with `method` (or the selection when `None`).
fn coverage(series: &[Vec<f64>], train: usize, method: Option<Method>) -> (f64, f64) {
    let (mut in80, mut in95, mut n) = (0usize, 0usize, 0usize);
    for y in series {
        let (history, future) = y.split_at(train);
        let f = match method {
            Some(m) => m.forecast(history, future.len()).expect("forecast"),
            None => {
                Selection::default()
                    .forecast(history)
                    .expect("forecast")
                    .forecast
            }
        };
        for (h, a) in future.iter().enumerate().take(f.len()) {
            in80 += usize::from(f.lower80[h] <= *a && *a <= f.upper80[h]);
            in95 += usize::from(f.lower95[h] <= *a && *a <= f.upper95[h]);
            n += 1;
        }
    }
    (in80 as f64 / n as f64, in95 as f64 / n as f64)
}

#[test]
fn intervals_of_a_regular_seller_cover_near_the_nominal_level() {
    let mut r = rng(7);
    let series: Vec<Vec<f64>> = (0..200)
        .map(|_| regular(&mut r, 120 + 14, 20.0, 0.0))
        .collect();
    for m in [
        Method::HoltWinters,
        Method::HoltWintersDamped,
        Method::SeasonalNaive,
    ] {
        let (c80, c95) = coverage(&series, 120, Some(m));
        assert!(
            (0.75..=0.87).contains(&c80),
            "{m} 80% interval covered {c80:.3}"
        );
        assert!(
            (0.91..=0.98).contains(&c95),
            "{m} 95% interval covered {c95:.3}"
        );
    }
    let (c80, c95) = coverage(&series, 120, None);
    assert!((0.75..=0.87).contains(&c80), "chosen: 80% covered {c80:.3}");
    assert!((0.91..=0.98).contains(&c95), "chosen: 95% covered {c95:.3}");
}

#[test]
fn intervals_of_a_slow_mover_cover_near_the_nominal_level() {
    // Discrete demand: an interval either holds a whole value or not, so coverage
    // sits at or above nominal (a sale of 0 lies in every interval starting at 0).
    let mut r = rng(11);
    let series: Vec<Vec<f64>> = (0..200)
        .map(|_| intermittent(&mut r, 120 + 14, 0.25, 3.0))
        .collect();
    for m in [Method::Sba, Method::Tsb, Method::Croston] {
        let (c80, c95) = coverage(&series, 120, Some(m));
        assert!(
            (0.77..=0.93).contains(&c80),
            "{m} 80% interval covered {c80:.3}"
        );
        assert!(
            (0.92..=0.995).contains(&c95),
            "{m} 95% interval covered {c95:.3}"
        );
    }
}

#[test]
fn a_pure_weekly_pattern_is_forecast_exactly_by_the_chosen_method() {
    let week = [12.0, 14.0, 15.0, 18.0, 25.0, 40.0, 9.0];
    let y: Vec<f64> = (0..63).map(|t| week[t % SEASON]).collect();
    let c = Selection::default().forecast(&y).expect("forecast");
    for (h, v) in c.forecast.mean.iter().enumerate() {
        assert!(
            (v - week[(63 + h) % SEASON]).abs() < 1e-9,
            "{}: day {h} {v}",
            c.method
        );
    }
    assert_eq!(c.score.expect("backtested").mase, 0.0);
}

#[test]
fn a_trending_seller_is_forecast_better_than_seasonal_naive() {
    let mut r = rng(3);
    let (mut chosen, mut naive) = (0.0, 0.0);
    for _ in 0..50 {
        let y = regular(&mut r, 120, 10.0, 0.25);
        let c = Selection::default().forecast(&y).expect("forecast");
        let score = c.score.expect("backtested");
        let base = c.baseline.expect("baseline");
        assert!(score.mase <= base.mase);
        chosen += score.mase;
        naive += base.mase;
    }
    assert!(chosen < 0.9 * naive, "chosen {chosen} vs naive {naive}");
}

#[test]
fn a_slow_mover_is_forecast_better_than_seasonal_naive_out_of_sample() {
    let mut r = rng(5);
    let (mut chosen, mut naive) = (0.0, 0.0);
    for _ in 0..100 {
        let y = intermittent(&mut r, 134, 0.2, 2.0);
        let (history, future) = y.split_at(120);
        let c = Selection::default().forecast(history).expect("forecast");
        let sn = Method::SeasonalNaive
            .forecast(history, 14)
            .expect("baseline");
        chosen += super::accuracy::mase(future, &c.forecast.mean, history, SEASON);
        naive += super::accuracy::mase(future, &sn.mean, history, SEASON);
    }
    assert!(chosen < naive, "chosen {chosen} vs naive {naive}");
}

#[test]
fn refunds_below_zero_and_gaps_never_give_negative_forecasts() {
    // A day can net negative (more refunded than sold); forecasts stay >= 0.
    let mut y: Vec<f64> = (0..40)
        .map(|t| if t % 7 == 3 { -2.0 } else { 1.0 })
        .collect();
    y[10] = 0.0;
    for m in Method::ALL {
        if let Ok(f) = m.forecast(&y, 14) {
            for h in 0..14 {
                assert!(0.0 <= f.lower95[h] && f.lower95[h] <= f.lower80[h], "{m}");
                assert!(
                    f.lower80[h] <= f.mean[h] && f.mean[h] <= f.upper80[h],
                    "{m}"
                );
                assert!(f.upper80[h] <= f.upper95[h], "{m}");
            }
        }
    }
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    assert!(Method::HoltWinters.forecast(&[1.0; 5], 3).is_err());
    assert!(Method::Mean.forecast(&[1.0, f64::NAN], 3).is_err());
    assert!(Method::Mean.forecast(&[], 3).is_err());
}
