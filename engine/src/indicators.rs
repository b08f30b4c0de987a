//! Indicators as DataFusion window functions (UDWFs) over a series ordered by open time.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Float64Array};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Float64Type};
use datafusion::common::{Result as DfResult, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::function::{PartitionEvaluatorArgs, WindowUDFFieldArgs};
use datafusion::logical_expr::{
    PartitionEvaluator, Signature, Volatility, WindowUDF, WindowUDFImpl,
};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Literal;

/// Returns every indicator window function, for registration in a session.
pub fn all_indicators() -> Vec<WindowUDF> {
    vec![WindowUDF::from(SimpleMovingAverage::new())]
}

/// `sma(value, period) OVER (ORDER BY open_time)`: the mean of the last `period` values,
/// null during the first `period - 1` rows and wherever the window holds a null.
///
/// Each window is summed afresh from its oldest to its newest value rather than by a running
/// sum, so no rounding error accumulates along the series and the value equals the textbook
/// mean computed the same way.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SimpleMovingAverage {
    signature: Signature,
}

impl SimpleMovingAverage {
    /// Creates the `sma` window function.
    pub fn new() -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

impl Default for SimpleMovingAverage {
    fn default() -> Self {
        Self::new()
    }
}

impl WindowUDFImpl for SimpleMovingAverage {
    fn name(&self) -> &str {
        "sma"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> DfResult<Vec<DataType>> {
        if arg_types.len() != 2 {
            return plan_err!(
                "sma takes 2 arguments (value, period), got {}",
                arg_types.len()
            );
        }
        Ok(vec![DataType::Float64, DataType::Int64])
    }

    fn partition_evaluator(
        &self,
        args: PartitionEvaluatorArgs<'_>,
    ) -> DfResult<Box<dyn PartitionEvaluator>> {
        let period = literal_period("sma", args.input_exprs().get(1))?;
        Ok(Box::new(SmaEvaluator { period }))
    }

    fn field(&self, field_args: WindowUDFFieldArgs<'_>) -> DfResult<FieldRef> {
        Ok(Arc::new(Field::new(
            field_args.name(),
            DataType::Float64,
            true,
        )))
    }
}

/// Reads a period argument that must be a positive integer literal.
fn literal_period(function: &str, expr: Option<&Arc<dyn PhysicalExpr>>) -> DfResult<usize> {
    let Some(literal) = expr.and_then(|expr| expr.downcast_ref::<Literal>()) else {
        return plan_err!("{function}: the period must be an integer literal such as 20");
    };
    match literal.value() {
        ScalarValue::Int64(Some(period)) if *period >= 1 => Ok(*period as usize),
        other => plan_err!("{function}: the period must be an integer of at least 1, got {other}"),
    }
}

#[derive(Debug)]
struct SmaEvaluator {
    period: usize,
}

impl PartitionEvaluator for SmaEvaluator {
    fn evaluate_all(&mut self, values: &[ArrayRef], num_rows: usize) -> DfResult<ArrayRef> {
        let Some(input) = values.first() else {
            return exec_err!("sma: missing value argument");
        };
        let input = input.as_primitive::<Float64Type>();
        Ok(Arc::new(simple_moving_average(
            input,
            self.period,
            num_rows,
        )))
    }
}

/// Computes the SMA column of `input` over its first `num_rows` rows.
fn simple_moving_average(input: &Float64Array, period: usize, num_rows: usize) -> Float64Array {
    let mut output = Vec::with_capacity(num_rows);
    // Index of the most recent null at or before the current row, if any.
    let mut last_null: Option<usize> = None;
    for row in 0..num_rows {
        if input.is_null(row) {
            last_null = Some(row);
        }
        let window_start = (row + 1).checked_sub(period);
        let value = match window_start {
            Some(start) if last_null.is_none_or(|null_row| null_row < start) => {
                let window = &input.values()[start..=row];
                Some(window.iter().sum::<f64>() / period as f64)
            }
            _ => None,
        };
        output.push(value);
    }
    Float64Array::from(output)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sma_warm_up_is_null() {
        let input = Float64Array::from(vec![1.0, 2.0, 3.0, 4.0, 5.0]);
        let output = simple_moving_average(&input, 3, 5);
        assert!(output.is_null(0));
        assert!(output.is_null(1));
        assert_eq!(output.value(2), 2.0);
        assert_eq!(output.value(3), 3.0);
        assert_eq!(output.value(4), 4.0);
    }

    #[test]
    fn sma_null_blocks_windows_that_hold_it() {
        let input = Float64Array::from(vec![Some(1.0), None, Some(3.0), Some(5.0), Some(7.0)]);
        let output = simple_moving_average(&input, 2, 5);
        assert!(output.is_null(1));
        assert!(output.is_null(2));
        assert_eq!(output.value(3), 4.0);
        assert_eq!(output.value(4), 6.0);
    }

    #[test]
    fn sma_period_one_is_identity() {
        let input = Float64Array::from(vec![3.5, -1.25, 8.0]);
        let output = simple_moving_average(&input, 1, 3);
        assert_eq!(output.values().to_vec(), vec![3.5, -1.25, 8.0]);
    }
}
