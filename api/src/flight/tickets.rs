//! JSON tickets of the plain Flight API: dataset ranges and backtest results.
//!
//! See the [module documentation](super) for the ticket format.

use std::path::Path;

use bst_engine::dataset::{KLINES_TABLE, TICKS_TABLE};
use bst_ingest::layout::{self, kline_series_dir};
use bst_ingest::tick_writer::{self, tick_series_dir};
use bst_ingest::{Category, Timeframe};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::prelude::{DataFrame, Expr, SessionContext, col, lit};
use datafusion::scalar::ScalarValue;
use serde::Deserialize;
use serde_json::Value;

use super::error::{RequestError, RequestResult};
use crate::error::{echoed, shorten_quoted};

/// The form of a backtest ticket, for the messages of tickets that do not validate.
const BACKTEST_TICKET_FORM: &str =
    "{\"backtest_id\": INTEGER, \"table\": \"trades\" or \"equity\"}";

/// The form of a dataset ticket, for the messages of tickets that do not validate.
const DATASET_TICKET_FORM: &str = "{\"dataset\": \"klines\" or \"ticks\", \"symbol\": \
     \"BTCUSDT\", and optionally \"category\", \"timeframe\" (klines only), \"start\", \"end\" \
     and \"columns\"}";

/// Columns a klines ticket returns when it names none: the columns of the kline files.
pub const KLINE_COLUMNS: [&str; 7] = [
    "open_time",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "turnover",
];

/// Columns a ticks ticket returns when it names none: the columns of the tick files.
pub const TICK_COLUMNS: [&str; 7] = [
    "ts",
    "price",
    "size",
    "notional",
    "side",
    "trade_id",
    "tick_direction",
];

/// A parsed ticket of the plain Flight API.
#[derive(Debug, Clone, PartialEq)]
pub enum JsonTicket {
    Dataset(DatasetRequest),
    Backtest(BacktestRequest),
}

/// The stored series that a dataset ticket reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatasetSeries {
    Klines {
        category: Category,
        symbol: String,
        timeframe: Timeframe,
    },
    Ticks {
        category: Category,
        symbol: String,
    },
}

impl DatasetSeries {
    /// Returns the Flight descriptor path of the series: `klines/<category>/<symbol>/<timeframe>`
    /// or `ticks/<category>/<symbol>`.
    pub fn path(&self) -> Vec<String> {
        match self {
            DatasetSeries::Klines {
                category,
                symbol,
                timeframe,
            } => vec![
                KLINES_TABLE.to_string(),
                category.to_string(),
                symbol.clone(),
                timeframe.code(),
            ],
            DatasetSeries::Ticks { category, symbol } => vec![
                TICKS_TABLE.to_string(),
                category.to_string(),
                symbol.clone(),
            ],
        }
    }

    /// Parses a descriptor path made by [`DatasetSeries::path`].
    ///
    /// # Errors
    ///
    /// [`RequestError::InvalidArgument`] naming the expected path forms.
    pub fn from_path(path: &[String]) -> RequestResult<Self> {
        let parts: Vec<&str> = path.iter().map(String::as_str).collect();
        match parts.as_slice() {
            [KLINES_TABLE, category, symbol, timeframe] => Ok(DatasetSeries::Klines {
                category: parse_category(category)?,
                symbol: parse_symbol(symbol)?,
                timeframe: parse_timeframe(timeframe)?,
            }),
            [TICKS_TABLE, category, symbol] => Ok(DatasetSeries::Ticks {
                category: parse_category(category)?,
                symbol: parse_symbol(symbol)?,
            }),
            _ => Err(RequestError::InvalidArgument(format!(
                "invalid descriptor path {}: expected [\"klines\", CATEGORY, SYMBOL, \
                 TIMEFRAME] or [\"ticks\", CATEGORY, SYMBOL]",
                echoed(&format!("{path:?}"))
            ))),
        }
    }

    /// Returns true when the series folder exists in the data directory.
    pub fn is_stored(&self, data_dir: &Path) -> bool {
        match self {
            DatasetSeries::Klines {
                category,
                symbol,
                timeframe,
            } => kline_series_dir(data_dir, *category, symbol, *timeframe).is_dir(),
            DatasetSeries::Ticks { category, symbol } => {
                tick_series_dir(data_dir, *category, symbol).is_dir()
            }
        }
    }

    /// Returns [`RequestError::NotFound`] naming the series.
    pub fn not_found(&self) -> RequestError {
        RequestError::NotFound(format!(
            "dataset {} not found; list_flights returns the stored datasets",
            self.path().join("/")
        ))
    }

    fn table(&self) -> &'static str {
        match self {
            DatasetSeries::Klines { .. } => KLINES_TABLE,
            DatasetSeries::Ticks { .. } => TICKS_TABLE,
        }
    }

    fn time_column(&self) -> &'static str {
        match self {
            DatasetSeries::Klines { .. } => "open_time",
            DatasetSeries::Ticks { .. } => "ts",
        }
    }

    fn default_columns(&self) -> &'static [&'static str] {
        match self {
            DatasetSeries::Klines { .. } => &KLINE_COLUMNS,
            DatasetSeries::Ticks { .. } => &TICK_COLUMNS,
        }
    }
}

/// A dataset ticket: one series, a half-open time range `[start, end)` in epoch milliseconds
/// and the columns to return.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetRequest {
    pub series: DatasetSeries,
    pub start_ms: Option<i64>,
    pub end_ms: Option<i64>,
    /// Requested columns; empty means the columns of the dataset's files.
    pub columns: Vec<String>,
}

/// The result table of a backtest ticket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BacktestTable {
    Trades,
    Equity,
}

/// A backtest ticket: the trades or the equity curve of one stored backtest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BacktestRequest {
    pub backtest_id: i64,
    pub table: BacktestTable,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DatasetTicketJson {
    dataset: String,
    category: Option<String>,
    symbol: String,
    timeframe: Option<String>,
    /// Epoch milliseconds or an ISO 8601 string, checked by [`parse_bound`].
    start: Option<Value>,
    /// Epoch milliseconds or an ISO 8601 string, checked by [`parse_bound`].
    end: Option<Value>,
    columns: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BacktestTicketJson {
    backtest_id: i64,
    table: String,
}

/// Returns true when `bytes` look like a JSON ticket (an object) rather than a Flight SQL
/// protobuf message.
pub fn is_json_ticket(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .find(|byte| !byte.is_ascii_whitespace())
        .is_some_and(|byte| *byte == b'{')
}

/// Parses a JSON ticket.
///
/// # Errors
///
/// [`RequestError::InvalidArgument`] naming the field that does not validate.
pub fn parse_ticket(bytes: &[u8]) -> RequestResult<JsonTicket> {
    let value: Value = serde_json::from_slice(bytes).map_err(|error| {
        invalid(format!(
            "invalid ticket: malformed JSON at line {} column {}; expected a dataset ticket \
             {DATASET_TICKET_FORM} or a backtest ticket {BACKTEST_TICKET_FORM}",
            error.line(),
            error.column()
        ))
    })?;
    let Some(object) = value.as_object() else {
        return Err(invalid(format!(
            "invalid ticket: expected a JSON object, a dataset ticket {DATASET_TICKET_FORM} or \
             a backtest ticket {BACKTEST_TICKET_FORM}"
        )));
    };
    if object.contains_key("backtest_id") {
        let ticket: BacktestTicketJson = serde_json::from_value(value).map_err(|error| {
            invalid(format!(
                "invalid backtest ticket: {}; expected {BACKTEST_TICKET_FORM}",
                serde_message(&error)
            ))
        })?;
        return backtest_request(ticket).map(JsonTicket::Backtest);
    }
    if object.contains_key("dataset") {
        let ticket: DatasetTicketJson = serde_json::from_value(value).map_err(|error| {
            invalid(format!(
                "invalid dataset ticket: {}; expected {DATASET_TICKET_FORM}",
                serde_message(&error)
            ))
        })?;
        return dataset_request(ticket).map(JsonTicket::Dataset);
    }
    Err(invalid(format!(
        "invalid ticket: expected a \"dataset\" or a \"backtest_id\" field, as in a dataset \
         ticket {DATASET_TICKET_FORM} or a backtest ticket {BACKTEST_TICKET_FORM}"
    )))
}

/// Rewrites a serde message about a ticket field in the terms of JSON. Rust's `i64` becomes
/// "an integer", a string and a sequence become a JSON string and a JSON array, and long
/// quoted values are shortened.
fn serde_message(error: &serde_json::Error) -> String {
    let message = shorten_quoted(&error.to_string());
    message
        .replace("expected i64", "expected an integer")
        .replace("expected a string", "expected a JSON string")
        .replace("expected a sequence", "expected a JSON array")
}

fn invalid(message: String) -> RequestError {
    RequestError::InvalidArgument(message)
}

fn backtest_request(ticket: BacktestTicketJson) -> RequestResult<BacktestRequest> {
    let table = match ticket.table.as_str() {
        "trades" => BacktestTable::Trades,
        "equity" => BacktestTable::Equity,
        other => {
            return Err(invalid(format!(
                "invalid table {} in backtest ticket: expected \"trades\" or \"equity\"",
                echoed(other)
            )));
        }
    };
    Ok(BacktestRequest {
        backtest_id: ticket.backtest_id,
        table,
    })
}

fn dataset_request(ticket: DatasetTicketJson) -> RequestResult<DatasetRequest> {
    let category = parse_category(ticket.category.as_deref().unwrap_or("linear"))?;
    let symbol = parse_symbol(&ticket.symbol)?;
    let series = match ticket.dataset.as_str() {
        KLINES_TABLE => {
            let Some(timeframe) = ticket.timeframe.as_deref() else {
                return Err(invalid(
                    "invalid dataset ticket: \"timeframe\" is missing; klines need one \
                     such as \"1\" or \"60\""
                        .to_string(),
                ));
            };
            DatasetSeries::Klines {
                category,
                symbol,
                timeframe: parse_timeframe(timeframe)?,
            }
        }
        TICKS_TABLE => {
            if ticket.timeframe.is_some() {
                return Err(invalid(
                    "invalid dataset ticket: ticks have no \"timeframe\"".to_string(),
                ));
            }
            DatasetSeries::Ticks { category, symbol }
        }
        other => {
            return Err(invalid(format!(
                "invalid dataset {}: expected \"klines\" or \"ticks\"",
                echoed(other)
            )));
        }
    };
    let start_ms = ticket
        .start
        .map(|bound| parse_bound("start", bound))
        .transpose()?;
    let end_ms = ticket
        .end
        .map(|bound| parse_bound("end", bound))
        .transpose()?;
    if let (Some(start), Some(end)) = (start_ms, end_ms)
        && start >= end
    {
        return Err(invalid(format!(
            "invalid range: start {start} ms is not before end {end} ms"
        )));
    }
    let columns = ticket.columns.unwrap_or_default();
    let known = series.default_columns();
    for column in &columns {
        let is_partition = partition_columns(&series).contains(&column.as_str());
        if !known.contains(&column.as_str()) && !is_partition {
            return Err(invalid(format!(
                "invalid column {}: {} has the columns {}",
                echoed(column),
                series.table(),
                known
                    .iter()
                    .chain(partition_columns(&series))
                    .copied()
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    Ok(DatasetRequest {
        series,
        start_ms,
        end_ms,
        columns,
    })
}

fn partition_columns(series: &DatasetSeries) -> &'static [&'static str] {
    match series {
        DatasetSeries::Klines { .. } => &layout::KLINE_PARTITION_COLUMNS,
        DatasetSeries::Ticks { .. } => &tick_writer::TICK_PARTITION_COLUMNS,
    }
}

fn parse_category(text: &str) -> RequestResult<Category> {
    text.parse()
        .map_err(|error| ingest_invalid("category", &error))
}

fn parse_symbol(text: &str) -> RequestResult<String> {
    layout::validate_symbol(text).map_err(|error| ingest_invalid("symbol", &error))?;
    Ok(text.to_string())
}

fn parse_timeframe(text: &str) -> RequestResult<Timeframe> {
    text.parse()
        .map_err(|error| ingest_invalid("timeframe", &error))
}

/// Converts a value that the ingest crate rejected into an invalid argument, with the value
/// shortened by [`echoed`].
fn ingest_invalid(field: &str, error: &bst_ingest::Error) -> RequestError {
    match error {
        bst_ingest::Error::InvalidValue {
            value, expected, ..
        } => invalid(format!(
            "invalid {field} {}: expected {expected}",
            echoed(value)
        )),
        other => invalid(format!("invalid {field}: {other}")),
    }
}

/// Parses a range bound: epoch milliseconds (an integer) or an ISO 8601 string.
fn parse_bound(field: &str, bound: Value) -> RequestResult<i64> {
    let parsed = match &bound {
        Value::Number(number) => number.as_i64(),
        Value::String(text) => {
            bst_engine::time::parse_utc(text).map(|datetime| datetime.timestamp_millis())
        }
        _ => None,
    };
    parsed.ok_or_else(|| {
        let quoted_value = match &bound {
            Value::String(text) => echoed(text),
            other => echoed(&other.to_string()),
        };
        invalid(format!(
            "invalid {field} {quoted_value}: expected epoch milliseconds as an integer or {}",
            bst_engine::time::DATETIME_FORMS
        ))
    })
}

/// Builds the DataFrame of a dataset ticket, sorted by time. Partition filters prune every
/// folder outside the series and the range.
///
/// # Errors
///
/// [`RequestError::NotFound`] when the series is not stored, and DataFusion errors.
pub async fn dataset_frame(
    ctx: &SessionContext,
    data_dir: &Path,
    request: &DatasetRequest,
) -> RequestResult<DataFrame> {
    let series = &request.series;
    if !series.is_stored(data_dir) {
        return Err(series.not_found());
    }
    let filter = series_filter(series, request.start_ms, request.end_ms);
    let columns: Vec<&str> = if request.columns.is_empty() {
        series.default_columns().to_vec()
    } else {
        request.columns.iter().map(String::as_str).collect()
    };
    let frame = ctx
        .table(series.table())
        .await
        .and_then(|frame| frame.filter(filter))
        .and_then(|frame| frame.sort(vec![col(series.time_column()).sort(true, false)]))
        .and_then(|frame| frame.select_columns(&columns))
        .map_err(|error| RequestError::from_datafusion("dataset plan", error))?;
    Ok(frame)
}

/// Returns the filter of one series and range, with partition filters on the month or date.
pub fn series_filter(series: &DatasetSeries, start_ms: Option<i64>, end_ms: Option<i64>) -> Expr {
    match series {
        DatasetSeries::Klines {
            category,
            symbol,
            timeframe,
        } => {
            let mut filter = col("category")
                .eq(lit(category.as_str()))
                .and(col("symbol").eq(lit(symbol.as_str())))
                .and(col("timeframe").eq(lit(timeframe.code())));
            if let Some(start) = start_ms {
                filter = filter
                    .and(col("month").gt_eq(lit(layout::month_of(start))))
                    .and(col("open_time").gt_eq(timestamp_ms_literal(start)));
            }
            if let Some(end) = end_ms {
                filter = filter
                    .and(col("month").lt_eq(lit(layout::month_of(end - 1))))
                    .and(col("open_time").lt(timestamp_ms_literal(end)));
            }
            filter
        }
        DatasetSeries::Ticks { category, symbol } => {
            let mut filter = col("category")
                .eq(lit(category.as_str()))
                .and(col("symbol").eq(lit(symbol.as_str())));
            if let Some(start) = start_ms {
                let start_us = start.saturating_mul(1_000);
                filter = filter
                    .and(col("date").gt_eq(lit(tick_writer::date_of(start_us))))
                    .and(col("ts").gt_eq(timestamp_us_literal(start_us)));
            }
            if let Some(end) = end_ms {
                let end_us = end.saturating_mul(1_000);
                filter = filter
                    .and(col("date").lt_eq(lit(tick_writer::date_of(end_us - 1))))
                    .and(col("ts").lt(timestamp_us_literal(end_us)));
            }
            filter
        }
    }
}

fn timestamp_ms_literal(ms: i64) -> Expr {
    lit(ScalarValue::TimestampMillisecond(
        Some(ms),
        Some(layout::UTC.into()),
    ))
}

fn timestamp_us_literal(us: i64) -> Expr {
    lit(ScalarValue::TimestampMicrosecond(
        Some(us),
        Some(layout::UTC.into()),
    ))
}

/// Returns the Arrow schema of a DataFrame.
pub fn frame_schema(frame: &DataFrame) -> SchemaRef {
    std::sync::Arc::new(frame.schema().as_arrow().clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn klines_ticket_parses_iso_and_ms_bounds() {
        let ticket = parse_ticket(
            br#"{"dataset": "klines", "symbol": "BTCUSDT", "timeframe": "1m",
                 "start": "2025-06-01T00:00:00Z", "end": 1748822400000,
                 "columns": ["open_time", "close"]}"#,
        )
        .unwrap();
        let JsonTicket::Dataset(request) = ticket else {
            panic!("expected a dataset ticket");
        };
        assert_eq!(request.start_ms, Some(1_748_736_000_000));
        assert_eq!(request.end_ms, Some(1_748_822_400_000));
        assert_eq!(request.columns, vec!["open_time", "close"]);
        assert_eq!(
            request.series.path(),
            vec!["klines", "linear", "BTCUSDT", "1"]
        );
    }

    #[test]
    fn backtest_ticket_parses() {
        let ticket = parse_ticket(br#"{"backtest_id": 7, "table": "equity"}"#).unwrap();
        assert_eq!(
            ticket,
            JsonTicket::Backtest(BacktestRequest {
                backtest_id: 7,
                table: BacktestTable::Equity
            })
        );
    }

    #[test]
    fn invalid_tickets_name_the_field() {
        let cases: [(&[u8], &str); 8] = [
            (b"not json", "JSON"),
            (b"[1]", "JSON object"),
            (br#"{"dataset": "candles", "symbol": "BTCUSDT"}"#, "candles"),
            (
                br#"{"dataset": "klines", "symbol": "BTCUSDT"}"#,
                "timeframe",
            ),
            (
                br#"{"dataset": "klines", "symbol": "BTCUSDT", "timeframe": "7"}"#,
                "timeframe",
            ),
            (
                br#"{"dataset": "ticks", "symbol": "BTCUSDT", "start": "yesterday"}"#,
                "start",
            ),
            (
                br#"{"dataset": "ticks", "symbol": "BTCUSDT", "columns": ["open"]}"#,
                "open",
            ),
            (br#"{"backtest_id": 1, "table": "orders"}"#, "orders"),
        ];
        for (bytes, field) in cases {
            let error = parse_ticket(bytes).unwrap_err();
            assert!(
                matches!(error, RequestError::InvalidArgument(_)),
                "{error:?}"
            );
            assert!(
                error.to_string().contains(field),
                "{error} does not name {field}"
            );
        }
    }

    #[test]
    fn json_tickets_are_told_apart_from_protobuf() {
        assert!(is_json_ticket(b"  {\"dataset\": \"klines\"}"));
        assert!(!is_json_ticket(b"\n\x0btype.googleapis.com"));
        assert!(!is_json_ticket(b""));
    }

    #[test]
    fn descriptor_paths_round_trip() {
        let series = DatasetSeries::Ticks {
            category: Category::Spot,
            symbol: "ETHUSDT".to_string(),
        };
        assert_eq!(DatasetSeries::from_path(&series.path()).unwrap(), series);
        assert!(DatasetSeries::from_path(&["klines".to_string()]).is_err());
    }
}
