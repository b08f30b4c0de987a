//! Bybit trade dumps: parsing into ticks, and 1-minute bars derived from them.
//!
//! A dump is a CSV file, plain or gzip-compressed, in the layout of Bybit's daily trading
//! archive, named `<SYMBOL><YYYY-MM-DD>.csv.gz`. Its header is
//! `timestamp,symbol,side,size,price,tickDirection,trdMatchID,grossValue,homeNotional,foreignNotional`
//! and linear dumps may add an `RPI` column. Columns are found by name.

use std::collections::{BTreeMap, HashSet};
use std::ops::Range;
use std::path::{Path, PathBuf};

use chrono::{NaiveDate, TimeDelta};

use crate::csv_klines::{csv_error, open_maybe_gzip};
use crate::decimal::Decimal;
use crate::layout::{Category, Kline, Timeframe, utc_from_ms, validate_symbol};
use crate::tick_writer::{Side, Tick, TickWriteReport, write_ticks};
use crate::writer::{WriteReport, insert_missing_klines};
use crate::{Error, Result};

/// Columns every trade dump must have, matched by name (case-sensitive) in any order.
const REQUIRED_COLUMNS: [&str; 7] = [
    "timestamp",
    "symbol",
    "side",
    "size",
    "price",
    "trdMatchID",
    "foreignNotional",
];

/// Optional column with Bybit's tick direction; an empty field means no value.
const TICK_DIRECTION_COLUMN: &str = "tickDirection";

/// Maximum number of fraction digits of a dump timestamp (microseconds).
const TIMESTAMP_FRACTION_DIGITS: usize = 6;

const MINUTE_US: i64 = 60_000_000;
const MINUTE_MS: i64 = 60_000;

/// One trade of a dump: the tick to store, with the exact decimal values of its size and
/// notional for summing into bars.
#[derive(Debug, Clone, PartialEq)]
pub struct Trade {
    pub tick: Tick,
    /// The `size` field as an exact decimal.
    pub size: Decimal,
    /// The `foreignNotional` field as an exact decimal.
    pub notional: Decimal,
}

/// The parsed content of one trade dump.
#[derive(Debug, Clone, PartialEq)]
pub struct TradeDump {
    pub path: PathBuf,
    /// The instrument of every row.
    pub symbol: String,
    /// The UTC day named in the file name, which the dump covers wholly.
    pub date: Option<NaiveDate>,
    /// Whether the file lists the newest trade first.
    pub newest_first: bool,
    /// The trades ascending by time. Trades with equal timestamps are in the reverse of file
    /// order when the file lists the newest trade first, in file order otherwise.
    pub trades: Vec<Trade>,
}

impl TradeDump {
    /// Returns the open times (epoch ms, as `start..end`) of the minutes that the dump covers
    /// wholly.
    ///
    /// With a date in the file name that is the whole UTC day. Without one it is the minutes
    /// strictly after the first trade's minute and strictly before the last trade's minute,
    /// because trades of the minutes at either end may be missing from the file.
    pub fn covered_minutes(&self) -> Range<i64> {
        if let Some(date) = self.date {
            let start = date.and_time(chrono::NaiveTime::MIN).and_utc();
            let end = start + TimeDelta::days(1);
            return start.timestamp_millis()..end.timestamp_millis();
        }
        let (Some(first), Some(last)) = (self.trades.first(), self.trades.last()) else {
            return 0..0;
        };
        let first_minute = minute_open_ms(first.tick.ts_us);
        let last_minute = minute_open_ms(last.tick.ts_us);
        let start = first_minute + MINUTE_MS;
        start..last_minute.max(start)
    }
}

/// Counts of one imported dump.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TradeImportReport {
    pub ticks: TickWriteReport,
    /// The derived 1-minute bars: `rows_read` were derived, `rows_written` were inserted, and
    /// `duplicates_skipped` already had a stored bar, which is kept.
    pub bars: WriteReport,
}

/// Reads a trade dump and returns its trades ascending by time.
///
/// The file is gzip-compressed when it starts with the gzip magic bytes `1f 8b`. The symbol
/// comes from the `symbol` column and must be the same on every row. A dump without rows
/// takes its symbol from the file name. The date comes from a file name of the form
/// `<SYMBOL><YYYY-MM-DD>.csv[.gz]`, whose symbol must match the rows.
///
/// # Errors
///
/// Returns [`Error::Io`] when the file cannot be read, [`Error::InvalidFile`] for a missing
/// column or a symbol that does not match, and [`Error::Parse`] naming the line and value for
/// a bad timestamp, side, number, symbol or trade id.
pub fn read_trade_dump(path: &Path) -> Result<TradeDump> {
    let (input, is_gzip) = open_maybe_gzip(path)?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(input);
    let header = reader
        .headers()
        .map_err(|error| csv_error(path, &error))?
        .clone();
    let columns = find_columns(path, &header)?;

    let mut symbol: Option<String> = None;
    let mut trades = Vec::new();
    let mut record = csv::StringRecord::new();
    loop {
        match reader.read_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(error) => return Err(csv_error(path, &error)),
        }
        let line = record.position().map_or(0, csv::Position::line);
        let parse_error = |message| Error::Parse {
            path: path.to_path_buf(),
            line,
            message,
        };
        let row_symbol = record.get(columns.symbol).unwrap_or_default();
        match &symbol {
            Some(expected) if expected != row_symbol => {
                return Err(parse_error(format!(
                    "symbol {row_symbol:?} differs from {expected:?} on the first row; a \
                     dump must contain one instrument"
                )));
            }
            Some(_) => {}
            None => {
                validate_symbol(row_symbol).map_err(|error| parse_error(error.to_string()))?;
                symbol = Some(row_symbol.to_string());
            }
        }
        trades.push(parse_record(&record, &columns).map_err(parse_error)?);
    }

    let from_name = dump_name_parts(path);
    let symbol = match (symbol, &from_name) {
        (Some(symbol), Some((name_symbol, _))) if symbol != *name_symbol => {
            return Err(Error::InvalidFile {
                path: path.to_path_buf(),
                message: format!(
                    "the rows are for {symbol} but the file name names {name_symbol}; rename \
                     the file so that its name starts with the symbol of its rows"
                ),
            });
        }
        (Some(symbol), _) => symbol,
        (None, Some((name_symbol, _))) => name_symbol.clone(),
        (None, None) => {
            return Err(Error::InvalidFile {
                path: path.to_path_buf(),
                message: "the dump has no trades and its name does not start with a symbol; \
                          name it <SYMBOL><YYYY-MM-DD>.csv, such as BTCUSD2019-10-01.csv"
                    .to_string(),
            });
        }
    };

    let newest_first = match (trades.first(), trades.last()) {
        (Some(first), Some(last)) => first.tick.ts_us > last.tick.ts_us,
        _ => false,
    };
    if newest_first {
        trades.reverse();
    }
    // A stable sort keeps equal timestamps in the order set above.
    trades.sort_by_key(|trade| trade.tick.ts_us);

    tracing::debug!(
        path = %path.display(),
        symbol,
        trades = trades.len(),
        gzip = is_gzip,
        newest_first,
        "read trade dump"
    );
    Ok(TradeDump {
        path: path.to_path_buf(),
        symbol,
        date: from_name.map(|(_, date)| date),
        newest_first,
        trades,
    })
}

/// Returns the symbol and UTC day that a file name such as `BTCUSD2019-10-01.csv.gz` names,
/// or `None` when the name does not have the form `<SYMBOL><YYYY-MM-DD>` after removing
/// `.gz` and `.csv`.
pub fn dump_name_parts(path: &Path) -> Option<(String, NaiveDate)> {
    let name = path.file_name()?.to_str()?;
    let name = name.strip_suffix(".gz").unwrap_or(name);
    let stem = name.strip_suffix(".csv").unwrap_or(name);
    let split = stem.len().checked_sub("YYYY-MM-DD".len())?;
    if !stem.is_char_boundary(split) {
        return None;
    }
    let (symbol, date) = stem.split_at(split);
    validate_symbol(symbol).ok()?;
    let date = NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()?;
    Some((symbol.to_string(), date))
}

/// Returns the category that a Bybit symbol implies: `linear` for symbols ending in `USDT`
/// or `USDC`, `inverse` for symbols ending in `USD`, and `None` otherwise (such as dated
/// futures and spot pairs, which need an explicit category).
pub fn category_from_symbol(symbol: &str) -> Option<Category> {
    if symbol.ends_with("USDT") || symbol.ends_with("USDC") {
        Some(Category::Linear)
    } else if symbol.ends_with("USD") {
        Some(Category::Inverse)
    } else {
        None
    }
}

/// Derives the 1-minute bars of the minutes in `covered` (open times in epoch ms) from
/// trades.
///
/// The open is the first trade's price and the close the last one's, ordered by timestamp
/// and then by position in `trades`. Volume and turnover are the exact sums of the trades'
/// `size` and `notional` decimals, rounded to `f64` once. A trade whose trade id appeared
/// earlier in `trades` is skipped, as the tick writer skips it.
///
/// # Errors
///
/// Returns [`Error::SumOverflow`] when an exact sum leaves the decimal range.
pub fn derive_minute_bars(trades: &[Trade], covered: &Range<i64>) -> Result<Vec<Kline>> {
    let mut bars: BTreeMap<i64, BarBuilder> = BTreeMap::new();
    let mut trade_ids: HashSet<&str> = HashSet::new();
    for (position, trade) in trades.iter().enumerate() {
        let open_time_ms = minute_open_ms(trade.tick.ts_us);
        if !covered.contains(&open_time_ms) || !trade_ids.insert(&trade.tick.trade_id) {
            continue;
        }
        let order = (trade.tick.ts_us, position);
        match bars.get_mut(&open_time_ms) {
            Some(bar) => bar.add(order, trade, open_time_ms)?,
            None => {
                bars.insert(open_time_ms, BarBuilder::new(order, trade));
            }
        }
    }
    // NOTE: a covered minute without trades gets no bar, because the dump does not contain
    // its prices. A bar confirmed by the exchange can fill that minute later.
    Ok(bars
        .into_iter()
        .map(|(open_time_ms, bar)| bar.finish(open_time_ms))
        .collect())
}

/// Stores a dump's trades as ticks and inserts its derived 1-minute bars where no bar is
/// stored yet, so a bar the exchange confirmed is kept.
///
/// # Errors
///
/// Returns the errors of [`derive_minute_bars`], [`write_ticks`] and
/// [`insert_missing_klines`]. The bars are derived before anything is written.
pub fn import_trade_dump(
    data_dir: &Path,
    category: Category,
    dump: &TradeDump,
) -> Result<TradeImportReport> {
    let covered = dump.covered_minutes();
    let bars = derive_minute_bars(&dump.trades, &covered)?;
    if dump.date.is_some() {
        let outside = dump
            .trades
            .iter()
            .filter(|trade| !covered.contains(&minute_open_ms(trade.tick.ts_us)))
            .count();
        if outside > 0 {
            tracing::warn!(
                path = %dump.path.display(),
                outside,
                "trades outside the day named in the file name are stored as ticks but give \
                 no bars"
            );
        }
    }

    let ticks: Vec<Tick> = dump.trades.iter().map(|trade| trade.tick.clone()).collect();
    let tick_report = write_ticks(data_dir, category, &dump.symbol, &ticks)?;
    let bar_report = insert_missing_klines(
        data_dir,
        category,
        &dump.symbol,
        Timeframe::Minutes(1),
        &bars,
    )?;
    Ok(TradeImportReport {
        ticks: tick_report,
        bars: bar_report,
    })
}

/// A bar being summed; `open_order` and `close_order` are `(ts_us, position)` keys.
struct BarBuilder {
    open_order: (i64, usize),
    close_order: (i64, usize),
    open: f64,
    high: f64,
    low: f64,
    close: f64,
    volume: Decimal,
    turnover: Decimal,
}

impl BarBuilder {
    fn new(order: (i64, usize), trade: &Trade) -> Self {
        let price = trade.tick.price;
        BarBuilder {
            open_order: order,
            close_order: order,
            open: price,
            high: price,
            low: price,
            close: price,
            volume: trade.size,
            turnover: trade.notional,
        }
    }

    fn add(&mut self, order: (i64, usize), trade: &Trade, open_time_ms: i64) -> Result<()> {
        let price = trade.tick.price;
        if order < self.open_order {
            self.open_order = order;
            self.open = price;
        }
        if order > self.close_order {
            self.close_order = order;
            self.close = price;
        }
        self.high = self.high.max(price);
        self.low = self.low.min(price);
        let overflow = |field| Error::SumOverflow {
            field,
            open_time: utc_from_ms(open_time_ms).to_rfc3339(),
        };
        self.volume = self
            .volume
            .checked_add(trade.size)
            .ok_or_else(|| overflow("size"))?;
        self.turnover = self
            .turnover
            .checked_add(trade.notional)
            .ok_or_else(|| overflow("notional"))?;
        Ok(())
    }

    fn finish(self, open_time_ms: i64) -> Kline {
        Kline {
            open_time_ms,
            open: self.open,
            high: self.high,
            low: self.low,
            close: self.close,
            volume: self.volume.to_f64(),
            turnover: Some(self.turnover.to_f64()),
        }
    }
}

/// Positions of the dump columns in one file's header.
struct ColumnIndexes {
    timestamp: usize,
    symbol: usize,
    side: usize,
    size: usize,
    price: usize,
    trade_id: usize,
    notional: usize,
    tick_direction: Option<usize>,
}

fn find_columns(path: &Path, header: &csv::StringRecord) -> Result<ColumnIndexes> {
    let indexes =
        crate::csv_klines::required_columns(path, header, REQUIRED_COLUMNS, "a trade dump")?;
    let position = |name: &str| header.iter().position(|column| column == name);
    let [timestamp, symbol, side, size, price, trade_id, notional] = indexes;
    Ok(ColumnIndexes {
        timestamp,
        symbol,
        side,
        size,
        price,
        trade_id,
        notional,
        tick_direction: position(TICK_DIRECTION_COLUMN),
    })
}

fn parse_record(
    record: &csv::StringRecord,
    columns: &ColumnIndexes,
) -> std::result::Result<Trade, String> {
    let field = |index: usize| record.get(index).unwrap_or_default();

    let side = match field(columns.side) {
        "Buy" => Side::Buy,
        "Sell" => Side::Sell,
        other => return Err(format!("invalid side {other:?}: expected Buy or Sell")),
    };
    let decimal = |name: &str, index: usize| {
        Decimal::parse(field(index)).map_err(|reason| format!("invalid {name}: {reason}"))
    };
    let size = decimal("size", columns.size)?;
    let notional = decimal("foreignNotional", columns.notional)?;
    let trade_id = field(columns.trade_id).trim();
    if trade_id.is_empty() {
        return Err("empty trdMatchID: every trade needs its trade id".to_string());
    }
    let tick_direction = match columns.tick_direction.map(field) {
        None | Some("") => None,
        Some(text) => Some(text.to_string()),
    };

    let tick = Tick {
        ts_us: parse_timestamp_us(field(columns.timestamp))?,
        price: crate::csv_klines::parse_number("price", field(columns.price))?,
        size: size.to_f64(),
        notional: notional.to_f64(),
        side,
        trade_id: trade_id.to_string(),
        tick_direction,
    };
    tick.validate()?;
    Ok(Trade {
        tick,
        size,
        notional,
    })
}

/// Parses Unix seconds with an optional fraction of up to 6 digits, such as
/// `1569974396.557895`, into exact epoch microseconds without going through `f64`.
fn parse_timestamp_us(text: &str) -> std::result::Result<i64, String> {
    let invalid = |reason: &str| {
        format!(
            "invalid timestamp {text:?}: {reason}; expected Unix seconds with up to 6 fraction \
             digits, such as 1569974396.557895"
        )
    };
    let (seconds, fraction) = text.split_once('.').unwrap_or((text, ""));
    let all_digits = |part: &str| part.bytes().all(|byte| byte.is_ascii_digit());
    if seconds.is_empty() || !all_digits(seconds) || !all_digits(fraction) {
        return Err(invalid("not a decimal number"));
    }
    if text.ends_with('.') {
        return Err(invalid("no digits after the decimal point"));
    }
    if fraction.len() > TIMESTAMP_FRACTION_DIGITS {
        return Err(invalid("more than 6 fraction digits"));
    }
    let padded = format!("{fraction:0<width$}", width = TIMESTAMP_FRACTION_DIGITS);
    let micros: i64 = padded
        .parse()
        .map_err(|_| invalid("not a decimal number"))?;
    seconds
        .parse::<i64>()
        .ok()
        .and_then(|seconds| seconds.checked_mul(1_000_000))
        .and_then(|us| us.checked_add(micros))
        .ok_or_else(|| invalid("out of range"))
}

/// Returns the open time in ms of the minute containing `ts_us`.
fn minute_open_ms(ts_us: i64) -> i64 {
    ts_us.div_euclid(MINUTE_US) * MINUTE_MS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_keeps_microseconds() {
        let cases = [
            ("1569974396.557895", 1_569_974_396_557_895),
            ("1569974394.78865", 1_569_974_394_788_650),
            ("1569888000.7", 1_569_888_000_700_000),
            ("1569888000", 1_569_888_000_000_000),
            ("0.000001", 1),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_timestamp_us(text), Ok(expected), "{text}");
        }
    }

    #[test]
    fn timestamp_rejects_other_forms() {
        let cases = [
            ("1569974396.5578951", "more than 6 fraction digits"),
            ("1569974396.", "no digits after the decimal point"),
            ("", "not a decimal number"),
            ("-1.5", "not a decimal number"),
            ("1.5e9", "not a decimal number"),
            ("2019-10-01 00:00:00", "not a decimal number"),
            ("99999999999999999999", "out of range"),
        ];
        for (text, reason) in cases {
            let error = parse_timestamp_us(text).unwrap_err();
            assert!(error.contains(reason), "{text}: {error}");
        }
    }

    #[test]
    fn file_names_give_symbol_and_date() {
        let date = NaiveDate::from_ymd_opt(2019, 10, 1).unwrap();
        for name in [
            "BTCUSD2019-10-01.csv.gz",
            "BTCUSD2019-10-01.csv",
            "dir/BTCUSD2019-10-01.csv.gz",
        ] {
            let parts = dump_name_parts(Path::new(name));
            assert_eq!(parts, Some(("BTCUSD".to_string(), date)), "{name}");
        }
        for name in [
            "BTCUSD.csv.gz",
            "2019-10-01.csv",
            "btcusd2019-10-01.csv",
            "BTCUSD2019-13-01.csv",
            "BTCUSD_2019-10-01.csv",
        ] {
            assert_eq!(dump_name_parts(Path::new(name)), None, "{name}");
        }
    }

    #[test]
    fn categories_follow_symbol_suffix() {
        assert_eq!(category_from_symbol("BTCUSDT"), Some(Category::Linear));
        assert_eq!(category_from_symbol("ETHUSDC"), Some(Category::Linear));
        assert_eq!(category_from_symbol("BTCUSD"), Some(Category::Inverse));
        assert_eq!(category_from_symbol("BTCUSDZ19"), None);
        assert_eq!(category_from_symbol("BTCPERP"), None);
    }

    fn trade(ts_us: i64, price: f64, size: &str, notional: &str, trade_id: &str) -> Trade {
        let size = Decimal::parse(size).unwrap();
        let notional = Decimal::parse(notional).unwrap();
        Trade {
            tick: Tick {
                ts_us,
                price,
                size: size.to_f64(),
                notional: notional.to_f64(),
                side: Side::Buy,
                trade_id: trade_id.to_string(),
                tick_direction: None,
            },
            size,
            notional,
        }
    }

    #[test]
    fn bars_sum_exactly_and_skip_uncovered() {
        let minute = 60_000_000;
        let trades = [
            trade(minute + 5, 10.0, "0.1", "1.0", "a"),
            trade(minute + 5, 12.0, "0.2", "2.4", "b"),
            trade(minute + 7, 9.0, "0.1", "0.9", "c"),
            trade(minute + 7, 9.0, "0.1", "0.9", "c"),
            trade(2 * minute, 11.0, "1", "11", "d"),
        ];
        let bars = derive_minute_bars(&trades, &(60_000..120_000)).unwrap();
        assert_eq!(bars.len(), 1);
        let bar = bars[0];
        assert_eq!(bar.open_time_ms, 60_000);
        assert_eq!(bar.open, 10.0);
        assert_eq!(bar.high, 12.0);
        assert_eq!(bar.low, 9.0);
        assert_eq!(bar.close, 9.0);
        // 0.1 + 0.2 + 0.1 in f64 is 0.4000000000000001; the exact sum is 0.4.
        assert_eq!(bar.volume, 0.4);
        assert_eq!(bar.turnover, Some(4.3));
    }

    #[test]
    fn coverage_without_date_drops_end_minutes() {
        let dump = TradeDump {
            path: PathBuf::from("trades.csv"),
            symbol: "BTCUSDT".to_string(),
            date: None,
            newest_first: false,
            trades: vec![
                trade(30_000_000, 1.0, "1", "1", "a"),
                trade(200_000_000, 1.0, "1", "1", "b"),
            ],
        };
        // First trade in minute 0, last in minute 3: minutes 1 and 2 are covered.
        assert_eq!(dump.covered_minutes(), 60_000..180_000);

        let one_minute = TradeDump {
            trades: dump.trades[..1].to_vec(),
            ..dump
        };
        assert!(one_minute.covered_minutes().is_empty());
    }
}
