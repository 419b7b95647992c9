//! Prometheus metrics (`ash-gen-server start --metrics-addr 127.0.0.1:9568`): the request,
//! expiry and restart counters the layers record as they work, plus gauges sampled once a
//! second from the node and its record service, served as Prometheus text on the node's tokio
//! runtime by `metrics-exporter-prometheus`.
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `ash_gen_server_requests_total` | counter | `kind` (get, query...), `result` (ok, error) |
//! | `ash_gen_server_request_duration_seconds` | histogram | `kind` |
//! | `ash_gen_server_expiries_total` | counter | `reason`, `handled` (true: sent to a handler) |
//! | `ash_gen_server_restarts_total` | counter | `decision` (restart, give_up) |
//! | `ash_gen_server_records` | gauge | `resource` |
//! | `ash_gen_server_record_pids` | gauge | |
//! | `ash_gen_server_connections` | gauge | |
//! | `ash_gen_server_timer_heap_size` | gauge | |
//! | `ash_gen_server_expiry_handlers` | gauge | |
//! | `ash_gen_server_resident_memory_bytes` | gauge | |

use crate::protocol::Service;
use metrics_exporter_prometheus::PrometheusBuilder;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// Why the metrics endpoint could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot serve metrics on {addr}: {reason}")]
pub struct MetricsError {
    /// The address asked for.
    pub addr: SocketAddr,
    /// Why.
    pub reason: String,
}

/// Serves the metrics on `addr` and samples the gauges of `service` once a second. Needs a
/// tokio runtime; the returned task samples until aborted.
pub fn serve(addr: SocketAddr, service: &Arc<Service>) -> Result<JoinHandle<()>, MetricsError> {
    let fail = |reason: String| MetricsError { addr, reason };
    // Bind first, so a taken port is an error at start rather than in the background.
    std::net::TcpListener::bind(addr).map_err(|e| fail(e.to_string()))?;
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full(
                "ash_gen_server_request_duration_seconds".into(),
            ),
            &[
                10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3,
                50e-3, 100e-3, 250e-3, 1.0,
            ],
        )
        .map_err(|e| fail(e.to_string()))?
        .install()
        .map_err(|e| fail(e.to_string()))?;
    crate::protocol::caller::record_metrics(true);
    let weak = Arc::downgrade(service);
    Ok(tokio::spawn(async move {
        let mut every_second = tokio::time::interval(Duration::from_secs(1));
        loop {
            every_second.tick().await;
            let Some(svc) = weak.upgrade() else { return };
            sample(&svc);
        }
    }))
}

/// Sets the gauges from the node and its records now.
pub fn sample(svc: &Service) {
    let records = &svc.records;
    for name in records.store.names() {
        let mut n = records.store.get(name).map(|r| r.len()).unwrap_or(0);
        n += records
            .store
            .tenants_of(name)
            .iter()
            .map(|r| r.len())
            .sum::<usize>();
        metrics::gauge!("ash_gen_server_records", "resource" => name.as_str()).set(n as f64);
    }
    metrics::gauge!("ash_gen_server_record_pids").set(records.pids() as f64);
    metrics::gauge!("ash_gen_server_connections").set(svc.node().peers().len() as f64);
    metrics::gauge!("ash_gen_server_timer_heap_size").set(records.timers.pending() as f64);
    metrics::gauge!("ash_gen_server_expiry_handlers").set(records.expiry.count() as f64);
    if let Some(rss) = crate::node::rss_bytes() {
        metrics::gauge!("ash_gen_server_resident_memory_bytes").set(rss as f64);
    }
}
