//! `bst sweep`: a parameter sweep (grid, random search or walk-forward) over one series.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use bst_engine::sweep::space::ParameterSpace;
use bst_engine::sweep::walk_forward::{WalkForwardWindows, run_walk_forward};
use bst_engine::sweep::{
    SearchMethod, SweepControl, SweepReport, SweepRequest, metric_value, run_sweep,
};
use bst_engine::{Engine, SeriesKey, TimeRange};
use bst_ingest::{Category, Timeframe};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use crate::stdout::outln;

#[derive(Debug, Args)]
pub(crate) struct SweepArgs {
    /// Instrument, such as BTCUSDT.
    #[arg(long)]
    symbol: String,
    /// Bar interval: a Bybit code (1, 5, 60, D, ...) or an alias (1m, 1h, 1d, ...).
    #[arg(long, default_value = "1")]
    interval: String,
    /// Bybit category of the series: linear, spot or inverse.
    #[arg(long, default_value = "linear")]
    category: String,
    /// Built-in strategy type.
    #[arg(long, default_value = "sma_crossover")]
    strategy: String,
    /// Parameter space as JSON: each parameter maps to a list of values or to
    /// {"low": L, "high": H, "step": S}.
    #[arg(long)]
    grid: String,
    /// Parameters and order options shared by every combination, as a JSON object.
    #[arg(long, default_value = "{}")]
    params: String,
    /// grid (every combination), random (--trials combinations drawn with --seed) or
    /// walk_forward (--train, --test and --step in bars).
    #[arg(long, default_value = "grid")]
    method: String,
    /// Combinations drawn by random search.
    #[arg(long, default_value_t = 100)]
    trials: u64,
    /// Seed of random search; the same seed draws the same combinations.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Metric the results are ranked by.
    #[arg(long, default_value = "sharpe_ratio")]
    metric: String,
    /// Ranked results printed; 0 prints all.
    #[arg(long, default_value_t = 10)]
    top: usize,
    /// Training window of a walk-forward, in bars.
    #[arg(long)]
    train: Option<usize>,
    /// Test window of a walk-forward, in bars.
    #[arg(long)]
    test: Option<usize>,
    /// Bars between walk-forward folds, at least --test so that test windows never overlap.
    /// Default: the test window, so test windows tile the range.
    #[arg(long)]
    step: Option<usize>,
    /// First open time included (ISO 8601; without an offset it is UTC). Default: first bar.
    #[arg(long)]
    start: Option<String>,
    /// Open time where the range ends, excluded (ISO 8601). Default: after the last bar.
    #[arg(long)]
    end: Option<String>,
    /// Starting equity in quote currency.
    #[arg(long, default_value_t = bst_engine::backtest::DEFAULT_INITIAL_CAPITAL)]
    initial_capital: f64,
    /// Commission per leg as a fraction of notional (0.00055 is 0.055 %).
    #[arg(long, default_value_t = bst_engine::backtest::DEFAULT_COMMISSION)]
    commission: f64,
    /// Leverage: notional over margin, from 1 to 100.
    #[arg(long, default_value_t = 1.0)]
    leverage: f64,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
    /// Folder of the Parquet dataset.
    #[arg(long, env = "BST_DATA_DIR", default_value = "data")]
    data_dir: PathBuf,
}

fn parse_json(flag: &str, text: &str) -> Result<serde_json::Value> {
    serde_json::from_str(text).with_context(|| format!("invalid {flag} {text:?}: expected JSON"))
}

fn progress_bar() -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(0);
    if let Ok(style) =
        ProgressStyle::with_template("{bar:40} {pos}/{len} combinations, {elapsed} elapsed")
    {
        bar.set_style(style);
    }
    bar
}

pub(crate) async fn run(args: SweepArgs) -> Result<()> {
    let space = ParameterSpace::parse(&parse_json("--grid", &args.grid)?)?;
    let serde_json::Value::Object(base_config) = parse_json("--params", &args.params)? else {
        bail!("invalid --params {:?}: expected a JSON object", args.params);
    };
    let series = SeriesKey {
        category: args.category.parse::<Category>()?,
        symbol: args.symbol,
        timeframe: args.interval.parse::<Timeframe>()?,
    };
    let mut request = SweepRequest::new(series, &args.strategy, space);
    request.range = TimeRange {
        start_ms: crate::parse_time_flag("--start", args.start.as_deref())?,
        end_ms: crate::parse_time_flag("--end", args.end.as_deref())?,
    };
    request.base_config = base_config;
    request.metric = args.metric;
    request.top = args.top;
    request.initial_capital = args.initial_capital;
    request.commission = args.commission;
    request.leverage = args.leverage;
    request.method = match args.method.as_str() {
        "grid" | "walk_forward" => SearchMethod::Grid,
        "random" => SearchMethod::Random {
            trials: args.trials,
            seed: args.seed,
        },
        other => bail!("invalid --method {other:?}: expected grid, random or walk_forward"),
    };

    crate::require_data_dir(&args.data_dir)?;
    let engine = Engine::open(&args.data_dir)?;
    let bar = progress_bar();
    let progress_handle = bar.clone();
    let control = SweepControl {
        progress: Some(Arc::new(move |done, total| {
            progress_handle.set_length(total);
            progress_handle.set_position(done);
        })),
        ..SweepControl::default()
    };

    if args.method == "walk_forward" {
        let (Some(train), Some(test)) = (args.train, args.test) else {
            bail!("--method walk_forward needs --train and --test, in bars");
        };
        let windows = WalkForwardWindows {
            train,
            test,
            step: args.step,
        };
        let report = run_walk_forward(
            engine.session(),
            engine.data_dir(),
            &request,
            windows,
            &control,
        )
        .await?;
        bar.finish_and_clear();
        if args.json {
            outln!("{}", serde_json::to_string_pretty(&report)?)?;
            return Ok(());
        }
        for (index, fold) in report.folds.iter().enumerate() {
            outln!(
                "fold {index}: train {} .. {}, test {} .. {}, params {}, test return {}",
                bst_engine::dataset::iso_ms(fold.train_start_ms),
                bst_engine::dataset::iso_ms(fold.train_end_ms),
                bst_engine::dataset::iso_ms(fold.test_start_ms),
                bst_engine::dataset::iso_ms(fold.test_end_ms),
                serde_json::Value::Object(fold.params.clone()),
                fold.out_of_sample
                    .get("total_return")
                    .and_then(serde_json::Value::as_f64)
                    .map_or_else(|| "n/a".to_string(), |value| format!("{value:.4} %")),
            )?;
        }
        let total = &report.out_of_sample;
        outln!(
            "out of sample: return {:.4} %, {} trades, sharpe {}, max drawdown {:.4} %",
            total.total_return,
            total.total_trades,
            total
                .sharpe_ratio
                .map_or_else(|| "n/a".to_string(), |value| format!("{value:.4}")),
            total.max_drawdown
        )?;
        return Ok(());
    }

    let report = run_sweep(engine.session(), engine.data_dir(), &request, &control).await?;
    bar.finish_and_clear();
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&report)?)?;
        return Ok(());
    }
    print_report(&report)
}

fn print_report(report: &SweepReport) -> Result<()> {
    outln!(
        "{} combinations tried, {} skipped as invalid, {} evaluated over {} bars in {:.2} s",
        report.tried,
        report.skipped,
        report.evaluated,
        report.bars,
        report.seconds
    )?;
    let optional =
        |value: Option<f64>| value.map_or_else(|| "n/a".to_string(), |v| format!("{v:.4}"));
    outln!(
        "deflated Sharpe ratio of the best: {}",
        optional(report.deflated_sharpe_ratio)
    )?;
    outln!(
        "{:>4}  {:<40} {:>14} {:>12} {:>8} {:>12}",
        "rank",
        "params",
        report.metric,
        "return %",
        "trades",
        "max dd %"
    )?;
    for (rank, result) in report.results.iter().enumerate() {
        outln!(
            "{:>4}  {:<40} {:>14} {:>12} {:>8} {:>12}",
            rank + 1,
            serde_json::Value::Object(result.params.clone()).to_string(),
            optional(metric_value(result, &report.metric)),
            optional(metric_value(result, "total_return")),
            metric_value(result, "total_trades")
                .map_or_else(|| "n/a".to_string(), |v| format!("{v:.0}")),
            optional(metric_value(result, "max_drawdown")),
        )?;
    }
    Ok(())
}
