//! Series fitted and forecast per second on 365-day histories: the whole per-series
//! work of the forecaster (candidate methods backtested at 3 origins, the winner
//! refitted, 14 days with 80%/95% intervals), and single methods for comparison.
//! Series: the synthetic generator's regular sellers (weekly pattern, Poisson) and
//! slow movers, half and half.
//!
//! `cargo bench -p storepulse-forecaster --bench forecast`

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use storepulse_forecaster::methods::Method;
use storepulse_forecaster::methods::selection::Selection;
use storepulse_forecaster::methods::synthetic::{intermittent, regular, rng};

const SERIES: usize = 100;

fn histories() -> Vec<Vec<f64>> {
    let mut r = rng(42);
    (0..SERIES)
        .map(|i| {
            if i % 2 == 0 {
                regular(&mut r, 365, 5.0 + i as f64, 0.01)
            } else {
                intermittent(&mut r, 365, 0.15, 2.0)
            }
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let hs = histories();
    let mut g = c.benchmark_group("forecast_365_days");
    g.throughput(Throughput::Elements(SERIES as u64));
    g.sample_size(10);
    let selection = Selection::default();
    g.bench_function("choose_fit_forecast", |b| {
        b.iter(|| {
            for h in &hs {
                std::hint::black_box(selection.forecast(h).ok());
            }
        })
    });
    let with_mstl = Selection {
        mstl: true,
        ..Selection::default()
    };
    g.bench_function("choose_fit_forecast_with_mstl", |b| {
        b.iter(|| {
            for h in &hs {
                std::hint::black_box(with_mstl.forecast(h).ok());
            }
        })
    });
    for m in [Method::HoltWintersDamped, Method::Tsb, Method::MstlEts] {
        g.bench_function(format!("fit_forecast_{}", m.name()), |b| {
            b.iter(|| {
                for h in &hs {
                    std::hint::black_box(m.forecast(h, 14).ok());
                }
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
