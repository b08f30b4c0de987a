//! Sweeps on the real samples: every combination equals the single backtest of its
//! parameters, random search is reproducible, walk-forward test windows never overlap, and the
//! deflated Sharpe ratio matches values computed with scipy and a recomputation from the
//! oracle.

#[path = "../../tests/support/deflated_sharpe.rs"]
mod deflated_sharpe;

use std::path::Path;
use std::sync::OnceLock;
use std::sync::atomic::Ordering;

use bst_engine::sweep::deflated::{deflated_sharpe_ratio, expected_max_sharpe};
use bst_engine::sweep::space::ParameterSpace;
use bst_engine::sweep::walk_forward::{WalkForwardWindows, run_walk_forward};
use bst_engine::sweep::{
    SearchMethod, SweepControl, SweepRequest, explain_sweep, metric_value, run_sweep,
};
use bst_engine::{Engine, Error, SeriesKey, TimeRange};
use bst_ingest::{Category, Timeframe, csv_klines, samples, writer};
use serde_json::{Value, json};

/// Returns a data directory with the BTCUSDT 1- and 5-minute samples, shared by the tests.
fn data_dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        for minutes in [1_u32, 5] {
            let path = samples::require_datasets_dir()
                .join(format!("bybit/klines/BTCUSDT_{minutes}m.csv.gz"));
            let klines = csv_klines::read_kline_csv(&path).unwrap();
            writer::write_klines(
                dir.path(),
                Category::Linear,
                "BTCUSDT",
                Timeframe::Minutes(minutes),
                &klines,
            )
            .unwrap();
        }
        dir
    })
    .path()
}

fn series(minutes: u32) -> SeriesKey {
    SeriesKey {
        category: Category::Linear,
        symbol: "BTCUSDT".to_string(),
        timeframe: Timeframe::Minutes(minutes),
    }
}

/// Returns the first two weeks of the 1-minute sample.
fn two_weeks() -> TimeRange {
    TimeRange {
        start_ms: Some(1_748_736_000_000),
        end_ms: Some(1_749_945_600_000),
    }
}

fn request(strategy: &str, grid: Value, base: Value) -> SweepRequest {
    let mut request = SweepRequest::new(series(1), strategy, ParameterSpace::parse(&grid).unwrap());
    request.range = two_weeks();
    request.base_config = base.as_object().unwrap().clone();
    request.top = 0;
    request
}

/// Runs the sweep and checks each combination against its single backtest.
async fn assert_matches_single_backtests(request: &SweepRequest, expected_skipped: u64) {
    let engine = Engine::open(data_dir()).unwrap();
    let report = run_sweep(
        engine.session(),
        engine.data_dir(),
        request,
        &SweepControl::default(),
    )
    .await
    .unwrap();
    let label = &request.strategy_type;
    assert_eq!(report.skipped, expected_skipped, "{label} skipped");
    assert_eq!(
        report.evaluated + report.skipped,
        report.tried,
        "{label} evaluated + skipped"
    );
    assert_eq!(
        report.results.len() as u64,
        report.evaluated,
        "{label} results"
    );
    assert!(!report.cancelled);
    for result in &report.results {
        let single = engine
            .run_backtest(&request.backtest_request(&result.params).unwrap())
            .await
            .unwrap();
        let expected = serde_json::to_value(&single.metrics).unwrap();
        assert_eq!(
            result.metrics, expected,
            "{label} {:?}: sweep metrics differ from the single backtest",
            result.params
        );
    }
    // Ranked best first by the metric, nulls last.
    let scores: Vec<Option<f64>> = report
        .results
        .iter()
        .map(|result| metric_value(result, &request.metric))
        .collect();
    for pair in scores.windows(2) {
        match (pair[0], pair[1]) {
            (Some(a), Some(b)) => assert!(a >= b, "{label}: {a} ranked before {b}"),
            (None, Some(_)) => panic!("{label}: a null metric ranked before a value"),
            _ => {}
        }
    }
}

#[tokio::test]
async fn sma_grid_matches_single_backtests() {
    let request = request(
        "sma_crossover",
        json!({"fast_period": [5, 10, 20], "slow_period": {"low": 20, "high": 40, "step": 10}}),
        json!({}),
    );
    // 20/20 is not a valid crossover.
    assert_matches_single_backtests(&request, 1).await;
}

#[tokio::test]
async fn other_strategies_match_single_backtests() {
    let cases = [
        (
            "ema_crossover",
            json!({"fast_period": [8, 12], "slow_period": [26, 40]}),
            json!({"direction": "both", "stop_loss": 0.01, "take_profit": 0.02}),
        ),
        (
            "rsi",
            json!({"period": [7, 14], "oversold": [25, 30]}),
            json!({"overbought": 70, "slippage": 0.0002}),
        ),
        (
            "macd",
            json!({"signal_period": [5, 9]}),
            json!({"direction": "short", "funding_rate": 0.0001}),
        ),
        (
            "bollinger_bands",
            json!({"period": [20, 30], "std_dev": {"low": 1.5, "high": 2.5, "step": 0.5}}),
            json!({"position_size": 0.5}),
        ),
    ];
    for (strategy, grid, base) in cases {
        let mut request = request(strategy, grid, base);
        request.leverage = 3.0;
        assert_matches_single_backtests(&request, 0).await;
    }
}

#[tokio::test]
async fn plan_shares_indicator_columns() {
    let engine = Engine::open(data_dir()).unwrap();
    let request = request(
        "sma_crossover",
        json!({"fast_period": [5, 10, 20], "slow_period": [20, 30, 50]}),
        json!({}),
    );
    let plan = explain_sweep(engine.session(), engine.data_dir(), &request)
        .await
        .unwrap();
    // 8 valid combinations read 5 distinct SMAs (5, 10, 20, 30, 50), each computed once.
    assert!(
        plan.contains("SweepExec: combinations=8, shared_indicators=5"),
        "{plan}"
    );
    assert_eq!(plan.matches("SweepExec").count(), 1, "{plan}");
    assert!(
        !plan.contains("SortExec"),
        "the bars are read in order:\n{plan}"
    );
}

#[tokio::test]
async fn random_search_is_reproducible() {
    let engine = Engine::open(data_dir()).unwrap();
    let mut request = request(
        "sma_crossover",
        json!({"fast_period": {"low": 2, "high": 30, "step": 1},
               "slow_period": {"low": 10, "high": 120, "step": 5}}),
        json!({}),
    );
    let mut run = |seed: u64| {
        request.method = SearchMethod::Random { trials: 12, seed };
        let request = request.clone();
        let engine = engine.clone();
        async move {
            run_sweep(
                engine.session(),
                engine.data_dir(),
                &request,
                &SweepControl::default(),
            )
            .await
            .unwrap()
        }
    };
    let first = run(42).await;
    let again = run(42).await;
    let other = run(43).await;
    assert_eq!(first.tried, 12);
    let params = |report: &bst_engine::sweep::SweepReport| {
        let mut list: Vec<String> = report
            .results
            .iter()
            .map(|result| Value::Object(result.params.clone()).to_string())
            .collect();
        list.sort();
        list
    };
    assert_eq!(params(&first), params(&again));
    assert_eq!(first.results, again.results);
    assert_ne!(params(&first), params(&other));
}

#[tokio::test]
async fn cancelled_sweep_stops_early() {
    let engine = Engine::open(data_dir()).unwrap();
    let request = request(
        "sma_crossover",
        json!({"fast_period": [5, 10], "slow_period": [20, 30]}),
        json!({}),
    );
    let control = SweepControl::default();
    control.cancel.store(true, Ordering::Relaxed);
    let report = run_sweep(engine.session(), engine.data_dir(), &request, &control)
        .await
        .unwrap();
    assert!(report.cancelled);
    assert_eq!(report.evaluated, 0);
    assert!(report.results.is_empty());
}

/// Returns a walk-forward request over the whole 5-minute sample, ranked by total return.
fn walk_forward_request() -> SweepRequest {
    let mut request = SweepRequest::new(
        series(5),
        "sma_crossover",
        ParameterSpace::parse(&json!({"fast_period": [5, 10], "slow_period": [20, 40]})).unwrap(),
    );
    request.metric = "total_return".to_string();
    request
}

#[tokio::test]
async fn walk_forward_folds_tile_range() {
    let engine = Engine::open(data_dir()).unwrap();
    let request = walk_forward_request();
    let windows = WalkForwardWindows {
        train: 2_000,
        test: 1_000,
        step: Some(1_000),
    };
    let report = run_walk_forward(
        engine.session(),
        engine.data_dir(),
        &request,
        windows,
        &SweepControl::default(),
    )
    .await
    .unwrap();
    // The 5-minute sample has 25,920 bars, five minutes apart: folds start every 1,000 bars
    // while a training window and one test bar fit.
    let bar_ms = 300_000;
    assert_eq!(report.folds.len(), 24);
    let first = &report.folds[0];
    assert_eq!(first.train_end_ms, first.test_start_ms);
    for (index, fold) in report.folds.iter().enumerate() {
        assert!(fold.train_start_ms < fold.train_end_ms, "fold {index}");
        assert!(
            fold.train_end_ms <= fold.test_start_ms,
            "fold {index} overlaps"
        );
        assert_eq!(fold.train_bars, 2_000, "fold {index}");
        assert_eq!(
            fold.train_end_ms - fold.train_start_ms,
            2_000 * bar_ms,
            "fold {index} train span"
        );
        assert!(!fold.params.is_empty(), "fold {index} chose no parameters");
        assert!(fold.out_of_sample.is_object(), "fold {index}");
        if let Some(next) = report.folds.get(index + 1) {
            assert_eq!(
                next.test_start_ms, fold.test_end_ms,
                "fold {index} does not tile"
            );
        }
    }
    let last = &report.folds[report.folds.len() - 1];
    assert_eq!(last.test_bars, 25_920 - 2_000 - 23 * 1_000);
    let total_test_bars: usize = report.folds.iter().map(|fold| fold.test_bars).sum();
    assert_eq!(total_test_bars, 25_920 - 2_000);

    let trades: u64 = report
        .folds
        .iter()
        .map(|fold| fold.out_of_sample["total_trades"].as_u64().unwrap())
        .sum();
    assert_eq!(report.out_of_sample.total_trades, trades);
    let compounded = report
        .folds
        .iter()
        .map(|fold| 1.0 + fold.out_of_sample["total_return"].as_f64().unwrap() / 100.0)
        .product::<f64>();
    let total = report.out_of_sample.total_return;
    assert!((total - (compounded - 1.0) * 100.0).abs() < 1e-9, "{total}");
}

#[tokio::test]
async fn walk_forward_step_above_test_leaves_gaps() {
    let engine = Engine::open(data_dir()).unwrap();
    let request = walk_forward_request();
    let (train, test, step) = (2_000_usize, 1_000_usize, 1_500_usize);
    let windows = WalkForwardWindows {
        train,
        test,
        step: Some(step),
    };
    let report = run_walk_forward(
        engine.session(),
        engine.data_dir(),
        &request,
        windows,
        &SweepControl::default(),
    )
    .await
    .unwrap();

    // Folds start at bars 0, 1,500, 3,000, ... while a training window and one test bar fit
    // in the 25,920 bars, so the last starts at bar 22,500.
    let bar_ms = 300_000;
    let expected_starts: Vec<usize> = (0..)
        .map(|fold| fold * step)
        .take_while(|start| start + train < 25_920)
        .collect();
    assert_eq!(report.folds.len(), expected_starts.len());
    assert_eq!(report.folds.len(), 16);
    let first_open_ms = report.folds[0].train_start_ms;
    for (index, fold) in report.folds.iter().enumerate() {
        let start_ms = first_open_ms + (expected_starts[index] as i64) * bar_ms;
        assert_eq!(fold.train_start_ms, start_ms, "fold {index} start");
        assert_eq!(fold.test_start_ms, fold.train_end_ms, "fold {index}");
        assert_eq!(fold.test_bars, test, "fold {index} test bars");
        assert_eq!(
            fold.test_end_ms - fold.test_start_ms,
            test as i64 * bar_ms,
            "fold {index} test span"
        );
        if let Some(next) = report.folds.get(index + 1) {
            // The next test window starts `step - test` bars after this one ends.
            assert_eq!(
                next.test_start_ms - fold.test_end_ms,
                (step - test) as i64 * bar_ms,
                "gap after fold {index}"
            );
        }
    }
    let compounded = report
        .folds
        .iter()
        .map(|fold| 1.0 + fold.out_of_sample["total_return"].as_f64().unwrap() / 100.0)
        .product::<f64>();
    let total = report.out_of_sample.total_return;
    assert!((total - (compounded - 1.0) * 100.0).abs() < 1e-9, "{total}");
}

#[tokio::test]
async fn walk_forward_rejects_step_below_test() {
    let engine = Engine::open(data_dir()).unwrap();
    let windows = WalkForwardWindows {
        train: 2_000,
        test: 1_000,
        step: Some(999),
    };
    let error = run_walk_forward(
        engine.session(),
        engine.data_dir(),
        &walk_forward_request(),
        windows,
        &SweepControl::default(),
    )
    .await
    .unwrap_err();
    let Error::InvalidParameter { name, message } = &error else {
        panic!("expected an invalid step, got {error:?}");
    };
    assert_eq!(name, "step");
    assert!(message.contains("step 999"), "{message}");
    assert!(message.contains("test 1000"), "{message}");
}

#[test]
fn deflated_sharpe_matches_scipy() {
    // (per-bar Sharpe, trials, variance of the trials' Sharpe, returns, skewness, kurtosis),
    // then SR0 and DSR from scipy.stats.norm 1.x with the formulas of Bailey and Lopez de
    // Prado (2014).
    let cases = [
        (
            (0.01, 100, 0.0001, 5_000, -0.5, 6.0),
            0.025_306_028_932_016_847,
            0.140_198_276_032_815_2,
        ),
        (
            (0.05, 1_000, 0.0004, 250, 0.2, 3.5),
            0.065_102_430_273_054_46,
            0.405_427_132_858_625_4,
        ),
        (
            (0.002, 20, 0.000_001, 43_199, -1.2, 12.0),
            0.001_900_707_951_181_198_9,
            0.508_222_477_515_161_1,
        ),
    ];
    for ((sharpe, trials, variance, returns, skewness, kurtosis), threshold, expected) in cases {
        let got_threshold = expected_max_sharpe(trials, variance);
        assert!(
            (got_threshold - threshold).abs() < 1e-12,
            "SR0 {got_threshold} vs {threshold}"
        );
        let got =
            deflated_sharpe_ratio(sharpe, trials, variance, returns, skewness, kurtosis).unwrap();
        assert!((got - expected).abs() < 1e-12, "DSR {got} vs {expected}");
    }
}

#[tokio::test]
async fn sweep_reports_deflated_sharpe() {
    let engine = Engine::open(data_dir()).unwrap();
    // A slow period of 30,000 bars is longer than the two weeks, so those three combinations
    // never trade and have no Sharpe ratio, but they are trials all the same. Without
    // commission the best Sharpe ratio is near the one expected by luck, so the deflated
    // Sharpe ratio lies well inside (0, 1) and the comparison below is sharp.
    let mut request = request(
        "sma_crossover",
        json!({"fast_period": [20, 50, 100], "slow_period": [200, 400, 30_000]}),
        json!({}),
    );
    request.commission = 0.0;
    let report = run_sweep(
        engine.session(),
        engine.data_dir(),
        &request,
        &SweepControl::default(),
    )
    .await
    .unwrap();
    assert_eq!(report.evaluated, 9);
    assert_eq!(report.results.len(), 9);
    let sharpe_ratios: Vec<Option<f64>> = report
        .results
        .iter()
        .map(|result| metric_value(result, "sharpe_ratio"))
        .collect();
    let nulls = sharpe_ratios.iter().filter(|value| value.is_none()).count();
    assert_eq!(nulls, 3, "{sharpe_ratios:?}");

    let best = &report.results[0].params;
    let period = |name: &str| best[name].as_u64().unwrap() as usize;
    let best_sharpe = sharpe_ratios[0].expect("the best combination has a Sharpe ratio");
    let range = two_weeks();
    let expected = deflated_sharpe::sma_crossover_deflated_sharpe(
        &sharpe_ratios,
        best_sharpe,
        (period("fast_period"), period("slow_period")),
        (range.start_ms.unwrap(), range.end_ms.unwrap()),
        0.0,
    );
    let reported = report
        .deflated_sharpe_ratio
        .expect("deflated Sharpe ratio of the best combination");
    assert!(
        (0.01..=0.99).contains(&expected),
        "deflated Sharpe ratio {expected} is too near 0 or 1 to tell formulas apart"
    );
    assert!(
        (reported - expected).abs() <= 1e-9,
        "deflated Sharpe ratio: reported {reported}, recomputed {expected}"
    );

    // The check can tell the trial counts apart: with only the six combinations that have a
    // Sharpe ratio as trials, the value moves by far more than the tolerance.
    let defined: Vec<Option<f64>> = sharpe_ratios
        .iter()
        .copied()
        .filter(Option::is_some)
        .collect();
    let six_trials = deflated_sharpe::sma_crossover_deflated_sharpe(
        &defined,
        best_sharpe,
        (period("fast_period"), period("slow_period")),
        (range.start_ms.unwrap(), range.end_ms.unwrap()),
        0.0,
    );
    assert!(
        (six_trials - expected).abs() > 1e-6,
        "9 trials give {expected} and 6 give {six_trials}"
    );
}
