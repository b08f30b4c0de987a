//! `bst`: the command-line entry point. It parses flags and wires the crates together.

mod bybit_cmd;
mod flight_cmd;
mod ingest_cmd;
mod plot_cmd;
mod resample_cmd;
mod stdout;
mod sweep_cmd;
mod trades_cmd;

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use bst_engine::orders::strategy_and_orders;
use bst_engine::{BacktestRequest, Engine, SeriesKey, TimeRange};
use bst_ingest::{Category, Timeframe};
use clap::{Args, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use crate::stdout::outln;

/// Bybit strategy tester: ingest Bybit market data, backtest strategies, serve the REST API.
#[derive(Debug, Parser)]
#[command(name = "bst", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Import market data files into the Parquet dataset.
    #[command(subcommand)]
    Ingest(IngestCommand),
    /// Run one backtest over the dataset and print its metrics.
    Backtest(BacktestArgs),
    /// Aggregate stored 1-minute bars into another timeframe and store the complete bars.
    Resample(resample_cmd::ResampleArgs),
    /// Sweep a built-in strategy's parameters (grid, random search or walk-forward) in one
    /// DataFusion plan and rank the combinations.
    Sweep(sweep_cmd::SweepArgs),
    /// Serve the REST API under /api/v1 with in-process backtest workers.
    Serve(ServeArgs),
}

#[derive(Debug, Subcommand)]
enum IngestCommand {
    /// Import kline CSV files (timestamp,open,high,low,close,volume; plain or gzip) or Bybit
    /// v5 /v5/market/kline response bodies (JSON).
    Klines(ingest_cmd::KlinesArgs),
    /// Backfill klines from Bybit's v5 REST API (GET /v5/market/kline) into the dataset,
    /// fetching only the bars missing in [--start, --end).
    Bybit(bybit_cmd::BybitArgs),
    /// Import Bybit trade dumps (CSV, plain or gzip) as ticks and derive 1-minute klines for
    /// the minutes they cover wholly.
    Trades(trades_cmd::TradesArgs),
}

/// The data directory flag shared by every command.
#[derive(Debug, Clone, Args)]
struct DataDirArg {
    /// Folder of the Parquet dataset and meta.duckdb.
    #[arg(long, env = "BST_DATA_DIR", default_value = "data")]
    data_dir: PathBuf,
}

#[derive(Debug, Args)]
struct BacktestArgs {
    /// Instrument, such as BTCUSDT.
    #[arg(long)]
    symbol: String,
    /// Bar interval: a Bybit code (1, 5, 60, D, ...) or an alias (1m, 1h, 1d, ...).
    #[arg(long, default_value = "1")]
    interval: String,
    /// Bybit category of the series: linear, spot or inverse.
    #[arg(long, default_value = "linear")]
    category: String,
    /// Strategy type.
    #[arg(long, default_value = "sma_crossover")]
    strategy: String,
    /// Strategy parameters and order options as a JSON object; missing ones take their
    /// defaults. The order flags below override keys given here.
    #[arg(long, default_value = "{}")]
    params: String,
    /// First open time included (ISO 8601; without an offset it is UTC). Default: first bar.
    #[arg(long)]
    start: Option<String>,
    /// Open time where the range ends, excluded (ISO 8601). Default: after the last bar.
    #[arg(long)]
    end: Option<String>,
    /// Starting equity in quote currency.
    #[arg(long, default_value_t = bst_engine::backtest::DEFAULT_INITIAL_CAPITAL)]
    initial_capital: f64,
    /// Commission per leg as a fraction of notional (0.00055 is 0.055 %).
    #[arg(long, default_value_t = bst_engine::backtest::DEFAULT_COMMISSION)]
    commission: f64,
    /// Leverage: notional over margin, from 1 to 100.
    #[arg(long, default_value_t = 1.0)]
    leverage: f64,
    /// Positions the strategy takes: long, short or both. Default: long.
    #[arg(long)]
    direction: Option<String>,
    /// Fraction of equity committed per entry, above 0 and up to 1. Default: 1.
    #[arg(long)]
    position_size: Option<f64>,
    /// Stop-loss distance as a fraction of the entry price (0.02 is 2 %).
    #[arg(long)]
    stop_loss: Option<f64>,
    /// Take-profit distance as a fraction of the entry price (0.05 is 5 %).
    #[arg(long)]
    take_profit: Option<f64>,
    /// Fraction by which market fills are worse than the bar price. Default: 0.
    #[arg(long)]
    slippage: Option<f64>,
    /// Funding per 8 hours as a fraction of notional, paid by longs when positive.
    #[arg(long)]
    funding_rate: Option<f64>,
    /// Maintenance margin as a fraction of the entry notional. Default: 0.005.
    #[arg(long)]
    maintenance_margin_rate: Option<f64>,
    /// Print the metrics as one JSON object.
    #[arg(long)]
    json: bool,
    /// Also write an SVG chart of the equity curve, its drawdown and the trades to this file.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
    #[command(flatten)]
    data: DataDirArg,
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Address the REST API listens on, as HOST:PORT (a host name such as localhost works).
    /// It must be a loopback address unless BST_API_KEYS is set.
    #[arg(long, env = "BST_ADDR", default_value = "127.0.0.1:8000")]
    addr: String,
    /// Origins that browsers may call the REST API from, comma-separated, such as
    /// https://app.example.com; `*` allows any origin. Default: none, so browsers block
    /// calls from other origins.
    #[arg(
        long,
        env = "BST_CORS_ORIGINS",
        value_delimiter = ',',
        value_parser = bst_api::auth::CorsOrigin::parse
    )]
    cors_origins: Vec<bst_api::auth::CorsOrigin>,
    /// In-process backtest workers; 0 leaves queued backtests to external workers.
    /// Default: the number of CPU cores.
    #[arg(long, env = "BST_WORKERS")]
    workers: Option<usize>,
    /// Seconds after which the claim of a running backtest is stale, so that
    /// POST /api/v1/backtests/{id}/claim hands the backtest to another worker.
    #[arg(long, env = "BST_CLAIM_STALE_SECS", default_value_t = 600)]
    claim_stale_secs: u64,
    #[command(flatten)]
    flight: flight_cmd::FlightArgs,
    #[command(flatten)]
    data: DataDirArg,
}

/// Stack size of the async runtime's threads, in bytes.
const RUNTIME_THREAD_STACK_BYTES: usize = 8 * 1024 * 1024;

fn main() -> Result<()> {
    let cli = Cli::parse();
    let default_level = match cli.command {
        Command::Serve(_) => "info",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // DataFusion walks expression trees recursively; 8 MiB, four times tokio's default,
        // leaves room for every tree that the SQL operator limit admits.
        .thread_stack_size(RUNTIME_THREAD_STACK_BYTES)
        .build()
        .context("failed to start the async runtime")?;
    let result = match cli.command {
        Command::Ingest(IngestCommand::Klines(args)) => ingest_cmd::run_klines(&args),
        Command::Ingest(IngestCommand::Bybit(args)) => runtime.block_on(bybit_cmd::run_bybit(args)),
        Command::Ingest(IngestCommand::Trades(args)) => trades_cmd::run_trades(&args),
        Command::Backtest(args) => runtime.block_on(run_backtest(args)),
        Command::Resample(args) => runtime.block_on(resample_cmd::run(args)),
        Command::Sweep(args) => runtime.block_on(sweep_cmd::run(args)),
        Command::Serve(args) => runtime.block_on(run_serve(args)),
    };
    match result {
        // A reader that exits early, such as `head -1`, has all the output it asked for.
        Err(error) if stdout::is_closed(&error) => Ok(()),
        other => other,
    }
}

/// Checks that the data directory of a command that only reads the dataset exists. Opening
/// the engine creates the `klines` and `ticks` folders, so a mistyped path would otherwise
/// be created empty.
pub(crate) fn require_data_dir(path: &Path) -> Result<()> {
    match std::fs::metadata(path) {
        Ok(metadata) if metadata.is_dir() => Ok(()),
        Ok(_) => bail!(
            "invalid data directory {}: it is a file, not a directory; pass the dataset \
             folder with --data-dir or BST_DATA_DIR",
            path.display()
        ),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => bail!(
            "data directory {} does not exist; pass the dataset folder with --data-dir or \
             BST_DATA_DIR, or import data into it first with `bst ingest`",
            path.display()
        ),
        Err(error) => Err(error)
            .with_context(|| format!("failed to read the data directory {}", path.display())),
    }
}

/// Resolves `--addr` to one socket address. Without API keys it must be a loopback address,
/// because the API would otherwise be open to the network.
async fn resolve_listen_addr(text: &str, has_keys: bool) -> Result<SocketAddr> {
    let addr = tokio::net::lookup_host(text)
        .await
        .with_context(|| {
            format!("invalid --addr {text:?}: expected HOST:PORT such as 127.0.0.1:8000")
        })?
        .next()
        .with_context(|| format!("invalid --addr {text:?}: the host name has no address"))?;
    if !has_keys && !addr.ip().is_loopback() {
        bail!(
            "rejected --addr {addr}: without API keys the REST API listens only on loopback \
             addresses; set BST_API_KEYS to one or more comma-separated keys, or listen on \
             127.0.0.1:{}",
            addr.port()
        );
    }
    Ok(addr)
}

pub(crate) fn parse_time_flag(flag: &str, value: Option<&str>) -> Result<Option<i64>> {
    value
        .map(|text| {
            bst_engine::time::parse_utc(text)
                .map(|datetime| datetime.timestamp_millis())
                .with_context(|| {
                    format!(
                        "invalid {flag} {text:?}: expected {}",
                        bst_engine::time::DATETIME_FORMS
                    )
                })
        })
        .transpose()
}

async fn run_backtest(args: BacktestArgs) -> Result<()> {
    let mut params: serde_json::Value = serde_json::from_str(&args.params)
        .with_context(|| format!("invalid --params {:?}: expected a JSON object", args.params))?;
    if let Some(object) = params.as_object_mut() {
        let numbers = [
            ("position_size", args.position_size),
            ("stop_loss", args.stop_loss),
            ("take_profit", args.take_profit),
            ("slippage", args.slippage),
            ("funding_rate", args.funding_rate),
            ("maintenance_margin_rate", args.maintenance_margin_rate),
        ];
        for (key, value) in numbers {
            if let Some(value) = value {
                object.insert(key.to_string(), serde_json::json!(value));
            }
        }
        if let Some(direction) = &args.direction {
            object.insert("direction".to_string(), serde_json::json!(direction));
        }
    }
    let (strategy, orders) = strategy_and_orders(&args.strategy, &params)?;
    let series = SeriesKey {
        category: args.category.parse::<Category>()?,
        symbol: args.symbol,
        timeframe: args.interval.parse::<Timeframe>()?,
    };
    let mut request = BacktestRequest::new(series, strategy);
    request.range = TimeRange {
        start_ms: parse_time_flag("--start", args.start.as_deref())?,
        end_ms: parse_time_flag("--end", args.end.as_deref())?,
    };
    request.initial_capital = args.initial_capital;
    request.commission = args.commission;
    request.leverage = args.leverage;
    request.orders = orders;

    require_data_dir(&args.data.data_dir)?;
    let engine = Engine::open(&args.data.data_dir)?;
    engine.check_strategy(&request.strategy)?;
    let report = engine.run_backtest(&request).await?;
    if let Some(path) = &args.plot {
        let title = format!(
            "{} timeframe {}, {}: return {:.2} %, max drawdown {:.2} %, {} trades",
            request.series.symbol,
            request.series.timeframe,
            report.strategy_type,
            report.metrics.total_return,
            report.metrics.max_drawdown,
            report.metrics.total_trades
        );
        plot_cmd::write_equity_svg(path, &report, &title)?;
    }
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&report.metrics)?)?;
        return Ok(());
    }

    let metrics = &report.metrics;
    let optional = |value: Option<f64>, unit: &str| {
        value.map_or_else(|| "n/a".to_string(), |value| format!("{value:.4}{unit}"))
    };
    outln!(
        "{} {} {} {} from {} to {} ({} bars)",
        request.series.category,
        request.series.symbol,
        request.series.timeframe,
        report.params,
        bst_engine::dataset::iso_ms(report.data_start_ms),
        bst_engine::dataset::iso_ms(report.data_end_ms),
        report.bars
    )?;
    let lines = [
        ("final capital", format!("{:.4}", metrics.final_capital)),
        ("total return", format!("{:.4} %", metrics.total_return)),
        (
            "buy and hold",
            format!("{:.4} %", metrics.buy_and_hold_return),
        ),
        ("trades", metrics.total_trades.to_string()),
        ("winning trades", metrics.winning_trades.to_string()),
        ("losing trades", metrics.losing_trades.to_string()),
        ("win rate", optional(metrics.win_rate, " %")),
        ("max drawdown", format!("{:.4} %", metrics.max_drawdown)),
        (
            "max dd duration",
            format!(
                "{} bars, {} s",
                metrics.max_drawdown_duration_bars, metrics.max_drawdown_duration_seconds
            ),
        ),
        ("sharpe ratio", optional(metrics.sharpe_ratio, "")),
        ("sortino ratio", optional(metrics.sortino_ratio, "")),
        ("calmar ratio", optional(metrics.calmar_ratio, "")),
        ("profit factor", optional(metrics.profit_factor, "")),
        ("expectancy", optional(metrics.expectancy, "")),
        ("avg trade", optional(metrics.avg_trade_pct, " %")),
        ("largest win", optional(metrics.largest_win, "")),
        ("largest loss", optional(metrics.largest_loss, "")),
        ("exposure", format!("{:.4} %", metrics.exposure_pct)),
        ("commission", format!("{:.4}", metrics.total_commission)),
        ("funding", format!("{:.4}", metrics.total_funding)),
        ("liquidations", metrics.liquidations.to_string()),
    ];
    for (label, value) in lines {
        outln!("{label:<17}{value}")?;
    }
    Ok(())
}

async fn run_serve(args: ServeArgs) -> Result<()> {
    let api_keys = flight_cmd::api_keys();
    let addr = resolve_listen_addr(&args.addr, api_keys.is_some()).await?;
    let data_dir = args.data.data_dir;
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("failed to create the data directory {}", data_dir.display()))?;
    ingest_cmd::load_samples_into_empty(&data_dir)?;

    let store = bst_query::Store::open(&data_dir.join("meta.duckdb"))?
        .with_claim_stale_after(std::time::Duration::from_secs(args.claim_stale_secs));
    let engine = Engine::open_with_memory_limit(&data_dir, args.flight.memory_limit)?;
    let workers = args.workers.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("failed to listen on {addr}"))?;
    let flight_listener =
        flight_cmd::bind_flight(&args.flight.flight_addr, api_keys.is_some()).await?;
    // The REST server's shutdown future also stops the Flight server.
    let (stop_sender, stop_receiver) = tokio::sync::watch::channel(());
    let shutdown = async move {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "failed to listen for Ctrl-C; stop the server with a signal");
            std::future::pending::<()>().await;
        }
        tracing::info!("shutting down");
        let _ = stop_sender.send(());
    };
    let cors_origins = args
        .cors_origins
        .into_iter()
        .map(|origin| origin.0)
        .collect();
    let state = bst_api::AppState::new(store, engine)
        .with_api_keys(api_keys.clone())
        .with_cors_origins(cors_origins);
    let flight = bst_api::flight::serve_flight(
        state.clone(),
        flight_listener,
        api_keys,
        flight_cmd::stopped(stop_receiver),
    );
    tokio::try_join!(bst_api::serve(state, listener, workers, shutdown), flight)?;
    Ok(())
}
