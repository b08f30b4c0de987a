//! The indicator window functions against TA-Lib's values on real BTCUSDT 1-minute closes.
//!
//! `fixtures/talib_btcusdt_1m.json` was written by `fixtures/make_talib_fixture.py` with the
//! `ta-lib` package from PyPI (the command is in that script).

use bst_engine::indicators::Indicator;
use bst_ingest::{csv_klines, samples};
use datafusion::arrow::array::{Array, Float64Array};
use serde_json::Value;

const RELATIVE_TOLERANCE: f64 = 1e-9;

fn fixture() -> Value {
    let text = include_str!("fixtures/talib_btcusdt_1m.json");
    serde_json::from_str(text).unwrap()
}

fn real_closes(rows: usize) -> Float64Array {
    let path = samples::require_datasets_dir().join("bybit/klines/BTCUSDT_1m.csv.gz");
    let klines = csv_klines::read_kline_csv(&path).unwrap();
    Float64Array::from_iter_values(klines.iter().take(rows).map(|kline| kline.close))
}

fn check(indicator: Indicator, name: &str) {
    let fixture = fixture();
    let expected = fixture[name].as_array().unwrap();
    let period = fixture["periods"][name].as_u64().unwrap() as usize;
    let output = indicator.compute(&real_closes(expected.len()), period);
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
                let error = (got - value).abs() / value.abs().max(1e-12);
                assert!(
                    error <= RELATIVE_TOLERANCE,
                    "{name} row {row}: {got} vs {value}"
                );
                compared += 1;
            }
        }
    }
    // SMA and EMA start at row period - 1; RSI needs period changes, so it starts at row period.
    let warm_up_rows = if name == "rsi" { period } else { period - 1 };
    assert_eq!(compared, expected.len() - warm_up_rows);
}

#[test]
fn sma_matches_talib() {
    check(Indicator::Sma, "sma");
}

#[test]
fn ema_matches_talib() {
    check(Indicator::Ema, "ema");
}

#[test]
fn rsi_matches_talib() {
    check(Indicator::Rsi, "rsi");
}
