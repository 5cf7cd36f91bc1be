//! `storepulse forecast backtest`: rolling-origin evaluation of every method, and of
//! the per-series choice the service makes, on a history from Postgres (the
//! forecaster's `daily_demand`) or a CSV file; MASE and sMAPE per method against the
//! seasonal-naive baseline, as a table and a PNG chart.
//!
//! For each series and each of `origins` origins a week apart (the last one
//! `horizon` periods before the end), every method is fitted on the history before the
//! origin and scored on the `horizon` periods after it; `auto` is the service's
//! choice ([`Selection::forecast`]) made on that same history only, so it is scored
//! out of sample too. Daily data has a weekly season (7 periods); other data says its
//! own (`--period-days 7 --season 52` for weekly sales with a yearly pattern): the
//! methods, the baseline (the same period of the last season) and MASE's scale all
//! use it, and origins stay a week apart (one period of weekly data). A method is averaged over the (series, origin) cases it could be
//! fitted at; `vs naive` is its mean MASE over the seasonal-naive baseline's on those
//! same cases (below 1: better than the baseline).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use chrono::NaiveDate;

use crate::methods::accuracy::{mase, smape};
use crate::methods::selection::Selection;
use crate::methods::{Method, SEASON};

/// Options of `storepulse forecast backtest`.
#[derive(Debug, Clone, clap::Args)]
pub struct BacktestArgs {
    /// Read the history from this CSV file (header row; one row per series and
    /// period) instead of the forecaster's state in Postgres.
    #[arg(long)]
    pub csv: Option<PathBuf>,
    /// CSV column with the date (YYYY-MM-DD).
    #[arg(long, default_value = "date")]
    pub date_column: String,
    /// CSV column with the units sold.
    #[arg(long, default_value = "units")]
    pub value_column: String,
    /// CSV column naming the series (absent: one series).
    #[arg(long, default_value = "series")]
    pub series_column: String,
    /// Days between two periods of the CSV (1: daily; 7: weekly). Missing periods
    /// count 0. Origins are a week apart: 7 periods of daily data, 1 of weekly.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i64).range(1..))]
    pub period_days: i64,
    /// Periods in a season, for the methods, the seasonal-naive baseline and MASE's
    /// scale: 7 for daily demand (a weekly pattern), 52 for weekly sales (a yearly
    /// pattern).
    #[arg(long, default_value_t = SEASON, value_parser = positive)]
    pub season: usize,
    /// Only this tenant (Postgres).
    #[arg(long)]
    pub tenant: Option<String>,
    /// Only this store (Postgres).
    #[arg(long)]
    pub store: Option<String>,
    /// Periods forecast from each origin.
    #[arg(long, default_value_t = 14, value_parser = positive)]
    pub horizon: usize,
    /// Origins, a week apart.
    #[arg(long, default_value_t = 3)]
    pub origins: usize,
    /// Where to write the chart (PNG).
    #[arg(long, default_value = "forecast-backtest.png")]
    pub chart: PathBuf,
}

/// A whole number of at least 1.
fn positive(v: &str) -> Result<usize, String> {
    match v.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("{v:?} is not a whole number of at least 1")),
    }
}

/// One series' history, oldest first.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub values: Vec<f64>,
}

#[derive(Debug, thiserror::Error)]
pub enum BacktestError {
    #[error("{path}: {reason}")]
    Csv { path: String, reason: String },
    #[error("{path} line {line}: {reason}")]
    CsvRow {
        path: String,
        line: usize,
        reason: String,
    },
    #[error("chart: {0}")]
    Chart(String),
    #[error("postgres: {0}")]
    Postgres(String),
}

/// Reads series from a CSV file (see [`BacktestArgs`]). Quoted fields are not
/// supported; a bad row is an error naming its line and column.
pub fn load_csv(path: &Path, args: &BacktestArgs) -> Result<Vec<Series>, BacktestError> {
    let p = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| BacktestError::Csv {
        path: p.clone(),
        reason: e.to_string(),
    })?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines
        .next()
        .ok_or_else(|| BacktestError::Csv {
            path: p.clone(),
            reason: "empty file".into(),
        })?
        .split(',')
        .map(str::trim)
        .collect();
    let col = |name: &str| header.iter().position(|h| *h == name);
    let missing = |name: &str| BacktestError::Csv {
        path: p.clone(),
        reason: format!("no column {name:?} (columns: {})", header.join(", ")),
    };
    let date_i = col(&args.date_column).ok_or_else(|| missing(&args.date_column))?;
    let value_i = col(&args.value_column).ok_or_else(|| missing(&args.value_column))?;
    let series_i = col(&args.series_column);
    let mut points: BTreeMap<String, BTreeMap<NaiveDate, f64>> = BTreeMap::new();
    for (n, line) in lines.enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let err = |reason: String| BacktestError::CsvRow {
            path: p.clone(),
            line: n + 2,
            reason,
        };
        let get = |i: usize, name: &str| {
            fields
                .get(i)
                .copied()
                .ok_or_else(|| err(format!("no value for column {name:?}")))
        };
        let date: NaiveDate = get(date_i, &args.date_column)?
            .parse()
            .map_err(|e| err(format!("{}: {e}", args.date_column)))?;
        let value: f64 = get(value_i, &args.value_column)?
            .parse()
            .map_err(|e| err(format!("{}: {e}", args.value_column)))?;
        if !value.is_finite() {
            return Err(err(format!("{}: not a finite number", args.value_column)));
        }
        let name = match series_i {
            Some(i) => get(i, &args.series_column)?.to_string(),
            None => "series".to_string(),
        };
        *points.entry(name).or_default().entry(date).or_default() += value;
    }
    let step = args.period_days.max(1);

    Ok(points
        .into_iter()
        .map(|(name, by_date)| Series {
            name,
            values: fill(&by_date, step),
        })
        .collect())
}

/// Values from the first to the last date, a period every `step` days, missing ones 0.
fn fill(by_date: &BTreeMap<NaiveDate, f64>, step: i64) -> Vec<f64> {
    let (Some(first), Some(last)) = (by_date.keys().next(), by_date.keys().next_back()) else {
        return Vec::new();
    };
    let n = (*last - *first).num_days() / step + 1;
    (0..n)
        .map(|i| {
            by_date
                .get(&(*first + chrono::Duration::days(i * step)))
                .copied()
                .unwrap_or(0.0)
        })
        .collect()
}

/// Reads the forecaster's daily demand (optionally one tenant/store) as series.
pub async fn load_postgres(
    pool: &deadpool_postgres::Pool,
    tenant: Option<&str>,
    store: Option<&str>,
) -> Result<Vec<Series>, BacktestError> {
    let pg = |e: &dyn std::fmt::Display| BacktestError::Postgres(e.to_string());
    let client = pool.get().await.map_err(|e| pg(&e))?;
    let rows = client
        .query(
            include_str!("../sql/backtest_history.sql"),
            &[&tenant, &store],
        )
        .await
        .map_err(|e| pg(&storepulse_runtime::db::describe(&e)))?;
    let mut points: BTreeMap<String, BTreeMap<NaiveDate, f64>> = BTreeMap::new();
    for r in rows {
        let name = format!(
            "{}/{}/{}",
            r.get::<_, String>(0),
            r.get::<_, String>(1),
            r.get::<_, String>(2)
        );
        points.entry(name).or_default().insert(r.get(3), r.get(4));
    }
    Ok(points
        .into_iter()
        .map(|(name, d)| Series {
            name,
            values: fill(&d, 1),
        })
        .collect())
}

/// Scores of one method over the cases it could be fitted at.
#[derive(Debug, Clone, PartialEq)]
pub struct MethodRow {
    pub method: String,
    pub cases: usize,
    pub mase: f64,
    pub smape: f64,
    /// Mean MASE over the seasonal-naive baseline's on the same cases.
    pub vs_naive: f64,
}

/// The backtest's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub series: usize,
    pub rows: Vec<MethodRow>,
}

/// The name of the service's per-series choice in the report.
pub const AUTO: &str = "auto";

/// How the backtest runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Setup {
    /// Periods forecast from each origin.
    pub horizon: usize,
    /// Origins per series.
    pub origins: usize,
    /// Periods in a season ([`SEASON`] for daily demand).
    pub season: usize,
    /// Periods between two origins (a week).
    pub origin_spacing: usize,
}

impl Setup {
    /// Daily data: a weekly season, origins a week apart.
    pub fn daily(horizon: usize, origins: usize) -> Self {
        Self {
            horizon,
            origins,
            season: SEASON,
            origin_spacing: SEASON,
        }
    }
}

impl BacktestArgs {
    /// The backtest these options ask for.
    pub fn setup(&self) -> Setup {
        Setup {
            horizon: self.horizon,
            origins: self.origins,
            season: self.season.max(1),
            origin_spacing: usize::try_from(7 / self.period_days.max(1))
                .unwrap_or(1)
                .max(1),
        }
    }
}

/// Runs the backtest over `series`.
pub fn evaluate(series: &[Series], setup: Setup) -> Report {
    let Setup {
        horizon,
        origins,
        season,
        origin_spacing,
    } = setup;
    // The service's choice, with its default inner origins.
    let selection = Selection {
        horizon,
        season,
        origin_spacing,
        ..Selection::default()
    };
    /// One scored forecast: (series, origin), MASE, sMAPE.
    type Case = ((usize, usize), f64, f64);
    let mut scores: BTreeMap<String, Vec<Case>> = BTreeMap::new();
    let mut used = 0;
    for (si, s) in series.iter().enumerate() {
        let y = &s.values;
        let mut any = false;
        for k in 0..origins {
            let Some(o) = y.len().checked_sub(horizon + k * origin_spacing) else {
                continue;
            };
            if o < 1 {
                continue;
            }
            let (train, test) = (&y[..o], &y[o..o + horizon]);
            let mut score = |name: &str, f: &[f64]| {
                scores.entry(name.to_string()).or_default().push((
                    (si, k),
                    mase(test, f, train, season),
                    smape(test, f),
                ));
            };
            for m in Method::ALL {
                if let Ok(f) = m.forecast_seasonal(train, horizon, season) {
                    score(m.name(), &f.mean);
                }
            }
            if let Ok(c) = selection.forecast(train) {
                score(AUTO, &c.forecast.mean);
                any = true;
            }
        }
        used += usize::from(any);
    }
    let naive: BTreeMap<(usize, usize), f64> = scores
        .get(Method::SeasonalNaive.name())
        .map(|v| v.iter().map(|(k, m, _)| (*k, *m)).collect())
        .unwrap_or_default();
    let mut rows: Vec<MethodRow> = scores
        .iter()
        .map(|(name, v)| {
            let n = v.len() as f64;
            let (mut own, mut base) = (0.0, 0.0);
            for (k, m, _) in v {
                if let Some(b) = naive.get(k) {
                    own += m;
                    base += b;
                }
            }
            MethodRow {
                method: name.clone(),
                cases: v.len(),
                mase: v.iter().map(|x| x.1).sum::<f64>() / n,
                smape: v.iter().map(|x| x.2).sum::<f64>() / n,
                vs_naive: if base > 0.0 { own / base } else { f64::NAN },
            }
        })
        .collect();
    rows.sort_by(|a, b| a.mase.total_cmp(&b.mase));
    Report { series: used, rows }
}

impl Report {
    /// The table printed by the command.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{} series", self.series);
        let _ = writeln!(
            out,
            "{:<22} {:>7} {:>8} {:>9} {:>9}",
            "method", "cases", "MASE", "sMAPE %", "vs naive"
        );
        for r in &self.rows {
            let _ = writeln!(
                out,
                "{:<22} {:>7} {:>8.3} {:>9.1} {:>9.3}",
                r.method, r.cases, r.mase, r.smape, r.vs_naive
            );
        }
        out
    }

    /// Draws mean MASE per method as bars (the baseline's level as a line) into a PNG.
    pub fn chart(&self, path: &Path, title: &str) -> Result<(), BacktestError> {
        use plotters::prelude::*;
        let err = |e: &dyn std::fmt::Display| BacktestError::Chart(e.to_string());
        register_font();
        let root = BitMapBackend::new(path, (900, 520)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let n = self.rows.len().max(1);
        let top = self
            .rows
            .iter()
            .map(|r| r.mase)
            .filter(|v| v.is_finite())
            .fold(1.0f64, f64::max)
            * 1.15;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d((0..n).into_segmented(), 0f64..top)
            .map_err(|e| err(&e))?;
        let names: Vec<String> = self.rows.iter().map(|r| r.method.clone()).collect();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(n)
            .x_label_formatter(&|x| match x {
                SegmentValue::CenterOf(i) => names.get(*i).cloned().unwrap_or_default(),
                _ => String::new(),
            })
            .y_desc("mean MASE (lower is better)")
            .label_style(("sans-serif", 12))
            .draw()
            .map_err(|e| err(&e))?;
        let naive = self
            .rows
            .iter()
            .find(|r| r.method == Method::SeasonalNaive.name())
            .map(|r| r.mase);
        chart
            .draw_series(self.rows.iter().enumerate().map(|(i, r)| {
                let colour = if r.method == AUTO {
                    RGBColor(200, 80, 40)
                } else if r.method == Method::SeasonalNaive.name() {
                    RGBColor(130, 130, 130)
                } else {
                    RGBColor(60, 110, 180)
                };
                let mut bar = Rectangle::new(
                    [
                        (SegmentValue::Exact(i), 0.0),
                        (SegmentValue::Exact(i + 1), r.mase),
                    ],
                    colour.filled(),
                );
                bar.set_margin(0, 0, 6, 6);
                bar
            }))
            .map_err(|e| err(&e))?;
        if let Some(b) = naive {
            chart
                .draw_series(LineSeries::new(
                    [(SegmentValue::Exact(0), b), (SegmentValue::Last, b)],
                    RGBColor(90, 90, 90).stroke_width(1),
                ))
                .map_err(|e| err(&e))?;
        }
        root.present().map_err(|e| err(&e))?;
        Ok(())
    }
}

/// The chart's font: DejaVu Sans, bundled (`assets/`), so no system font is needed.
fn register_font() {
    static FONT: std::sync::Once = std::sync::Once::new();
    FONT.call_once(|| {
        let _ = plotters::style::register_font(
            "sans-serif",
            plotters::style::FontStyle::Normal,
            include_bytes!("../assets/DejaVuSans.ttf"),
        );
    });
}

/// Runs the command: loads the history, evaluates, writes the chart.
pub async fn run(
    args: &BacktestArgs,
    postgres: Option<&storepulse_runtime::PostgresConfig>,
) -> anyhow::Result<Report> {
    let (series, source) = match (&args.csv, postgres) {
        (Some(path), _) => (load_csv(path, args)?, path.display().to_string()),
        (None, Some(pg)) => {
            let pool = storepulse_runtime::db::pool(pg)?;
            (
                load_postgres(&pool, args.tenant.as_deref(), args.store.as_deref()).await?,
                "forecaster.daily_demand".to_string(),
            )
        }
        (None, None) => anyhow::bail!("give --csv FILE or a Postgres URL (postgres.url)"),
    };
    run_on(series, &source, args).await
}

/// Evaluates `series` (read from `source`, named in the chart's title) as `args`
/// say and writes the chart.
pub async fn run_on(
    series: Vec<Series>,
    source: &str,
    args: &BacktestArgs,
) -> anyhow::Result<Report> {
    anyhow::ensure!(!series.is_empty(), "no series in {source}");
    let setup = args.setup();
    let (h, o) = (setup.horizon, setup.origins);
    let report = tokio::task::spawn_blocking(move || evaluate(&series, setup)).await?;
    report.chart(
        &args.chart,
        &format!(
            "{}: {h} ahead, {o} origins (orange: auto, grey: seasonal naive)",
            source.rsplit('/').next().unwrap_or(source)
        ),
    )?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::methods::synthetic::{intermittent, regular, rng};

    fn args() -> BacktestArgs {
        BacktestArgs {
            csv: None,
            date_column: "date".into(),
            value_column: "units".into(),
            series_column: "series".into(),
            period_days: 1,
            season: 7,
            tenant: None,
            store: None,
            horizon: 14,
            origins: 3,
            chart: PathBuf::from("unused.png"),
        }
    }

    #[test]
    fn reads_a_csv_with_gaps_and_series_and_names_a_bad_row() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("h.csv");
        std::fs::write(
            &path,
            "series,date,units\na,2026-01-01,3\na,2026-01-03,4\nb,2026-01-02,1\na,2026-01-03,1\n",
        )
        .expect("write");
        let s = load_csv(&path, &args()).expect("csv");
        assert_eq!(
            s[0],
            Series {
                name: "a".into(),
                values: vec![3.0, 0.0, 5.0]
            }
        );
        assert_eq!(s[1].values, vec![1.0]);
        std::fs::write(&path, "series,date,units\na,2026-01-01,x\n").expect("write");
        let e = load_csv(&path, &args()).expect_err("bad value").to_string();
        assert!(e.contains("line 2") && e.contains("units"), "{e}");
        std::fs::write(&path, "day,units\n").expect("write");
        assert!(
            load_csv(&path, &args())
                .expect_err("no date")
                .to_string()
                .contains("\"date\"")
        );
    }

    #[test]
    fn the_report_ranks_methods_against_the_baseline_and_renders_a_png() {
        let mut r = rng(1);
        let mut series: Vec<Series> = (0..6)
            .map(|i| Series {
                name: format!("r{i}"),
                values: regular(&mut r, 120, 15.0, 0.05),
            })
            .collect();
        series.extend((0..6).map(|i| Series {
            name: format!("i{i}"),
            values: intermittent(&mut r, 120, 0.2, 2.0),
        }));
        let report = evaluate(&series, Setup::daily(14, 3));
        assert_eq!(report.series, 12);
        let row = |m: &str| report.rows.iter().find(|r| r.method == m).expect(m).clone();
        assert_eq!(row("seasonal-naive").vs_naive, 1.0);
        assert!(row(AUTO).vs_naive < 1.0, "{}", report.render());
        assert_eq!(row(AUTO).cases, 36);
        assert!(report.render().contains("holt-winters-damped"));
        let dir = tempfile::tempdir().expect("tmp");
        let png = dir.path().join("chart.png");
        report.chart(&png, "test").expect("chart");
        let bytes = std::fs::read(&png).expect("png");
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        assert!(bytes.len() > 5_000, "{} bytes", bytes.len());
    }
}
