//! `GET /metrics`: request counts, a latency histogram, queue depth and busy workers in the
//! Prometheus text format (version 0.0.4).
//!
//! Requests are labelled by method, route template (`/api/v1/backtests/{id}`, never the raw
//! path) and status, so the number of series is bounded by the routes of the router.
//! Requests that match no route share the route label `unmatched`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bst_query::{BacktestFilter, BacktestStatus, OptimizationFilter, OptimizationStatus};

use crate::error::ApiResult;
use crate::state::AppState;

/// Upper bounds of the latency histogram's buckets, in seconds.
const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// Route label of requests that match no route.
const UNMATCHED_ROUTE: &str = "unmatched";

/// Content type of the Prometheus text exposition format.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Request counters and latency histograms of the REST API, shared by all requests.
#[derive(Debug, Clone, Default)]
pub struct HttpMetrics {
    inner: Arc<Mutex<Recorded>>,
}

#[derive(Debug, Default)]
struct Recorded {
    /// Requests by (method, route, status).
    requests: BTreeMap<(&'static str, String, u16), u64>,
    /// Latency by route.
    latency: BTreeMap<String, Histogram>,
}

#[derive(Debug, Default)]
struct Histogram {
    /// Observations at or below each bound of [`LATENCY_BUCKETS`], not cumulative.
    buckets: [u64; LATENCY_BUCKETS.len()],
    count: u64,
    sum_seconds: f64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        if let Some(index) = LATENCY_BUCKETS.iter().position(|bound| seconds <= *bound) {
            self.buckets[index] += 1;
        }
        self.count += 1;
        self.sum_seconds += seconds;
    }
}

impl HttpMetrics {
    fn lock(&self) -> MutexGuard<'_, Recorded> {
        // The counters stay consistent even if a thread panicked while holding the lock.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts one request and its latency.
    pub fn record(&self, method: &Method, route: &str, status: u16, seconds: f64) {
        let mut recorded = self.lock();
        *recorded
            .requests
            .entry((method_label(method), route.to_string(), status))
            .or_insert(0) += 1;
        recorded
            .latency
            .entry(route.to_string())
            .or_default()
            .observe(seconds);
    }

    fn write(&self, out: &mut String) {
        let recorded = self.lock();
        out.push_str(
            "# HELP bst_http_requests_total HTTP requests served, by method, route template \
             and status code.\n# TYPE bst_http_requests_total counter\n",
        );
        for ((method, route, status), count) in &recorded.requests {
            let route = escape_label(route);
            let _ = writeln!(
                out,
                "bst_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {count}"
            );
        }
        out.push_str(
            "# HELP bst_http_request_duration_seconds Time from routing a request to its \
             response head, by route template.\n\
             # TYPE bst_http_request_duration_seconds histogram\n",
        );
        for (route, histogram) in &recorded.latency {
            let route = escape_label(route);
            let mut cumulative = 0;
            for (bound, count) in LATENCY_BUCKETS.iter().zip(histogram.buckets) {
                cumulative += count;
                let _ = writeln!(
                    out,
                    "bst_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{bound}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                out,
                "bst_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}\n\
                 bst_http_request_duration_seconds_sum{{route=\"{route}\"}} {}\n\
                 bst_http_request_duration_seconds_count{{route=\"{route}\"}} {}",
                histogram.count, histogram.sum_seconds, histogram.count
            );
        }
    }
}

/// Returns a label for `method`; methods outside RFC 9110 share the label `other`, so that a
/// client cannot create series at will.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

/// Escapes a label value as the text format requires: backslash, double quote and newline.
fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Number of in-process workers running a job.
#[derive(Debug, Clone, Default)]
pub struct BusyWorkers {
    count: Arc<AtomicUsize>,
}

impl BusyWorkers {
    /// Counts a worker as busy until the returned guard is dropped.
    pub fn start(&self) -> BusyGuard {
        self.count.fetch_add(1, Ordering::Relaxed);
        BusyGuard {
            count: Arc::clone(&self.count),
        }
    }

    /// Returns the number of busy workers.
    pub fn get(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }
}

/// A worker counted as busy; dropping it ends the count.
#[derive(Debug)]
pub struct BusyGuard {
    count: Arc<AtomicUsize>,
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Middleware that records each request's method, route template, status and latency.
pub(crate) async fn track_requests(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED_ROUTE.to_string(), |path| {
            path.as_str().to_string()
        });
    let response = next.run(request).await;
    state.http_metrics.record(
        &method,
        &route,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

/// Job counts read from the store when `/metrics` is scraped.
#[derive(Debug, Clone, Copy)]
struct JobCounts {
    queued_backtests: u64,
    queued_optimizations: u64,
    running_backtests: u64,
    running_optimizations: u64,
}

fn count_jobs(store: &bst_query::Store) -> bst_query::Result<JobCounts> {
    let backtests = |status| {
        let filter = BacktestFilter {
            status: Some(status),
            limit: 1,
            ..BacktestFilter::default()
        };
        store.list_backtests(&filter).map(|page| page.total)
    };
    let optimizations = |status| {
        let filter = OptimizationFilter {
            status: Some(status),
            limit: 1,
            ..OptimizationFilter::default()
        };
        store.list_optimizations(&filter).map(|page| page.total)
    };
    Ok(JobCounts {
        queued_backtests: backtests(BacktestStatus::Queued)?,
        queued_optimizations: optimizations(OptimizationStatus::Queued)?,
        running_backtests: backtests(BacktestStatus::Running)?,
        running_optimizations: optimizations(OptimizationStatus::Running)?,
    })
}

/// `GET /metrics`.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    description = "Prometheus text format 0.0.4: `bst_http_requests_total` (counter by \
        method, route template and status), `bst_http_request_duration_seconds` (histogram \
        by route template, in seconds), `bst_jobs_queued` and `bst_jobs_running` (gauges by \
        kind: backtest or optimization, read from the store), `bst_workers_busy` and \
        `bst_workers` (gauges of in-process workers).",
    responses(
        (status = 200, description = "Metrics in the Prometheus text format",
            content_type = "text/plain", body = String),
        (status = 401, description = "Missing or invalid API key", body = crate::error::ErrorBody),
    )
)]
pub(crate) async fn metrics(State(state): State<AppState>) -> ApiResult<Response> {
    let jobs = state.with_store(count_jobs).await?;
    let mut out = String::with_capacity(4096);
    state.http_metrics.write(&mut out);
    out.push_str(
        "# HELP bst_jobs_queued Jobs waiting for a worker, by kind.\n\
         # TYPE bst_jobs_queued gauge\n",
    );
    let _ = writeln!(
        out,
        "bst_jobs_queued{{kind=\"backtest\"}} {}\nbst_jobs_queued{{kind=\"optimization\"}} {}",
        jobs.queued_backtests, jobs.queued_optimizations
    );
    out.push_str(
        "# HELP bst_jobs_running Jobs claimed by a worker of any process, by kind.\n\
         # TYPE bst_jobs_running gauge\n",
    );
    let _ = writeln!(
        out,
        "bst_jobs_running{{kind=\"backtest\"}} {}\nbst_jobs_running{{kind=\"optimization\"}} {}",
        jobs.running_backtests, jobs.running_optimizations
    );
    let _ = writeln!(
        out,
        "# HELP bst_workers_busy In-process workers running a job.\n\
         # TYPE bst_workers_busy gauge\n\
         bst_workers_busy {}\n\
         # HELP bst_workers In-process workers started by this process.\n\
         # TYPE bst_workers gauge\n\
         bst_workers {}",
        state.busy_workers.get(),
        state.workers.load(Ordering::Relaxed)
    );
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], out).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let metrics = HttpMetrics::default();
        metrics.record(&Method::GET, "/api/v1/backtests/{id}", 200, 0.002);
        metrics.record(&Method::GET, "/api/v1/backtests/{id}", 404, 20.0);
        let mut out = String::new();
        metrics.write(&mut out);
        for line in [
            "bst_http_requests_total{method=\"GET\",route=\"/api/v1/backtests/{id}\",status=\"200\"} 1",
            "bst_http_requests_total{method=\"GET\",route=\"/api/v1/backtests/{id}\",status=\"404\"} 1",
            "bst_http_request_duration_seconds_bucket{route=\"/api/v1/backtests/{id}\",le=\"0.001\"} 0",
            "bst_http_request_duration_seconds_bucket{route=\"/api/v1/backtests/{id}\",le=\"0.0025\"} 1",
            "bst_http_request_duration_seconds_bucket{route=\"/api/v1/backtests/{id}\",le=\"10\"} 1",
            "bst_http_request_duration_seconds_bucket{route=\"/api/v1/backtests/{id}\",le=\"+Inf\"} 2",
            "bst_http_request_duration_seconds_count{route=\"/api/v1/backtests/{id}\"} 2",
        ] {
            assert!(
                out.lines().any(|written| written == line),
                "{line} missing in:\n{out}"
            );
        }
    }

    #[test]
    fn unknown_methods_share_a_label() {
        let method = Method::from_bytes(b"BREW").unwrap();
        assert_eq!(method_label(&method), "other");
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn busy_guard_counts_until_dropped() {
        let busy = BusyWorkers::default();
        let first = busy.start();
        let second = busy.start();
        assert_eq!(busy.get(), 2);
        drop(first);
        assert_eq!(busy.get(), 1);
        drop(second);
        assert_eq!(busy.get(), 0);
    }
}
