//! The indicator window functions against TA-Lib's values on real BTCUSDT 1-minute bars.
//!
//! `fixtures/talib_btcusdt_1m.json` was written by `fixtures/make_talib_fixture.py` with the
//! `ta-lib` package from PyPI (the command is in that script). It contains TA-Lib's outputs only;
//! the bars are read from the sample data.

use bst_engine::indicators::Indicator;
use bst_ingest::{Kline, csv_klines, samples};
use datafusion::arrow::array::{Array, Float64Array};
use serde_json::Value;

fn fixture() -> Value {
    serde_json::from_str(include_str!("fixtures/talib_btcusdt_1m.json")).unwrap()
}

fn real_bars(rows: usize) -> Vec<Kline> {
    let path = samples::require_datasets_dir().join("bybit/klines/BTCUSDT_1m.csv.gz");
    let mut klines = csv_klines::read_kline_csv(&path).unwrap();
    klines.truncate(rows);
    klines
}

fn column(bars: &[Kline], field: fn(&Kline) -> f64) -> Float64Array {
    Float64Array::from_iter_values(bars.iter().map(field))
}

/// Compares one indicator with TA-Lib: the same warm-up nulls, then values within
/// `tolerance` relative to the larger of the value's size and `scale`.
fn check(indicator: Indicator, parameters: &[&str], tolerance: f64, scale: f64) {
    let fixture = fixture();
    let name = indicator.name();
    let expected = fixture[name].as_array().unwrap();
    let bars = real_bars(expected.len());
    let (high, low, close) = (
        column(&bars, |bar| bar.high),
        column(&bars, |bar| bar.low),
        column(&bars, |bar| bar.close),
    );
    let columns: Vec<&Float64Array> = if indicator == Indicator::Atr {
        vec![&high, &low, &close]
    } else {
        vec![&close]
    };
    let parameters: Vec<f64> = parameters
        .iter()
        .map(|key| fixture["periods"][*key].as_f64().unwrap())
        .collect();
    let output = indicator.compute_columns(&columns, &parameters);
    assert_eq!(output.len(), expected.len());

    let mut compared = 0;
    for (row, value) in expected.iter().enumerate() {
        match value.as_f64() {
            None => assert!(
                output.is_null(row),
                "{name} row {row}: expected warm-up null"
            ),
            Some(value) => {
                assert!(output.is_valid(row), "{name} row {row}: expected {value}");
                let got = output.value(row);
                let error = (got - value).abs() / value.abs().max(scale);
                assert!(error <= tolerance, "{name} row {row}: {got} vs {value}");
                compared += 1;
            }
        }
    }
    assert!(
        compared > expected.len() / 2,
        "{name}: only {compared} values compared"
    );
}

#[test]
fn moving_averages_match_talib() {
    check(Indicator::Sma, &["sma"], 1e-9, 1e-12);
    check(Indicator::Ema, &["ema"], 1e-9, 1e-12);
}

#[test]
fn rsi_matches_talib() {
    check(Indicator::Rsi, &["rsi"], 1e-9, 1e-12);
}

#[test]
fn rolling_statistics_match_talib() {
    // Values that can be near zero are compared to within 1e-9 of one price unit.
    check(Indicator::StdDev, &["stddev"], 1e-9, 1.0);
    check(Indicator::Highest, &["highest"], 0.0, 1.0);
    check(Indicator::Lowest, &["lowest"], 0.0, 1.0);
}

#[test]
fn bollinger_bands_match_talib() {
    let parameters = ["bbands", "bbands_std_dev"];
    check(Indicator::BollingerUpper, &parameters, 1e-9, 1e-12);
    check(Indicator::BollingerMiddle, &parameters, 1e-9, 1e-12);
    check(Indicator::BollingerLower, &parameters, 1e-9, 1e-12);
}

#[test]
fn macd_matches_talib() {
    let parameters = ["macd_fast", "macd_slow", "macd_signal"];
    check(Indicator::Macd, &parameters, 1e-9, 1.0);
    check(Indicator::MacdSignal, &parameters, 1e-9, 1.0);
    check(Indicator::MacdHist, &parameters, 1e-9, 1.0);
}

#[test]
fn atr_matches_talib() {
    check(Indicator::Atr, &["atr"], 1e-9, 1e-12);
}
