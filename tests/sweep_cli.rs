//! `bst sweep` end to end: the real binary on a temporary dataset imported from the BTCUSDT
//! 1- and 5-minute samples.

#[path = "support/deflated_sharpe.rs"]
mod deflated_sharpe;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::OnceLock;

use serde_json::{Value, json};
use tempfile::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_bst");

const TWO_WEEKS: (&str, &str) = ("2025-06-01T00:00:00Z", "2025-06-15T00:00:00Z");

/// The same range in epoch milliseconds.
const TWO_WEEKS_MS: (i64, i64) = (1_748_736_000_000, 1_749_945_600_000);

fn sample_file(name: &str) -> PathBuf {
    bst_ingest::samples::require_datasets_dir()
        .join("bybit/klines")
        .join(name)
}

fn bst(args: &[&str], data_dir: &Path) -> Output {
    Command::new(BIN)
        .args(args)
        .env("BST_DATA_DIR", data_dir)
        .env_remove("BST_DATASETS_DIR")
        .output()
        .expect("failed to run the bst binary")
}

/// Runs `bst` and parses its standard output as JSON, failing the test on a non-zero exit.
fn bst_json(args: &[&str]) -> Value {
    let output = bst(args, data_dir());
    assert!(
        output.status.success(),
        "bst {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("--json prints one JSON document")
}

/// Returns a data folder with the BTCUSDT 1- and 5-minute samples imported by `bst ingest`,
/// shared by the tests of this file.
fn data_dir() -> &'static Path {
    static DIR: OnceLock<TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        for name in ["BTCUSDT_1m.csv.gz", "BTCUSDT_5m.csv.gz"] {
            let file = sample_file(name);
            let output = bst(&["ingest", "klines", file.to_str().unwrap()], dir.path());
            assert!(
                output.status.success(),
                "import of {name} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        dir
    })
    .path()
}

/// Runs a sweep of `sma_crossover` over the two weeks with `extra` flags, keeping every
/// result.
fn sma_sweep(grid: &Value, extra: &[&str]) -> Value {
    let grid = grid.to_string();
    let mut args = vec![
        "sweep",
        "--symbol",
        "BTCUSDT",
        "--interval",
        "1",
        "--strategy",
        "sma_crossover",
        "--grid",
        &grid,
        "--start",
        TWO_WEEKS.0,
        "--end",
        TWO_WEEKS.1,
        "--top",
        "0",
        "--json",
    ];
    args.extend_from_slice(extra);
    bst_json(&args)
}

fn params_of(report: &Value) -> Vec<Value> {
    report["results"]
        .as_array()
        .expect("results array")
        .iter()
        .map(|result| result["params"].clone())
        .collect()
}

fn period(params: &Value, name: &str) -> usize {
    params[name].as_u64().expect("a whole-number period") as usize
}

#[test]
fn grid_json_is_ranked_and_counted() {
    let fast_periods = [20_u64, 50, 100, 200];
    // 30,000 bars is longer than the range, so those combinations never trade and their
    // Sharpe ratio is null.
    let slow_periods = [50_u64, 100, 400, 30_000];
    let grid = json!({"fast_period": fast_periods, "slow_period": slow_periods});
    // Without commission the best Sharpe ratio is near the one expected by luck, so the
    // deflated Sharpe ratio lies well inside (0, 1).
    let report = sma_sweep(&grid, &["--commission", "0"]);

    let mut expected_skipped = 0;
    let mut expected_never_trading = 0;
    for fast in fast_periods {
        for slow in slow_periods {
            if fast >= slow {
                expected_skipped += 1;
            } else if slow == 30_000 {
                expected_never_trading += 1;
            }
        }
    }
    let tried = (fast_periods.len() * slow_periods.len()) as u64;
    assert_eq!(report["tried"], tried);
    assert_eq!(report["skipped"], expected_skipped);
    assert_eq!(report["evaluated"], tried - expected_skipped);
    assert_eq!(report["metric"], "sharpe_ratio");
    assert_eq!(report["cancelled"], false);

    let results = report["results"].as_array().expect("results array");
    assert_eq!(results.len() as u64, tried - expected_skipped);
    let mut sharpe_ratios = Vec::new();
    for result in results {
        let params = result["params"].as_object().expect("params object");
        assert_eq!(params.len(), 2, "params {params:?}");
        let (fast, slow) = (
            period(&result["params"], "fast_period"),
            period(&result["params"], "slow_period"),
        );
        assert!(
            fast < slow,
            "invalid combination {fast}/{slow} was evaluated"
        );
        let metrics = result["metrics"].as_object().expect("metrics object");
        assert!(metrics.contains_key("total_return"), "metrics {metrics:?}");
        sharpe_ratios.push(metrics["sharpe_ratio"].as_f64());
    }

    // Ranked by Sharpe ratio, best first, with the null ones last.
    let defined = sharpe_ratios
        .iter()
        .take_while(|value| value.is_some())
        .count();
    assert_eq!(results.len() - defined, expected_never_trading);
    assert!(sharpe_ratios[defined..].iter().all(Option::is_none));
    for pair in sharpe_ratios[..defined].windows(2) {
        assert!(pair[0] >= pair[1], "ranked {pair:?}");
    }

    // The deflated Sharpe ratio counts every evaluated combination as a trial.
    let best = &results[0]["params"];
    let expected = deflated_sharpe::sma_crossover_deflated_sharpe(
        &sharpe_ratios,
        sharpe_ratios[0].unwrap(),
        (period(best, "fast_period"), period(best, "slow_period")),
        TWO_WEEKS_MS,
        0.0,
    );
    let reported = report["deflated_sharpe_ratio"]
        .as_f64()
        .expect("deflated Sharpe ratio");
    assert!(
        (reported - expected).abs() <= 1e-9,
        "deflated Sharpe ratio: reported {reported}, recomputed {expected}"
    );
}

#[test]
fn top_result_equals_single_backtest() {
    let grid = json!({"fast_period": [5, 10, 20], "slow_period": [30, 60]});
    let report = sma_sweep(&grid, &["--metric", "total_return"]);
    let top = &report["results"][0];
    let returns: Vec<f64> = report["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|result| result["metrics"]["total_return"].as_f64().unwrap())
        .collect();
    assert!(
        returns.windows(2).all(|pair| pair[0] >= pair[1]),
        "{returns:?}"
    );

    let params = top["params"].to_string();
    let single = bst_json(&[
        "backtest",
        "--symbol",
        "BTCUSDT",
        "--interval",
        "1",
        "--strategy",
        "sma_crossover",
        "--params",
        &params,
        "--start",
        TWO_WEEKS.0,
        "--end",
        TWO_WEEKS.1,
        "--json",
    ]);
    assert_eq!(top["metrics"], single, "sweep metrics of {params} differ");
}

#[test]
fn random_search_repeats_with_seed() {
    let grid = json!({
        "fast_period": {"low": 2, "high": 30, "step": 1},
        "slow_period": {"low": 10, "high": 120, "step": 5},
    });
    let random = ["--method", "random", "--trials", "8", "--seed", "11"];
    let first = sma_sweep(&grid, &random);
    let again = sma_sweep(&grid, &random);
    let other = sma_sweep(
        &grid,
        &["--method", "random", "--trials", "8", "--seed", "12"],
    );

    assert_eq!(first["tried"], 8);
    assert_eq!(params_of(&first), params_of(&again));
    assert_eq!(first["results"], again["results"]);
    let mut drawn = params_of(&first);
    drawn.sort_by_key(Value::to_string);
    drawn.dedup();
    let skipped = first["skipped"].as_u64().unwrap();
    assert_eq!(drawn.len() as u64 + skipped, 8, "distinct combinations");
    for params in &drawn {
        let fast = period(params, "fast_period");
        let slow = period(params, "slow_period");
        assert!((2..=30).contains(&fast), "{params}");
        assert!((10..=120).contains(&slow), "{params}");
        assert!(slow.is_multiple_of(5), "{params}");
    }
    let mut other_drawn = params_of(&other);
    other_drawn.sort_by_key(Value::to_string);
    assert_ne!(
        drawn, other_drawn,
        "seeds 11 and 12 drew the same combinations"
    );
}

#[test]
fn walk_forward_folds_tile_5m_data() {
    let bars = bst_ingest::csv_klines::read_kline_csv(&sample_file("BTCUSDT_5m.csv.gz"))
        .unwrap()
        .len();
    let (train, test) = (2_000_usize, 1_000_usize);
    let report = bst_json(&[
        "sweep",
        "--symbol",
        "BTCUSDT",
        "--interval",
        "5",
        "--grid",
        r#"{"fast_period":[5,10],"slow_period":[20,40]}"#,
        "--method",
        "walk_forward",
        "--train",
        "2000",
        "--test",
        "1000",
        "--metric",
        "total_return",
        "--json",
    ]);

    // Folds start every `test` bars while a training window and one test bar fit.
    let mut expected_folds = 0;
    while expected_folds * test + train < bars {
        expected_folds += 1;
    }
    let folds = report["folds"].as_array().expect("folds array");
    assert_eq!(folds.len(), expected_folds);
    let bar_ms = 5 * 60_000;
    let field = |fold: &Value, name: &str| fold[name].as_i64().unwrap();
    for (index, fold) in folds.iter().enumerate() {
        assert_eq!(fold["train_bars"], train, "fold {index}");
        assert_eq!(
            field(fold, "train_end_ms") - field(fold, "train_start_ms"),
            train as i64 * bar_ms,
            "fold {index} train span"
        );
        assert_eq!(
            field(fold, "train_end_ms"),
            field(fold, "test_start_ms"),
            "fold {index} tests right after training"
        );
        assert!(
            fold["params"]
                .as_object()
                .is_some_and(|params| !params.is_empty())
        );
        if let Some(next) = folds.get(index + 1) {
            assert_eq!(fold["test_bars"], test, "fold {index}");
            assert_eq!(
                field(next, "test_start_ms"),
                field(fold, "test_end_ms"),
                "fold {index} and the next do not tile"
            );
        }
    }
    let test_bars: u64 = folds
        .iter()
        .map(|fold| fold["test_bars"].as_u64().unwrap())
        .sum();
    assert_eq!(test_bars as usize, bars - train);
    assert!(report["out_of_sample"]["total_return"].is_number());
}

#[test]
fn overlapping_walk_forward_step_fails() {
    let output = bst(
        &[
            "sweep",
            "--symbol",
            "BTCUSDT",
            "--interval",
            "5",
            "--grid",
            r#"{"fast_period":[5],"slow_period":[20]}"#,
            "--method",
            "walk_forward",
            "--train",
            "2000",
            "--test",
            "1000",
            "--step",
            "400",
        ],
        data_dir(),
    );
    assert!(!output.status.success(), "a step below test was accepted");
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(message.contains("step 400"), "{message}");
    assert!(message.contains("test 1000"), "{message}");
}

#[test]
fn invalid_grid_value_is_named() {
    let cases = [
        (
            r#"{"fast_period":{"low":5,"high":20,"step":0}}"#,
            "fast_period",
            "step 0",
        ),
        (
            r#"{"fast_period":["ten"],"slow_period":[30]}"#,
            "fast_period",
            "\"ten\"",
        ),
        (
            r#"{"fast_period":[5],"slow_period":[0]}"#,
            "slow_period",
            "got 0",
        ),
        (r#"{"fast_period":[5,"#, "--grid", "expected JSON"),
    ];
    for (grid, name, value) in cases {
        let output = bst(
            &[
                "sweep",
                "--symbol",
                "BTCUSDT",
                "--interval",
                "1",
                "--grid",
                grid,
                "--start",
                TWO_WEEKS.0,
                "--end",
                TWO_WEEKS.1,
            ],
            data_dir(),
        );
        assert!(!output.status.success(), "grid {grid} was accepted");
        let message = String::from_utf8_lossy(&output.stderr);
        assert!(message.contains(name), "grid {grid}: {message}");
        assert!(message.contains(value), "grid {grid}: {message}");
    }
}

/// Runs `bst` on the shared data folder with its standard output closed before the command
/// writes, as `head -1` closes it after the first line, and returns the exit status and
/// standard error.
fn bst_into_closed_pipe(args: &[&str]) -> (ExitStatus, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .env("BST_DATA_DIR", data_dir())
        .env_remove("BST_DATASETS_DIR")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("failed to run the bst binary");
    drop(child.stdout.take());
    let output = child.wait_with_output().expect("failed to wait for bst");
    (
        output.status,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn closed_stdout_ends_quietly() {
    let grid = r#"{"fast_period":[10,20],"slow_period":[50,100]}"#;
    let range = ["--start", TWO_WEEKS.0, "--end", TWO_WEEKS.1];
    let sweep_flags = ["sweep", "--symbol", "BTCUSDT", "--grid", grid, "--top", "0"];
    let sweep = [&sweep_flags[..], &range[..]].concat();
    let sweep_json = [&sweep[..], &["--json"][..]].concat();
    let backtest = [&["backtest", "--symbol", "BTCUSDT"][..], &range[..]].concat();
    for args in [sweep, sweep_json, backtest] {
        let (status, stderr) = bst_into_closed_pipe(&args);
        assert!(
            !stderr.contains("panicked"),
            "bst {args:?} panicked: {stderr}"
        );
        assert!(
            status.success(),
            "bst {args:?} exited with {status}: {stderr}"
        );
    }
}

#[test]
fn missing_data_dir_is_named_not_created() {
    let parent = tempfile::tempdir().unwrap();
    let missing = parent.path().join("mistyped");
    let missing_text = missing.to_str().unwrap();
    let grid = r#"{"fast_period":[10],"slow_period":[50]}"#;
    let commands: [&[&str]; 4] = [
        &["backtest", "--symbol", "BTCUSDT"],
        &[
            "backtest",
            "--symbol",
            "BTCUSDT",
            "--data-dir",
            missing_text,
        ],
        &["sweep", "--symbol", "BTCUSDT", "--grid", grid],
        &["resample", "--symbol", "BTCUSDT", "--to", "60"],
    ];
    for args in commands {
        // BST_DATA_DIR names the missing folder for the commands without --data-dir.
        let output = bst(args, &missing);
        let message = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "bst {args:?} succeeded");
        assert!(message.contains(missing_text), "bst {args:?}: {message}");
        assert!(
            message.contains("does not exist"),
            "bst {args:?}: {message}"
        );
        assert!(!missing.exists(), "bst {args:?} created {missing_text}");
    }
}
