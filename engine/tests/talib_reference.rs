//! The indicator window functions and the oracle's plain-loop indicators, each against
//! TA-Lib's values on real BTCUSDT 1-minute bars, so that both are tied to TA-Lib on their own.
//!
//! `fixtures/talib_btcusdt_1m.json` was written by `fixtures/make_talib_fixture.py` with the
//! `ta-lib` package from PyPI (the command is in that script). It contains TA-Lib's outputs only;
//! the bars are read from the sample data.

use bst_engine::indicators::Indicator;
use bst_engine::oracle::indicators::{
    average_true_range, bollinger_bands, exponential_moving_average, macd, relative_strength_index,
};
use bst_engine::oracle::simple_moving_average;
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

/// Returns a period of the fixture as a whole number.
fn period(key: &str) -> usize {
    fixture()["periods"][key].as_u64().unwrap() as usize
}

/// Compares one oracle output with TA-Lib's values under `name` in the fixture: the same
/// warm-up nulls, then values within 1e-9 relative to the larger of the value's size and
/// `scale`.
fn check_oracle(name: &str, output: &[Option<f64>], scale: f64) {
    let fixture = fixture();
    let expected = fixture[name].as_array().unwrap();
    assert_eq!(output.len(), expected.len(), "{name} length");

    let mut compared = 0;
    for (row, (got, value)) in output.iter().zip(expected).enumerate() {
        match (*got, value.as_f64()) {
            (None, None) => {}
            (Some(got), Some(value)) => {
                let error = (got - value).abs() / value.abs().max(scale);
                assert!(
                    error <= 1e-9,
                    "oracle {name} row {row}: {got} vs TA-Lib {value}"
                );
                compared += 1;
            }
            (got, value) => panic!("oracle {name} row {row}: {got:?} vs TA-Lib {value:?}"),
        }
    }
    assert!(
        compared > expected.len() / 2,
        "oracle {name}: only {compared} values compared"
    );
}

fn real_closes() -> Vec<f64> {
    let rows = fixture()["sma"].as_array().unwrap().len();
    real_bars(rows).iter().map(|bar| bar.close).collect()
}

#[test]
fn oracle_moving_averages_match_talib() {
    let closes = real_closes();
    check_oracle("sma", &simple_moving_average(&closes, period("sma")), 1e-12);
    check_oracle(
        "ema",
        &exponential_moving_average(&closes, period("ema")),
        1e-12,
    );
}

#[test]
fn oracle_rsi_matches_talib() {
    let closes = real_closes();
    check_oracle(
        "rsi",
        &relative_strength_index(&closes, period("rsi")),
        1e-12,
    );
}

#[test]
fn oracle_macd_matches_talib() {
    let closes = real_closes();
    let output = macd(
        &closes,
        period("macd_fast"),
        period("macd_slow"),
        period("macd_signal"),
    );
    // The MACD outputs cross zero, so values near it are compared to within 1e-9 of one
    // price unit.
    check_oracle("macd", &output.line, 1.0);
    check_oracle("macd_signal", &output.signal, 1.0);
    check_oracle("macd_hist", &output.histogram, 1.0);
}

#[test]
fn oracle_bollinger_bands_match_talib() {
    let closes = real_closes();
    let std_dev = fixture()["periods"]["bbands_std_dev"].as_f64().unwrap();
    let bands = bollinger_bands(&closes, period("bbands"), std_dev);
    check_oracle("bb_upper", &bands.upper, 1e-12);
    check_oracle("bb_middle", &bands.middle, 1e-12);
    check_oracle("bb_lower", &bands.lower, 1e-12);
}

#[test]
fn oracle_atr_matches_talib() {
    let rows = fixture()["atr"].as_array().unwrap().len();
    let bars = real_bars(rows);
    let high: Vec<f64> = bars.iter().map(|bar| bar.high).collect();
    let low: Vec<f64> = bars.iter().map(|bar| bar.low).collect();
    let close: Vec<f64> = bars.iter().map(|bar| bar.close).collect();
    check_oracle(
        "atr",
        &average_true_range(&high, &low, &close, period("atr")),
        1e-12,
    );
}
