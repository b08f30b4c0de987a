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
    Indicator::ALL
        .into_iter()
        .map(|indicator| WindowUDF::from(IndicatorFunction::new(indicator)))
        .collect()
}

/// The indicators, defined as TA-Lib defines them. Each is null during its warm-up, and a
/// row with a null input yields null and restarts the warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Indicator {
    /// `sma(value, n)`: the mean of the last n values, from TA-Lib's running total: each row
    /// adds its value, divides, then subtracts the oldest value of the window. The cost is
    /// one pass whatever n is, which matters for sweeps over long periods.
    Sma,
    /// `ema(value, n)`: exponential average with alpha 2 / (n + 1), seeded at row n - 1 by
    /// the SMA of the first n values.
    Ema,
    /// `rsi(value, n)`: Wilder's relative strength index, 0 to 100. The average gain and loss
    /// are seeded by the simple means of the first n changes (so the first value is at row
    /// n), then smoothed as (previous x (n - 1) + current) / n.
    Rsi,
    /// `stddev(value, n)`: population standard deviation of the last n values.
    StdDev,
    /// `highest(value, n)`: maximum of the last n values.
    Highest,
    /// `lowest(value, n)`: minimum of the last n values.
    Lowest,
    /// `bb_upper(value, n, k)`: SMA(n) plus k population standard deviations.
    BollingerUpper,
    /// `bb_middle(value, n, k)`: SMA(n).
    BollingerMiddle,
    /// `bb_lower(value, n, k)`: SMA(n) minus k population standard deviations.
    BollingerLower,
    /// `macd(value, fast, slow, signal)`: EMA(fast) - EMA(slow), with the fast EMA seeded on
    /// the row where the slow one starts, and null until the signal line starts, as in TA-Lib.
    Macd,
    /// `macd_signal(value, fast, slow, signal)`: EMA(signal) of the MACD line.
    MacdSignal,
    /// `macd_hist(value, fast, slow, signal)`: MACD line minus signal line.
    MacdHist,
    /// `atr(high, low, close, n)`: Wilder's average of true range, seeded at row n by the mean
    /// of the first n true ranges (the first bar has none).
    Atr,
}

impl Indicator {
    /// Every indicator, in registration order.
    pub const ALL: [Indicator; 13] = [
        Indicator::Sma,
        Indicator::Ema,
        Indicator::Rsi,
        Indicator::StdDev,
        Indicator::Highest,
        Indicator::Lowest,
        Indicator::BollingerUpper,
        Indicator::BollingerMiddle,
        Indicator::BollingerLower,
        Indicator::Macd,
        Indicator::MacdSignal,
        Indicator::MacdHist,
        Indicator::Atr,
    ];

    /// Returns the SQL name of the indicator's window function.
    pub fn name(self) -> &'static str {
        match self {
            Indicator::Sma => "sma",
            Indicator::Ema => "ema",
            Indicator::Rsi => "rsi",
            Indicator::StdDev => "stddev",
            Indicator::Highest => "highest",
            Indicator::Lowest => "lowest",
            Indicator::BollingerUpper => "bb_upper",
            Indicator::BollingerMiddle => "bb_middle",
            Indicator::BollingerLower => "bb_lower",
            Indicator::Macd => "macd",
            Indicator::MacdSignal => "macd_signal",
            Indicator::MacdHist => "macd_hist",
            Indicator::Atr => "atr",
        }
    }

    /// Returns the number of value columns the indicator reads.
    fn value_columns(self) -> usize {
        if self == Indicator::Atr { 3 } else { 1 }
    }

    /// Returns the names of the literal parameters after the value columns.
    fn parameter_names(self) -> &'static [&'static str] {
        match self {
            Indicator::BollingerUpper | Indicator::BollingerMiddle | Indicator::BollingerLower => {
                &["period", "std_dev"]
            }
            Indicator::Macd | Indicator::MacdSignal | Indicator::MacdHist => {
                &["fast_period", "slow_period", "signal_period"]
            }
            _ => &["period"],
        }
    }

    /// Computes a single-column indicator with one period, such as SMA, EMA or RSI.
    pub fn compute(self, input: &Float64Array, period: usize) -> Float64Array {
        self.compute_columns(&[input], &[period as f64])
    }

    /// Computes the indicator over its value columns with its parameters in declared order
    /// (periods as whole numbers).
    pub fn compute_columns(self, columns: &[&Float64Array], parameters: &[f64]) -> Float64Array {
        let rows = columns.first().map_or(0, |column| column.len());
        let valid = |row: usize| columns.iter().all(|column| column.is_valid(row));
        let mut output = Vec::with_capacity(rows);
        // Each run of rows without nulls is computed on its own.
        let mut row = 0;
        while row < rows {
            if !valid(row) {
                output.push(None);
                row += 1;
                continue;
            }
            let run_end = (row..rows).find(|&index| !valid(index)).unwrap_or(rows);
            let run: Vec<&[f64]> = columns
                .iter()
                .map(|column| &column.values()[row..run_end])
                .collect();
            output.extend(self.compute_run(&run, parameters));
            row = run_end;
        }
        Float64Array::from(output)
    }

    fn compute_run(self, run: &[&[f64]], parameters: &[f64]) -> Vec<Option<f64>> {
        let period = |index: usize| parameters.get(index).map_or(1, |value| *value as usize);
        let values = run[0];
        match self {
            Indicator::Sma => simple_moving_average(values, period(0)),
            Indicator::Ema => exponential_moving_average(values, period(0)),
            Indicator::Rsi => relative_strength_index(values, period(0)),
            Indicator::StdDev => rolling_std_dev(values, period(0)),
            Indicator::Highest => rolling_extreme(values, period(0), f64::max),
            Indicator::Lowest => rolling_extreme(values, period(0), f64::min),
            Indicator::BollingerUpper | Indicator::BollingerMiddle | Indicator::BollingerLower => {
                let width = parameters.get(1).copied().unwrap_or(2.0);
                let sign = match self {
                    Indicator::BollingerUpper => 1.0,
                    Indicator::BollingerLower => -1.0,
                    _ => 0.0,
                };
                let middle = simple_moving_average(values, period(0));
                let std_dev = rolling_std_dev(values, period(0));
                middle
                    .iter()
                    .zip(&std_dev)
                    .map(|(middle, std_dev)| {
                        Some(middle.as_ref()? + sign * width * std_dev.as_ref()?)
                    })
                    .collect()
            }
            Indicator::Macd | Indicator::MacdSignal | Indicator::MacdHist => {
                let (line, signal) = macd(values, period(0), period(1), period(2));
                match self {
                    Indicator::Macd => line,
                    Indicator::MacdSignal => signal,
                    _ => line
                        .iter()
                        .zip(&signal)
                        .map(|(line, signal)| Some(line.as_ref()? - signal.as_ref()?))
                        .collect(),
                }
            }
            Indicator::Atr => average_true_range(run[0], run[1], run[2], period(0)),
        }
    }
}

/// `INDICATOR(columns..., parameters...) OVER (ORDER BY open_time)` as a DataFusion window
/// function.
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
        let columns = self.indicator.value_columns();
        let parameters = self.indicator.parameter_names();
        if arg_types.len() != columns + parameters.len() {
            return plan_err!(
                "{} takes {} value column(s) and the parameters ({}), got {} arguments",
                self.indicator.name(),
                columns,
                parameters.join(", "),
                arg_types.len()
            );
        }
        let mut types = vec![DataType::Float64; columns];
        types.extend(parameters.iter().map(|name| {
            if *name == "std_dev" {
                DataType::Float64
            } else {
                DataType::Int64
            }
        }));
        Ok(types)
    }

    fn partition_evaluator(
        &self,
        args: PartitionEvaluatorArgs<'_>,
    ) -> DfResult<Box<dyn PartitionEvaluator>> {
        let columns = self.indicator.value_columns();
        let parameters = self
            .indicator
            .parameter_names()
            .iter()
            .enumerate()
            .map(|(index, name)| {
                literal_parameter(
                    self.indicator.name(),
                    name,
                    args.input_exprs().get(columns + index),
                )
            })
            .collect::<DfResult<Vec<f64>>>()?;
        Ok(Box::new(IndicatorEvaluator {
            indicator: self.indicator,
            parameters,
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

/// Largest period an indicator accepts, in bars.
pub const MAX_PERIOD: i64 = 100_000;

/// Reads a parameter that must be a literal: a positive integer for periods, a positive
/// number for `std_dev`.
fn literal_parameter(
    function: &str,
    name: &str,
    expr: Option<&Arc<dyn PhysicalExpr>>,
) -> DfResult<f64> {
    let Some(literal) = expr.and_then(|expr| expr.downcast_ref::<Literal>()) else {
        return plan_err!("{function}: {name} must be an integer literal such as 20");
    };
    match literal.value() {
        ScalarValue::Int64(Some(period)) if *period >= 1 && *period <= MAX_PERIOD => {
            Ok(*period as f64)
        }
        ScalarValue::Float64(Some(width)) if name == "std_dev" && *width > 0.0 => Ok(*width),
        other => {
            plan_err!("{function}: {name} must be a positive number up to 100000, got {other}")
        }
    }
}

#[derive(Debug)]
struct IndicatorEvaluator {
    indicator: Indicator,
    parameters: Vec<f64>,
}

impl PartitionEvaluator for IndicatorEvaluator {
    fn evaluate_all(&mut self, values: &[ArrayRef], num_rows: usize) -> DfResult<ArrayRef> {
        let columns = self.indicator.value_columns();
        if values.len() < columns {
            return exec_err!("{}: missing value arguments", self.indicator.name());
        }
        let inputs: Vec<Float64Array> = values[..columns]
            .iter()
            .map(|array| array.as_primitive::<Float64Type>().slice(0, num_rows))
            .collect();
        let references: Vec<&Float64Array> = inputs.iter().collect();
        Ok(Arc::new(
            self.indicator
                .compute_columns(&references, &self.parameters),
        ))
    }
}

fn simple_moving_average(values: &[f64], period: usize) -> Vec<Option<f64>> {
    let mut output = vec![None; values.len()];
    if period == 0 || values.len() < period {
        return output;
    }
    let mut total: f64 = values[..period - 1].iter().sum();
    for row in period - 1..values.len() {
        total += values[row];
        output[row] = Some(total / period as f64);
        total -= values[row + 1 - period];
    }
    output
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

fn rolling_std_dev(values: &[f64], period: usize) -> Vec<Option<f64>> {
    (0..values.len())
        .map(|row| {
            let start = (row + 1).checked_sub(period)?;
            let window = &values[start..=row];
            let mean = window.iter().sum::<f64>() / period as f64;
            let variance = window
                .iter()
                .map(|value| (value - mean).powi(2))
                .sum::<f64>()
                / period as f64;
            Some(variance.sqrt())
        })
        .collect()
}

fn rolling_extreme(values: &[f64], period: usize, pick: fn(f64, f64) -> f64) -> Vec<Option<f64>> {
    (0..values.len())
        .map(|row| {
            let start = (row + 1).checked_sub(period)?;
            values[start..=row].iter().copied().reduce(pick)
        })
        .collect()
}

/// Returns an EMA whose seed is the SMA of the `period` values ending at row `seed_row`.
fn ema_seeded_at(values: &[f64], period: usize, seed_row: usize) -> Vec<Option<f64>> {
    let mut output = vec![None; values.len()];
    if seed_row >= values.len() || seed_row + 1 < period {
        return output;
    }
    let alpha = 2.0 / (period as f64 + 1.0);
    let mut average = values[seed_row + 1 - period..=seed_row].iter().sum::<f64>() / period as f64;
    output[seed_row] = Some(average);
    for (slot, value) in output.iter_mut().zip(values).skip(seed_row + 1) {
        average += alpha * (value - average);
        *slot = Some(average);
    }
    output
}

/// Returns the MACD line and its signal line, both null until the signal line starts.
fn macd(
    values: &[f64],
    fast_period: usize,
    slow_period: usize,
    signal_period: usize,
) -> (Vec<Option<f64>>, Vec<Option<f64>>) {
    let none = || vec![None; values.len()];
    let slow_start = slow_period.max(fast_period) - 1;
    let fast = ema_seeded_at(values, fast_period, slow_start);
    let slow = ema_seeded_at(values, slow_period, slow_start);
    let line: Vec<Option<f64>> = fast
        .iter()
        .zip(&slow)
        .map(|(fast, slow)| Some(fast.as_ref()? - slow.as_ref()?))
        .collect();
    if values.len() <= slow_start {
        return (none(), none());
    }
    let defined: Vec<f64> = line[slow_start..]
        .iter()
        .map(|value| value.unwrap_or(0.0))
        .collect();
    let mut signal = none();
    for (offset, value) in ema_seeded_at(&defined, signal_period, signal_period - 1)
        .into_iter()
        .enumerate()
    {
        signal[slow_start + offset] = value;
    }
    let line = line
        .iter()
        .zip(&signal)
        .map(|(line, signal)| signal.and(*line))
        .collect();
    (line, signal)
}

fn average_true_range(high: &[f64], low: &[f64], close: &[f64], period: usize) -> Vec<Option<f64>> {
    let mut output = vec![None; high.len()];
    if high.len() <= period {
        return output;
    }
    let true_range = |row: usize| {
        let previous = close[row - 1];
        (high[row] - low[row])
            .max((high[row] - previous).abs())
            .max((low[row] - previous).abs())
    };
    let length = period as f64;
    let mut average = (1..=period).map(true_range).sum::<f64>() / length;
    output[period] = Some(average);
    for (row, slot) in output.iter_mut().enumerate().skip(period + 1) {
        average = (average * (length - 1.0) + true_range(row)) / length;
        *slot = Some(average);
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
