//! Route handlers under `/api/v1`, one module per resource.

pub(crate) mod backtests;
pub(crate) mod bots;
pub(crate) mod equity;
pub(crate) mod marketdata;
pub(crate) mod optimizations;
pub(crate) mod strategies;

use crate::error::{ApiError, ApiResult};

/// Default page size of list routes.
pub(crate) const DEFAULT_LIMIT: u64 = 50;

/// Largest page size of list routes.
pub(crate) const MAX_LIMIT: u64 = 500;

/// Resolves `limit` and `offset` query parameters against the defaults and bounds.
pub(crate) fn page_bounds(
    limit: Option<u64>,
    offset: Option<u64>,
    default_limit: u64,
    max_limit: u64,
) -> ApiResult<(u64, u64)> {
    let limit = limit.unwrap_or(default_limit);
    if limit == 0 || limit > max_limit {
        return Err(ApiError::unprocessable(format!(
            "invalid limit {limit}: expected 1 to {max_limit}"
        )));
    }
    Ok((limit, offset.unwrap_or(0)))
}
