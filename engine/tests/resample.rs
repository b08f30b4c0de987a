//! Resampling 1-minute bars against the exchange's own bars of longer timeframes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use bst_engine::{BacktestRequest, Engine, SeriesKey, StrategySpec, TimeRange};
use bst_ingest::{Category, Kline, Timeframe, csv_klines, samples, writer};
use chrono::{Datelike, TimeZone, Utc};

const MINUTE_MS: i64 = 60_000;

fn sample_file(name: &str) -> PathBuf {
    samples::require_datasets_dir()
        .join("bybit/klines")
        .join(name)
}

/// Returns a data directory that contains only the BTCUSDT 1-minute sample.
fn btc_data_dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let klines = csv_klines::read_kline_csv(&sample_file("BTCUSDT_1m.csv.gz")).unwrap();
        writer::write_klines(
            dir.path(),
            Category::Linear,
            "BTCUSDT",
            Timeframe::Minutes(1),
            &klines,
        )
        .unwrap();
        dir
    })
    .path()
}

fn series(symbol: &str, timeframe: Timeframe) -> SeriesKey {
    SeriesKey {
        category: Category::Linear,
        symbol: symbol.to_string(),
        timeframe,
    }
}

fn assert_same_ohlcv(got: &Kline, expected: &Kline) {
    assert_eq!(got.open_time_ms, expected.open_time_ms);
    assert_eq!(got.open, expected.open, "open at {}", got.open_time_ms);
    assert_eq!(got.high, expected.high, "high at {}", got.open_time_ms);
    assert_eq!(got.low, expected.low, "low at {}", got.open_time_ms);
    assert_eq!(got.close, expected.close, "close at {}", got.open_time_ms);
    assert_eq!(
        got.volume, expected.volume,
        "volume at {}",
        got.open_time_ms
    );
}

/// Checks resampled bars against the exchange's file: every file bar whose whole period lies
/// inside the 1-minute data has an equal resampled bar, and no other bar is produced.
async fn check_against_file(timeframe: Timeframe, file_name: &str) -> usize {
    let minute_bars = csv_klines::read_kline_csv(&sample_file("BTCUSDT_1m.csv.gz")).unwrap();
    let first_ms = minute_bars.first().unwrap().open_time_ms;
    let end_ms = minute_bars.last().unwrap().open_time_ms + MINUTE_MS;
    let period_ms = timeframe.fixed_duration_ms().unwrap();
    let expected: Vec<Kline> = csv_klines::read_kline_csv(&sample_file(file_name))
        .unwrap()
        .into_iter()
        .filter(|bar| bar.open_time_ms >= first_ms && bar.open_time_ms + period_ms <= end_ms)
        .collect();

    let engine = Engine::open(btc_data_dir()).unwrap();
    let resampled = engine
        .resample(&series("BTCUSDT", timeframe), &TimeRange::default())
        .await
        .unwrap();
    assert_eq!(resampled.len(), expected.len(), "bar count for {timeframe}");
    for (got, expected) in resampled.iter().zip(&expected) {
        assert_same_ohlcv(got, expected);
        assert_eq!(got.turnover, None, "the 1-minute sample has no turnover");
    }
    resampled.len()
}

#[tokio::test]
async fn hourly_bars_equal_exchange_file() {
    let hours = check_against_file(Timeframe::Minutes(60), "BTCUSDT_60m.csv.gz").await;
    assert_eq!(hours, 719);
}

#[tokio::test]
async fn five_minute_bars_equal_exchange_file() {
    let bars = check_against_file(Timeframe::Minutes(5), "BTCUSDT_5m.csv.gz").await;
    assert!(bars > 8_000, "{bars}");
}

#[tokio::test]
async fn four_hour_bars_equal_exchange_file() {
    check_against_file(Timeframe::Minutes(240), "BTCUSDT_240m.csv.gz").await;
}

#[tokio::test]
async fn backtest_on_unstored_timeframe_resamples() {
    let engine = Engine::open(btc_data_dir()).unwrap();
    let request = BacktestRequest::new(
        series("BTCUSDT", Timeframe::Minutes(60)),
        StrategySpec::SmaCrossover {
            fast_period: 5,
            slow_period: 20,
        },
    );
    let report = engine.run_backtest(&request).await.unwrap();
    assert_eq!(report.bars, 719);
    assert!(report.metrics.total_trades > 0);
}

/// Writes synthetic 1-minute bars from `start_ms` for `minutes` minutes. Bar i opens and
/// closes at 1000 + i, spans one unit either side, and has volume 0.1 and turnover 0.3.
fn synthetic_dir(start_ms: i64, minutes: i64) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let klines: Vec<Kline> = (0..minutes)
        .map(|index| {
            let value = 1_000.0 + index as f64;
            Kline {
                open_time_ms: start_ms + index * MINUTE_MS,
                open: value,
                high: value + 1.0,
                low: value - 1.0,
                close: value,
                volume: 0.1,
                turnover: Some(0.3),
            }
        })
        .collect();
    writer::write_klines(
        dir.path(),
        Category::Linear,
        "TESTUSDT",
        Timeframe::Minutes(1),
        &klines,
    )
    .unwrap();
    dir
}

fn utc_ms(year: i32, month: u32, day: u32) -> i64 {
    Utc.with_ymd_and_hms(year, month, day, 0, 0, 0)
        .unwrap()
        .timestamp_millis()
}

#[tokio::test]
async fn days_weeks_months_align_on_utc_boundaries() {
    // Thursday 2024-02-01 00:00 to Tuesday 2024-03-05 00:00: all of February (a leap month),
    // four whole weeks starting on Mondays 5, 12, 19 and 26 February, and 33 whole days.
    let start = utc_ms(2024, 2, 1);
    let end = utc_ms(2024, 3, 5);
    let dir = synthetic_dir(start, (end - start) / MINUTE_MS);
    let engine = Engine::open(dir.path()).unwrap();
    let range = TimeRange::default();

    let days = engine
        .resample(&series("TESTUSDT", Timeframe::Day), &range)
        .await
        .unwrap();
    assert_eq!(days.len(), 33);
    assert!(days.iter().all(|bar| bar.open_time_ms % 86_400_000 == 0));
    // Day k covers minutes 1440k .. 1440k + 1439.
    let third = &days[2];
    assert_eq!(third.open, 1_000.0 + 2.0 * 1_440.0);
    assert_eq!(third.close, 1_000.0 + 3.0 * 1_440.0 - 1.0);
    assert_eq!(third.high, third.close + 1.0);
    assert_eq!(third.low, third.open - 1.0);
    assert_eq!(third.volume, "144".parse::<f64>().unwrap());
    assert_eq!(third.turnover, Some("432".parse::<f64>().unwrap()));

    let weeks = engine
        .resample(&series("TESTUSDT", Timeframe::Week), &range)
        .await
        .unwrap();
    let week_starts: Vec<i64> = weeks.iter().map(|bar| bar.open_time_ms).collect();
    let mondays: Vec<i64> = [5, 12, 19, 26]
        .into_iter()
        .map(|day| utc_ms(2024, 2, day))
        .collect();
    assert_eq!(week_starts, mondays);
    for week in &weeks {
        let weekday = Utc
            .timestamp_millis_opt(week.open_time_ms)
            .unwrap()
            .weekday();
        assert_eq!(weekday, chrono::Weekday::Mon);
        let first_minute = (week.open_time_ms - start) / MINUTE_MS;
        assert_eq!(week.open, 1_000.0 + first_minute as f64);
        assert_eq!(week.close, week.open + 7.0 * 1_440.0 - 1.0);
    }

    let months = engine
        .resample(&series("TESTUSDT", Timeframe::Month), &range)
        .await
        .unwrap();
    assert_eq!(months.len(), 1, "only February is complete");
    assert_eq!(months[0].open_time_ms, start);
    assert_eq!(months[0].close, 1_000.0 + 29.0 * 1_440.0 - 1.0);
    assert_eq!(months[0].volume, "4176".parse::<f64>().unwrap());
}

#[tokio::test]
async fn bucket_with_missing_minute_is_dropped() {
    let start = utc_ms(2024, 1, 1);
    let dir = synthetic_dir(start, 180);
    // Remove the 90th minute by rewriting the month without it.
    let mut klines = writer::read_series(
        dir.path(),
        Category::Linear,
        "TESTUSDT",
        Timeframe::Minutes(1),
    )
    .unwrap();
    klines.remove(90);
    let rebuilt = tempfile::tempdir().unwrap();
    writer::write_klines(
        rebuilt.path(),
        Category::Linear,
        "TESTUSDT",
        Timeframe::Minutes(1),
        &klines,
    )
    .unwrap();

    let engine = Engine::open(rebuilt.path()).unwrap();
    let hours = engine
        .resample(
            &series("TESTUSDT", Timeframe::Minutes(60)),
            &TimeRange::default(),
        )
        .await
        .unwrap();
    let starts: BTreeMap<i64, f64> = hours
        .iter()
        .map(|bar| (bar.open_time_ms, bar.open))
        .collect();
    assert_eq!(
        starts.keys().copied().collect::<Vec<_>>(),
        vec![start, start + 120 * MINUTE_MS]
    );
}
