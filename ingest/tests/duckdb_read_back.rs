//! Reads the written dataset back through DuckDB, as the query layer does.

mod common;

use bst_ingest::csv_klines::read_kline_csv;
use bst_ingest::rest_body::read_kline_body_file;
use bst_ingest::writer::write_klines;
use bst_ingest::{Category, Kline, Timeframe};
use common::sample_path;

/// One row as DuckDB returns it: klines fields, then category, symbol, timeframe, month.
type DuckRow = (Kline, [String; 4]);

fn query_rows(connection: &duckdb::Connection, source: &str) -> Vec<DuckRow> {
    let sql = format!(
        "SELECT epoch_ms(open_time), open, high, low, close, volume, turnover, \
                category, symbol, timeframe, month \
         FROM {source} ORDER BY timeframe, open_time"
    );
    let mut statement = connection.prepare(&sql).unwrap();
    statement
        .query_map([], |row| {
            let kline = Kline {
                open_time_ms: row.get(0)?,
                open: row.get(1)?,
                high: row.get(2)?,
                low: row.get(3)?,
                close: row.get(4)?,
                volume: row.get(5)?,
                turnover: row.get(6)?,
            };
            let partition = [row.get(7)?, row.get(8)?, row.get(9)?, row.get(10)?];
            Ok((kline, partition))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn duckdb_reads_hive_dataset() {
    let one_minute = read_kline_csv(&sample_path("bybit/klines/BTCUSDT_1m.csv.gz")).unwrap();
    let daily = read_kline_body_file(
        &sample_path("bybit/rest/bybit_v5_kline_linear_BTCUSDT_D_2021-09-19_to_21.json"),
        Timeframe::Day,
    )
    .unwrap()
    .klines;

    let data = tempfile::tempdir().unwrap();
    let (category, symbol) = (Category::Linear, "BTCUSDT");
    write_klines(
        data.path(),
        category,
        symbol,
        Timeframe::Minutes(1),
        &one_minute,
    )
    .unwrap();
    write_klines(data.path(), category, symbol, Timeframe::Day, &daily).unwrap();

    let mut expected: Vec<DuckRow> = Vec::new();
    // DuckDB sorts the VARCHAR timeframe column, so "1" comes before "D".
    for (timeframe, klines) in [("1", &one_minute), ("D", &daily)] {
        for kline in klines {
            let month = chrono::DateTime::from_timestamp_millis(kline.open_time_ms)
                .unwrap()
                .format("%Y-%m")
                .to_string();
            let partition = [
                "linear".to_string(),
                symbol.to_string(),
                timeframe.to_string(),
                month,
            ];
            expected.push((*kline, partition));
        }
    }

    let glob = data.path().join("klines/**/*.parquet");
    let source = format!(
        "read_parquet('{}', hive_partitioning = true, hive_types_autocast = false)",
        glob.display()
    );
    let connection = duckdb::Connection::open_in_memory().unwrap();
    let rows = query_rows(&connection, &source);
    assert_eq!(rows.len(), expected.len());
    for (row, expected_row) in rows.iter().zip(&expected) {
        assert_eq!(row, expected_row);
    }

    let mut describe = connection
        .prepare(&format!("DESCRIBE SELECT * FROM {source}"))
        .unwrap();
    let column_types: Vec<(String, String)> = describe
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let type_of = |name: &str| {
        column_types
            .iter()
            .find(|(column, _)| column == name)
            .map(|(_, column_type)| column_type.as_str())
            .unwrap_or_else(|| panic!("column {name} missing from {column_types:?}"))
    };
    assert_eq!(type_of("open_time"), "TIMESTAMP WITH TIME ZONE");
    for column in ["open", "high", "low", "close", "volume", "turnover"] {
        assert_eq!(type_of(column), "DOUBLE", "{column}");
    }
    for column in ["category", "symbol", "timeframe", "month"] {
        assert_eq!(type_of(column), "VARCHAR", "{column}");
    }
}
