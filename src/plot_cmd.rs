//! `bst backtest --plot FILE`: writes the equity chart of a command-line backtest.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use bst_engine::BacktestReport;
use bst_engine::plot::{TradeMarker, equity_svg};

/// Draws the report's equity curve, drawdown and trades and writes the SVG to `path`.
///
/// The SVG goes to a temporary file in the same folder, which is then renamed over `path`, so
/// an existing file at `path` is either kept whole or replaced whole.
pub(crate) fn write_equity_svg(path: &Path, report: &BacktestReport, title: &str) -> Result<()> {
    let markers: Vec<TradeMarker> = report.trades.iter().map(TradeMarker::from).collect();
    let svg = equity_svg(&report.equity, &markers, title)?;
    let folder = match path.parent() {
        Some(folder) if !folder.as_os_str().is_empty() => folder,
        _ => Path::new("."),
    };
    let failed = || {
        format!(
            "failed to write the equity chart to {}; check that the folder exists and is \
             writable, or pass another --plot path",
            path.display()
        )
    };
    let mut builder = tempfile::Builder::new();
    builder.prefix(".bst-plot-").suffix(".svg.tmp");
    // Temporary files are private (0600) by default, so ask for 0666 less the umask, the
    // permissions of any other new file.
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
    let mut file = builder.tempfile_in(folder).with_context(failed)?;
    file.write_all(svg.as_bytes()).with_context(failed)?;
    file.as_file().sync_all().with_context(failed)?;
    file.persist(path)
        .map_err(|error| error.error)
        .with_context(failed)?;
    tracing::info!(path = %path.display(), bytes = svg.len(), "wrote the equity chart");
    Ok(())
}
