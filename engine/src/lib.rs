//! Backtests as Apache DataFusion plans over the Bybit kline dataset.
//!
//! An [`Engine`] owns a DataFusion session in which the Parquet dataset is the `klines`
//! table, partitioned by category, symbol, timeframe and month, with each file declared sorted
//! by `open_time`. A backtest filters one series to its range, computes indicators and
//! crossover signals with window functions ordered by `open_time`, and collects the result
//! for a single sequential pass ([`simulate`]) that fills orders at the next bar's open and marks
//! equity at every close. [`metrics`] summarizes the curve and the trades. [`oracle`] is an
//! independent plain-loop backtester that tests compare against the plan.

pub mod backtest;
pub mod dataset;
pub mod error;
pub mod exact_sum;
pub mod expression;
pub mod indicators;
pub mod metrics;
pub mod oracle;
pub mod orders;
pub mod plot;
pub mod resample;
pub mod signals;
pub mod simulate;
pub mod sql_limits;
pub mod strategy;
pub mod sweep;
pub mod time;

use std::path::{Path, PathBuf};

use bst_ingest::Kline;
use datafusion::execution::cache::cache_manager::CacheManagerConfig;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};

pub use backtest::{BacktestReport, BacktestRequest};
pub use dataset::{SeriesKey, SeriesSummary, TimeRange};
pub use error::{Error, Result};
pub use strategy::StrategySpec;

/// Version of the engine recorded with every stored result.
pub const ENGINE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// A DataFusion session over one data directory.
#[derive(Clone)]
pub struct Engine {
    ctx: SessionContext,
    data_dir: PathBuf,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("session_id", &self.ctx.session_id())
            .field("data_dir", &self.data_dir)
            .finish()
    }
}

impl Engine {
    /// Opens the dataset under `data_dir` (creating `klines/` and `ticks/` when missing) and
    /// registers the `klines` and `ticks` tables and the indicator functions.
    ///
    /// # Errors
    ///
    /// I/O errors on the data directory and DataFusion registration errors.
    pub fn open(data_dir: &Path) -> Result<Self> {
        Self::open_with_memory_limit(data_dir, None)
    }

    /// Opens the dataset like [`Engine::open`], with the session's memory pool limited to
    /// `memory_limit` bytes when given. Sorts, joins and aggregates that exceed the pool spill
    /// to disk or fail with a resources error.
    ///
    /// # Errors
    ///
    /// I/O errors on the data directory and DataFusion registration errors.
    pub fn open_with_memory_limit(data_dir: &Path, memory_limit: Option<usize>) -> Result<Self> {
        let config = SessionConfig::new().with_information_schema(true);
        // Imports replace partition files in place and add new folders while the engine
        // runs, so listings, footers and statistics must be read afresh on every query.
        let caches = CacheManagerConfig::default()
            .with_list_files_cache_limit(0)
            .with_metadata_cache_limit(0)
            .with_file_statistics_cache_limit(0);
        let mut runtime = RuntimeEnvBuilder::new().with_cache_manager(caches);
        if let Some(bytes) = memory_limit {
            runtime = runtime.with_memory_limit(bytes, 1.0);
        }
        let runtime = runtime.build_arc()?;
        let ctx = SessionContext::new_with_config_rt(config, runtime);
        for function in indicators::all_indicators() {
            ctx.register_udwf(function);
        }
        ctx.register_udaf(exact_sum::exact_sum_udaf());
        dataset::register_klines(&ctx, data_dir)?;
        dataset::register_ticks(&ctx, data_dir)?;
        Ok(Self {
            ctx,
            data_dir: data_dir.to_path_buf(),
        })
    }

    /// Returns the DataFusion session, with the `klines` and `ticks` tables registered.
    pub fn session(&self) -> &SessionContext {
        &self.ctx
    }

    /// Returns the data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Runs a backtest; see [`backtest::run_backtest`].
    ///
    /// # Errors
    ///
    /// Validation errors of the request, [`Error::NoData`], and DataFusion errors.
    pub async fn run_backtest(&self, request: &BacktestRequest) -> Result<BacktestReport> {
        backtest::run_backtest(&self.ctx, &self.data_dir, request).await
    }

    /// Checks what [`StrategySpec::from_params`] cannot: that an expression strategy's
    /// conditions plan over the kline columns.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`] naming the invalid condition.
    pub fn check_strategy(&self, strategy: &StrategySpec) -> Result<()> {
        match strategy {
            StrategySpec::Expression(conditions) => {
                expression::check_conditions(&self.ctx, &conditions.present())
            }
            _ => Ok(()),
        }
    }

    /// Returns the first and last open time and row count of a series in a range.
    ///
    /// # Errors
    ///
    /// DataFusion errors.
    pub async fn series_summary(
        &self,
        series: &SeriesKey,
        range: &TimeRange,
    ) -> Result<Option<SeriesSummary>> {
        dataset::series_summary(&self.ctx, &self.data_dir, series, range).await
    }

    /// Aggregates the stored 1-minute bars of a category and symbol into complete bars of
    /// `series.timeframe` inside a range, ascending by open time.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`] for a 1-minute target, and DataFusion errors.
    pub async fn resample(&self, series: &SeriesKey, range: &TimeRange) -> Result<Vec<Kline>> {
        let batches = resample::resample_frame(&self.ctx, series, range)
            .await?
            .collect()
            .await?;
        let mut klines = Vec::new();
        for batch in &batches {
            klines.extend(dataset::klines_from_batch(batch)?);
        }
        Ok(klines)
    }

    /// Returns up to `limit` bars of a series, newest first, with open times at most
    /// `newest_open_ms` when given.
    ///
    /// # Errors
    ///
    /// DataFusion errors.
    pub async fn recent_klines(
        &self,
        series: &SeriesKey,
        limit: usize,
        newest_open_ms: Option<i64>,
    ) -> Result<Vec<Kline>> {
        dataset::recent_klines(&self.ctx, &self.data_dir, series, limit, newest_open_ms).await
    }
}
