//! `bst resample`: aggregates stored 1-minute bars into another timeframe and stores them.

use std::path::PathBuf;

use anyhow::{Result, bail};
use bst_engine::{Engine, SeriesKey, TimeRange};
use bst_ingest::{Category, Timeframe, writer};
use clap::Args;

use crate::stdout::outln;

#[derive(Debug, Args)]
pub(crate) struct ResampleArgs {
    /// Instrument, such as BTCUSDT.
    #[arg(long)]
    symbol: String,
    /// Timeframe read; only 1-minute bars are resampled.
    #[arg(long, default_value = "1")]
    from: String,
    /// Timeframe written: a Bybit code (5, 60, 240, D, W, M, ...) or an alias (1h, 1d, ...).
    #[arg(long)]
    to: String,
    /// Bybit category of the series: linear, spot or inverse.
    #[arg(long, default_value = "linear")]
    category: String,
    /// First open time read (ISO 8601; without an offset it is UTC). Default: first bar.
    #[arg(long)]
    start: Option<String>,
    /// Open time where reading ends, excluded (ISO 8601). Default: after the last bar.
    #[arg(long)]
    end: Option<String>,
    /// Folder of the Parquet dataset.
    #[arg(long, env = "BST_DATA_DIR", default_value = "data")]
    data_dir: PathBuf,
}

pub(crate) async fn run(args: ResampleArgs) -> Result<()> {
    let from: Timeframe = args.from.parse()?;
    if from != Timeframe::Minutes(1) {
        bail!(
            "invalid --from {:?}: only 1-minute bars (1) are resampled",
            args.from
        );
    }
    let series = SeriesKey {
        category: args.category.parse::<Category>()?,
        symbol: args.symbol,
        timeframe: args.to.parse()?,
    };
    let range = TimeRange {
        start_ms: crate::parse_time_flag("--start", args.start.as_deref())?,
        end_ms: crate::parse_time_flag("--end", args.end.as_deref())?,
    };
    range.validate()?;

    crate::require_data_dir(&args.data_dir)?;
    let engine = Engine::open(&args.data_dir)?;
    let klines = engine.resample(&series, &range).await?;
    if klines.is_empty() {
        bail!(
            "no complete {} bars of {} {} could be built from the stored 1-minute bars; \
             import 1-minute klines first",
            series.timeframe,
            series.category,
            series.symbol
        );
    }
    let report = writer::write_klines(
        &args.data_dir,
        series.category,
        &series.symbol,
        series.timeframe,
        &klines,
    )?;
    outln!(
        "{} {} {}: bars built {}, rows written {}, duplicates skipped {}, partitions touched {}",
        series.category,
        series.symbol,
        series.timeframe,
        klines.len(),
        report.rows_written,
        report.duplicates_skipped,
        report.partitions_touched.len()
    )?;
    Ok(())
}
