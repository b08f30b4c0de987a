//! Arrow Flight and Flight SQL on one gRPC port.
//!
//! # Plain Flight API
//!
//! `ListFlights` returns one `FlightInfo` per stored series: klines per category, symbol and
//! timeframe, and ticks per category and symbol. Each has the descriptor path
//! `["klines", CATEGORY, SYMBOL, TIMEFRAME]` or `["ticks", CATEGORY, SYMBOL]`, the row count
//! in `total_records`, one endpoint whose ticket reads the whole series, and `app_metadata`
//! JSON `{"first_open_time": ISO, "last_open_time": ISO, "rows": N}` with the first and last
//! `open_time` (for ticks, `ts`). `GetFlightInfo` and `GetSchema` accept such a path or a
//! JSON ticket as the command.
//!
//! `DoGet` takes a JSON ticket, one of:
//!
//! ```json
//! {"dataset": "klines", "category": "linear", "symbol": "BTCUSDT", "timeframe": "1",
//!  "start": "2025-06-01T00:00:00Z", "end": 1748822400000, "columns": ["open_time", "close"]}
//! {"dataset": "ticks", "category": "inverse", "symbol": "BTCUSD", "start": "2019-10-01"}
//! {"backtest_id": 1, "table": "trades"}
//! {"backtest_id": 1, "table": "equity"}
//! ```
//!
//! `category` defaults to `linear`. `timeframe` is a Bybit code or alias (`1`, `60`, `1h`,
//! `D`, ...) and is required for klines. `start` (included) and `end` (excluded) bound the
//! open time, or for ticks the trade time. Each is optional and is epoch milliseconds or an
//! ISO 8601 string: `2025-06-01T00:00:00Z`, one with an offset, one without (read as UTC),
//! or a date.
//! `columns` picks columns, partition columns included; by default a dataset returns the
//! columns of its files. Rows come sorted by time and stream batch by batch from the
//! DataFusion plan. A backtest ticket returns the trades or the equity curve of a stored
//! backtest, with the values of `GET /api/v1/backtests/{id}/trades` and `/equity`. Trades
//! come sorted by entry time and id, with the columns `id`, `backtest_id`, `entry_time`,
//! `exit_time`, `side`, `entry_price`, `exit_price`, `quantity`, `pnl`, `pnl_pct`,
//! `commission`, `funding` and `exit_reason`, where `side` is the position (`long` or
//! `short`). The equity curve has every point (`open_time`, `equity`, `drawdown`), without
//! the downsampling of the REST route.
//!
//! # Flight SQL
//!
//! Every other ticket and command goes to the read-only Flight SQL service in [`sql`], over
//! the engine's session with the `klines` and `ticks` tables.
//!
//! # Errors and authentication
//!
//! A ticket, descriptor or SQL statement that does not validate gets `invalid_argument` with
//! the accepted forms, an unknown series, backtest or prepared statement `not_found`, and a
//! query beyond the memory pool `resource_exhausted`. A backtest ticket of a backtest that is
//! not completed gets `failed_precondition` naming its status. Internal errors are logged and
//! return `internal` without detail. With API keys configured, see [`auth`].

pub mod auth;
pub mod backtests;
pub mod datasets;
pub mod error;
pub mod service;
pub mod sql;
pub mod tickets;

use arrow_flight::flight_service_server::FlightServiceServer;
use tokio::net::TcpListener;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

pub use auth::ApiKeys;
pub use service::BstFlightService;

use crate::AppState;

/// Serves Flight and Flight SQL on `listener` until `shutdown` completes. With `keys`,
/// every call needs one of them as a bearer token.
///
/// # Errors
///
/// Transport errors of the gRPC server.
pub async fn serve_flight(
    state: AppState,
    listener: TcpListener,
    keys: Option<ApiKeys>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let authenticated = keys.is_some();
    match listener.local_addr() {
        Ok(address) => {
            tracing::info!(%address, authenticated, "serving Arrow Flight and Flight SQL");
        }
        Err(error) => tracing::warn!(%error, "serving Arrow Flight on an unknown address"),
    }
    let service = FlightServiceServer::new(BstFlightService::new(state, keys.clone()));
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    Server::builder()
        .layer(tower::util::MapRequestLayer::new(
            auth::mark_handshake::<tonic::body::Body>,
        ))
        .layer(tonic::service::InterceptorLayer::new(auth::interceptor(
            keys,
        )))
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(std::io::Error::other)
}
