//! `bst ingest bybit`: backfills klines from Bybit's v5 REST API.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use bst_ingest::backfill::{BackfillReport, backfill};
use bst_ingest::bybit_rest::{BybitRestClient, ClientConfig, DEFAULT_BASE_URL};
use bst_ingest::{Category, Timeframe};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use crate::stdout::outln;

/// Number of gap ranges listed in the report. Further ranges are only counted.
const MAX_GAPS_PRINTED: usize = 20;

#[derive(Debug, Args)]
pub(crate) struct BybitArgs {
    /// Instrument, such as BTCUSDT.
    #[arg(long)]
    symbol: String,
    /// Bar interval: minutes (1, 5, 60, ...), D or W, or an alias (1m, 1h, 1d, 1w).
    #[arg(long)]
    interval: String,
    /// First open time to fetch (ISO 8601; without an offset it is UTC).
    #[arg(long)]
    start: String,
    /// Open time where the range ends, excluded (ISO 8601).
    #[arg(long)]
    end: String,
    /// Bybit category: linear, spot or inverse.
    #[arg(long, default_value = "linear")]
    category: String,
    /// Base URL of Bybit's REST API.
    #[arg(long, env = bst_ingest::bybit_rest::BASE_URL_ENV, default_value = DEFAULT_BASE_URL)]
    base_url: String,
    /// Folder of the Parquet dataset.
    #[arg(long, env = "BST_DATA_DIR", default_value = "data")]
    data_dir: PathBuf,
}

pub(crate) async fn run_bybit(args: BybitArgs) -> Result<()> {
    let category: Category = args.category.parse()?;
    let timeframe: Timeframe = args.interval.parse()?;
    let start_ms = parse_time("--start", &args.start)?;
    let end_ms = parse_time("--end", &args.end)?;
    let client = BybitRestClient::new(ClientConfig {
        base_url: args.base_url.clone(),
        ..ClientConfig::default()
    })?;

    let bar = progress_bar();
    let update = |fetched: u64, expected: u64| {
        bar.set_length(expected);
        bar.set_position(fetched);
    };
    let result = backfill(
        &client,
        &args.data_dir,
        category,
        &args.symbol,
        timeframe,
        start_ms,
        end_ms,
        &update,
    )
    .await;
    bar.finish_and_clear();
    let report = result.with_context(|| {
        format!(
            "failed to backfill {category} {} {timeframe} from {}",
            args.symbol, args.base_url
        )
    })?;
    print_report(&args, &report)?;
    Ok(())
}

fn parse_time(flag: &str, text: &str) -> Result<i64> {
    crate::parse_time_flag(flag, Some(text))?.with_context(|| format!("missing {flag}"))
}

/// Returns a bar of fetched out of expected bars on stderr, hidden when stderr is not a
/// terminal.
fn progress_bar() -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(0);
    if let Ok(style) =
        ProgressStyle::with_template("{bar:40} {pos}/{len} bars fetched, {elapsed} elapsed")
    {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

fn print_report(args: &BybitArgs, report: &BackfillReport) -> Result<()> {
    outln!(
        "{} {} {}: requests {}, retries {}, bars fetched {}, bars written {}, rows outside \
         the range {}, open bars skipped {}",
        args.category,
        args.symbol,
        args.interval,
        report.requests,
        report.retries,
        report.bars_fetched,
        report.bars_written,
        report.rows_outside_range,
        report.open_bars_dropped
    )?;
    if report.gaps.is_empty() {
        outln!("gaps: none")?;
        return Ok(());
    }
    outln!(
        "gaps: {} bars missing in {} ranges",
        report.missing_bars(),
        report.gaps.len()
    )?;
    for gap in report.gaps.iter().take(MAX_GAPS_PRINTED) {
        outln!("  {gap}")?;
    }
    if report.gaps.len() > MAX_GAPS_PRINTED {
        outln!(
            "  ... and {} more ranges",
            report.gaps.len() - MAX_GAPS_PRINTED
        )?;
    }
    Ok(())
}
