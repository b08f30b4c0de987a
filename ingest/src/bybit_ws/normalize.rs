//! Bybit v5 public WebSocket frames to normalized trade and kline events.
//!
//! A `publicTrade.SYMBOL` frame carries a list of trades with the fields `T` (trade time in
//! ms), `s` (symbol), `S` (`Buy` or `Sell`), `v` (size), `p` (price), `L` (tick direction) and
//! `i` (trade id). A `kline.INTERVAL.SYMBOL` frame carries a list of bar updates with
//! `start`, `open`, `high`, `low`, `close`, `volume`, `turnover` and `confirm`, which is true
//! on the last update of a closed bar. Bybit sends every number as a string. Normalized
//! events carry them as numbers, in the message schema version [`SCHEMA_VERSION`].

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::layout::{Kline, Timeframe, validate_symbol};
use crate::tick_writer::{Side, Tick};

/// Version of the normalized message schema, sent as `v`.
pub const SCHEMA_VERSION: u8 = 1;

/// Value of `source` in every normalized message.
pub const SOURCE: &str = "bybit";

/// One trade from a `publicTrade` frame.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveTrade {
    pub symbol: String,
    pub ts_ms: i64,
    pub price: f64,
    pub qty: f64,
    pub side: Side,
    pub trade_id: String,
    pub tick_direction: Option<String>,
}

/// One bar update from a `kline` frame.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveKline {
    pub symbol: String,
    pub timeframe: Timeframe,
    pub kline: Kline,
    /// True on the update that closes the bar; only such updates are stored.
    pub confirm: bool,
}

/// A normalized event of the live stream.
#[derive(Debug, Clone, PartialEq)]
pub enum LiveEvent {
    Trade(LiveTrade),
    Kline(LiveKline),
}

/// The v=1 trade message, such as `{"v":1,"type":"trade","source":"bybit",
/// "symbol":"BTCUSDT","ts_ms":1786310819680,"price":65114.2,"qty":0.004,"side":"sell",
/// "trade_id":"..."}`.
#[derive(Debug, Serialize)]
struct TradeMessage<'a> {
    v: u8,
    #[serde(rename = "type")]
    kind: &'static str,
    source: &'static str,
    symbol: &'a str,
    ts_ms: i64,
    price: f64,
    qty: f64,
    side: &'static str,
    trade_id: &'a str,
}

/// The v=1 kline message. `confirm` is false on updates of a bar that is still open.
#[derive(Debug, Serialize)]
struct KlineMessage<'a> {
    v: u8,
    #[serde(rename = "type")]
    kind: &'static str,
    source: &'static str,
    symbol: &'a str,
    interval: String,
    open_time: i64,
    open: f64,
    high: f64,
    low: f64,
    close: f64,
    volume: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    turnover: Option<f64>,
    confirm: bool,
}

impl LiveEvent {
    /// Returns the JSON text of the normalized v=1 message.
    pub fn to_json(&self) -> String {
        let text = match self {
            LiveEvent::Trade(trade) => serde_json::to_string(&TradeMessage {
                v: SCHEMA_VERSION,
                kind: "trade",
                source: SOURCE,
                symbol: &trade.symbol,
                ts_ms: trade.ts_ms,
                price: trade.price,
                qty: trade.qty,
                side: trade.side.as_str(),
                trade_id: &trade.trade_id,
            }),
            LiveEvent::Kline(update) => serde_json::to_string(&KlineMessage {
                v: SCHEMA_VERSION,
                kind: "kline",
                source: SOURCE,
                symbol: &update.symbol,
                interval: update.timeframe.code(),
                open_time: update.kline.open_time_ms,
                open: update.kline.open,
                high: update.kline.high,
                low: update.kline.low,
                close: update.kline.close,
                volume: update.kline.volume,
                turnover: update.kline.turnover,
                confirm: update.confirm,
            }),
        };
        // Serializing these structs fails only for non-finite floats, which parsing rejects.
        text.expect("normalized messages contain only finite numbers")
    }
}

impl LiveTrade {
    /// Converts the trade to a stored tick. The notional is `price * qty` in the quote
    /// currency, as for linear contracts, because the trade stream does not send it.
    pub fn to_tick(&self) -> Tick {
        Tick {
            ts_us: self.ts_ms.saturating_mul(1_000),
            price: self.price,
            size: self.qty,
            notional: self.price * self.qty,
            side: self.side,
            trade_id: self.trade_id.clone(),
            tick_direction: self.tick_direction.clone(),
        }
    }
}

/// The content of one text frame from Bybit.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// Market data: the normalized events and the frame's `ts` in ms.
    Data { ts_ms: i64, events: Vec<LiveEvent> },
    /// A reply to an `op` request such as `subscribe` or `ping`.
    OpReply {
        op: String,
        success: bool,
        message: String,
    },
    /// A frame of a topic this client does not normalize.
    Other,
}

#[derive(Debug, Deserialize)]
struct RawFrame {
    topic: Option<String>,
    ts: Option<i64>,
    data: Option<Value>,
    op: Option<String>,
    success: Option<bool>,
    ret_msg: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RawTrade {
    #[serde(rename = "T")]
    time_ms: i64,
    #[serde(rename = "s")]
    symbol: String,
    #[serde(rename = "S")]
    side: String,
    #[serde(rename = "v")]
    size: String,
    #[serde(rename = "p")]
    price: String,
    #[serde(rename = "L")]
    tick_direction: Option<String>,
    #[serde(rename = "i")]
    trade_id: String,
}

#[derive(Debug, Deserialize)]
struct RawKline {
    start: i64,
    open: String,
    high: String,
    low: String,
    close: String,
    volume: String,
    turnover: Option<String>,
    confirm: bool,
}

/// Parses one text frame.
///
/// # Errors
///
/// Returns a message naming the frame's topic and the bad field when the frame is not JSON,
/// or when a trade or kline lacks a field or has a value that is not a finite number.
pub fn parse_frame(text: &str) -> Result<Frame, String> {
    let raw: RawFrame =
        serde_json::from_str(text).map_err(|error| format!("invalid JSON frame: {error}"))?;
    if let Some(op) = raw.op {
        return Ok(Frame::OpReply {
            op,
            success: raw.success.unwrap_or(false),
            message: raw.ret_msg.unwrap_or_default(),
        });
    }
    let (Some(topic), Some(data)) = (raw.topic, raw.data) else {
        return Ok(Frame::Other);
    };
    let ts_ms = raw.ts.unwrap_or(0);
    let events = if let Some(symbol) = topic.strip_prefix("publicTrade.") {
        parse_trades(symbol, data).map_err(|message| format!("topic {topic}: {message}"))?
    } else if let Some(rest) = topic.strip_prefix("kline.") {
        let (interval, symbol) = rest
            .split_once('.')
            .ok_or_else(|| format!("topic {topic}: expected kline.INTERVAL.SYMBOL"))?;
        let timeframe: Timeframe = interval
            .parse()
            .map_err(|error| format!("topic {topic}: {error}"))?;
        parse_klines(symbol, timeframe, data)
            .map_err(|message| format!("topic {topic}: {message}"))?
    } else {
        return Ok(Frame::Other);
    };
    Ok(Frame::Data { ts_ms, events })
}

fn parse_trades(topic_symbol: &str, data: Value) -> Result<Vec<LiveEvent>, String> {
    let trades: Vec<RawTrade> =
        serde_json::from_value(data).map_err(|error| format!("invalid trade list: {error}"))?;
    trades
        .into_iter()
        .map(|raw| {
            if raw.symbol != topic_symbol {
                return Err(format!("trade of symbol {} in the topic", raw.symbol));
            }
            validate_symbol(&raw.symbol).map_err(|error| error.to_string())?;
            let side = raw
                .side
                .parse::<Side>()
                .map_err(|error| error.to_string())?;
            Ok(LiveEvent::Trade(LiveTrade {
                ts_ms: raw.time_ms,
                price: number("p", &raw.price)?,
                qty: number("v", &raw.size)?,
                side,
                trade_id: raw.trade_id,
                tick_direction: raw.tick_direction.filter(|text| !text.is_empty()),
                symbol: raw.symbol,
            }))
        })
        .collect()
}

fn parse_klines(symbol: &str, timeframe: Timeframe, data: Value) -> Result<Vec<LiveEvent>, String> {
    validate_symbol(symbol).map_err(|error| error.to_string())?;
    let updates: Vec<RawKline> =
        serde_json::from_value(data).map_err(|error| format!("invalid kline list: {error}"))?;
    updates
        .into_iter()
        .map(|raw| {
            let turnover = raw
                .turnover
                .as_deref()
                .map(|text| number("turnover", text))
                .transpose()?;
            Ok(LiveEvent::Kline(LiveKline {
                symbol: symbol.to_string(),
                timeframe,
                kline: Kline {
                    open_time_ms: raw.start,
                    open: number("open", &raw.open)?,
                    high: number("high", &raw.high)?,
                    low: number("low", &raw.low)?,
                    close: number("close", &raw.close)?,
                    volume: number("volume", &raw.volume)?,
                    turnover,
                },
                confirm: raw.confirm,
            }))
        })
        .collect()
}

fn number(field: &str, text: &str) -> Result<f64, String> {
    text.parse::<f64>()
        .ok()
        .filter(|value| value.is_finite())
        .ok_or_else(|| format!("invalid {field} {text:?}: expected a decimal number"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRADE_FRAME: &str = r#"{"topic":"publicTrade.BTCUSDT","type":"snapshot","ts":1786310819681,"data":[{"T":1786310819680,"s":"BTCUSDT","S":"Sell","v":"0.004","p":"65114.20","L":"MinusTick","i":"a9188a0a-82bc-50de-be60-03eedbe3cdd7","BT":false,"RPI":false,"seq":753843954913}]}"#;

    const KLINE_FRAME: &str = r#"{"topic":"kline.1.ETHUSDT","data":[{"start":1786310760000,"end":1786310819999,"interval":"1","open":"1922.43","close":"1922.48","high":"1922.48","low":"1922.42","volume":"15.7","turnover":"30182.0724","confirm":true,"timestamp":1786310820123},{"start":1786310820000,"end":1786310879999,"interval":"1","open":"1922.48","close":"1922.48","high":"1922.48","low":"1922.48","volume":"0","turnover":"0","confirm":false,"timestamp":1786310820123}],"ts":1786310820123,"type":"snapshot"}"#;

    #[test]
    fn trade_frame_normalizes_to_numbers() {
        let Frame::Data { ts_ms, events } = parse_frame(TRADE_FRAME).unwrap() else {
            panic!("expected a data frame");
        };
        assert_eq!(ts_ms, 1786310819681);
        assert_eq!(events.len(), 1);
        let json: Value = serde_json::from_str(&events[0].to_json()).unwrap();
        assert_eq!(json["v"], 1);
        assert_eq!(json["type"], "trade");
        assert_eq!(json["source"], "bybit");
        assert_eq!(json["symbol"], "BTCUSDT");
        assert_eq!(json["ts_ms"], 1786310819680_i64);
        assert_eq!(json["price"].as_f64(), Some(65114.2));
        assert_eq!(json["qty"].as_f64(), Some(0.004));
        assert_eq!(json["side"], "sell");
    }

    #[test]
    fn kline_frame_keeps_confirm_per_update() {
        let Frame::Data { events, .. } = parse_frame(KLINE_FRAME).unwrap() else {
            panic!("expected a data frame");
        };
        let confirms: Vec<bool> = events
            .iter()
            .map(|event| match event {
                LiveEvent::Kline(update) => update.confirm,
                LiveEvent::Trade(_) => panic!("expected klines"),
            })
            .collect();
        assert_eq!(confirms, [true, false]);
        let json: Value = serde_json::from_str(&events[0].to_json()).unwrap();
        assert_eq!(json["interval"], "1");
        assert_eq!(json["open_time"], 1786310760000_i64);
        assert_eq!(json["volume"].as_f64(), Some(15.7));
        assert_eq!(json["turnover"].as_f64(), Some(30182.0724));
        assert_eq!(json["confirm"], true);
    }

    #[test]
    fn op_replies_are_recognized() {
        let frame = parse_frame(
            r#"{"success":true,"ret_msg":"pong","conn_id":"abc","req_id":"","op":"ping"}"#,
        )
        .unwrap();
        assert_eq!(
            frame,
            Frame::OpReply {
                op: "ping".to_string(),
                success: true,
                message: "pong".to_string()
            }
        );
    }

    #[test]
    fn bad_number_names_field() {
        let frame = TRADE_FRAME.replace("\"65114.20\"", "\"abc\"");
        let error = parse_frame(&frame).unwrap_err();
        assert!(error.contains("invalid p \"abc\""), "{error}");
    }
}
