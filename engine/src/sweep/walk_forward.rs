//! Walk-forward optimization: sweep on a training window, test the best combination on the
//! window after it, move both forward, and report the out-of-sample results.
//!
//! Windows are counted in bars of the series. Fold k trains on bars
//! `[k x step, k x step + train)` and tests on the next `test` bars (fewer at the end of the
//! data). With the default step, equal to `test`, the test windows tile the range after the
//! first training window. A step above `test` leaves `step - test` bars after each test
//! window that no test window covers, and the aggregate out-of-sample result chains the test
//! windows across those gaps. A step below `test` is rejected, because overlapping test
//! windows would count the shared bars twice in the aggregate. Each test backtest starts from
//! the initial capital, and its indicators warm up inside the test window, as in any backtest
//! of that range.

use std::path::Path;

use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::TimestampMillisecondType;
use datafusion::prelude::{SessionContext, col};
use serde::Serialize;
use serde_json::{Map, Value};

use super::{SweepControl, SweepRequest, run_sweep};
use crate::backtest::run_backtest;
use crate::dataset::{self, TimeRange};
use crate::metrics::{max_drawdown_pct, sharpe_ratio};
use crate::{Error, Result};

/// Window sizes of a walk-forward, in bars.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalkForwardWindows {
    pub train: usize,
    pub test: usize,
    /// Bars between the starts of consecutive folds, at least `test`; defaults to `test`.
    pub step: Option<usize>,
}

impl WalkForwardWindows {
    /// Checks the window sizes: `train`, `test` and `step` above 0, and `step` at least
    /// `test`, so that no two test windows overlap.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`] naming `train`, `test` or `step`.
    pub fn validate(&self) -> Result<()> {
        for (name, size) in [
            ("train", Some(self.train)),
            ("test", Some(self.test)),
            ("step", self.step),
        ] {
            if size == Some(0) {
                return Err(Error::InvalidParameter {
                    name: name.to_string(),
                    message: "expected a number of bars above 0, got 0".to_string(),
                });
            }
        }
        if let Some(step) = self.step
            && step < self.test
        {
            return Err(Error::InvalidParameter {
                name: "step".to_string(),
                message: format!(
                    "step {step} is smaller than test {test}, so consecutive test windows \
                     would share {shared} bars and the out-of-sample result would count them \
                     twice; set step to at least {test} (equal to test, the default, tiles the \
                     range)",
                    test = self.test,
                    shared = self.test - step,
                ),
            });
        }
        Ok(())
    }
}

/// One fold: its ranges, the combination chosen on the training window and its results.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Fold {
    /// Training range `[start, end)`, open times in epoch milliseconds.
    pub train_start_ms: i64,
    pub train_end_ms: i64,
    /// Test range `[start, end)`, open times in epoch milliseconds.
    pub test_start_ms: i64,
    pub test_end_ms: i64,
    pub train_bars: usize,
    pub test_bars: usize,
    /// Parameters of the best training combination; empty when none was valid.
    pub params: Map<String, Value>,
    /// Metrics of those parameters on the training window.
    pub in_sample: Value,
    /// Metrics of those parameters on the test window; null when no combination was valid.
    pub out_of_sample: Value,
}

/// The test windows taken together.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutOfSample {
    /// Compounded return of the test windows, in percent.
    pub total_return: f64,
    pub total_trades: u64,
    /// Sharpe ratio of the per-bar returns of all test windows, annualized.
    pub sharpe_ratio: Option<f64>,
    /// Largest fall of the chained test equity curves, in percent.
    pub max_drawdown: f64,
}

/// Folds and the aggregate out-of-sample result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WalkForwardReport {
    pub folds: Vec<Fold>,
    pub out_of_sample: OutOfSample,
    pub metric: String,
}

/// Returns the open times of the bars of a range.
async fn open_times(
    ctx: &SessionContext,
    data_dir: &Path,
    request: &SweepRequest,
) -> Result<Vec<i64>> {
    let batches = dataset::bars_frame(ctx, data_dir, &request.series, &request.range)
        .await?
        .select(vec![col("open_time")])?
        .sort(vec![col("open_time").sort(true, false)])?
        .collect()
        .await?;
    let mut times = Vec::new();
    for batch in &batches {
        times.extend_from_slice(
            batch
                .column(0)
                .as_primitive::<TimestampMillisecondType>()
                .values(),
        );
    }
    Ok(times)
}

/// Returns `(train_start, test_start, test_end)` bar indexes of each fold over `bars` bars.
/// Folds start every `step` bars while a training window and one test bar fit. The windows
/// are not checked here, so callers run [`WalkForwardWindows::validate`] first.
pub fn fold_bounds(bars: usize, windows: WalkForwardWindows) -> Vec<(usize, usize, usize)> {
    let step = windows.step.unwrap_or(windows.test).max(1);
    let mut folds = Vec::new();
    let mut start = 0;
    while start + windows.train < bars {
        let test_start = start + windows.train;
        let test_end = (test_start + windows.test).min(bars);
        folds.push((start, test_start, test_end));
        start += step;
    }
    folds
}

/// Runs a walk-forward optimization of `request`'s space over its range.
///
/// # Errors
///
/// [`Error::InvalidParameter`] for windows that [`WalkForwardWindows::validate`] rejects or a
/// range too short for one fold, and the errors of [`run_sweep`].
pub async fn run_walk_forward(
    ctx: &SessionContext,
    data_dir: &Path,
    request: &SweepRequest,
    windows: WalkForwardWindows,
    control: &SweepControl,
) -> Result<WalkForwardReport> {
    windows.validate()?;
    let times = open_times(ctx, data_dir, request).await?;
    let folds = fold_bounds(times.len(), windows);
    if folds.is_empty() {
        return Err(Error::InvalidParameter {
            name: "train".to_string(),
            message: format!(
                "the range has {} bars, fewer than one training window of {} plus one test bar",
                times.len(),
                windows.train
            ),
        });
    }
    let end_of = |index: usize| {
        if index < times.len() {
            times[index]
        } else {
            times[times.len() - 1] + 1
        }
    };

    let mut results = Vec::with_capacity(folds.len());
    let mut chained = vec![1.0_f64];
    let mut returns = Vec::new();
    let mut compounded = 1.0;
    let mut total_trades = 0;
    for (train_start, test_start, test_end) in folds {
        if control.cancel.load(std::sync::atomic::Ordering::Relaxed) {
            break;
        }
        let mut train = request.clone();
        train.range = TimeRange {
            start_ms: Some(times[train_start]),
            end_ms: Some(times[test_start]),
        };
        train.top = 1;
        let sweep = run_sweep(ctx, data_dir, &train, control).await?;
        let mut fold = Fold {
            train_start_ms: times[train_start],
            train_end_ms: times[test_start],
            test_start_ms: times[test_start],
            test_end_ms: end_of(test_end),
            train_bars: test_start - train_start,
            test_bars: test_end - test_start,
            params: Map::new(),
            in_sample: Value::Null,
            out_of_sample: Value::Null,
        };
        if let Some(best) = sweep.results.into_iter().next() {
            let mut test = request.backtest_request(&best.params)?;
            test.range = TimeRange {
                start_ms: Some(fold.test_start_ms),
                end_ms: Some(fold.test_end_ms),
            };
            let report = run_backtest(ctx, data_dir, &test).await?;
            let scale = chained[chained.len() - 1] / test.initial_capital;
            chained.extend(report.equity.iter().map(|point| point.equity * scale));
            returns.extend(
                report
                    .equity
                    .windows(2)
                    .map(|pair| pair[1].equity / pair[0].equity - 1.0),
            );
            compounded *= report.metrics.final_capital / test.initial_capital;
            total_trades += report.metrics.total_trades;
            fold.params = best.params;
            fold.in_sample = best.metrics;
            fold.out_of_sample = serde_json::to_value(&report.metrics)
                .map_err(|error| Error::Internal(format!("walk-forward metrics: {error}")))?;
        }
        results.push(fold);
    }

    // Sharpe of the concatenated returns: rebuild a curve from them so the shared function
    // applies.
    let mut curve = Vec::with_capacity(returns.len() + 1);
    curve.push(1.0);
    for value in &returns {
        let last = curve[curve.len() - 1];
        curve.push(last * (1.0 + value));
    }
    Ok(WalkForwardReport {
        folds: results,
        out_of_sample: OutOfSample {
            total_return: (compounded - 1.0) * 100.0,
            total_trades,
            sharpe_ratio: sharpe_ratio(&curve, request.series.timeframe.bars_per_year()),
            max_drawdown: max_drawdown_pct(&chained).unwrap_or(0.0),
        },
        metric: request.metric.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_tile_after_first_training_window() {
        let windows = WalkForwardWindows {
            train: 100,
            test: 30,
            step: None,
        };
        let folds = fold_bounds(200, windows);
        assert_eq!(
            folds,
            vec![
                (0, 100, 130),
                (30, 130, 160),
                (60, 160, 190),
                (90, 190, 200)
            ]
        );
    }

    #[test]
    fn step_equal_to_test_is_default() {
        let default = WalkForwardWindows {
            train: 100,
            test: 30,
            step: None,
        };
        let explicit = WalkForwardWindows {
            step: Some(30),
            ..default
        };
        assert_eq!(fold_bounds(200, explicit), fold_bounds(200, default));
    }

    #[test]
    fn step_above_test_leaves_gaps() {
        let windows = WalkForwardWindows {
            train: 100,
            test: 30,
            step: Some(50),
        };
        // Bars 130..150 and 180..200 are in no test window.
        assert_eq!(
            fold_bounds(240, windows),
            vec![(0, 100, 130), (50, 150, 180), (100, 200, 230)]
        );
    }

    #[test]
    fn step_below_test_is_rejected() {
        let windows = WalkForwardWindows {
            train: 100,
            test: 30,
            step: Some(20),
        };
        match windows.validate() {
            Err(Error::InvalidParameter { name, message }) => {
                assert_eq!(name, "step");
                assert!(message.contains("step 20"), "{message}");
                assert!(message.contains("test 30"), "{message}");
                assert!(message.contains("share 10 bars"), "{message}");
            }
            other => panic!("expected an error naming step, got {other:?}"),
        }
        let equal = WalkForwardWindows {
            step: Some(30),
            ..windows
        };
        assert!(equal.validate().is_ok());
    }

    #[test]
    fn zero_windows_are_rejected() {
        let cases = [
            (
                "train",
                WalkForwardWindows {
                    train: 0,
                    test: 30,
                    step: None,
                },
            ),
            (
                "test",
                WalkForwardWindows {
                    train: 100,
                    test: 0,
                    step: None,
                },
            ),
            (
                "step",
                WalkForwardWindows {
                    train: 100,
                    test: 30,
                    step: Some(0),
                },
            ),
        ];
        for (expected, windows) in cases {
            match windows.validate() {
                Err(Error::InvalidParameter { name, .. }) => assert_eq!(name, expected),
                other => panic!("expected an error naming {expected}, got {other:?}"),
            }
        }
    }

    #[test]
    fn too_short_range_has_no_fold() {
        let windows = WalkForwardWindows {
            train: 100,
            test: 30,
            step: None,
        };
        assert!(fold_bounds(100, windows).is_empty());
        assert_eq!(fold_bounds(101, windows), vec![(0, 100, 101)]);
    }
}
