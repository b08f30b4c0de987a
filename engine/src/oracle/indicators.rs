//! TA-Lib's indicators as plain loops, for the oracle's strategy signals.
//!
//! Each function follows TA-Lib's definition with its default settings (no unstable period,
//! EMAs seeded by an SMA), written from that definition and not from the engine's window
//! functions. An output has one value per input and is `None` during TA-Lib's warm-up, the
//! rows before its first value. Tests compare every function here with values from the
//! `ta-lib` Python package on real bars.

use super::simple_moving_average;

/// MACD outputs, one value per input.
#[derive(Debug, Clone, PartialEq)]
pub struct Macd {
    /// Fast EMA minus slow EMA.
    pub line: Vec<Option<f64>>,
    /// EMA of the MACD line over the signal period.
    pub signal: Vec<Option<f64>>,
    /// MACD line minus signal line.
    pub histogram: Vec<Option<f64>>,
}

/// Bollinger bands, one value per input.
#[derive(Debug, Clone, PartialEq)]
pub struct BollingerBands {
    /// Middle band plus `std_dev` population standard deviations.
    pub upper: Vec<Option<f64>>,
    /// SMA of the period.
    pub middle: Vec<Option<f64>>,
    /// Middle band minus `std_dev` population standard deviations.
    pub lower: Vec<Option<f64>>,
}

/// Computes an EMA with alpha `2 / (period + 1)` whose first value, at index `seed_index`, is
/// the plain mean of the `period` values that end there. Earlier indexes are `None`.
fn ema_seeded_at(values: &[f64], period: usize, seed_index: usize) -> Vec<Option<f64>> {
    let mut averages = vec![None; values.len()];
    if seed_index >= values.len() {
        return averages;
    }
    let mut sum = 0.0;
    for value in &values[seed_index + 1 - period..=seed_index] {
        sum += value;
    }
    let alpha = 2.0 / (period as f64 + 1.0);
    let mut average = sum / period as f64;
    averages[seed_index] = Some(average);
    for t in seed_index + 1..values.len() {
        average += alpha * (values[t] - average);
        averages[t] = Some(average);
    }
    averages
}

/// Computes TA-Lib's EMA: alpha `2 / (period + 1)`, seeded at index `period - 1` by the SMA of
/// the first `period` values.
///
/// # Panics
///
/// Panics if `period` is 0.
pub fn exponential_moving_average(values: &[f64], period: usize) -> Vec<Option<f64>> {
    assert!(period > 0, "EMA period must be at least 1, got 0");
    ema_seeded_at(values, period, period - 1)
}

/// Computes Wilder's RSI, from 0 to 100, as TA-Lib does.
///
/// The average gain and the average loss start as the plain means of the first `period`
/// changes, so the first value is at index `period`. Each later change `c` updates them to
/// `(average x (period - 1) + max(c, 0)) / period` and the same with `max(-c, 0)`. The RSI is
/// `100 x gain / (gain + loss)`, and 0 when both averages are 0, as TA-Lib returns.
///
/// # Panics
///
/// Panics if `period` is 0.
pub fn relative_strength_index(values: &[f64], period: usize) -> Vec<Option<f64>> {
    assert!(period > 0, "RSI period must be at least 1, got 0");
    let mut output = vec![None; values.len()];
    if values.len() <= period {
        return output;
    }

    let count = period as f64;
    let mut gain = 0.0;
    let mut loss = 0.0;
    for t in 1..=period {
        let change = values[t] - values[t - 1];
        if change > 0.0 {
            gain += change;
        } else {
            loss -= change;
        }
    }
    gain /= count;
    loss /= count;
    output[period] = Some(rsi_of(gain, loss));

    for t in period + 1..values.len() {
        let change = values[t] - values[t - 1];
        let (up, down) = if change > 0.0 {
            (change, 0.0)
        } else {
            (0.0, -change)
        };
        gain = (gain * (count - 1.0) + up) / count;
        loss = (loss * (count - 1.0) + down) / count;
        output[t] = Some(rsi_of(gain, loss));
    }
    output
}

fn rsi_of(gain: f64, loss: f64) -> f64 {
    let total = gain + loss;
    if total == 0.0 {
        0.0
    } else {
        100.0 * gain / total
    }
}

/// Computes TA-Lib's MACD with its EMA alignment.
///
/// Both EMAs are seeded at index `slow_period - 1`: the slow one by the mean of the first
/// `slow_period` values, the fast one by the mean of the `fast_period` values that end at
/// that index. So the fast EMA here differs from `exponential_moving_average(values,
/// fast_period)` until the seed fades. The signal line is an EMA of the MACD line, seeded by
/// the mean of its first `signal_period` values. As in TA-Lib, all three outputs are `None`
/// before index `slow_period + signal_period - 2`, where the signal line starts, and a
/// `fast_period` above `slow_period` is swapped with it.
///
/// # Panics
///
/// Panics if a period is 0.
pub fn macd(values: &[f64], fast_period: usize, slow_period: usize, signal_period: usize) -> Macd {
    assert!(
        fast_period > 0 && slow_period > 0 && signal_period > 0,
        "MACD periods must be at least 1, got {fast_period}, {slow_period}, {signal_period}"
    );
    let (fast_period, slow_period) = if fast_period > slow_period {
        (slow_period, fast_period)
    } else {
        (fast_period, slow_period)
    };
    let mut output = Macd {
        line: vec![None; values.len()],
        signal: vec![None; values.len()],
        histogram: vec![None; values.len()],
    };
    let first_line = slow_period - 1;
    let first_output = first_line + signal_period - 1;
    if first_output >= values.len() {
        return output;
    }

    let fast = ema_seeded_at(values, fast_period, first_line);
    let slow = ema_seeded_at(values, slow_period, first_line);
    let mut line = Vec::with_capacity(values.len() - first_line);
    for t in first_line..values.len() {
        let fast_value = fast[t].expect("the fast EMA starts at the first MACD index");
        let slow_value = slow[t].expect("the slow EMA starts at the first MACD index");
        line.push(fast_value - slow_value);
    }
    let signal = ema_seeded_at(&line, signal_period, signal_period - 1);
    for t in first_output..values.len() {
        let index = t - first_line;
        let signal_value = signal[index].expect("the signal line starts at the first output");
        output.line[t] = Some(line[index]);
        output.signal[t] = Some(signal_value);
        output.histogram[t] = Some(line[index] - signal_value);
    }
    output
}

/// Computes Bollinger bands as TA-Lib's BBANDS with a simple moving average: the SMA of the
/// period plus and minus `std_dev` times the population standard deviation of the same
/// window (the squared deviations from the SMA, divided by `period`).
///
/// # Panics
///
/// Panics if `period` is 0.
pub fn bollinger_bands(values: &[f64], period: usize, std_dev: f64) -> BollingerBands {
    let middle = simple_moving_average(values, period);
    let mut upper = vec![None; values.len()];
    let mut lower = vec![None; values.len()];
    for (t, mean) in middle.iter().enumerate() {
        let Some(mean) = *mean else {
            continue;
        };
        let mut squared_deviations = 0.0;
        for value in &values[t + 1 - period..=t] {
            squared_deviations += (value - mean) * (value - mean);
        }
        let deviation = (squared_deviations / period as f64).sqrt();
        upper[t] = Some(mean + std_dev * deviation);
        lower[t] = Some(mean - std_dev * deviation);
    }
    BollingerBands {
        upper,
        middle,
        lower,
    }
}

/// Computes Wilder's average true range as TA-Lib's ATR does.
///
/// The true range of bar `t >= 1` is the largest of `high - low`, `|high - previous close|`
/// and `|low - previous close|`, and the first bar has none. The first ATR, at index
/// `period`, is the mean of the first `period` true ranges. Each later one is
/// `(previous ATR x (period - 1) + true range) / period`.
///
/// # Panics
///
/// Panics if `period` is 0 or the three slices differ in length.
pub fn average_true_range(
    high: &[f64],
    low: &[f64],
    close: &[f64],
    period: usize,
) -> Vec<Option<f64>> {
    assert!(period > 0, "ATR period must be at least 1, got 0");
    assert!(
        high.len() == low.len() && low.len() == close.len(),
        "high, low and close must have one value per bar, got {}, {} and {}",
        high.len(),
        low.len(),
        close.len()
    );
    let mut output = vec![None; close.len()];
    if close.len() <= period {
        return output;
    }
    let true_range = |t: usize| {
        let previous_close = close[t - 1];
        (high[t] - low[t])
            .max((high[t] - previous_close).abs())
            .max((low[t] - previous_close).abs())
    };
    let count = period as f64;
    let mut sum = 0.0;
    for t in 1..=period {
        sum += true_range(t);
    }
    let mut average = sum / count;
    output[period] = Some(average);
    for (t, slot) in output.iter_mut().enumerate().skip(period + 1) {
        average = (average * (count - 1.0) + true_range(t)) / count;
        *slot = Some(average);
    }
    output
}
