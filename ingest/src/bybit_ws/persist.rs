//! Batched writes of live trades and confirmed klines into the Parquet dataset.
//!
//! Events are buffered and written when the buffer reaches `flush_rows` events or when
//! `flush_interval` has passed since the last write, through [`write_ticks`] and
//! [`write_klines`], which take the dataset's write lock and replace partitions atomically. A
//! restart therefore loses at most the events buffered since the last write. The REST
//! backfill restores the lost klines, but not the lost trades.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::Result;
use crate::bybit_ws::normalize::LiveEvent;
use crate::layout::{Category, Kline, Timeframe};
use crate::tick_writer::{Tick, write_ticks};
use crate::writer::write_klines;

/// Settings of a [`LiveBatchWriter`].
#[derive(Debug, Clone)]
pub struct PersistConfig {
    pub data_dir: PathBuf,
    pub category: Category,
    /// Buffered trades and confirmed klines that trigger a write.
    pub flush_rows: usize,
    /// Maximum time an event stays buffered.
    pub flush_interval: Duration,
}

/// Counts of one flush.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlushReport {
    pub ticks_written: usize,
    pub klines_written: usize,
}

/// Buffers of the events not yet written, by series.
#[derive(Debug)]
pub struct LiveBatchWriter {
    config: PersistConfig,
    ticks: BTreeMap<String, Vec<Tick>>,
    klines: BTreeMap<(String, String), (Timeframe, Vec<Kline>)>,
    buffered: usize,
}

impl LiveBatchWriter {
    pub fn new(config: PersistConfig) -> Self {
        Self {
            config,
            ticks: BTreeMap::new(),
            klines: BTreeMap::new(),
            buffered: 0,
        }
    }

    /// Buffers a trade or a confirmed kline and returns true when the buffer is full. Kline
    /// updates of bars that are still open are ignored.
    pub fn push(&mut self, event: &LiveEvent) -> bool {
        match event {
            LiveEvent::Trade(trade) => {
                self.ticks
                    .entry(trade.symbol.clone())
                    .or_default()
                    .push(trade.to_tick());
            }
            LiveEvent::Kline(update) if update.confirm => {
                self.klines
                    .entry((update.symbol.clone(), update.timeframe.code()))
                    .or_insert_with(|| (update.timeframe, Vec::new()))
                    .1
                    .push(update.kline);
            }
            LiveEvent::Kline(_) => return false,
        }
        self.buffered += 1;
        self.buffered >= self.config.flush_rows
    }

    /// Returns the number of buffered events.
    pub fn buffered(&self) -> usize {
        self.buffered
    }

    /// Writes every buffer, emptying it. A repeated confirmation of a stored bar or a
    /// repeated trade id changes nothing, because the writers merge on `open_time` and
    /// `trade_id`.
    ///
    /// NOTE: this is blocking file I/O; async callers run it on the blocking pool.
    ///
    /// # Errors
    ///
    /// The errors of [`write_ticks`] and [`write_klines`]. The buffers are emptied even on
    /// an error, so a bad row cannot block later writes; the error names what was lost.
    pub fn flush(&mut self) -> Result<FlushReport> {
        let ticks = std::mem::take(&mut self.ticks);
        let klines = std::mem::take(&mut self.klines);
        self.buffered = 0;
        let mut report = FlushReport::default();
        let mut first_error = None;
        for (symbol, series) in ticks {
            match write_ticks(
                &self.config.data_dir,
                self.config.category,
                &symbol,
                &series,
            ) {
                Ok(written) => report.ticks_written += written.ticks_written,
                Err(error) => {
                    tracing::error!(%error, symbol, ticks = series.len(), "failed to write live trades");
                    first_error.get_or_insert(error);
                }
            }
        }
        for ((symbol, _), (timeframe, bars)) in klines {
            match write_klines(
                &self.config.data_dir,
                self.config.category,
                &symbol,
                timeframe,
                &bars,
            ) {
                Ok(written) => report.klines_written += written.rows_written,
                Err(error) => {
                    tracing::error!(%error, symbol, timeframe = %timeframe, klines = bars.len(), "failed to write confirmed klines");
                    first_error.get_or_insert(error);
                }
            }
        }
        match first_error {
            Some(error) => Err(error),
            None => Ok(report),
        }
    }
}

/// Writes the events received on `events` in batches until the channel closes, then writes
/// what is left.
pub async fn run_batch_writer(config: PersistConfig, mut events: mpsc::Receiver<LiveEvent>) {
    let mut ticker = tokio::time::interval(config.flush_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut writer = Some(LiveBatchWriter::new(config));
    loop {
        let (full, closed) = tokio::select! {
            event = events.recv() => match (event, writer.as_mut()) {
                (Some(event), Some(writer)) => (writer.push(&event), false),
                _ => (true, true),
            },
            _ = ticker.tick() => (true, false),
        };
        let pending = writer.as_ref().map_or(0, LiveBatchWriter::buffered);
        if full && pending > 0 {
            let mut owned = writer
                .take()
                .expect("the writer is returned after every flush");
            let (returned, result) = tokio::task::spawn_blocking(move || {
                let result = owned.flush();
                (owned, result)
            })
            .await
            .unwrap_or_else(|error| panic!("the live batch write panicked: {error}"));
            writer = Some(returned);
            match result {
                Ok(report) => tracing::debug!(
                    events = pending,
                    ticks_written = report.ticks_written,
                    klines_written = report.klines_written,
                    "wrote live batch"
                ),
                Err(error) => {
                    tracing::error!(%error, events = pending, "live batch write failed; its events are dropped");
                }
            }
        }
        if closed {
            tracing::info!("live event stream closed; the batch writer stops");
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bybit_ws::normalize::{LiveKline, LiveTrade};
    use crate::tick_writer::{Side, read_ticks};
    use crate::writer::read_series;

    fn kline_event(open_time_ms: i64, confirm: bool) -> LiveEvent {
        LiveEvent::Kline(LiveKline {
            symbol: "ETHUSDT".to_string(),
            timeframe: Timeframe::Minutes(1),
            kline: Kline {
                open_time_ms,
                open: 1922.43,
                high: 1922.48,
                low: 1922.42,
                close: 1922.48,
                volume: 15.7,
                turnover: Some(30182.0724),
            },
            confirm,
        })
    }

    fn writer(dir: &std::path::Path, flush_rows: usize) -> LiveBatchWriter {
        LiveBatchWriter::new(PersistConfig {
            data_dir: dir.to_path_buf(),
            category: Category::Linear,
            flush_rows,
            flush_interval: Duration::from_secs(1),
        })
    }

    #[test]
    fn repeated_confirmation_writes_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = writer(dir.path(), 100);
        assert!(!writer.push(&kline_event(1786310760000, true)));
        assert!(!writer.push(&kline_event(1786310820000, false)));
        assert_eq!(writer.buffered(), 1);
        assert_eq!(writer.flush().unwrap().klines_written, 1);

        writer.push(&kline_event(1786310760000, true));
        assert_eq!(writer.flush().unwrap().klines_written, 0);
        let stored = read_series(
            dir.path(),
            Category::Linear,
            "ETHUSDT",
            Timeframe::Minutes(1),
        )
        .unwrap();
        let open_times: Vec<i64> = stored.iter().map(|kline| kline.open_time_ms).collect();
        assert_eq!(open_times, [1786310760000]);
    }

    #[test]
    fn trades_flush_when_full() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = writer(dir.path(), 2);
        let trade = |id: &str| {
            LiveEvent::Trade(LiveTrade {
                symbol: "BTCUSDT".to_string(),
                ts_ms: 1786310819680,
                price: 65114.2,
                qty: 0.004,
                side: Side::Sell,
                trade_id: id.to_string(),
                tick_direction: Some("MinusTick".to_string()),
            })
        };
        assert!(!writer.push(&trade("a")));
        assert!(writer.push(&trade("b")));
        assert_eq!(writer.flush().unwrap().ticks_written, 2);
        writer.push(&trade("a"));
        assert_eq!(writer.flush().unwrap().ticks_written, 0);
        let ticks = read_ticks(dir.path(), Category::Linear, "BTCUSDT").unwrap();
        assert_eq!(ticks.len(), 2);
        assert_eq!(ticks[0].ts_us, 1786310819680000);
    }
}
