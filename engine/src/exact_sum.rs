//! `exact_sum(x)`: a sum of Float64 values carried out in decimal, rounded to Float64 once.
//!
//! Each value enters as its shortest round-trip decimal text, which for a number parsed from
//! an exchange's decimal text is that text. The decimal sum is exact, so a bar aggregated
//! from smaller bars equals the exchange's own bar parsed from its text.

use std::sync::Arc;

use bst_ingest::decimal::Decimal;
use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::datatypes::{DataType, Float64Type};
use datafusion::common::{Result as DfResult, ScalarValue};
use datafusion::logical_expr::{Accumulator, AggregateUDF, Volatility, create_udaf};

/// Returns the `exact_sum` aggregate function.
pub fn exact_sum_udaf() -> AggregateUDF {
    create_udaf(
        "exact_sum",
        vec![DataType::Float64],
        Arc::new(DataType::Float64),
        Volatility::Immutable,
        Arc::new(|_| Ok(Box::new(ExactSumAccumulator::default()))),
        // The partial state is the exact decimal text of the partial sum.
        Arc::new(vec![DataType::Utf8]),
    )
}

/// Converts a finite value to the exact decimal of its shortest round-trip text.
fn decimal_of(value: f64) -> Option<Decimal> {
    // Display prints the shortest text that parses back to the same value, never in exponent
    // form.
    value
        .is_finite()
        .then(|| Decimal::parse(&value.to_string()).ok())
        .flatten()
}

/// The running sum: exact while every value fits, a plain Float64 sum after an overflow.
#[derive(Debug, Clone, Copy)]
enum RunningSum {
    Exact(Decimal),
    Approximate(f64),
}

#[derive(Debug)]
struct ExactSumAccumulator {
    sum: RunningSum,
    count: u64,
}

impl Default for ExactSumAccumulator {
    fn default() -> Self {
        Self {
            sum: RunningSum::Exact(Decimal::default()),
            count: 0,
        }
    }
}

impl ExactSumAccumulator {
    fn add_decimal(&mut self, value: Option<Decimal>, approximate: f64) {
        self.count += 1;
        self.sum = match (self.sum, value) {
            (RunningSum::Exact(sum), Some(value)) => match sum.checked_add(value) {
                Some(total) => RunningSum::Exact(total),
                None => RunningSum::Approximate(sum.to_f64() + approximate),
            },
            (RunningSum::Exact(sum), None) => RunningSum::Approximate(sum.to_f64() + approximate),
            (RunningSum::Approximate(sum), _) => RunningSum::Approximate(sum + approximate),
        };
    }
}

impl Accumulator for ExactSumAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> DfResult<()> {
        let Some(values) = values.first() else {
            return Ok(());
        };
        let values = values.as_primitive::<Float64Type>();
        for row in 0..values.len() {
            if values.is_valid(row) {
                let value = values.value(row);
                self.add_decimal(decimal_of(value), value);
            }
        }
        Ok(())
    }

    fn evaluate(&mut self) -> DfResult<ScalarValue> {
        let value = (self.count > 0).then(|| match self.sum {
            RunningSum::Exact(sum) => sum.to_f64(),
            RunningSum::Approximate(sum) => sum,
        });
        Ok(ScalarValue::Float64(value))
    }

    fn size(&self) -> usize {
        size_of_val(self)
    }

    fn state(&mut self) -> DfResult<Vec<ScalarValue>> {
        let text = (self.count > 0).then(|| match self.sum {
            RunningSum::Exact(sum) => sum.to_string(),
            RunningSum::Approximate(sum) => format!("~{sum}"),
        });
        Ok(vec![ScalarValue::Utf8(text)])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> DfResult<()> {
        let Some(states) = states.first() else {
            return Ok(());
        };
        let states = states.as_string::<i32>();
        for row in 0..states.len() {
            if states.is_null(row) {
                continue;
            }
            let text = states.value(row);
            match text.strip_prefix('~') {
                Some(approximate) => {
                    let value: f64 = approximate.parse().unwrap_or(f64::NAN);
                    self.add_decimal(None, value);
                }
                None => {
                    let value = Decimal::parse(text).ok();
                    let approximate = text.parse().unwrap_or(f64::NAN);
                    self.add_decimal(value, approximate);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(values: &[f64]) -> f64 {
        let mut accumulator = ExactSumAccumulator::default();
        for &value in values {
            accumulator.add_decimal(decimal_of(value), value);
        }
        match accumulator.evaluate().unwrap() {
            ScalarValue::Float64(Some(value)) => value,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn decimal_sum_is_exact_where_float_is_not() {
        assert_ne!(0.1 + 0.2, 0.3);
        assert_eq!(sum(&[0.1, 0.2]), 0.3);
        let volumes = [477.605, 328.242, 101.003, 0.001];
        assert_eq!(sum(&volumes), "906.851".parse::<f64>().unwrap());
    }

    #[test]
    fn values_enter_as_shortest_text() {
        for value in [0.0, -0.5, 12.034, 0.000001, -123456.789] {
            let decimal = decimal_of(value).unwrap();
            assert_eq!(
                decimal.to_string().parse::<f64>().unwrap(),
                value,
                "{value}"
            );
        }
        assert_eq!(decimal_of(f64::NAN), None);
        assert_eq!(decimal_of(f64::INFINITY), None);
    }

    #[test]
    fn partial_states_merge_exactly() {
        let mut left = ExactSumAccumulator::default();
        left.add_decimal(decimal_of(0.1), 0.1);
        let mut right = ExactSumAccumulator::default();
        right.add_decimal(decimal_of(0.2), 0.2);
        let state = right.state().unwrap();
        let array = ScalarValue::iter_to_array(state).unwrap();
        left.merge_batch(&[array]).unwrap();
        assert_eq!(left.evaluate().unwrap(), ScalarValue::Float64(Some(0.3)));
    }

    #[test]
    fn empty_sum_is_null() {
        let mut accumulator = ExactSumAccumulator::default();
        assert_eq!(accumulator.evaluate().unwrap(), ScalarValue::Float64(None));
    }
}
