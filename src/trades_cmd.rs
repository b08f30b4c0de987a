//! `bst ingest trades`: Bybit trade dumps into the tick dataset and derived 1-minute klines.

use std::path::PathBuf;

use anyhow::{Result, bail};
use bst_ingest::Category;
use bst_ingest::trades::{
    TradeImportReport, category_from_symbol, import_trade_dump, read_trade_dump,
};
use clap::Args;

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
    for file in &args.files {
        let dump = read_trade_dump(file)?;
        let Some(category) = category.or_else(|| category_from_symbol(&dump.symbol)) else {
            bail!(
                "{}: symbol {} has no default category (only symbols ending in USDT, USDC or \
                 USD have one); pass --category linear, spot or inverse",
                file.display(),
                dump.symbol
            );
        };
        let report = import_trade_dump(&args.data_dir, category, &dump)?;
        print_report(&file.display().to_string(), &report);
        total.ticks.merge(report.ticks);
        total.bars.merge(report.bars);
    }
    if args.files.len() > 1 {
        print_report("total", &total);
    }
    Ok(())
}

fn print_report(label: &str, report: &TradeImportReport) {
    let ticks = &report.ticks;
    let bars = &report.bars;
    let dates = if ticks.partitions_touched.is_empty() {
        String::new()
    } else {
        format!(" ({})", ticks.partitions_touched.join(", "))
    };
    println!(
        "{label}: ticks read {}, ticks written {}, duplicates skipped {}, tick partitions \
         touched {}{dates}; derived 1m bars {}, written {}, skipped {} (already stored)",
        ticks.ticks_read,
        ticks.ticks_written,
        ticks.duplicates_skipped,
        ticks.partitions_touched.len(),
        bars.rows_read,
        bars.rows_written,
        bars.duplicates_skipped,
    );
}
