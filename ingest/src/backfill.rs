//! Backfill of a series' missing klines from Bybit's REST API into the dataset.
//!
//! [`backfill`] reads the open times already stored in the requested range and computes the
//! contiguous runs of missing bars (gaps). It fetches each gap page by page from the newest
//! bar backwards and writes every page as it arrives, so a crash keeps what was written.

use std::collections::HashSet;
use std::fmt;
use std::path::Path;

use crate::bybit_rest::BybitRestClient;
use crate::layout::{Category, Kline, Timeframe, utc_from_ms, validate_symbol};
use crate::writer::{read_series, write_klines};
use crate::{Error, Result};

/// Milliseconds from the Unix epoch (a Thursday) to the first Monday, 1970-01-05, where
/// Bybit's weekly bars are aligned.
const FIRST_MONDAY_MS: i64 = 4 * 86_400_000;

/// Counts of one backfill.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackfillReport {
    /// HTTP requests sent, retries included.
    pub requests: u64,
    /// Requests that were retries of a failed one.
    pub retries: u64,
    /// Bars missing from the range before the backfill.
    pub bars_expected: u64,
    /// Distinct closed bars received with an open time inside the range.
    pub bars_fetched: u64,
    /// Bars that changed the dataset, as [`write_klines`] counts them.
    pub bars_written: u64,
    /// Received rows with an open time outside the range, which are not written.
    pub rows_outside_range: u64,
    /// Received rows of bars still open at the response time, which are not written.
    pub open_bars_dropped: u64,
    /// Runs of bars still missing from the range after the backfill.
    pub gaps: Vec<Gap>,
}

impl BackfillReport {
    /// Returns the number of bars still missing after the backfill.
    pub fn missing_bars(&self) -> u64 {
        self.gaps.iter().map(|gap| gap.bars).sum()
    }
}

/// A run of consecutive missing bars of a series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    /// Open time of the first missing bar, in epoch milliseconds.
    pub first_open_ms: i64,
    /// Open time of the last missing bar, in epoch milliseconds.
    pub last_open_ms: i64,
    /// Number of missing bars in the run.
    pub bars: u64,
}

impl fmt::Display for Gap {
    /// Formats the gap as `2025-06-01T00:00Z..2025-06-01T00:09Z (10 bars)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let time = |ms: i64| utc_from_ms(ms).format("%Y-%m-%dT%H:%MZ");
        write!(
            f,
            "{}..{} ({} bar{})",
            time(self.first_open_ms),
            time(self.last_open_ms),
            self.bars,
            if self.bars == 1 { "" } else { "s" }
        )
    }
}

/// The open times of one fixed-length timeframe: every `duration_ms` from `offset_ms`.
#[derive(Debug, Clone, Copy)]
struct BarGrid {
    duration_ms: i64,
    offset_ms: i64,
}

impl BarGrid {
    fn new(timeframe: Timeframe) -> Result<Self> {
        // TODO: support monthly bars, whose open times are the 1st of each month and so have
        // no fixed duration.
        let Some(duration_ms) = timeframe.fixed_duration_ms() else {
            return Err(Error::InvalidValue {
                field: "interval",
                value: timeframe.code(),
                expected: "minutes, D or W: backfill of monthly bars is not supported yet",
            });
        };
        let offset_ms = if timeframe == Timeframe::Week {
            FIRST_MONDAY_MS
        } else {
            0
        };
        Ok(Self {
            duration_ms,
            offset_ms,
        })
    }

    /// Returns the first open time at or after `ms`.
    fn first_at_or_after(self, ms: i64) -> i64 {
        let remainder = (ms - self.offset_ms).rem_euclid(self.duration_ms);
        if remainder == 0 {
            ms
        } else {
            ms + self.duration_ms - remainder
        }
    }

    /// Returns the runs of open times in `[start_ms, end_ms)` that `stored` lacks.
    fn gaps(self, stored: &HashSet<i64>, start_ms: i64, end_ms: i64) -> Vec<Gap> {
        let mut gaps: Vec<Gap> = Vec::new();
        let mut open_ms = self.first_at_or_after(start_ms);
        while open_ms < end_ms {
            if !stored.contains(&open_ms) {
                match gaps.last_mut() {
                    Some(gap) if gap.last_open_ms + self.duration_ms == open_ms => {
                        gap.last_open_ms = open_ms;
                        gap.bars += 1;
                    }
                    _ => gaps.push(Gap {
                        first_open_ms: open_ms,
                        last_open_ms: open_ms,
                        bars: 1,
                    }),
                }
            }
            open_ms += self.duration_ms;
        }
        gaps
    }
}

/// The series and range of one backfill, shared by its pages.
struct Target<'a> {
    client: &'a BybitRestClient,
    data_dir: &'a Path,
    category: Category,
    symbol: &'a str,
    timeframe: Timeframe,
    start_ms: i64,
    end_ms: i64,
}

/// Fetches the bars of `[start_ms, end_ms)` that the dataset lacks and writes them.
///
/// Only the gaps between stored bars are requested, so a second run over a complete range
/// sends no request. Rows outside the range are counted in
/// [`BackfillReport::rows_outside_range`] and not written, and bars still open at the
/// response time are not written either. `progress` is called with the bars fetched and the
/// bars expected after every page.
///
/// NOTE: the writes are synchronous file I/O on the calling task, so a server that reuses
/// this should run it where blocking is allowed.
///
/// # Errors
///
/// Returns [`Error::InvalidValue`] for an invalid symbol, an empty range or monthly bars,
/// the errors of [`BybitRestClient::fetch_klines`] and of the writer. Pages written before a
/// failure stay written.
#[allow(clippy::too_many_arguments)]
pub async fn backfill(
    client: &BybitRestClient,
    data_dir: &Path,
    category: Category,
    symbol: &str,
    timeframe: Timeframe,
    start_ms: i64,
    end_ms: i64,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<BackfillReport> {
    validate_symbol(symbol)?;
    if start_ms >= end_ms {
        return Err(Error::InvalidValue {
            field: "range",
            value: format!("[{start_ms}, {end_ms})"),
            expected: "a start before the end",
        });
    }
    let grid = BarGrid::new(timeframe)?;
    let target = Target {
        client,
        data_dir,
        category,
        symbol,
        timeframe,
        start_ms,
        end_ms,
    };

    let counts_before = client.counts();
    let gaps = grid.gaps(&target.stored_open_times()?, start_ms, end_ms);
    let mut report = BackfillReport {
        bars_expected: gaps.iter().map(|gap| gap.bars).sum(),
        ..BackfillReport::default()
    };
    progress(0, report.bars_expected);
    let mut fetched = HashSet::new();
    for gap in &gaps {
        let gap_end_ms = gap.last_open_ms + grid.duration_ms;
        target
            .fetch_gap(
                gap.first_open_ms,
                gap_end_ms,
                &mut fetched,
                &mut report,
                progress,
            )
            .await?;
    }

    report.gaps = grid.gaps(&target.stored_open_times()?, start_ms, end_ms);
    let counts_after = client.counts();
    report.requests = counts_after.requests - counts_before.requests;
    report.retries = counts_after.retries - counts_before.retries;
    tracing::info!(
        category = %category,
        symbol,
        timeframe = %timeframe,
        requests = report.requests,
        retries = report.retries,
        bars_expected = report.bars_expected,
        bars_fetched = report.bars_fetched,
        bars_written = report.bars_written,
        rows_outside_range = report.rows_outside_range,
        missing_bars = report.missing_bars(),
        "backfill finished"
    );
    Ok(report)
}

impl Target<'_> {
    fn stored_open_times(&self) -> Result<HashSet<i64>> {
        let stored = read_series(self.data_dir, self.category, self.symbol, self.timeframe)?;
        Ok(stored
            .iter()
            .map(|kline| kline.open_time_ms)
            .filter(|open_ms| (self.start_ms..self.end_ms).contains(open_ms))
            .collect())
    }

    /// Fetches the bars of the gap `[gap_start_ms, gap_end_ms)` from the newest page
    /// backwards, writing each page, until a page reaches the gap's start or comes back empty.
    async fn fetch_gap(
        &self,
        gap_start_ms: i64,
        gap_end_ms: i64,
        fetched: &mut HashSet<i64>,
        report: &mut BackfillReport,
        progress: &(dyn Fn(u64, u64) + Sync),
    ) -> Result<()> {
        let limit = self.client.config().page_limit;
        let duration_ms = self.timeframe.fixed_duration_ms().unwrap_or(1);
        let mut page_end_ms = gap_end_ms - 1;
        loop {
            let body = self
                .client
                .fetch_klines(
                    self.category,
                    self.symbol,
                    self.timeframe,
                    gap_start_ms,
                    page_end_ms,
                    limit,
                )
                .await?;
            report.open_bars_dropped += body.open_bars_dropped as u64;

            let mut inside: Vec<Kline> = Vec::with_capacity(body.klines.len());
            for kline in &body.klines {
                if (self.start_ms..self.end_ms).contains(&kline.open_time_ms) {
                    if fetched.insert(kline.open_time_ms) {
                        report.bars_fetched += 1;
                    }
                    inside.push(*kline);
                } else {
                    report.rows_outside_range += 1;
                }
            }
            if !inside.is_empty() {
                let written = write_klines(
                    self.data_dir,
                    self.category,
                    self.symbol,
                    self.timeframe,
                    &inside,
                )?;
                report.bars_written += written.rows_written as u64;
            }
            progress(report.bars_fetched, report.bars_expected);
            tracing::debug!(
                start_ms = gap_start_ms,
                end_ms = page_end_ms,
                rows = body.rows_read,
                written = inside.len(),
                "fetched kline page"
            );

            // The oldest row received sets the next page's end. A page of open bars only has
            // no closed row, but every open bar starts after `time - duration`.
            let oldest_ms = match body.klines.first() {
                Some(kline) => kline.open_time_ms,
                None if body.open_bars_dropped > 0 => body.response_time_ms - duration_ms + 1,
                None => return Ok(()),
            };
            if oldest_ms <= gap_start_ms {
                return Ok(());
            }
            let next_end_ms = oldest_ms - 1;
            if next_end_ms >= page_end_ms {
                tracing::warn!(
                    start_ms = gap_start_ms,
                    end_ms = page_end_ms,
                    oldest_ms,
                    "page returned no row older than the requested end; the rest of the gap \
                     stays missing"
                );
                return Ok(());
            }
            page_end_ms = next_end_ms;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_are_runs_of_missing_bars() {
        let grid = BarGrid::new(Timeframe::Minutes(1)).unwrap();
        let stored: HashSet<i64> = [0, 60_000, 240_000].into_iter().collect();
        let gaps = grid.gaps(&stored, 0, 360_000);
        assert_eq!(
            gaps,
            vec![
                Gap {
                    first_open_ms: 120_000,
                    last_open_ms: 180_000,
                    bars: 2
                },
                Gap {
                    first_open_ms: 300_000,
                    last_open_ms: 300_000,
                    bars: 1
                },
            ]
        );
    }

    #[test]
    fn unaligned_start_rounds_up() {
        let grid = BarGrid::new(Timeframe::Minutes(5)).unwrap();
        assert_eq!(grid.first_at_or_after(1), 300_000);
        assert_eq!(grid.first_at_or_after(300_000), 300_000);
    }

    #[test]
    fn weeks_start_on_monday() {
        let grid = BarGrid::new(Timeframe::Week).unwrap();
        // 2025-06-02 is a Monday.
        let monday_ms = 1_748_822_400_000;
        assert_eq!(grid.first_at_or_after(monday_ms - 1), monday_ms);
        assert_eq!(grid.first_at_or_after(monday_ms), monday_ms);
    }

    #[test]
    fn monthly_backfill_is_rejected() {
        let error = BarGrid::new(Timeframe::Month).unwrap_err().to_string();
        assert!(error.contains("monthly bars"), "{error}");
    }

    #[test]
    fn gap_display_is_compact() {
        let gap = Gap {
            first_open_ms: 1_748_822_400_000,
            last_open_ms: 1_748_822_940_000,
            bars: 10,
        };
        assert_eq!(
            gap.to_string(),
            "2025-06-02T00:00Z..2025-06-02T00:09Z (10 bars)"
        );
    }
}
