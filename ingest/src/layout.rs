//! Dataset layout: categories, timeframes, the kline record and its Arrow schema, partition paths.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use chrono::{DateTime, Datelike, TimeZone, Utc};

use crate::{Error, Result};

/// Folder of the kline dataset below the data directory.
pub const KLINES_DIR: &str = "klines";

/// Name of the single Parquet file of each partition, replaced atomically on every write.
pub const PART_FILE_NAME: &str = "part-0000.parquet";

/// Time zone of every timestamp column in the dataset.
pub const UTC: &str = "UTC";

const MINUTE_MS: i64 = 60_000;

/// A Bybit product category; spot and linear data for one symbol are stored apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Category {
    #[default]
    Linear,
    Spot,
    Inverse,
}

impl Category {
    /// Returns the lowercase name used by Bybit and in partition paths.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Linear => "linear",
            Category::Spot => "spot",
            Category::Inverse => "inverse",
        }
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Category {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        match text {
            "linear" => Ok(Category::Linear),
            "spot" => Ok(Category::Spot),
            "inverse" => Ok(Category::Inverse),
            other => Err(Error::InvalidValue {
                field: "category",
                value: other.to_string(),
                expected: "one of linear, spot, inverse",
            }),
        }
    }
}

/// A bar period as Bybit codes it: minutes (`1` to `720`), `D`, `W` or `M`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Timeframe {
    Minutes(u32),
    Day,
    Week,
    Month,
}

/// Bybit's minute intervals.
const MINUTE_CODES: [u32; 10] = [1, 3, 5, 15, 30, 60, 120, 240, 360, 720];

/// Codes and aliases that `Timeframe::from_str` accepts, for error messages.
pub const TIMEFRAME_CODES: &str = "1, 3, 5, 15, 30, 60, 120, 240, 360, 720, D, W, M \
     (or 1m, 3m, 5m, 15m, 30m, 1h, 2h, 4h, 6h, 12h, 1d, 1w, 1M)";

impl Timeframe {
    /// Returns Bybit's code: `1`, `60`, `D`, `W`, `M`.
    pub fn code(self) -> String {
        match self {
            Timeframe::Minutes(minutes) => minutes.to_string(),
            Timeframe::Day => "D".to_string(),
            Timeframe::Week => "W".to_string(),
            Timeframe::Month => "M".to_string(),
        }
    }

    /// Returns the fixed bar length in milliseconds, or `None` for months.
    pub fn fixed_duration_ms(self) -> Option<i64> {
        match self {
            Timeframe::Minutes(minutes) => Some(i64::from(minutes) * MINUTE_MS),
            Timeframe::Day => Some(1_440 * MINUTE_MS),
            Timeframe::Week => Some(7 * 1_440 * MINUTE_MS),
            Timeframe::Month => None,
        }
    }

    /// Returns the close time (exclusive end) in ms of the bar that opens at `open_time_ms`.
    pub fn bar_end_ms(self, open_time_ms: i64) -> i64 {
        match self.fixed_duration_ms() {
            Some(duration_ms) => open_time_ms + duration_ms,
            None => {
                let open = utc_from_ms(open_time_ms);
                let (year, month) = if open.month() == 12 {
                    (open.year() + 1, 1)
                } else {
                    (open.year(), open.month() + 1)
                };
                Utc.with_ymd_and_hms(year, month, 1, 0, 0, 0)
                    .single()
                    .map_or(open_time_ms, |next| next.timestamp_millis())
            }
        }
    }

    /// Returns true when a bar of this timeframe can open at `open_time_ms`, as Bybit aligns
    /// bars. Minute and day bars open on multiples of their length since the Unix epoch,
    /// weeks on Monday 00:00 UTC and months on the 1st at 00:00 UTC.
    pub fn is_aligned(self, open_time_ms: i64) -> bool {
        const FIRST_MONDAY_MS: i64 = 4 * 86_400_000;
        match self {
            Timeframe::Week => (open_time_ms - FIRST_MONDAY_MS).rem_euclid(7 * 86_400_000) == 0,
            Timeframe::Month => {
                let open = utc_from_ms(open_time_ms);
                open.day() == 1 && open_time_ms.rem_euclid(86_400_000) == 0
            }
            _ => self
                .fixed_duration_ms()
                .is_some_and(|duration_ms| open_time_ms.rem_euclid(duration_ms) == 0),
        }
    }

    /// Returns the number of bars in a year of round-the-clock trading: 525,600 / bar minutes,
    /// 365 for days, 365 / 7 for weeks and 12 for months.
    pub fn bars_per_year(self) -> f64 {
        match self {
            Timeframe::Minutes(minutes) => 525_600.0 / f64::from(minutes),
            Timeframe::Day => 365.0,
            Timeframe::Week => 365.0 / 7.0,
            Timeframe::Month => 12.0,
        }
    }
}

impl fmt::Display for Timeframe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.code())
    }
}

impl FromStr for Timeframe {
    type Err = Error;

    /// Parses a Bybit code or one of the aliases `1m 3m 5m 15m 30m 1h 2h 4h 6h 12h 1d 1w 1M`.
    /// Case matters: `1m` is a minute and `1M` a month.
    fn from_str(text: &str) -> Result<Self> {
        let timeframe = match text {
            "D" | "1d" => Some(Timeframe::Day),
            "W" | "1w" => Some(Timeframe::Week),
            "M" | "1M" => Some(Timeframe::Month),
            _ => parse_minutes(text).map(Timeframe::Minutes),
        };
        timeframe.ok_or_else(|| Error::InvalidValue {
            field: "interval",
            value: text.to_string(),
            expected: TIMEFRAME_CODES,
        })
    }
}

fn parse_minutes(text: &str) -> Option<u32> {
    let minutes = if let Some(hours) = text.strip_suffix('h') {
        hours.parse::<u32>().ok()?.checked_mul(60)?
    } else if let Some(minutes) = text.strip_suffix('m') {
        minutes.parse::<u32>().ok()?
    } else {
        text.parse::<u32>().ok()?
    };
    MINUTE_CODES.contains(&minutes).then_some(minutes)
}

/// One closed bar. Prices and volume are in the instrument's units; `turnover` is the
/// quote-currency value when the source reports it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Kline {
    pub open_time_ms: i64,
    pub open: f64,
    pub high: f64,
    pub low: f64,
    pub close: f64,
    pub volume: f64,
    pub turnover: Option<f64>,
}

impl Kline {
    /// Checks that every value is finite, that volume and turnover are not negative, and that
    /// `high` and `low` bound `open` and `close`.
    ///
    /// # Errors
    ///
    /// Returns a message naming the first failed condition and its values.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let values = [
            ("open", self.open),
            ("high", self.high),
            ("low", self.low),
            ("close", self.close),
            ("volume", self.volume),
        ];
        for (name, value) in values {
            if !value.is_finite() {
                return Err(format!("{name} {value} is not a finite number"));
            }
        }
        if let Some(turnover) = self.turnover {
            if !turnover.is_finite() {
                return Err(format!("turnover {turnover} is not a finite number"));
            }
            if turnover < 0.0 {
                return Err(format!("turnover {turnover} is negative"));
            }
        }
        if self.volume < 0.0 {
            return Err(format!("volume {} is negative", self.volume));
        }
        if self.low <= 0.0 {
            return Err(format!("low {} is not a positive price", self.low));
        }
        if self.high < self.open.max(self.close) {
            return Err(format!(
                "high {} is below max(open {}, close {})",
                self.high, self.open, self.close
            ));
        }
        if self.low > self.open.min(self.close) {
            return Err(format!(
                "low {} is above min(open {}, close {})",
                self.low, self.open, self.close
            ));
        }
        Ok(())
    }
}

/// Returns the Arrow schema of the kline files (partition columns are not stored in them).
pub fn kline_schema() -> SchemaRef {
    let price = |name: &str| Field::new(name, DataType::Float64, false);
    Arc::new(Schema::new(vec![
        Field::new(
            "open_time",
            DataType::Timestamp(TimeUnit::Millisecond, Some(UTC.into())),
            false,
        ),
        price("open"),
        price("high"),
        price("low"),
        price("close"),
        price("volume"),
        Field::new("turnover", DataType::Float64, true),
    ]))
}

/// Names of the hive partition columns of the kline dataset, outermost first.
pub const KLINE_PARTITION_COLUMNS: [&str; 4] = ["category", "symbol", "timeframe", "month"];

/// Returns the `YYYY-MM` month partition of an open time.
pub fn month_of(open_time_ms: i64) -> String {
    utc_from_ms(open_time_ms).format("%Y-%m").to_string()
}

/// Returns `<data_dir>/klines/category=../symbol=../timeframe=..` for one series.
pub fn kline_series_dir(
    data_dir: &Path,
    category: Category,
    symbol: &str,
    timeframe: Timeframe,
) -> PathBuf {
    data_dir
        .join(KLINES_DIR)
        .join(format!("category={category}"))
        .join(format!("symbol={symbol}"))
        .join(format!("timeframe={timeframe}"))
}

/// Returns the folder of one month partition of a series.
pub fn kline_partition_dir(
    data_dir: &Path,
    category: Category,
    symbol: &str,
    timeframe: Timeframe,
    month: &str,
) -> PathBuf {
    kline_series_dir(data_dir, category, symbol, timeframe).join(format!("month={month}"))
}

/// Checks that a symbol is safe to use as a partition value: 1 to 32 ASCII uppercase letters
/// and digits, as Bybit names its instruments.
///
/// # Errors
///
/// Returns [`Error::InvalidValue`] naming the symbol otherwise.
pub fn validate_symbol(symbol: &str) -> Result<()> {
    let valid = !symbol.is_empty()
        && symbol.len() <= 32
        && symbol
            .bytes()
            .all(|byte| byte.is_ascii_uppercase() || byte.is_ascii_digit());
    if valid {
        Ok(())
    } else {
        Err(Error::InvalidValue {
            field: "symbol",
            value: symbol.to_string(),
            expected: "1 to 32 uppercase letters and digits, such as BTCUSDT",
        })
    }
}

/// Converts epoch milliseconds to a UTC datetime, saturating far outside the supported range.
pub fn utc_from_ms(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeframe_aliases_parse() {
        let cases = [
            ("1", Timeframe::Minutes(1)),
            ("1m", Timeframe::Minutes(1)),
            ("5m", Timeframe::Minutes(5)),
            ("60", Timeframe::Minutes(60)),
            ("1h", Timeframe::Minutes(60)),
            ("4h", Timeframe::Minutes(240)),
            ("D", Timeframe::Day),
            ("1d", Timeframe::Day),
            ("W", Timeframe::Week),
            ("1M", Timeframe::Month),
            ("M", Timeframe::Month),
        ];
        for (text, expected) in cases {
            assert_eq!(text.parse::<Timeframe>().unwrap(), expected, "{text}");
        }
    }

    #[test]
    fn timeframe_rejects_unknown_codes() {
        for text in ["2", "7m", "1y", "", "d", "1H", "60 "] {
            let error = text.parse::<Timeframe>().unwrap_err().to_string();
            assert!(error.contains("interval"), "{text}: {error}");
        }
    }

    #[test]
    fn month_bar_ends_on_next_first() {
        let december = Utc.with_ymd_and_hms(2024, 12, 1, 0, 0, 0).unwrap();
        let january = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap();
        let end = Timeframe::Month.bar_end_ms(december.timestamp_millis());
        assert_eq!(end, january.timestamp_millis());
    }

    #[test]
    fn bars_per_year_count_every_hour() {
        assert_eq!(Timeframe::Minutes(1).bars_per_year(), 525_600.0);
        assert_eq!(Timeframe::Minutes(60).bars_per_year(), 8_760.0);
        assert_eq!(Timeframe::Day.bars_per_year(), 365.0);
        assert_eq!(Timeframe::Week.bars_per_year(), 365.0 / 7.0);
        assert_eq!(Timeframe::Month.bars_per_year(), 12.0);
    }

    #[test]
    fn alignment_follows_bybit_boundaries() {
        let monday = Utc
            .with_ymd_and_hms(2025, 6, 2, 0, 0, 0)
            .unwrap()
            .timestamp_millis();
        let tuesday = monday + 86_400_000;
        assert!(Timeframe::Week.is_aligned(monday));
        assert!(!Timeframe::Week.is_aligned(tuesday));
        assert!(Timeframe::Day.is_aligned(tuesday));
        assert!(!Timeframe::Day.is_aligned(tuesday + 3_600_000));
        assert!(Timeframe::Minutes(60).is_aligned(tuesday + 3_600_000));
        assert!(!Timeframe::Minutes(5).is_aligned(monday + 60_000));
        assert!(!Timeframe::Minutes(1).is_aligned(monday + 30_000));
        let first = Utc
            .with_ymd_and_hms(2025, 6, 1, 0, 0, 0)
            .unwrap()
            .timestamp_millis();
        assert!(Timeframe::Month.is_aligned(first));
        assert!(!Timeframe::Month.is_aligned(monday));
    }

    #[test]
    fn symbol_validation_rejects_paths() {
        assert!(validate_symbol("BTCUSDT").is_ok());
        for bad in ["", "btcusdt", "../x", "BTC/USDT", "A=B"] {
            assert!(validate_symbol(bad).is_err(), "{bad}");
        }
    }
}
