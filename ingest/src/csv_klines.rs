//! Kline CSV files, plain or gzip-compressed, as saved from Bybit's `/v5/market/kline`.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use chrono::{DateTime, NaiveDateTime, Timelike};
use flate2::read::MultiGzDecoder;

use crate::layout::{Kline, Timeframe, validate_symbol};
use crate::{Error, Result};

/// First two bytes of every gzip member (RFC 1952).
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Columns every kline CSV must have, matched by name (case-sensitive) in any order.
const REQUIRED_COLUMNS: [&str; 6] = ["timestamp", "open", "high", "low", "close", "volume"];

/// Optional column with the quote-currency value of each bar.
const TURNOVER_COLUMN: &str = "turnover";

/// Positions of the kline columns in one file's header.
struct ColumnIndexes {
    timestamp: usize,
    open: usize,
    high: usize,
    low: usize,
    close: usize,
    volume: usize,
    turnover: Option<usize>,
}

/// Reads a kline CSV file and returns its rows in file order.
///
/// The file is gzip-compressed when it starts with the gzip magic bytes `1f 8b`, whatever its
/// extension. The header must contain `timestamp,open,high,low,close,volume` and may contain
/// `turnover`, an empty turnover field meaning no value. A `timestamp` is the bar's open time,
/// written as `2025-05-30 16:39:00+00:00`, as RFC 3339 (`2025-05-30T16:39:00Z`, or with an
/// offset), as a naive `2025-05-30 16:39:00` read as UTC, or as integer epoch milliseconds.
///
/// # Errors
///
/// Returns [`Error::Io`] when the file cannot be read and [`Error::InvalidFile`] for a missing
/// column. Returns [`Error::Parse`] naming the line and value for a bad timestamp, a bad or
/// non-finite number, a negative volume, or a row whose high and low do not bound open and
/// close.
pub fn read_kline_csv(path: &Path) -> Result<Vec<Kline>> {
    let (input, is_gzip) = open_maybe_gzip(path)?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(input);
    let header = reader
        .headers()
        .map_err(|error| csv_error(path, &error))?
        .clone();
    let columns = find_columns(path, &header)?;

    let mut klines = Vec::new();
    let mut record = csv::StringRecord::new();
    loop {
        match reader.read_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(error) => return Err(csv_error(path, &error)),
        }
        let line = record.position().map_or(0, csv::Position::line);
        let kline = parse_record(&record, &columns).map_err(|message| Error::Parse {
            path: path.to_path_buf(),
            line,
            message,
        })?;
        klines.push(kline);
    }

    tracing::debug!(path = %path.display(), rows = klines.len(), gzip = is_gzip, "read kline CSV");
    Ok(klines)
}

/// Opens a file for reading, decompressing it when it starts with the gzip magic bytes
/// `1f 8b` whatever its extension, and returns whether it was gzip.
pub(crate) fn open_maybe_gzip(path: &Path) -> Result<(Box<dyn Read>, bool)> {
    let io_error = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io_error)?;
    let mut buffered = BufReader::new(file);
    let is_gzip = buffered
        .fill_buf()
        .map_err(io_error)?
        .starts_with(&GZIP_MAGIC);
    let input: Box<dyn Read> = if is_gzip {
        Box::new(MultiGzDecoder::new(buffered))
    } else {
        Box::new(buffered)
    };
    Ok((input, is_gzip))
}

/// Returns the symbol and timeframe that a file name such as `BTCUSDT_1m.csv.gz`,
/// `BTCUSDT_240m.csv`, `BTCUSDT_1h.csv` or `BTCUSDT_D.csv.gz` encodes, or `None` when the
/// name does not have the form `<SYMBOL>_<timeframe>` after removing `.gz` and `.csv`.
pub fn series_from_file_name(path: &Path) -> Option<(String, Timeframe)> {
    let name = path.file_name()?.to_str()?;
    let name = name.strip_suffix(".gz").unwrap_or(name);
    let stem = name.strip_suffix(".csv").unwrap_or(name);
    let (symbol, code) = stem.rsplit_once('_')?;
    validate_symbol(symbol).ok()?;
    let timeframe = code.parse::<Timeframe>().ok()?;
    Some((symbol.to_string(), timeframe))
}

pub(crate) fn csv_error(path: &Path, error: &csv::Error) -> Error {
    Error::Parse {
        path: path.to_path_buf(),
        line: error.position().map_or(0, csv::Position::line),
        message: error.to_string(),
    }
}

/// Returns the positions of the `required` columns in a CSV header, in the order given.
///
/// # Errors
///
/// [`Error::InvalidFile`] naming the first missing column, what must contain it, and the
/// header found.
pub(crate) fn required_columns<const N: usize>(
    path: &Path,
    header: &csv::StringRecord,
    required: [&str; N],
    container: &str,
) -> Result<[usize; N]> {
    let mut indexes = [0; N];
    for (index, name) in indexes.iter_mut().zip(required) {
        *index = header
            .iter()
            .position(|column| column == name)
            .ok_or_else(|| Error::InvalidFile {
                path: path.to_path_buf(),
                message: format!(
                    "missing column {name:?}: {container} must contain {} (found {:?})",
                    required.join(","),
                    header.iter().collect::<Vec<_>>().join(","),
                ),
            })?;
    }
    Ok(indexes)
}

fn find_columns(path: &Path, header: &csv::StringRecord) -> Result<ColumnIndexes> {
    let indexes = required_columns(path, header, REQUIRED_COLUMNS, "the header")?;
    let position = |name: &str| header.iter().position(|column| column == name);
    let [timestamp, open, high, low, close, volume] = indexes;
    Ok(ColumnIndexes {
        timestamp,
        open,
        high,
        low,
        close,
        volume,
        turnover: position(TURNOVER_COLUMN),
    })
}

fn parse_record(
    record: &csv::StringRecord,
    columns: &ColumnIndexes,
) -> std::result::Result<Kline, String> {
    let field = |index: usize| record.get(index).unwrap_or_default();
    let number = |name: &str, index: usize| parse_number(name, field(index));

    let turnover = match columns.turnover.map(field) {
        None | Some("") => None,
        Some(text) => Some(parse_number(TURNOVER_COLUMN, text)?),
    };
    let kline = Kline {
        open_time_ms: parse_timestamp_ms(field(columns.timestamp))?,
        open: number("open", columns.open)?,
        high: number("high", columns.high)?,
        low: number("low", columns.low)?,
        close: number("close", columns.close)?,
        volume: number("volume", columns.volume)?,
        turnover,
    };
    kline.validate()?;
    Ok(kline)
}

/// Parses a decimal number, rejecting `NaN` and infinities.
pub(crate) fn parse_number(name: &str, text: &str) -> std::result::Result<f64, String> {
    let value = text
        .trim()
        .parse::<f64>()
        .map_err(|_| format!("invalid {name} {text:?}: expected a decimal number"))?;
    if value.is_finite() {
        Ok(value)
    } else {
        Err(format!("invalid {name} {text:?}: expected a finite number"))
    }
}

/// Parses a bar open time into epoch milliseconds (see [`read_kline_csv`] for the forms).
fn parse_timestamp_ms(text: &str) -> std::result::Result<i64, String> {
    let trimmed = text.trim();
    let is_integer = {
        let digits = trimmed.strip_prefix('-').unwrap_or(trimmed);
        !digits.is_empty() && digits.bytes().all(|byte| byte.is_ascii_digit())
    };
    if is_integer {
        return trimmed
            .parse::<i64>()
            .map_err(|_| format!("invalid timestamp {text:?}: epoch milliseconds out of range"));
    }

    // RFC 3339 as chrono parses it also accepts a space in place of the `T`, which covers
    // `2025-05-30 16:39:00+00:00`.
    let utc = if let Ok(with_offset) = DateTime::parse_from_rfc3339(trimmed) {
        with_offset.to_utc()
    } else if let Ok(naive) = NaiveDateTime::parse_from_str(trimmed, "%Y-%m-%d %H:%M:%S%.f") {
        naive.and_utc()
    } else {
        return Err(format!(
            "invalid timestamp {text:?}: expected YYYY-MM-DD HH:MM:SS with an optional \
             UTC offset, RFC 3339, or integer epoch milliseconds"
        ));
    };
    if utc.nanosecond() % 1_000_000 != 0 {
        return Err(format!(
            "invalid timestamp {text:?}: expected a whole number of milliseconds"
        ));
    }
    Ok(utc.timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn timestamp_forms_parse() {
        let expected = 1_748_623_140_000; // 2025-05-30 16:39:00 UTC
        let cases = [
            "2025-05-30 16:39:00+00:00",
            "2025-05-30T16:39:00Z",
            "2025-05-30T18:39:00+02:00",
            "2025-05-30 16:39:00",
            "2025-05-30 16:39:00.000",
            "1748623140000",
        ];
        for text in cases {
            assert_eq!(parse_timestamp_ms(text), Ok(expected), "{text}");
        }
    }

    #[test]
    fn timestamp_rejects_other_forms() {
        for text in [
            "",
            "2025-05-30",
            "30/05/2025 16:39",
            "2025-05-30 16:39:00.0005",
            "1e3",
        ] {
            let error = parse_timestamp_ms(text).unwrap_err();
            assert!(error.contains("invalid timestamp"), "{text}: {error}");
        }
    }

    #[test]
    fn file_names_give_series() {
        let cases = [
            ("BTCUSDT_1m.csv.gz", "BTCUSDT", Timeframe::Minutes(1)),
            ("ETHUSDT_5m.csv", "ETHUSDT", Timeframe::Minutes(5)),
            ("BTCUSDT_240m.csv.gz", "BTCUSDT", Timeframe::Minutes(240)),
            ("BTCUSDT_60m.csv.gz", "BTCUSDT", Timeframe::Minutes(60)),
            ("BTCUSDT_1h.csv", "BTCUSDT", Timeframe::Minutes(60)),
            ("BTCUSDT_D.csv.gz", "BTCUSDT", Timeframe::Day),
            ("dir/SOLUSDT_1M.csv", "SOLUSDT", Timeframe::Month),
        ];
        for (name, symbol, timeframe) in cases {
            let series = series_from_file_name(&PathBuf::from(name));
            assert_eq!(series, Some((symbol.to_string(), timeframe)), "{name}");
        }
    }

    #[test]
    fn file_names_without_series_give_none() {
        for name in [
            "BTCUSDT.csv",
            "btcusdt_1m.csv",
            "BTCUSDT_7m.csv.gz",
            "_1m.csv",
            "",
        ] {
            assert_eq!(series_from_file_name(&PathBuf::from(name)), None, "{name}");
        }
    }
}
