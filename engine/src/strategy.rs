//! Built-in strategies: parameter parsing, validation and defaults.

use serde_json::{Map, Value, json};

use crate::{Error, Result};

/// Strategy types the engine runs, for error messages and listings.
pub const STRATEGY_TYPES: &str =
    "sma_crossover, ema_crossover, rsi, macd, bollinger_bands, expression";

/// Condition names of an expression strategy, in the order the plan adds their columns.
pub const CONDITION_NAMES: [&str; 4] = ["entry_long", "exit_long", "entry_short", "exit_short"];

/// A validated strategy with all parameters resolved.
#[derive(Debug, Clone, PartialEq)]
pub enum StrategySpec {
    /// Long when the fast SMA of closes crosses above the slow one, short when it crosses
    /// below.
    SmaCrossover {
        fast_period: usize,
        slow_period: usize,
    },
    /// The same crossover with EMAs.
    EmaCrossover {
        fast_period: usize,
        slow_period: usize,
    },
    /// Long when RSI crosses up through `oversold`, short when it crosses down through
    /// `overbought`.
    Rsi {
        period: usize,
        oversold: f64,
        overbought: f64,
    },
    /// Long when the MACD line crosses above its signal line, short when it crosses below.
    Macd {
        fast_period: usize,
        slow_period: usize,
        signal_period: usize,
    },
    /// Long when the close crosses up through the lower band, short when it crosses down
    /// through the upper band.
    BollingerBands { period: usize, std_dev: f64 },
    /// Level-triggered SQL conditions over the bars; a missing condition is false.
    Expression(Conditions),
}

/// The four conditions of an expression strategy, as DataFusion SQL text.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Conditions {
    pub entry_long: Option<String>,
    pub exit_long: Option<String>,
    pub entry_short: Option<String>,
    pub exit_short: Option<String>,
}

impl Conditions {
    /// Returns the given conditions as `(name, text)` pairs, in [`CONDITION_NAMES`] order.
    pub fn present(&self) -> Vec<(&'static str, &str)> {
        let texts = [
            &self.entry_long,
            &self.exit_long,
            &self.entry_short,
            &self.exit_short,
        ];
        CONDITION_NAMES
            .into_iter()
            .zip(texts)
            .filter_map(|(name, text)| text.as_deref().map(|text| (name, text)))
            .collect()
    }
}

impl StrategySpec {
    /// Builds a strategy from its type name and a JSON object of parameters; missing
    /// parameters take their defaults.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownStrategy`] for an unknown type, [`Error::InvalidParameter`] naming the
    /// parameter for an unknown key, a wrong type or an out-of-range value.
    pub fn from_params(strategy_type: &str, params: &Value) -> Result<Self> {
        let empty = Map::new();
        let params = match params {
            Value::Object(map) => map,
            Value::Null => &empty,
            other => {
                return Err(Error::InvalidParameter {
                    name: "params".to_string(),
                    message: format!("expected a JSON object, got {other}"),
                });
            }
        };
        match strategy_type {
            "sma_crossover" => {
                reject_unknown_keys(params, &["fast_period", "slow_period"])?;
                let fast_period = period_param(params, "fast_period", 10)?;
                let slow_period = period_param(params, "slow_period", 30)?;
                require_below("fast_period", fast_period, "slow_period", slow_period)?;
                Ok(StrategySpec::SmaCrossover {
                    fast_period,
                    slow_period,
                })
            }
            "ema_crossover" => {
                reject_unknown_keys(params, &["fast_period", "slow_period"])?;
                let fast_period = period_param(params, "fast_period", 12)?;
                let slow_period = period_param(params, "slow_period", 26)?;
                require_below("fast_period", fast_period, "slow_period", slow_period)?;
                Ok(StrategySpec::EmaCrossover {
                    fast_period,
                    slow_period,
                })
            }
            "rsi" => {
                reject_unknown_keys(params, &["period", "oversold", "overbought"])?;
                let period = period_param(params, "period", 14)?;
                let oversold = level_param(params, "oversold", 30.0)?;
                let overbought = level_param(params, "overbought", 70.0)?;
                if oversold >= overbought {
                    return Err(Error::InvalidParameter {
                        name: "oversold".to_string(),
                        message: format!(
                            "oversold ({oversold}) must be below overbought ({overbought})"
                        ),
                    });
                }
                Ok(StrategySpec::Rsi {
                    period,
                    oversold,
                    overbought,
                })
            }
            "macd" => {
                reject_unknown_keys(params, &["fast_period", "slow_period", "signal_period"])?;
                let fast_period = period_param(params, "fast_period", 12)?;
                let slow_period = period_param(params, "slow_period", 26)?;
                let signal_period = period_param(params, "signal_period", 9)?;
                require_below("fast_period", fast_period, "slow_period", slow_period)?;
                Ok(StrategySpec::Macd {
                    fast_period,
                    slow_period,
                    signal_period,
                })
            }
            "bollinger_bands" => {
                reject_unknown_keys(params, &["period", "std_dev"])?;
                let period = period_param(params, "period", 20)?;
                let std_dev = match params.get("std_dev") {
                    None => 2.0,
                    Some(value) => value
                        .as_f64()
                        .filter(|width| width.is_finite() && *width > 0.0 && *width <= 10.0)
                        .ok_or_else(|| Error::InvalidParameter {
                            name: "std_dev".to_string(),
                            message: format!("expected a number above 0 and up to 10, got {value}"),
                        })?,
                };
                Ok(StrategySpec::BollingerBands { period, std_dev })
            }
            "expression" => {
                reject_unknown_keys(params, &CONDITION_NAMES)?;
                let text = |name: &str| -> Result<Option<String>> {
                    match params.get(name) {
                        None | Some(Value::Null) => Ok(None),
                        Some(Value::String(text)) => Ok(Some(text.clone())),
                        Some(other) => Err(Error::InvalidParameter {
                            name: name.to_string(),
                            message: format!(
                                "expected a SQL condition as a string, such as \
                                 \"close > sma(close, 20)\", got {other}"
                            ),
                        }),
                    }
                };
                let conditions = Conditions {
                    entry_long: text("entry_long")?,
                    exit_long: text("exit_long")?,
                    entry_short: text("entry_short")?,
                    exit_short: text("exit_short")?,
                };
                if conditions.entry_long.is_none() && conditions.entry_short.is_none() {
                    return Err(Error::InvalidParameter {
                        name: "entry_long".to_string(),
                        message: "an expression strategy needs entry_long or entry_short"
                            .to_string(),
                    });
                }
                Ok(StrategySpec::Expression(conditions))
            }
            other => Err(Error::UnknownStrategy {
                name: other.to_string(),
                known: STRATEGY_TYPES,
            }),
        }
    }

    /// Returns the strategy type name.
    pub fn strategy_type(&self) -> &'static str {
        match self {
            StrategySpec::SmaCrossover { .. } => "sma_crossover",
            StrategySpec::EmaCrossover { .. } => "ema_crossover",
            StrategySpec::Rsi { .. } => "rsi",
            StrategySpec::Macd { .. } => "macd",
            StrategySpec::BollingerBands { .. } => "bollinger_bands",
            StrategySpec::Expression(_) => "expression",
        }
    }

    /// Returns the resolved parameters as a JSON object, defaults included.
    pub fn params(&self) -> Value {
        match self {
            StrategySpec::SmaCrossover {
                fast_period,
                slow_period,
            }
            | StrategySpec::EmaCrossover {
                fast_period,
                slow_period,
            } => json!({ "fast_period": fast_period, "slow_period": slow_period }),
            StrategySpec::Rsi {
                period,
                oversold,
                overbought,
            } => json!({ "period": period, "oversold": oversold, "overbought": overbought }),
            StrategySpec::Macd {
                fast_period,
                slow_period,
                signal_period,
            } => json!({
                "fast_period": fast_period,
                "slow_period": slow_period,
                "signal_period": signal_period
            }),
            StrategySpec::BollingerBands { period, std_dev } => {
                json!({ "period": period, "std_dev": std_dev })
            }
            StrategySpec::Expression(conditions) => Value::Object(
                conditions
                    .present()
                    .into_iter()
                    .map(|(name, text)| (name.to_string(), Value::String(text.to_string())))
                    .collect(),
            ),
        }
    }
}

fn require_below(name: &str, value: usize, other_name: &str, other: usize) -> Result<()> {
    if value < other {
        return Ok(());
    }
    Err(Error::InvalidParameter {
        name: name.to_string(),
        message: format!("{name} ({value}) must be less than {other_name} ({other})"),
    })
}

fn level_param(params: &Map<String, Value>, name: &str, default: f64) -> Result<f64> {
    let Some(value) = params.get(name) else {
        return Ok(default);
    };
    value
        .as_f64()
        .filter(|level| (0.0..=100.0).contains(level))
        .ok_or_else(|| Error::InvalidParameter {
            name: name.to_string(),
            message: format!("expected an RSI level from 0 to 100, got {value}"),
        })
}

fn reject_unknown_keys(params: &Map<String, Value>, known: &[&str]) -> Result<()> {
    match params.keys().find(|key| !known.contains(&key.as_str())) {
        Some(key) => Err(Error::InvalidParameter {
            name: key.clone(),
            message: format!("unknown parameter; expected one of {}", known.join(", ")),
        }),
        None => Ok(()),
    }
}

/// Largest accepted indicator period, in bars.
const MAX_PERIOD: u64 = 100_000;

fn period_param(params: &Map<String, Value>, name: &str, default: usize) -> Result<usize> {
    let Some(value) = params.get(name) else {
        return Ok(default);
    };
    let invalid = || Error::InvalidParameter {
        name: name.to_string(),
        message: format!("expected an integer from 1 to {MAX_PERIOD}, got {value}"),
    };
    let period = value.as_u64().ok_or_else(invalid)?;
    if !(1..=MAX_PERIOD).contains(&period) {
        return Err(invalid());
    }
    usize::try_from(period).map_err(|_| invalid())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sma_defaults_apply() {
        let spec = StrategySpec::from_params("sma_crossover", &json!({})).unwrap();
        assert_eq!(
            spec,
            StrategySpec::SmaCrossover {
                fast_period: 10,
                slow_period: 30
            }
        );
    }

    #[test]
    fn sma_rejects_fast_not_below_slow() {
        let error = StrategySpec::from_params(
            "sma_crossover",
            &json!({"fast_period": 30, "slow_period": 30}),
        )
        .unwrap_err();
        assert!(error.to_string().contains("fast_period"), "{error}");
    }

    #[test]
    fn invalid_parameters_are_named() {
        let cases = [
            (json!({"fast_period": "10"}), "fast_period"),
            (json!({"fast_period": 0}), "fast_period"),
            (json!({"slow_period": 2.5}), "slow_period"),
            (json!({"slow_period": -3}), "slow_period"),
            (json!({"fast_perod": 5}), "fast_perod"),
        ];
        for (params, name) in cases {
            let error = StrategySpec::from_params("sma_crossover", &params).unwrap_err();
            match error {
                Error::InvalidParameter { name: got, .. } => assert_eq!(got, name),
                other => panic!("expected InvalidParameter for {params}, got {other}"),
            }
        }
    }

    #[test]
    fn other_strategies_take_defaults() {
        let cases = [
            (
                "ema_crossover",
                json!({"fast_period": 12, "slow_period": 26}),
            ),
            (
                "rsi",
                json!({"period": 14, "oversold": 30.0, "overbought": 70.0}),
            ),
            (
                "macd",
                json!({"fast_period": 12, "slow_period": 26, "signal_period": 9}),
            ),
            ("bollinger_bands", json!({"period": 20, "std_dev": 2.0})),
        ];
        for (strategy_type, defaults) in cases {
            let spec = StrategySpec::from_params(strategy_type, &json!({})).unwrap();
            assert_eq!(spec.params(), defaults, "{strategy_type}");
            assert_eq!(spec.strategy_type(), strategy_type);
        }
    }

    #[test]
    fn other_strategies_name_invalid_parameters() {
        let cases = [
            (
                "ema_crossover",
                json!({"fast_period": 26, "slow_period": 12}),
                "fast_period",
            ),
            ("rsi", json!({"oversold": 80, "overbought": 70}), "oversold"),
            ("rsi", json!({"overbought": 120}), "overbought"),
            ("macd", json!({"signal_period": 0}), "signal_period"),
            ("bollinger_bands", json!({"std_dev": 0}), "std_dev"),
            ("bollinger_bands", json!({"width": 2}), "width"),
        ];
        for (strategy_type, params, name) in cases {
            match StrategySpec::from_params(strategy_type, &params).unwrap_err() {
                Error::InvalidParameter { name: got, .. } => assert_eq!(got, name, "{params}"),
                other => panic!("expected InvalidParameter for {params}, got {other}"),
            }
        }
    }

    #[test]
    fn unknown_strategy_is_named() {
        let error = StrategySpec::from_params("martingale", &json!({})).unwrap_err();
        assert!(error.to_string().contains("martingale"), "{error}");
    }
}
