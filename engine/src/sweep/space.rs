//! Parameter spaces of a sweep: each parameter's values, the grid of their combinations and
//! seeded random samples from it.

use std::collections::HashSet;

use serde_json::{Map, Number, Value};

use crate::{Error, Result};

/// Largest number of combinations a space may have.
pub const MAX_COMBINATIONS: u64 = 10_000_000;

/// Largest number of values one range may expand to.
const MAX_RANGE_VALUES: u64 = 100_000;

/// The values each swept parameter takes, in the order the grid varies them (the last
/// parameter fastest).
#[derive(Debug, Clone, PartialEq)]
pub struct ParameterSpace {
    pub parameters: Vec<(String, Vec<Value>)>,
}

fn invalid(name: &str, message: String) -> Error {
    Error::InvalidParameter {
        name: name.to_string(),
        message,
    }
}

impl ParameterSpace {
    /// Parses a grid object: each key is a parameter and each value a list of values, a range
    /// `{"low": L, "high": H, "step": S}` (inclusive of `high` when the steps reach it), or a
    /// single value. Ranges of whole numbers give whole numbers.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`] naming the parameter, or `grid` for a grid that is not an
    /// object, is empty, or has more than [`MAX_COMBINATIONS`] combinations.
    pub fn parse(grid: &Value) -> Result<Self> {
        let Value::Object(object) = grid else {
            return Err(invalid(
                "grid",
                format!(
                    "expected an object of parameter values such as \
                     {{\"fast_period\": [5, 10], \"slow_period\": {{\"low\": 20, \"high\": 60, \
                     \"step\": 10}}}}, got {grid}"
                ),
            ));
        };
        if object.is_empty() {
            return Err(invalid(
                "grid",
                "expected at least one parameter".to_string(),
            ));
        }
        let mut parameters = Vec::with_capacity(object.len());
        for (name, spec) in object {
            let values = match spec {
                Value::Array(values) => values.clone(),
                Value::Object(range) => expand_range(name, range)?,
                Value::Null => {
                    return Err(invalid(name, "expected values, got null".to_string()));
                }
                single => vec![single.clone()],
            };
            if values.is_empty() {
                return Err(invalid(name, "expected at least one value".to_string()));
            }
            let mut seen = HashSet::new();
            let values: Vec<Value> = values
                .into_iter()
                .filter(|value| seen.insert(value.to_string()))
                .collect();
            parameters.push((name.clone(), values));
        }
        let space = Self { parameters };
        if space.combination_count() > MAX_COMBINATIONS {
            return Err(invalid(
                "grid",
                format!(
                    "{} combinations, expected at most {MAX_COMBINATIONS}; narrow the ranges \
                     or use random search",
                    space.combination_count()
                ),
            ));
        }
        Ok(space)
    }

    /// Returns the number of combinations of the grid, saturating at `u64::MAX`.
    pub fn combination_count(&self) -> u64 {
        self.parameters.iter().fold(1_u64, |count, (_, values)| {
            count.saturating_mul(values.len() as u64)
        })
    }

    /// Returns the combination at `index` of the grid order, as a parameter object.
    pub fn combination(&self, mut index: u64) -> Map<String, Value> {
        let mut values = vec![Value::Null; self.parameters.len()];
        for (slot, (_, choices)) in self.parameters.iter().enumerate().rev() {
            let count = choices.len() as u64;
            values[slot] = choices[(index % count) as usize].clone();
            index /= count;
        }
        self.parameters
            .iter()
            .map(|(name, _)| name.clone())
            .zip(values)
            .collect()
    }

    /// Returns every combination in grid order.
    pub fn grid(&self) -> Vec<Map<String, Value>> {
        (0..self.combination_count())
            .map(|index| self.combination(index))
            .collect()
    }

    /// Returns `trials` distinct combinations drawn with the seeded generator, or the whole
    /// grid when it has no more than `trials` combinations. The same seed gives the same
    /// combinations in the same order.
    pub fn random(&self, trials: u64, seed: u64) -> Vec<Map<String, Value>> {
        let total = self.combination_count();
        if trials >= total {
            return self.grid();
        }
        let mut generator = SplitMix64(seed);
        let mut chosen = HashSet::new();
        let mut combinations = Vec::with_capacity(trials as usize);
        while (combinations.len() as u64) < trials {
            let index = generator.next() % total;
            if chosen.insert(index) {
                combinations.push(self.combination(index));
            }
        }
        combinations
    }
}

/// Expands `{"low", "high", "step"}` into its values.
fn expand_range(name: &str, range: &Map<String, Value>) -> Result<Vec<Value>> {
    if let Some(key) = range
        .keys()
        .find(|key| !["low", "high", "step"].contains(&key.as_str()))
    {
        return Err(invalid(
            name,
            format!("unknown range key {key:?}; expected low, high and step"),
        ));
    }
    let number = |key: &str| -> Result<&Number> {
        match range.get(key) {
            Some(Value::Number(number)) => Ok(number),
            Some(other) => Err(invalid(
                name,
                format!("range {key} must be a number, got {other}"),
            )),
            None => Err(invalid(name, format!("range needs {key}"))),
        }
    };
    let (low, high, step) = (number("low")?, number("high")?, number("step")?);
    if let (Some(low), Some(high), Some(step)) = (low.as_i64(), high.as_i64(), step.as_i64()) {
        if step <= 0 || high < low {
            return Err(invalid(
                name,
                format!("range needs low <= high and step > 0, got {low}..{high} step {step}"),
            ));
        }
        // i128 keeps the span of any two i64 bounds from overflowing.
        let count = (i128::from(high) - i128::from(low)) / i128::from(step) + 1;
        check_count(name, u64::try_from(count).unwrap_or(u64::MAX))?;
        let count = count as u64;
        return Ok((0..count as i64)
            .map(|index| Value::from(low + index * step))
            .collect());
    }
    let (low, high, step) = (
        low.as_f64().unwrap_or(f64::NAN),
        high.as_f64().unwrap_or(f64::NAN),
        step.as_f64().unwrap_or(f64::NAN),
    );
    if !(step > 0.0 && high >= low && low.is_finite() && high.is_finite()) {
        return Err(invalid(
            name,
            format!("range needs low <= high and step > 0, got {low}..{high} step {step}"),
        ));
    }
    // The tolerance keeps `high` when rounding leaves the last step a hair short.
    let count = ((high - low) / step + 1e-9).floor() as u64 + 1;
    check_count(name, count)?;
    Ok((0..count)
        .map(|index| {
            // Rounding to 12 decimals keeps 0.1 + 2 x 0.1 from printing as 0.30000000000000004.
            let value = ((low + index as f64 * step) * 1e12).round() / 1e12;
            Value::from(value)
        })
        .collect())
}

fn check_count(name: &str, count: u64) -> Result<()> {
    if count > MAX_RANGE_VALUES {
        return Err(invalid(
            name,
            format!("range has {count} values, expected at most {MAX_RANGE_VALUES}"),
        ));
    }
    Ok(())
}

/// A small seeded generator, so a seed gives the same sample on every platform.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn ranges_and_lists_expand() {
        let space = ParameterSpace::parse(&json!({
            "fast_period": [5, 10],
            "slow_period": {"low": 20, "high": 40, "step": 10},
            "std_dev": {"low": 1.0, "high": 1.5, "step": 0.25},
        }))
        .unwrap();
        assert_eq!(space.parameters[1].1, vec![json!(20), json!(30), json!(40)]);
        assert_eq!(
            space.parameters[2].1,
            vec![json!(1.0), json!(1.25), json!(1.5)]
        );
        assert_eq!(space.combination_count(), 18);
        let grid = space.grid();
        assert_eq!(grid.len(), 18);
        assert_eq!(
            Value::Object(grid[0].clone()),
            json!({"fast_period": 5, "slow_period": 20, "std_dev": 1.0})
        );
        assert_eq!(
            Value::Object(grid[17].clone()),
            json!({"fast_period": 10, "slow_period": 40, "std_dev": 1.5})
        );
    }

    #[test]
    fn random_sample_is_seeded_and_distinct() {
        let space = ParameterSpace::parse(&json!({
            "fast_period": {"low": 1, "high": 50, "step": 1},
            "slow_period": {"low": 10, "high": 200, "step": 1},
        }))
        .unwrap();
        let first = space.random(100, 7);
        let again = space.random(100, 7);
        let other = space.random(100, 8);
        assert_eq!(first.len(), 100);
        assert_eq!(first, again);
        assert_ne!(first, other);
        let distinct: HashSet<String> = first
            .iter()
            .map(|combination| Value::Object(combination.clone()).to_string())
            .collect();
        assert_eq!(distinct.len(), 100);
    }

    #[test]
    fn invalid_grids_are_named() {
        let cases = [
            (json!([1, 2]), "grid"),
            (json!({}), "grid"),
            (json!({"fast_period": []}), "fast_period"),
            (
                json!({"fast_period": {"low": 10, "high": 5, "step": 1}}),
                "fast_period",
            ),
            (
                json!({"fast_period": {"low": 1, "high": 5, "step": 0}}),
                "fast_period",
            ),
            (json!({"fast_period": {"low": 1, "high": 5}}), "fast_period"),
            (
                json!({"fast_period": {"low": 1, "high": 5, "stride": 1}}),
                "fast_period",
            ),
            (
                json!({"a": {"low": 1, "high": 100000, "step": 1},
                       "b": {"low": 1, "high": 100000, "step": 1}}),
                "grid",
            ),
        ];
        for (grid, expected) in cases {
            match ParameterSpace::parse(&grid) {
                Err(Error::InvalidParameter { name, .. }) => assert_eq!(name, expected, "{grid}"),
                other => panic!("expected an error naming {expected} for {grid}, got {other:?}"),
            }
        }
    }
}
