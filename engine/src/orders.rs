//! Order options of a backtest: direction, sizing, stops, slippage and funding.
//!
//! Over the REST API these are keys of a backtest's `config`, next to the strategy
//! parameters; [`OrderOptions::take_from`] separates them.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::simulate::Direction;
use crate::strategy::StrategySpec;
use crate::{Error, Result};

/// Default maintenance margin rate, a fraction of the entry notional.
pub const DEFAULT_MAINTENANCE_MARGIN_RATE: f64 = 0.005;

/// Keys of a config object that [`OrderOptions::take_from`] reads.
pub const ORDER_KEYS: [&str; 7] = [
    "direction",
    "position_size",
    "stop_loss",
    "take_profit",
    "slippage",
    "funding_rate",
    "maintenance_margin_rate",
];

/// Order options: the rules by which a backtest trades its strategy's signals. Fractions are plain fractions (0.02 is 2 %).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct OrderOptions {
    pub direction: Direction,
    /// Fraction of equity committed per entry (margin plus entry commission).
    pub position_size: f64,
    /// Stop-loss distance as a fraction of the entry price.
    pub stop_loss: Option<f64>,
    /// Take-profit distance as a fraction of the entry price.
    pub take_profit: Option<f64>,
    /// Fraction by which market fills are worse than the reference price.
    pub slippage: f64,
    /// Funding per 8 hours as a fraction of notional.
    pub funding_rate: Option<f64>,
    /// Maintenance margin as a fraction of the entry notional.
    pub maintenance_margin_rate: f64,
}

impl Default for OrderOptions {
    fn default() -> Self {
        Self {
            direction: Direction::Long,
            position_size: 1.0,
            stop_loss: None,
            take_profit: None,
            slippage: 0.0,
            funding_rate: None,
            maintenance_margin_rate: DEFAULT_MAINTENANCE_MARGIN_RATE,
        }
    }
}

fn invalid(name: &str, message: String) -> Error {
    Error::InvalidParameter {
        name: name.to_string(),
        message,
    }
}

/// Reads the number `name`; `None` when absent or null.
fn number(params: &Map<String, Value>, name: &str) -> Result<Option<f64>> {
    match params.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => value
            .as_f64()
            .filter(|number| number.is_finite())
            .map(Some)
            .ok_or_else(|| invalid(name, format!("expected a number, got {value}"))),
    }
}

/// Checks that `value` lies in the range that `accepts` tests, described by `range`.
fn in_range(name: &str, value: f64, accepts: bool, range: &str) -> Result<f64> {
    if accepts {
        Ok(value)
    } else {
        Err(invalid(name, format!("expected {range}, got {value}")))
    }
}

impl OrderOptions {
    /// Removes the [`ORDER_KEYS`] from `params` and returns them as validated options;
    /// absent keys take their defaults.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`] naming the key for a wrong type or an out-of-range value.
    pub fn take_from(params: &mut Map<String, Value>) -> Result<Self> {
        let mut taken = Map::new();
        for key in ORDER_KEYS {
            if let Some(value) = params.remove(key) {
                taken.insert(key.to_string(), value);
            }
        }
        let mut options = Self::default();
        match taken.get("direction") {
            None | Some(Value::Null) => {}
            Some(value) => {
                options.direction = value.as_str().and_then(Direction::parse).ok_or_else(|| {
                    invalid(
                        "direction",
                        format!("expected \"long\", \"short\" or \"both\", got {value}"),
                    )
                })?;
            }
        }
        if let Some(value) = number(&taken, "position_size")? {
            options.position_size = in_range(
                "position_size",
                value,
                value > 0.0 && value <= 1.0,
                "a fraction of equity above 0 and up to 1",
            )?;
        }
        if let Some(value) = number(&taken, "stop_loss")? {
            options.stop_loss = Some(in_range(
                "stop_loss",
                value,
                value > 0.0 && value < 1.0,
                "a fraction of the entry price above 0 and below 1 (0.02 is 2 %)",
            )?);
        }
        if let Some(value) = number(&taken, "take_profit")? {
            options.take_profit = Some(in_range(
                "take_profit",
                value,
                value > 0.0 && value <= 100.0,
                "a fraction of the entry price above 0 and up to 100 (0.05 is 5 %)",
            )?);
        }
        if let Some(value) = number(&taken, "slippage")? {
            options.slippage = in_range(
                "slippage",
                value,
                (0.0..0.1).contains(&value),
                "a fraction from 0 to below 0.1 (0.0005 is 0.05 %)",
            )?;
        }
        if let Some(value) = number(&taken, "funding_rate")? {
            options.funding_rate = Some(in_range(
                "funding_rate",
                value,
                (-0.05..=0.05).contains(&value),
                "a fraction per 8 hours from -0.05 to 0.05 (0.0001 is 0.01 %)",
            )?);
        }
        if let Some(value) = number(&taken, "maintenance_margin_rate")? {
            options.maintenance_margin_rate = in_range(
                "maintenance_margin_rate",
                value,
                (0.0..1.0).contains(&value),
                "a fraction of notional from 0 to below 1 / leverage",
            )?;
        }
        Ok(options)
    }

    /// Returns the options as a JSON object with every key, for stored results.
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "direction": self.direction.as_str(),
            "position_size": self.position_size,
            "stop_loss": self.stop_loss,
            "take_profit": self.take_profit,
            "slippage": self.slippage,
            "funding_rate": self.funding_rate,
            "maintenance_margin_rate": self.maintenance_margin_rate,
        })
    }
}

/// Splits a config object into the strategy and its order options; keys other than the
/// [`ORDER_KEYS`] are strategy parameters.
///
/// # Errors
///
/// The errors of [`OrderOptions::take_from`] and [`StrategySpec::from_params`].
pub fn strategy_and_orders(
    strategy_type: &str,
    config: &Value,
) -> Result<(StrategySpec, OrderOptions)> {
    let mut params = match config {
        Value::Object(map) => map.clone(),
        Value::Null => Map::new(),
        other => {
            return Err(invalid(
                "config",
                format!("expected a JSON object of parameters, got {other}"),
            ));
        }
    };
    let orders = OrderOptions::take_from(&mut params)?;
    let strategy = StrategySpec::from_params(strategy_type, &Value::Object(params))?;
    Ok((strategy, orders))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn take(value: Value) -> (Result<OrderOptions>, Map<String, Value>) {
        let Value::Object(mut map) = value else {
            panic!("test params must be an object");
        };
        let options = OrderOptions::take_from(&mut map);
        (options, map)
    }

    #[test]
    fn order_keys_are_removed() {
        let (options, rest) = take(json!({
            "fast_period": 5, "direction": "both", "stop_loss": 0.02, "slippage": 0.001
        }));
        let options = options.unwrap();
        assert_eq!(options.direction, Direction::Both);
        assert_eq!(options.stop_loss, Some(0.02));
        assert_eq!(options.slippage, 0.001);
        assert_eq!(options.take_profit, None);
        assert_eq!(options.position_size, 1.0);
        assert_eq!(rest, json!({"fast_period": 5}).as_object().unwrap().clone());
    }

    #[test]
    fn invalid_order_options_are_named() {
        let cases = [
            (json!({"direction": "sideways"}), "direction"),
            (json!({"direction": 1}), "direction"),
            (json!({"position_size": 0}), "position_size"),
            (json!({"position_size": 1.5}), "position_size"),
            (json!({"stop_loss": 1}), "stop_loss"),
            (json!({"stop_loss": "2%"}), "stop_loss"),
            (json!({"take_profit": -0.1}), "take_profit"),
            (json!({"slippage": 0.2}), "slippage"),
            (json!({"funding_rate": 0.5}), "funding_rate"),
            (
                json!({"maintenance_margin_rate": 1}),
                "maintenance_margin_rate",
            ),
        ];
        for (params, expected) in cases {
            match take(params.clone()).0 {
                Err(Error::InvalidParameter { name, message }) => {
                    assert_eq!(name, expected, "{params}: {message}");
                }
                other => panic!("expected an error naming {expected} for {params}, got {other:?}"),
            }
        }
    }
}
