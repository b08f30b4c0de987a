//! Bybit market data into the partitioned Parquet dataset.
//!
//! Sources (kline CSV files, Bybit v5 `/v5/market/kline` response bodies) are parsed into
//! [`layout::Kline`] rows. The [`writer`] groups them by month partition, merges them with the
//! rows already stored, deduplicates on `open_time`, sorts them, and replaces each partition's
//! single Parquet file through a temporary file and a rename, so readers never see a
//! half-written file and a repeated import changes nothing.
//!
//! Trade dumps ([`trades`]) become ticks in day partitions ([`tick_writer`], deduplicated on
//! `trade_id`) and 1-minute bars that are inserted only where no bar is stored.

pub mod backfill;
pub mod bybit_rest;
pub mod bybit_ws;
pub mod csv_klines;
pub mod decimal;
pub mod error;
pub mod layout;
pub mod lock;
pub mod rest_body;
pub mod samples;
pub mod tick_writer;
pub mod trades;
pub mod writer;

pub use error::{Error, Result};
pub use layout::{Category, Kline, Timeframe};
