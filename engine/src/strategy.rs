//! Built-in strategies: parameter parsing, validation and defaults.

use serde_json::{Map, Value, json};

use crate::{Error, Result};

/// Strategy types the engine runs, for error messages and listings.
pub const STRATEGY_TYPES: &str = "sma_crossover";

/// A validated strategy with all parameters resolved.
#[derive(Debug, Clone, PartialEq)]
pub enum StrategySpec {
    /// Long when the fast SMA of closes crosses above the slow one, short when it crosses
    /// below.
    SmaCrossover {
        fast_period: usize,
        slow_period: usize,
    },
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
                if fast_period >= slow_period {
                    return Err(Error::InvalidParameter {
                        name: "fast_period".to_string(),
                        message: format!(
                            "fast_period ({fast_period}) must be less than slow_period \
                             ({slow_period})"
                        ),
                    });
                }
                Ok(StrategySpec::SmaCrossover {
                    fast_period,
                    slow_period,
                })
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
        }
    }

    /// Returns the resolved parameters as a JSON object, defaults included.
    pub fn params(&self) -> Value {
        match self {
            StrategySpec::SmaCrossover {
                fast_period,
                slow_period,
            } => json!({ "fast_period": fast_period, "slow_period": slow_period }),
        }
    }
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
    fn unknown_strategy_is_named() {
        let error = StrategySpec::from_params("martingale", &json!({})).unwrap_err();
        assert!(error.to_string().contains("martingale"), "{error}");
    }
}
