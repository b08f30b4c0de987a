//! An engine opened before an import reads the imported rows on its next query.

use bst_engine::{Engine, SeriesKey};
use bst_ingest::{Category, Kline, Timeframe, writer};

const MINUTE_MS: i64 = 60_000;

fn bars(symbol_start_ms: i64, count: i64, price: f64) -> Vec<Kline> {
    (0..count)
        .map(|index| Kline {
            open_time_ms: symbol_start_ms + index * MINUTE_MS,
            open: price,
            high: price + 1.0,
            low: price - 1.0,
            close: price,
            volume: 1.0,
            turnover: None,
        })
        .collect()
}

fn series(symbol: &str) -> SeriesKey {
    SeriesKey {
        category: Category::Linear,
        symbol: symbol.to_string(),
        timeframe: Timeframe::Minutes(1),
    }
}

#[tokio::test]
async fn engine_sees_rewritten_and_new_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let start_ms = 1_748_736_000_000; // 2025-06-01T00:00:00Z
    let one_minute = Timeframe::Minutes(1);
    writer::write_klines(
        dir.path(),
        Category::Linear,
        "BTCUSDT",
        one_minute,
        &bars(start_ms, 10, 100.0),
    )
    .unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    let before = engine
        .recent_klines(&series("BTCUSDT"), 1, None)
        .await
        .unwrap();
    assert_eq!(before[0].open_time_ms, start_ms + 9 * MINUTE_MS);

    // Extend the same month partition and add a new symbol while the engine is open.
    writer::write_klines(
        dir.path(),
        Category::Linear,
        "BTCUSDT",
        one_minute,
        &bars(start_ms + 10 * MINUTE_MS, 5, 101.0),
    )
    .unwrap();
    writer::write_klines(
        dir.path(),
        Category::Linear,
        "SOLUSDT",
        one_minute,
        &bars(start_ms, 3, 150.0),
    )
    .unwrap();

    let after = engine
        .recent_klines(&series("BTCUSDT"), 1, None)
        .await
        .unwrap();
    assert_eq!(after[0].open_time_ms, start_ms + 14 * MINUTE_MS);
    assert_eq!(after[0].close, 101.0);
    let new_symbol = engine
        .recent_klines(&series("SOLUSDT"), 10, None)
        .await
        .unwrap();
    assert_eq!(new_symbol.len(), 3);
}
