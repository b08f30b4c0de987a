//! Trade dumps into ticks and derived 1-minute bars, on the real BTCUSD dump of 2019-10-01
//! and on small hand-made files.

mod common;

use std::collections::HashSet;
use std::io::Read;
use std::path::{Path, PathBuf};

use bst_ingest::tick_writer::{
    TICKS_DIR, Tick, read_tick_partition_file, read_ticks, tick_partition_dir,
};
use bst_ingest::trades::{TradeImportReport, import_trade_dump, read_trade_dump};
use bst_ingest::writer::{read_series, write_klines};
use bst_ingest::{Category, Error, Kline, Timeframe};
use common::sample_path;
use parquet::file::reader::{FileReader, SerializedFileReader};

const DUMP: &str = "bybit/trading/BTCUSD2019-10-01.csv.gz";

/// 2019-10-01 00:00:00 UTC in epoch milliseconds.
const DAY_START_MS: i64 = 1_569_888_000_000;

const HEADER: &str = "timestamp,symbol,side,size,price,tickDirection,trdMatchID,grossValue,\
                      homeNotional,foreignNotional\n";

/// Returns the data lines of the real dump, decompressed and split by the test itself.
fn raw_dump_lines() -> Vec<String> {
    let file = std::fs::File::open(sample_path(DUMP)).unwrap();
    let mut text = String::new();
    flate2::read::GzDecoder::new(file)
        .read_to_string(&mut text)
        .unwrap();
    text.lines().skip(1).map(str::to_string).collect()
}

fn import(data_dir: &Path, path: &Path) -> TradeImportReport {
    let dump = read_trade_dump(path).unwrap();
    import_trade_dump(data_dir, Category::Inverse, &dump).unwrap()
}

fn one_minute_bars(data_dir: &Path, category: Category, symbol: &str) -> Vec<Kline> {
    read_series(data_dir, category, symbol, Timeframe::Minutes(1)).unwrap()
}

fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn real_dump_import_counts() {
    let data = tempfile::tempdir().unwrap();
    let report = import(data.path(), &sample_path(DUMP));

    assert_eq!(report.ticks.ticks_read, 93_598);
    assert_eq!(report.ticks.ticks_written, 93_598);
    assert_eq!(report.ticks.duplicates_skipped, 0);
    assert_eq!(report.ticks.partitions_touched, ["2019-10-01"]);
    assert_eq!(report.bars.rows_read, 1_440);
    assert_eq!(report.bars.rows_written, 1_440);
    assert_eq!(report.bars.duplicates_skipped, 0);
    assert_eq!(report.bars.partitions_touched, ["2019-10"]);

    let ticks = read_ticks(data.path(), Category::Inverse, "BTCUSD").unwrap();
    assert_eq!(ticks.len(), 93_598);
    let bars = one_minute_bars(data.path(), Category::Inverse, "BTCUSD");
    assert_eq!(bars.len(), 1_440);
    assert_eq!(bars[0].open_time_ms, DAY_START_MS);
    assert_eq!(bars[1_439].open_time_ms, DAY_START_MS + 1_439 * 60_000);
}

#[test]
fn real_dump_first_bar_values() {
    let data = tempfile::tempdir().unwrap();
    import(data.path(), &sample_path(DUMP));
    let bars = one_minute_bars(data.path(), Category::Inverse, "BTCUSD");
    let bar = bars[0];

    assert_eq!(bar.open_time_ms, DAY_START_MS);
    assert_eq!(bar.open, "8297.5".parse::<f64>().unwrap());
    assert_eq!(bar.high, "8340.0".parse::<f64>().unwrap());
    assert_eq!(bar.low, "8297.5".parse::<f64>().unwrap());
    assert_eq!(bar.close, "8306.0".parse::<f64>().unwrap());
    assert_eq!(bar.volume, "3440841".parse::<f64>().unwrap());
    assert_eq!(bar.turnover, Some("413.43797303".parse::<f64>().unwrap()));

    // The trades of the first minute, counted on the raw text: whole seconds before 00:01.
    let first_minute_end_s = DAY_START_MS / 1_000 + 60;
    let raw_count = raw_dump_lines()
        .iter()
        .filter(|line| {
            let seconds = line.split(['.', ',']).next().unwrap();
            seconds.parse::<i64>().unwrap() < first_minute_end_s
        })
        .count();
    assert_eq!(raw_count, 403);
    let ticks = read_ticks(data.path(), Category::Inverse, "BTCUSD").unwrap();
    let stored_count = ticks
        .iter()
        .filter(|tick| tick.ts_us < first_minute_end_s * 1_000_000)
        .count();
    assert_eq!(stored_count, 403);
}

#[test]
fn real_dump_volume_total() {
    let data = tempfile::tempdir().unwrap();
    import(data.path(), &sample_path(DUMP));
    let bars = one_minute_bars(data.path(), Category::Inverse, "BTCUSD");

    // Inverse sizes are whole contracts, so this f64 sum is exact.
    let total: f64 = bars.iter().map(|bar| bar.volume).sum();
    assert_eq!(total, 933_178_345.0);
    let raw_total: i64 = raw_dump_lines()
        .iter()
        .map(|line| line.split(',').nth(3).unwrap().parse::<i64>().unwrap())
        .sum();
    assert_eq!(raw_total, 933_178_345);
}

#[test]
fn real_dump_second_import_writes_nothing() {
    let data = tempfile::tempdir().unwrap();
    import(data.path(), &sample_path(DUMP));
    let part = tick_partition_dir(data.path(), Category::Inverse, "BTCUSD", "2019-10-01")
        .join("part-0000.parquet");
    let modified = std::fs::metadata(&part).unwrap().modified().unwrap();

    let again = import(data.path(), &sample_path(DUMP));
    assert_eq!(again.ticks.ticks_read, 93_598);
    assert_eq!(again.ticks.ticks_written, 0);
    assert_eq!(again.ticks.duplicates_skipped, 93_598);
    assert!(again.ticks.partitions_touched.is_empty());
    assert_eq!(again.bars.rows_written, 0);
    assert_eq!(again.bars.duplicates_skipped, 1_440);
    assert!(again.bars.partitions_touched.is_empty());
    assert_eq!(
        std::fs::metadata(&part).unwrap().modified().unwrap(),
        modified
    );
}

#[test]
fn real_dump_ticks_sorted_microseconds() {
    let data = tempfile::tempdir().unwrap();
    import(data.path(), &sample_path(DUMP));
    let part = tick_partition_dir(data.path(), Category::Inverse, "BTCUSD", "2019-10-01")
        .join("part-0000.parquet");
    let ticks = read_tick_partition_file(&part).unwrap();

    assert!(ticks.windows(2).all(|pair| pair[0].ts_us <= pair[1].ts_us));
    let unique: HashSet<&str> = ticks.iter().map(|tick| tick.trade_id.as_str()).collect();
    assert_eq!(unique.len(), 93_598);

    // The raw file is newest first: its first line is the last tick stored.
    let lines = raw_dump_lines();
    let last = ticks.last().unwrap();
    assert_eq!(last.ts_us, 1_569_974_396_557_895);
    assert_eq!(last.trade_id, "656acfd0-8b65-5070-a2f1-b5b55f8402a1");
    assert!(lines[0].starts_with("1569974396.557895,"));

    // Timestamps as text, each checked against the stored microseconds of its trade id.
    for line in lines.iter().step_by(997).chain([&lines[1]]) {
        let fields: Vec<&str> = line.split(',').collect();
        let (seconds, fraction) = fields[0].split_once('.').unwrap_or((fields[0], ""));
        let expected_us = seconds.parse::<i64>().unwrap() * 1_000_000
            + format!("{fraction:0<6}").parse::<i64>().unwrap();
        let tick = ticks
            .iter()
            .find(|tick| tick.trade_id == fields[6])
            .unwrap_or_else(|| panic!("trade {} not stored", fields[6]));
        assert_eq!(tick.ts_us, expected_us, "{line}");
        assert_eq!(tick.price, fields[4].parse::<f64>().unwrap(), "{line}");
        assert_eq!(tick.notional, fields[9].parse::<f64>().unwrap(), "{line}");
        assert_eq!(tick.tick_direction.as_deref(), Some(fields[5]), "{line}");
        assert_eq!(tick.side.as_str(), fields[2].to_lowercase(), "{line}");
    }
    // `1569974394.78865` has five fraction digits.
    assert!(lines[1].starts_with("1569974394.78865,"));

    // The two oldest trades share a timestamp; stored order is the reverse of file order.
    assert_eq!(ticks[0].trade_id, "b2e362c8-935a-5e6a-a024-78078c8898f3");
    assert_eq!(ticks[1].trade_id, "02d36246-0d6d-5fcc-bab1-fc8e98f47f30");
    assert_eq!(ticks[0].ts_us, ticks[1].ts_us);
}

#[test]
fn tick_file_schema_and_sort_order() {
    let data = tempfile::tempdir().unwrap();
    import(data.path(), &sample_path(DUMP));
    let part = tick_partition_dir(data.path(), Category::Inverse, "BTCUSD", "2019-10-01")
        .join("part-0000.parquet");
    assert!(part.starts_with(data.path().join(TICKS_DIR).join("category=inverse")));

    let reader = SerializedFileReader::new(std::fs::File::open(&part).unwrap()).unwrap();
    let metadata = reader.metadata();
    let columns: Vec<String> = metadata
        .file_metadata()
        .schema_descr()
        .columns()
        .iter()
        .map(|column| column.name().to_string())
        .collect();
    let expected = [
        "ts",
        "price",
        "size",
        "notional",
        "side",
        "trade_id",
        "tick_direction",
    ];
    assert_eq!(columns, expected);
    let sorting = metadata.row_group(0).sorting_columns().unwrap();
    assert_eq!(sorting[0].column_idx, 0);
    assert!(!sorting[0].descending);

    let leftovers: Vec<_> = std::fs::read_dir(part.parent().unwrap())
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .filter(|name| name.to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn confirmed_bar_not_replaced() {
    let data = tempfile::tempdir().unwrap();
    let confirmed = Kline {
        open_time_ms: DAY_START_MS,
        open: 8300.0,
        high: 8350.0,
        low: 8290.0,
        close: 8310.0,
        volume: 3_500_000.0,
        turnover: Some(420.5),
    };
    write_klines(
        data.path(),
        Category::Inverse,
        "BTCUSD",
        Timeframe::Minutes(1),
        &[confirmed],
    )
    .unwrap();

    let report = import(data.path(), &sample_path(DUMP));
    assert_eq!(report.bars.rows_read, 1_440);
    assert_eq!(report.bars.rows_written, 1_439);
    assert_eq!(report.bars.duplicates_skipped, 1);

    let bars = one_minute_bars(data.path(), Category::Inverse, "BTCUSD");
    assert_eq!(bars.len(), 1_440);
    assert_eq!(bars[0], confirmed);
    assert_eq!(bars[1].open_time_ms, DAY_START_MS + 60_000);

    // A confirmed bar written after the derived one still replaces it.
    let later = Kline {
        open_time_ms: DAY_START_MS + 60_000,
        ..confirmed
    };
    write_klines(
        data.path(),
        Category::Inverse,
        "BTCUSD",
        Timeframe::Minutes(1),
        &[later],
    )
    .unwrap();
    let bars = one_minute_bars(data.path(), Category::Inverse, "BTCUSD");
    assert_eq!(bars[1], later);
}

#[test]
fn equal_timestamps_follow_file_direction() {
    let input = tempfile::tempdir().unwrap();
    let newest_first = format!(
        "{HEADER}\
         1569888061.5,BTCUSD,Buy,5,8301.0,PlusTick,t5,0,5,0.0006\n\
         1569888061.5,BTCUSD,Buy,4,8300.5,PlusTick,t4,0,4,0.0005\n\
         1569888030.25,BTCUSD,Sell,3,8300.0,MinusTick,t3,0,3,0.0004\n\
         1569888030.25,BTCUSD,Sell,2,8299.5,MinusTick,t2,0,2,0.0003\n\
         1569888030.25,BTCUSD,Sell,1,8299.0,MinusTick,t1,0,1,0.0002\n"
    );
    let path = write_file(input.path(), "newest.csv", &newest_first);
    let dump = read_trade_dump(&path).unwrap();
    assert!(dump.newest_first);
    let ids: Vec<&str> = dump
        .trades
        .iter()
        .map(|trade| trade.tick.trade_id.as_str())
        .collect();
    assert_eq!(ids, ["t1", "t2", "t3", "t4", "t5"]);
    assert_eq!(dump.trades[0].tick.ts_us, 1_569_888_030_250_000);

    let oldest_first = format!(
        "{HEADER}\
         1569888030.25,BTCUSD,Sell,1,8299.0,MinusTick,t1,0,1,0.0002\n\
         1569888030.25,BTCUSD,Sell,2,8299.5,MinusTick,t2,0,2,0.0003\n\
         1569888061.5,BTCUSD,Buy,4,8300.5,PlusTick,t4,0,4,0.0005\n"
    );
    let path = write_file(input.path(), "oldest.csv", &oldest_first);
    let dump = read_trade_dump(&path).unwrap();
    assert!(!dump.newest_first);
    let ids: Vec<&str> = dump
        .trades
        .iter()
        .map(|trade| trade.tick.trade_id.as_str())
        .collect();
    assert_eq!(ids, ["t1", "t2", "t4"]);

    // Without a date in the name only minutes strictly between the first and last trade's
    // minutes are covered, and here there are none.
    assert!(dump.covered_minutes().is_empty());
}

#[test]
fn bar_open_close_from_tie_order() {
    let input = tempfile::tempdir().unwrap();
    // Newest first: within the tie at .25 the stored order is t1, t2, t3.
    let text = format!(
        "{HEADER}\
         1569888179.0,BTCUSD,Buy,1,8310.0,PlusTick,t9,0,1,0.0001\n\
         1569888090.25,BTCUSD,Sell,3,8300.0,MinusTick,t3,0,3,0.0004\n\
         1569888090.25,BTCUSD,Sell,2,8305.5,MinusTick,t2,0,2,0.0003\n\
         1569888090.25,BTCUSD,Sell,1,8299.0,MinusTick,t1,0,1,0.0002\n\
         1569888001.0,BTCUSD,Buy,1,8290.0,PlusTick,t0,0,1,0.0001\n"
    );
    let path = write_file(input.path(), "ties.csv", &text);
    let data = tempfile::tempdir().unwrap();
    let report = import(data.path(), &path);
    assert_eq!(report.bars.rows_read, 1);

    let bars = one_minute_bars(data.path(), Category::Inverse, "BTCUSD");
    assert_eq!(bars.len(), 1);
    let bar = bars[0];
    assert_eq!(bar.open_time_ms, DAY_START_MS + 60_000);
    assert_eq!(bar.open, 8299.0);
    assert_eq!(bar.close, 8300.0);
    assert_eq!(bar.high, 8305.5);
    assert_eq!(bar.low, 8299.0);
    assert_eq!(bar.volume, 6.0);
    // 0.0002 + 0.0003 + 0.0004 is 0.0009000000000000001 when summed in f64.
    assert_eq!(bar.turnover, Some(0.0009));
}

#[test]
fn linear_dump_with_rpi_parses() {
    let input = tempfile::tempdir().unwrap();
    let text = "timestamp,symbol,side,size,price,tickDirection,trdMatchID,grossValue,\
                homeNotional,foreignNotional,RPI\n\
                1748736000.123,BTCUSDT,Buy,0.001,104200.5,PlusTick,m1,1.042005e+16,0.001,104.2005,0\n\
                1748736000.2,BTCUSDT,Sell,0.002,104200.0,MinusTick,m2,2.084e+16,0.002,208.4,1\n\
                1748736061.000001,BTCUSDT,Buy,0.1,104210.0,PlusTick,m3,1.04210e+18,0.1,10421,\n";
    let path = write_file(input.path(), "BTCUSDT2025-06-01.csv", text);
    let dump = read_trade_dump(&path).unwrap();
    assert_eq!(dump.symbol, "BTCUSDT");
    assert_eq!(dump.date, chrono::NaiveDate::from_ymd_opt(2025, 6, 1));
    assert!(!dump.newest_first);
    assert_eq!(dump.trades.len(), 3);
    let first: &Tick = &dump.trades[0].tick;
    assert_eq!(first.ts_us, 1_748_736_000_123_000);
    assert_eq!(first.size, 0.001);
    assert_eq!(first.notional, 104.2005);
    assert_eq!(dump.trades[2].tick.ts_us, 1_748_736_061_000_001);

    let data = tempfile::tempdir().unwrap();
    let report = import_trade_dump(data.path(), Category::Linear, &dump).unwrap();
    assert_eq!(report.ticks.ticks_written, 3);
    assert_eq!(report.bars.rows_written, 2);
    let bars = one_minute_bars(data.path(), Category::Linear, "BTCUSDT");
    assert_eq!(bars[0].volume, 0.003);
    assert_eq!(bars[0].turnover, Some(312.6005));
    assert_eq!(bars[0].open, 104200.5);
    assert_eq!(bars[0].close, 104200.0);
}

#[test]
fn bad_input_names_line() {
    let input = tempfile::tempdir().unwrap();
    let good = "1569888001.5,BTCUSD,Buy,1,8290.0,PlusTick,a1,0,1,0.0001\n";
    let cases = [
        (
            "1569888001.1234567,BTCUSD,Buy,1,8290.0,PlusTick,a2,0,1,0.0001\n",
            "\"1569888001.1234567\"",
            "more than 6 fraction digits",
        ),
        (
            "1569888001.5,BTCUSD,Long,1,8290.0,PlusTick,a2,0,1,0.0001\n",
            "\"Long\"",
            "expected Buy or Sell",
        ),
        (
            "1569888001.5,BTCUSD,Buy,1x,8290.0,PlusTick,a2,0,1,0.0001\n",
            "\"1x\"",
            "invalid size",
        ),
        (
            "1569888001.5,BTCUSD,Buy,1,8290.0,PlusTick,,0,1,0.0001\n",
            "trdMatchID",
            "empty trdMatchID",
        ),
        (
            "1569888001.5,ETHUSD,Buy,1,8290.0,PlusTick,a2,0,1,0.0001\n",
            "\"ETHUSD\"",
            "one instrument",
        ),
    ];
    for (bad_line, value, reason) in cases {
        let path = write_file(
            input.path(),
            "bad.csv",
            &format!("{HEADER}{good}{bad_line}"),
        );
        let error = read_trade_dump(&path).unwrap_err();
        let message = error.to_string();
        assert!(
            matches!(error, Error::Parse { line: 3, .. }),
            "{bad_line}: {message}"
        );
        assert!(message.contains("bad.csv"), "{message}");
        assert!(message.contains("line 3"), "{message}");
        assert!(message.contains(value), "{message}");
        assert!(message.contains(reason), "{message}");
    }

    let missing = write_file(input.path(), "missing.csv", "timestamp,symbol,side\n");
    let error = read_trade_dump(&missing).unwrap_err().to_string();
    assert!(error.contains("missing column \"size\""), "{error}");
}

#[test]
fn duckdb_reads_tick_dataset() {
    let data = tempfile::tempdir().unwrap();
    import(data.path(), &sample_path(DUMP));

    let glob = data.path().join(TICKS_DIR).join("**/*.parquet");
    let sql = format!(
        "SELECT count(*), count(DISTINCT trade_id), min(epoch_us(ts)), max(epoch_us(ts)), \
                sum(size)::BIGINT, min(category), min(symbol), min(date) \
         FROM read_parquet('{}', hive_partitioning = true, hive_types_autocast = false)",
        glob.display()
    );
    let connection = duckdb::Connection::open_in_memory().unwrap();
    let row: (i64, i64, i64, i64, i64, String, String, String) = connection
        .query_row(&sql, [], |row| {
            Ok((
                row.get(0)?,
                row.get(1)?,
                row.get(2)?,
                row.get(3)?,
                row.get(4)?,
                row.get(5)?,
                row.get(6)?,
                row.get(7)?,
            ))
        })
        .unwrap();

    assert_eq!(row.0, 93_598);
    assert_eq!(row.1, 93_598);
    assert_eq!(row.2, 1_569_888_000_719_213);
    assert_eq!(row.3, 1_569_974_396_557_895);
    assert_eq!(row.4, 933_178_345);
    assert_eq!(row.5, "inverse");
    assert_eq!(row.6, "BTCUSD");
    assert_eq!(row.7, "2019-10-01");
}
