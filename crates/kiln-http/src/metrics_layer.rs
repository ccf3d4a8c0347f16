//! Request counters and latency histograms per route and status class.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;

pub(crate) async fn record(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let started = Instant::now();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("kiln_http_requests_total", "route" => route.clone(), "status" => status)
        .increment(1);
    // Time to the response head; bodies stream after this.
    metrics::histogram!("kiln_http_response_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}
