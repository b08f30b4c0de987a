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
    [Indicator::Sma, Indicator::Ema, Indicator::Rsi]
        .into_iter()
        .map(|indicator| WindowUDF::from(IndicatorFunction::new(indicator)))
        .collect()
}

/// The indicators, defined as TA-Lib defines them. Each is null during its warm-up, and a
/// null input yields null and restarts the warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Indicator {
    /// `sma(value, n)`: the mean of the last n values. Each window is summed afresh from its
    /// oldest to its newest value, so no rounding error accumulates along the series.
    Sma,
    /// `ema(value, n)`: exponential average with alpha 2 / (n + 1), seeded at row n - 1 by
    /// the SMA of the first n values.
    Ema,
    /// `rsi(value, n)`: Wilder's relative strength index, 0 to 100. The average gain and loss
    /// are seeded by the simple means of the first n changes (so the first value is at row
    /// n), then smoothed as (previous x (n - 1) + current) / n.
    Rsi,
}

impl Indicator {
    /// Returns the SQL name of the indicator's window function.
    pub fn name(self) -> &'static str {
        match self {
            Indicator::Sma => "sma",
            Indicator::Ema => "ema",
            Indicator::Rsi => "rsi",
        }
    }

    /// Computes the indicator over a column.
    pub fn compute(self, input: &Float64Array, period: usize) -> Float64Array {
        let mut output = Vec::with_capacity(input.len());
        // Each run of non-null values is computed on its own.
        let mut row = 0;
        while row < input.len() {
            if input.is_null(row) {
                output.push(None);
                row += 1;
                continue;
            }
            let run_end = (row..input.len())
                .find(|&index| input.is_null(index))
                .unwrap_or(input.len());
            let run = &input.values()[row..run_end];
            match self {
                Indicator::Sma => output.extend(simple_moving_average(run, period)),
                Indicator::Ema => output.extend(exponential_moving_average(run, period)),
                Indicator::Rsi => output.extend(relative_strength_index(run, period)),
            }
            row = run_end;
        }
        Float64Array::from(output)
    }
}

/// `INDICATOR(value, period) OVER (ORDER BY open_time)` as a DataFusion window function.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IndicatorFunction {
    indicator: Indicator,
    signature: Signature,
}

impl IndicatorFunction {
    /// Creates the window function of an indicator.
    pub fn new(indicator: Indicator) -> Self {
        Self {
            indicator,
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

impl WindowUDFImpl for IndicatorFunction {
    fn name(&self) -> &str {
        self.indicator.name()
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> DfResult<Vec<DataType>> {
        if arg_types.len() != 2 {
            return plan_err!(
                "{} takes 2 arguments (value, period), got {}",
                self.indicator.name(),
                arg_types.len()
            );
        }
        Ok(vec![DataType::Float64, DataType::Int64])
    }

    fn partition_evaluator(
        &self,
        args: PartitionEvaluatorArgs<'_>,
    ) -> DfResult<Box<dyn PartitionEvaluator>> {
        let period = literal_period(self.indicator.name(), args.input_exprs().get(1))?;
        Ok(Box::new(IndicatorEvaluator {
            indicator: self.indicator,
            period,
        }))
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
struct IndicatorEvaluator {
    indicator: Indicator,
    period: usize,
}

impl PartitionEvaluator for IndicatorEvaluator {
    fn evaluate_all(&mut self, values: &[ArrayRef], num_rows: usize) -> DfResult<ArrayRef> {
        let Some(input) = values.first() else {
            return exec_err!("{}: missing value argument", self.indicator.name());
        };
        let input = input.as_primitive::<Float64Type>().slice(0, num_rows);
        Ok(Arc::new(self.indicator.compute(&input, self.period)))
    }
}

fn simple_moving_average(values: &[f64], period: usize) -> Vec<Option<f64>> {
    (0..values.len())
        .map(|row| {
            let start = (row + 1).checked_sub(period)?;
            Some(values[start..=row].iter().sum::<f64>() / period as f64)
        })
        .collect()
}

fn exponential_moving_average(values: &[f64], period: usize) -> Vec<Option<f64>> {
    let alpha = 2.0 / (period as f64 + 1.0);
    let mut output = vec![None; values.len()];
    if values.len() < period {
        return output;
    }
    let mut average = values[..period].iter().sum::<f64>() / period as f64;
    output[period - 1] = Some(average);
    for (slot, value) in output.iter_mut().zip(values).skip(period) {
        average += alpha * (value - average);
        *slot = Some(average);
    }
    output
}

fn relative_strength_index(values: &[f64], period: usize) -> Vec<Option<f64>> {
    let mut output = vec![None; values.len()];
    if values.len() <= period {
        return output;
    }
    let change = |row: usize| values[row] - values[row - 1];
    let (mut gain, mut loss) = (0.0, 0.0);
    for row in 1..=period {
        gain += change(row).max(0.0);
        loss += (-change(row)).max(0.0);
    }
    let length = period as f64;
    let (mut average_gain, mut average_loss) = (gain / length, loss / length);
    let rsi = |gain: f64, loss: f64| {
        // TA-Lib reports 0 when the series did not move at all.
        if gain + loss == 0.0 {
            0.0
        } else {
            100.0 * gain / (gain + loss)
        }
    };
    output[period] = Some(rsi(average_gain, average_loss));
    for (row, slot) in output.iter_mut().enumerate().skip(period + 1) {
        average_gain = (average_gain * (length - 1.0) + change(row).max(0.0)) / length;
        average_loss = (average_loss * (length - 1.0) + (-change(row)).max(0.0)) / length;
        *slot = Some(rsi(average_gain, average_loss));
    }
    output
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sma(input: &Float64Array, period: usize) -> Float64Array {
        Indicator::Sma.compute(input, period)
    }

    #[test]
    fn sma_warm_up_is_null() {
        let input = Float64Array::from(vec![1.0, 2.0, 3.0, 4.0, 5.0]);
        let output = sma(&input, 3);
        assert!(output.is_null(0));
        assert!(output.is_null(1));
        assert_eq!(output.value(2), 2.0);
        assert_eq!(output.value(3), 3.0);
        assert_eq!(output.value(4), 4.0);
    }

    #[test]
    fn sma_null_blocks_windows_that_hold_it() {
        let input = Float64Array::from(vec![Some(1.0), None, Some(3.0), Some(5.0), Some(7.0)]);
        let output = sma(&input, 2);
        assert!(output.is_null(1));
        assert!(output.is_null(2));
        assert_eq!(output.value(3), 4.0);
        assert_eq!(output.value(4), 6.0);
    }

    #[test]
    fn sma_period_one_is_identity() {
        let input = Float64Array::from(vec![3.5, -1.25, 8.0]);
        let output = sma(&input, 1);
        assert_eq!(output.values().to_vec(), vec![3.5, -1.25, 8.0]);
    }

    #[test]
    fn rsi_matches_wilder_reference_values() {
        let closes = [
            100.0, 102.0, 101.0, 103.0, 106.0, 104.0, 105.0, 108.0, 107.0, 110.0, 109.0, 111.0,
        ];
        let output = Indicator::Rsi.compute(&Float64Array::from(closes.to_vec()), 5);
        for row in 0..5 {
            assert!(output.is_null(row), "row {row}");
        }
        let expected = [70.0, 73.3333, 81.1765, 72.3144, 80.3563, 71.6808, 77.6998];
        for (offset, value) in expected.iter().enumerate() {
            let got = output.value(5 + offset);
            assert!(
                (got - value).abs() < 5e-5,
                "row {}: {got} vs {value}",
                5 + offset
            );
        }
    }

    #[test]
    fn ema_is_seeded_by_sma() {
        // Period 3, alpha 0.5: seed (1 + 2 + 3) / 3 = 2 at row 2, then 2 + 0.5 x (6 - 2) = 4
        // and 4 + 0.5 x (0 - 4) = 2.
        let input = Float64Array::from(vec![1.0, 2.0, 3.0, 6.0, 0.0]);
        let output = Indicator::Ema.compute(&input, 3);
        assert!(output.is_null(0));
        assert!(output.is_null(1));
        assert_eq!(output.value(2), 2.0);
        assert_eq!(output.value(3), 4.0);
        assert_eq!(output.value(4), 2.0);
    }

    #[test]
    fn flat_series_rsi_is_zero() {
        let input = Float64Array::from(vec![5.0; 4]);
        let output = Indicator::Rsi.compute(&input, 2);
        assert_eq!(output.value(2), 0.0);
        assert_eq!(output.value(3), 0.0);
    }
}
