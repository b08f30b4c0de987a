//! `bst ingest trades`: Bybit trade dumps into the tick dataset and derived 1-minute klines.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use bst_ingest::Category;
use bst_ingest::trades::{
    TradeDump, TradeImportReport, category_from_symbol, import_trade_dump, read_trade_dump,
};
use clap::Args;

use crate::stdout::outln;

#[derive(Debug, Args)]
pub(crate) struct TradesArgs {
    /// Bybit category: linear, spot or inverse. Default: linear for symbols ending in USDT or
    /// USDC, inverse for symbols ending in USD.
    #[arg(long)]
    category: Option<String>,
    /// Folder of the Parquet dataset.
    #[arg(long, env = "BST_DATA_DIR", default_value = "data")]
    data_dir: PathBuf,
    /// Trade dumps (CSV, plain or gzip) in the layout of Bybit's daily trading archive,
    /// such as BTCUSD2019-10-01.csv.gz.
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

pub(crate) fn run_trades(args: &TradesArgs) -> Result<()> {
    let category = args
        .category
        .as_deref()
        .map(str::parse::<Category>)
        .transpose()?;
    let mut total = TradeImportReport::default();
    // Parsing a dump (gzip, CSV, decimals) is most of the work and touches no shared state,
    // so up to one dump per core is parsed ahead on other threads while this thread imports
    // the dumps in the order given. At most that many parsed dumps are held in memory.
    let parse_ahead = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    std::thread::scope(|scope| -> Result<()> {
        let mut files = args.files.iter();
        let mut pending = VecDeque::new();
        for file in files.by_ref().take(parse_ahead) {
            pending.push_back((file, scope.spawn(move || read_trade_dump(file))));
        }
        while let Some((file, parsing)) = pending.pop_front() {
            let dump = match parsing.join() {
                Ok(result) => result?,
                Err(panic) => std::panic::resume_unwind(panic),
            };
            if let Some(next) = files.next() {
                pending.push_back((next, scope.spawn(move || read_trade_dump(next))));
            }
            import_one(args, category, file, &dump, &mut total)?;
        }
        Ok(())
    })?;
    if args.files.len() > 1 {
        print_report("total", &total)?;
    }
    Ok(())
}

/// Imports one parsed dump and adds its counts to `total`.
fn import_one(
    args: &TradesArgs,
    category: Option<Category>,
    file: &Path,
    dump: &TradeDump,
    total: &mut TradeImportReport,
) -> Result<()> {
    let Some(category) = category.or_else(|| category_from_symbol(&dump.symbol)) else {
        bail!(
            "{}: symbol {} has no default category (only symbols ending in USDT, USDC or USD \
             have one); pass --category linear, spot or inverse",
            file.display(),
            dump.symbol
        );
    };
    let report = import_trade_dump(&args.data_dir, category, dump)?;
    print_report(&file.display().to_string(), &report)?;
    total.ticks.merge(report.ticks);
    total.bars.merge(report.bars);
    Ok(())
}

fn print_report(label: &str, report: &TradeImportReport) -> Result<()> {
    let ticks = &report.ticks;
    let bars = &report.bars;
    let dates = if ticks.partitions_touched.is_empty() {
        String::new()
    } else {
        format!(" ({})", ticks.partitions_touched.join(", "))
    };
    outln!(
        "{label}: ticks read {}, ticks written {}, duplicates skipped {}, tick partitions \
         touched {}{dates}; derived 1m bars {}, written {}, skipped {} (already stored)",
        ticks.ticks_read,
        ticks.ticks_written,
        ticks.duplicates_skipped,
        ticks.partitions_touched.len(),
        bars.rows_read,
        bars.rows_written,
        bars.duplicates_skipped,
    )
}
