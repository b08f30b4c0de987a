//! Bybit v5 `/v5/market/kline` response bodies.
//!
//! A body looks like `{"retCode":0,"retMsg":"OK","result":{"symbol":"BTCUSDT",
//! "category":"linear","list":[["1786820400000","63027.8","63032.3","63027.7","63032.3",
//! "4.591","289363.9178"], ...]},"retExtInfo":{},"time":1786820637599}`. Each `list` row is
//! `[startTime ms, open, high, low, close, volume, turnover]` with every field a string, and
//! the rows come newest first. `time` is the server time of the response in ms.

use std::path::Path;

use serde_json::Value;

use crate::csv_klines::parse_number;
use crate::layout::{Category, Kline, Timeframe, validate_symbol};
use crate::{Error, Result};

/// Number of fields in each `list` row.
const ROW_FIELDS: usize = 7;

/// Names of the `list` row fields, for error messages.
const FIELD_NAMES: [&str; ROW_FIELDS] = [
    "startTime",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "turnover",
];

/// The closed bars of one kline response body.
#[derive(Debug, Clone, PartialEq)]
pub struct KlineBody {
    pub category: Category,
    pub symbol: String,
    /// Bybit's server time of the response (`time`), in epoch milliseconds.
    pub response_time_ms: i64,
    /// Number of rows in `result.list`, closed or not.
    pub rows_read: usize,
    /// Number of rows dropped because their bar had not closed at `response_time_ms`.
    pub open_bars_dropped: usize,
    /// Closed bars in ascending `open_time_ms` order, each with `turnover` set.
    pub klines: Vec<Kline>,
}

/// Parses a kline response body and keeps its closed bars.
///
/// A bar is closed when `timeframe.bar_end_ms(open_time) <= time`, where `time` is the
/// response's server time. `timeframe` must be the `interval` of the request, because the
/// body does not repeat it.
///
/// # Errors
///
/// Returns [`Error::Bybit`] with Bybit's `retCode` and `retMsg` when `retCode` is not 0, and
/// [`Error::InvalidValue`] for an unknown category or an invalid symbol. Returns
/// [`Error::InvalidBody`] for malformed JSON or a missing field, and for a row without exactly
/// 7 string fields or with a bad value, naming the row index and the value.
pub fn parse_kline_body(text: &str, timeframe: Timeframe) -> Result<KlineBody> {
    let body: Value = serde_json::from_str(text).map_err(|error| Error::InvalidBody {
        message: format!("malformed JSON: {error}"),
    })?;

    let ret_code = body
        .get("retCode")
        .and_then(Value::as_i64)
        .ok_or_else(|| invalid_body("missing integer field retCode"))?;
    if ret_code != 0 {
        let ret_msg = body.get("retMsg").and_then(Value::as_str).unwrap_or("");
        return Err(Error::Bybit {
            code: ret_code,
            message: ret_msg.to_string(),
        });
    }

    let response_time_ms = body
        .get("time")
        .and_then(Value::as_i64)
        .ok_or_else(|| invalid_body("missing integer field time"))?;
    let result = body
        .get("result")
        .ok_or_else(|| invalid_body("missing object field result"))?;
    let category = string_field(result, "category")?.parse::<Category>()?;
    let symbol = string_field(result, "symbol")?;
    validate_symbol(symbol)?;
    let rows = result
        .get("list")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid_body("missing array field result.list"))?;

    let mut klines = Vec::with_capacity(rows.len());
    let mut open_bars_dropped = 0;
    for (index, row) in rows.iter().enumerate() {
        let kline = parse_row(index, row)?;
        if timeframe.bar_end_ms(kline.open_time_ms) <= response_time_ms {
            klines.push(kline);
        } else {
            open_bars_dropped += 1;
        }
    }
    klines.sort_by_key(|kline| kline.open_time_ms);

    Ok(KlineBody {
        category,
        symbol: symbol.to_string(),
        response_time_ms,
        rows_read: rows.len(),
        open_bars_dropped,
        klines,
    })
}

/// Reads a kline response body from a file and keeps its closed bars, as
/// [`parse_kline_body`] does.
///
/// # Errors
///
/// Returns [`Error::Io`] when the file cannot be read, and otherwise the errors of
/// [`parse_kline_body`] wrapped in [`Error::InFile`] with the path.
pub fn read_kline_body_file(path: &Path, timeframe: Timeframe) -> Result<KlineBody> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let body = parse_kline_body(&text, timeframe).map_err(|error| Error::InFile {
        path: path.to_path_buf(),
        source: Box::new(error),
    })?;
    tracing::debug!(
        path = %path.display(),
        symbol = %body.symbol,
        rows = body.rows_read,
        open_bars_dropped = body.open_bars_dropped,
        "read kline response body"
    );
    Ok(body)
}

fn invalid_body(message: impl Into<String>) -> Error {
    Error::InvalidBody {
        message: message.into(),
    }
}

fn string_field<'a>(object: &'a Value, name: &str) -> Result<&'a str> {
    object
        .get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| invalid_body(format!("missing string field result.{name}")))
}

fn parse_row(index: usize, row: &Value) -> Result<Kline> {
    let fields = match row.as_array() {
        Some(fields) if fields.len() == ROW_FIELDS => fields,
        _ => {
            return Err(invalid_body(format!(
                "result.list[{index}]: expected an array of {ROW_FIELDS} strings, found {row}"
            )));
        }
    };

    let mut texts = [""; ROW_FIELDS];
    for (position, (text, field)) in texts.iter_mut().zip(fields).enumerate() {
        *text = field.as_str().ok_or_else(|| {
            invalid_body(format!(
                "result.list[{index}][{position}] ({}): expected a string, found {field}",
                FIELD_NAMES[position]
            ))
        })?;
    }

    let row_error = |message: String| invalid_body(format!("result.list[{index}]: {message}"));
    let [start_time, open, high, low, close, volume, turnover] = texts;
    let open_time_ms = start_time.parse::<i64>().map_err(|_| {
        row_error(format!(
            "invalid startTime {start_time:?}: expected integer epoch milliseconds"
        ))
    })?;
    let number =
        |position: usize, text: &str| parse_number(FIELD_NAMES[position], text).map_err(&row_error);
    let kline = Kline {
        open_time_ms,
        open: number(1, open)?,
        high: number(2, high)?,
        low: number(3, low)?,
        close: number(4, close)?,
        volume: number(5, volume)?,
        turnover: Some(number(6, turnover)?),
    };
    kline.validate().map_err(row_error)?;
    Ok(kline)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOURLY: &str = r#"{"retCode":0,"retMsg":"OK","result":{"symbol":"BTCUSDT","category":"linear","list":[["1786820400000","63027.8","63032.3","63027.7","63032.3","4.591","289363.9178"],["1786816800000","63044.4","63089.6","63000.1","63027.8","385.721","24314058.6517"]]},"retExtInfo":{},"time":1786820637599}"#;

    #[test]
    fn open_bar_is_dropped() {
        let body = parse_kline_body(HOURLY, Timeframe::Minutes(60)).unwrap();
        assert_eq!(body.rows_read, 2);
        assert_eq!(body.open_bars_dropped, 1);
        assert_eq!(body.klines.len(), 1);
        assert_eq!(body.klines[0].open_time_ms, 1_786_816_800_000);
        assert_eq!(body.klines[0].turnover, Some(24_314_058.651_7));
    }

    #[test]
    fn error_code_becomes_bybit_error() {
        let text = r#"{"retCode":10001,"retMsg":"params error","result":{},"time":1}"#;
        let error = parse_kline_body(text, Timeframe::Day).unwrap_err();
        assert!(
            matches!(&error, Error::Bybit { code: 10001, message } if message == "params error"),
            "{error}"
        );
    }

    #[test]
    fn number_field_is_rejected() {
        let text = HOURLY.replace(r#""4.591""#, "4.591");
        let error = parse_kline_body(&text, Timeframe::Minutes(60))
            .unwrap_err()
            .to_string();
        assert!(error.contains("result.list[0][5] (volume)"), "{error}");
        assert!(error.contains("4.591"), "{error}");
    }

    #[test]
    fn short_row_is_rejected() {
        let text = HOURLY.replace(r#","289363.9178""#, "");
        let error = parse_kline_body(&text, Timeframe::Minutes(60))
            .unwrap_err()
            .to_string();
        assert!(error.contains("result.list[0]"), "{error}");
        assert!(error.contains("1786820400000"), "{error}");
    }

    #[test]
    fn malformed_json_is_rejected() {
        let error = parse_kline_body("{\"retCode\":0,", Timeframe::Day).unwrap_err();
        assert!(matches!(error, Error::InvalidBody { .. }), "{error}");
    }
}
