//! Flags of `bst serve` for the Arrow Flight port and the engine's memory pool.

use std::net::SocketAddr;

use anyhow::{Context, Result, bail};
use bst_api::flight::ApiKeys;
use clap::Args;

/// Environment variable with the comma-separated API keys of the Flight port.
const API_KEYS_VAR: &str = "BST_API_KEYS";

#[derive(Debug, Args)]
pub(crate) struct FlightArgs {
    /// Address of the Arrow Flight and Flight SQL port, as HOST:PORT. It must be a loopback
    /// address unless BST_API_KEYS is set.
    #[arg(long, env = "BST_FLIGHT_ADDR", default_value = "127.0.0.1:50051")]
    pub(crate) flight_addr: String,
    /// Memory pool limit of the DataFusion session in bytes, or with a KiB, MiB or GiB
    /// suffix (64MiB). Default: no limit.
    #[arg(long, env = "BST_MEMORY_LIMIT", value_parser = parse_bytes)]
    pub(crate) memory_limit: Option<usize>,
}

/// Returns the API keys of `BST_API_KEYS`, or `None` when it is unset or lists no key.
pub(crate) fn api_keys() -> Option<ApiKeys> {
    std::env::var(API_KEYS_VAR)
        .ok()
        .and_then(|list| ApiKeys::parse(&list))
}

/// Resolves and binds `--flight-addr`. Without API keys only loopback addresses are allowed,
/// the same rule as for the REST address.
pub(crate) async fn bind_flight(text: &str, has_keys: bool) -> Result<tokio::net::TcpListener> {
    let addr: SocketAddr = tokio::net::lookup_host(text)
        .await
        .with_context(|| {
            format!("invalid --flight-addr {text:?}: expected HOST:PORT such as 127.0.0.1:50051")
        })?
        .next()
        .with_context(|| format!("invalid --flight-addr {text:?}: the host name has no address"))?;
    if !has_keys && !addr.ip().is_loopback() {
        bail!(
            "refusing to serve Flight on {addr}: without {API_KEYS_VAR} the server binds only \
             to loopback addresses such as 127.0.0.1"
        );
    }
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("failed to listen on {addr} for Flight"))
}

/// Resolves when `stop` changes or its sender is dropped.
pub(crate) async fn stopped(mut stop: tokio::sync::watch::Receiver<()>) {
    let _ = stop.changed().await;
}

/// Parses a byte count: digits with an optional `KiB`, `MiB` or `GiB` suffix (or `K`, `M`,
/// `G`, also powers of 1024).
fn parse_bytes(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, suffix) = text.split_at(digits_end);
    let multiplier: usize = match suffix.trim() {
        "" | "B" => 1,
        "K" | "KiB" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        other => {
            return Err(format!(
                "invalid size suffix {other:?}: expected bytes or KiB, MiB, GiB"
            ));
        }
    };
    let count: usize = digits.parse().map_err(|_| {
        format!("invalid size {text:?}: expected a number such as 67108864 or 64MiB")
    })?;
    count
        .checked_mul(multiplier)
        .filter(|bytes| *bytes > 0)
        .ok_or_else(|| {
            format!(
                "invalid size {text:?}: expected more than 0 bytes, and less than the address space"
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_suffixes() {
        assert_eq!(parse_bytes("1024"), Ok(1024));
        assert_eq!(parse_bytes("64MiB"), Ok(64 << 20));
        assert_eq!(parse_bytes("2G"), Ok(2 << 30));
        assert!(parse_bytes("0").is_err());
        assert!(parse_bytes("64MB").is_err());
        assert!(parse_bytes("lots").is_err());
    }
}
