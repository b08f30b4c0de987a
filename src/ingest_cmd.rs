//! `bst ingest klines` and the sample import that `bst serve` runs on an empty data directory.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use bst_ingest::writer::{WriteReport, write_klines};
use bst_ingest::{Category, Timeframe, csv_klines, rest_body, samples};
use clap::Args;

use crate::stdout::outln;

#[derive(Debug, Args)]
pub(crate) struct KlinesArgs {
    /// Bybit category of CSV files: linear, spot or inverse. Response bodies carry their own.
    #[arg(long, default_value = "linear")]
    category: String,
    /// Instrument of CSV files, such as BTCUSDT. Default: taken from a SYMBOL_<N>m file name.
    #[arg(long)]
    symbol: Option<String>,
    /// Bar interval (1, 5, 60, D, ... or 1m, 1h, 1d, ...). Required for response bodies;
    /// for CSV files the default is taken from a SYMBOL_<N>m file name.
    #[arg(long)]
    interval: Option<String>,
    /// Folder of the Parquet dataset.
    #[arg(long, env = "BST_DATA_DIR", default_value = "data")]
    data_dir: PathBuf,
    /// Kline CSV files (plain or gzip) or /v5/market/kline response bodies (JSON).
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

pub(crate) fn run_klines(args: &KlinesArgs) -> Result<()> {
    let category: Category = args.category.parse()?;
    let interval = args
        .interval
        .as_deref()
        .map(str::parse::<Timeframe>)
        .transpose()?;
    let mut total = WriteReport::default();
    for file in &args.files {
        let report = if is_json(file)? {
            let Some(timeframe) = interval else {
                bail!(
                    "{}: a response body does not state its interval; pass --interval",
                    file.display()
                );
            };
            let body = rest_body::read_kline_body_file(file, timeframe)?;
            if body.open_bars_dropped > 0 {
                outln!(
                    "{}: skipped {} bar(s) still open at the response time",
                    file.display(),
                    body.open_bars_dropped
                )?;
            }
            let mut report = write_klines(
                &args.data_dir,
                body.category,
                &body.symbol,
                timeframe,
                &body.klines,
            )?;
            report.rows_read = body.rows_read;
            report
        } else {
            let (symbol, timeframe) = csv_series(file, args.symbol.as_deref(), interval)?;
            let klines = csv_klines::read_kline_csv(file)?;
            write_klines(&args.data_dir, category, &symbol, timeframe, &klines)?
        };
        print_report(&file.display().to_string(), &report)?;
        total.merge(report);
    }
    if args.files.len() > 1 {
        print_report("total", &total)?;
    }
    Ok(())
}

/// Tells a response body from a CSV file by its first non-blank byte.
fn is_json(path: &Path) -> Result<bool> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("failed to open {}", path.display()))?;
    let mut head = [0_u8; 64];
    let read = file
        .read(&mut head)
        .with_context(|| format!("failed to read {}", path.display()))?;
    Ok(head[..read]
        .iter()
        .find(|byte| !byte.is_ascii_whitespace())
        .is_some_and(|byte| *byte == b'{'))
}

fn csv_series(
    file: &Path,
    symbol: Option<&str>,
    interval: Option<Timeframe>,
) -> Result<(String, Timeframe)> {
    let from_name = csv_klines::series_from_file_name(file);
    let symbol = symbol
        .map(str::to_string)
        .or_else(|| from_name.as_ref().map(|(symbol, _)| symbol.clone()));
    let timeframe = interval.or_else(|| from_name.as_ref().map(|(_, timeframe)| *timeframe));
    match (symbol, timeframe) {
        (Some(symbol), Some(timeframe)) => Ok((symbol, timeframe)),
        _ => bail!(
            "{}: cannot tell the symbol and interval from the file name (expected SYMBOL_<N>m, \
             such as BTCUSDT_1m.csv.gz); pass --symbol and --interval",
            file.display()
        ),
    }
}

fn print_report(label: &str, report: &WriteReport) -> Result<()> {
    outln!(
        "{label}: rows read {}, rows written {}, duplicates skipped {}, partitions touched {}{}",
        report.rows_read,
        report.rows_written,
        report.duplicates_skipped,
        report.partitions_touched.len(),
        if report.partitions_touched.is_empty() {
            String::new()
        } else {
            format!(" ({})", report.partitions_touched.join(", "))
        }
    )
}

/// File that marks a sample import as started and not yet finished.
const SAMPLE_IMPORT_MARKER: &str = ".sample-import-pending";

/// Imports the sample kline files of `BST_DATASETS_DIR` when the data directory contains no
/// klines yet, or when an earlier sample import was interrupted. When the variable is unset,
/// it logs how to load data instead.
pub(crate) fn load_samples_into_empty(data_dir: &Path) -> Result<()> {
    let klines_dir = data_dir.join(bst_ingest::layout::KLINES_DIR);
    let has_klines = std::fs::read_dir(&klines_dir)
        .map(|mut entries| entries.next().is_some())
        .unwrap_or(false);
    let marker = data_dir.join(SAMPLE_IMPORT_MARKER);
    let interrupted = marker.exists();
    if has_klines && !interrupted {
        return Ok(());
    }

    let Some(datasets_dir) = samples::datasets_dir() else {
        tracing::info!(
            data_dir = %data_dir.display(),
            interrupted,
            "the dataset has no sample klines; load klines with `bst ingest klines FILE...`, \
             or set BST_DATASETS_DIR to a folder of sample data to import it at start-up"
        );
        return Ok(());
    };

    let files = samples::sample_kline_files(&datasets_dir);
    tracing::info!(
        datasets_dir = %datasets_dir.display(),
        files = files.len(),
        interrupted,
        "importing sample klines"
    );
    std::fs::write(&marker, b"")
        .with_context(|| format!("failed to create {}", marker.display()))?;

    let mut total = WriteReport::default();
    for file in files {
        let Some((symbol, timeframe)) = csv_klines::series_from_file_name(&file) else {
            tracing::warn!(file = %file.display(), "skipped a sample file without SYMBOL_<N>m in its name");
            continue;
        };
        let klines = csv_klines::read_kline_csv(&file)?;
        let report = write_klines(data_dir, Category::Linear, &symbol, timeframe, &klines)?;
        tracing::info!(
            file = %file.display(),
            rows_written = report.rows_written,
            "sample klines imported"
        );
        total.merge(report);
    }

    std::fs::remove_file(&marker)
        .with_context(|| format!("failed to remove {}", marker.display()))?;
    tracing::info!(rows_written = total.rows_written, "sample import finished");
    Ok(())
}
