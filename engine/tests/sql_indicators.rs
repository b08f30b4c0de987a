//! Indicator window functions called from SQL over the `klines` table.

use bst_engine::Engine;
use bst_ingest::{Category, Kline, Timeframe, writer};
use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::Float64Type;

#[tokio::test]
async fn sql_indicators_match_reference_values() {
    let closes = [
        100.0, 102.0, 101.0, 103.0, 106.0, 104.0, 105.0, 108.0, 107.0, 110.0, 109.0, 111.0,
    ];
    let start_ms = 1_748_736_000_000; // 2025-06-01T00:00:00Z
    let klines: Vec<Kline> = closes
        .iter()
        .enumerate()
        .map(|(index, &close)| Kline {
            open_time_ms: start_ms + index as i64 * 60_000,
            open: close,
            high: close + 1.0,
            low: close - 1.0,
            close,
            volume: 1.0,
            turnover: None,
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    writer::write_klines(
        dir.path(),
        Category::Linear,
        "TESTUSDT",
        Timeframe::Minutes(1),
        &klines,
    )
    .unwrap();

    let engine = Engine::open(dir.path()).unwrap();
    let batches = engine
        .session()
        .sql(
            "SELECT sma(close, 3) OVER w AS sma3, ema(close, 3) OVER w AS ema3,
                    rsi(close, 5) OVER w AS rsi5
             FROM klines WHERE symbol = 'TESTUSDT' AND timeframe = '1'
             WINDOW w AS (ORDER BY open_time) ORDER BY open_time",
        )
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let batch = datafusion::arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
    assert_eq!(batch.num_rows(), closes.len());
    let column = |index: usize| batch.column(index).as_primitive::<Float64Type>().clone();
    let (sma, ema, rsi) = (column(0), column(1), column(2));

    assert!(sma.is_null(1));
    assert_eq!(sma.value(2), (100.0 + 102.0 + 101.0) / 3.0);
    assert!(ema.is_null(1));
    assert_eq!(ema.value(2), (100.0 + 102.0 + 101.0) / 3.0);
    assert_eq!(ema.value(3), ema.value(2) + 0.5 * (103.0 - ema.value(2)));

    let expected_rsi = [70.0, 73.3333, 81.1765, 72.3144, 80.3563, 71.6808, 77.6998];
    assert!(rsi.is_null(4));
    for (offset, value) in expected_rsi.iter().enumerate() {
        let got = rsi.value(5 + offset);
        assert!(
            (got - value).abs() < 5e-5,
            "row {}: {got} vs {value}",
            5 + offset
        );
    }
}

#[tokio::test]
async fn indicator_period_must_be_literal() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    let error = engine
        .session()
        .sql("SELECT rsi(close, volume) OVER (ORDER BY open_time) FROM klines")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap_err();
    assert!(error.to_string().contains("integer literal"), "{error}");
}

#[tokio::test]
async fn multi_argument_indicators_plan_from_sql() {
    let start_ms = 1_748_736_000_000; // 2025-06-01T00:00:00Z
    let klines: Vec<Kline> = (0..60)
        .map(|index| {
            let close = 100.0 + (index as f64 * 0.7).sin() * 5.0;
            Kline {
                open_time_ms: start_ms + index * 60_000,
                open: close,
                high: close + 1.0,
                low: close - 1.0,
                close,
                volume: 1.0,
                turnover: None,
            }
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    writer::write_klines(
        dir.path(),
        Category::Linear,
        "TESTUSDT",
        Timeframe::Minutes(1),
        &klines,
    )
    .unwrap();

    let engine = Engine::open(dir.path()).unwrap();
    let batches = engine
        .session()
        .sql(
            "SELECT bb_upper(close, 20, 2) OVER w AS upper, bb_middle(close, 20, 2.0) OVER w AS mid,
                    atr(high, low, close, 14) OVER w AS atr14,
                    macd_hist(close, 12, 26, 9) OVER w AS hist
             FROM klines WHERE symbol = 'TESTUSDT'
             WINDOW w AS (ORDER BY open_time) ORDER BY open_time",
        )
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let batch = datafusion::arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
    let column = |index: usize| batch.column(index).as_primitive::<Float64Type>().clone();
    let (upper, middle, atr, hist) = (column(0), column(1), column(2), column(3));
    assert!(upper.is_null(18));
    assert!(upper.value(19) > middle.value(19));
    // True range is the 2.0 bar range or a larger gap to the previous close.
    assert!(atr.is_null(13));
    assert!(atr.value(14) >= 2.0);
    assert!(hist.is_null(32));
    assert!(hist.is_valid(33));
}
