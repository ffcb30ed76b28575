//! The metrics and health listener of `staunch serve` (`--metrics-listen`): a small HTTP/1
//! server answering
//!
//! - `GET /metrics`: every metric of the process in the Prometheus text format, rendered by
//!   `metrics-exporter-prometheus` from what the crates recorded through the `metrics` facade
//!   (the broker's gauges are refreshed first);
//! - `GET /healthz`: 200 while the process serves HTTP at all;
//! - `GET /readyz`: 200 once the broker is open and the Kafka listener accepts, 503 before
//!   that (recovery at start) and once shutdown has begun.
//!
//! The Prometheus recorder is installed as the process's global recorder only here, and only
//! when the listener is configured: without it every metric handle in the libraries is a no-op.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use staunch_broker::Broker;
use tokio::net::TcpListener;

/// Latency buckets (seconds) of every `_seconds` histogram: 50 µs to 30 s.
const SECONDS_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Buckets of the group-commit size in records.
const RECORDS_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0, 16384.0, 65536.0,
];
/// Buckets of the group-commit size in bytes: 1 KiB to 64 MiB.
const BYTES_BUCKETS: &[f64] = &[
    1024.0,
    4096.0,
    16384.0,
    65536.0,
    262_144.0,
    1_048_576.0,
    4_194_304.0,
    16_777_216.0,
    67_108_864.0,
];

/// What the listener answers from: the recorder's handle, the broker once it is open, and
/// whether the broker is ready.
#[derive(Debug, Clone)]
pub(crate) struct MetricsState {
    handle: PrometheusHandle,
    broker: Arc<OnceLock<Broker>>,
    ready: Arc<AtomicBool>,
}

impl MetricsState {
    /// Builds the Prometheus recorder (latency and size histograms with buckets, so they
    /// render as Prometheus histograms), installs it as the global recorder and registers the
    /// help texts of every crate's metrics. Call before the broker opens: handles taken before
    /// the install record nothing.
    pub(crate) fn install() -> Result<Self, String> {
        let bucket_error = |e| format!("metrics buckets: {e}");
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), SECONDS_BUCKETS)
            .map_err(bucket_error)?
            .set_buckets_for_metric(
                Matcher::Full(staunch_log::metrics::GROUP_COMMIT_RECORDS.to_owned()),
                RECORDS_BUCKETS,
            )
            .map_err(bucket_error)?
            .set_buckets_for_metric(
                Matcher::Full(staunch_log::metrics::GROUP_COMMIT_BYTES.to_owned()),
                BYTES_BUCKETS,
            )
            .map_err(bucket_error)?
            .build_recorder();
        let handle = recorder.handle();
        metrics::set_global_recorder(recorder)
            .map_err(|e| format!("installing the metrics recorder: {e}"))?;
        staunch_log::metrics::describe();
        staunch_broker::metrics::describe();
        staunch_server::metrics::describe();
        Ok(Self::new(handle))
    }

    /// Answers from `handle`'s recorder; not ready yet.
    fn new(handle: PrometheusHandle) -> Self {
        MetricsState {
            handle,
            broker: Arc::new(OnceLock::new()),
            ready: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The broker is open and the Kafka listener accepts: `/readyz` answers 200 from now on,
    /// and `/metrics` refreshes the broker's gauges.
    pub(crate) fn broker_ready(&self, broker: &Broker) {
        let _ = self.broker.set(broker.clone());
        self.ready.store(true, Ordering::Release);
    }

    /// Shutdown has begun: `/readyz` answers 503.
    pub(crate) fn shutting_down(&self) {
        self.ready.store(false, Ordering::Release);
    }

    /// The exposition text of every metric now.
    fn render(&self) -> String {
        if let Some(broker) = self.broker.get() {
            broker.refresh_metrics();
        }
        self.handle.run_upkeep();
        self.handle.render()
    }

    fn answer(&self, method: &Method, path: &str) -> Response<Full<Bytes>> {
        let text = |status: StatusCode, body: String, content_type: &'static str| {
            let mut response = Response::new(Full::new(Bytes::from(body)));
            *response.status_mut() = status;
            response.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static(content_type),
            );
            response
        };
        const PLAIN: &str = "text/plain; charset=utf-8";
        if method != Method::GET && method != Method::HEAD {
            return text(
                StatusCode::METHOD_NOT_ALLOWED,
                "only GET\n".to_owned(),
                PLAIN,
            );
        }
        match path {
            "/metrics" => text(
                StatusCode::OK,
                self.render(),
                "text/plain; version=0.0.4; charset=utf-8",
            ),
            "/healthz" => text(StatusCode::OK, "ok\n".to_owned(), PLAIN),
            "/readyz" if self.ready.load(Ordering::Acquire) => {
                text(StatusCode::OK, "ready\n".to_owned(), PLAIN)
            }
            "/readyz" => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready\n".to_owned(),
                PLAIN,
            ),
            _ => text(
                StatusCode::NOT_FOUND,
                "not found; try /metrics, /healthz or /readyz\n".to_owned(),
                PLAIN,
            ),
        }
    }
}

/// Binds the metrics listener on `addr` (port 0 picks a free one).
pub(crate) async fn bind(addr: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("binding the metrics listener {addr}: {e}"))
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `listener` until the task is dropped
/// (aborted at shutdown). A failed connection is logged at debug level and ends only itself.
pub(crate) async fn serve(listener: TcpListener, state: MetricsState) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Typically EMFILE; back off instead of spinning.
                tracing::warn!(error = %e, "metrics listener: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let response = state.answer(request.method(), request.uri().path());
                async move { Ok::<_, Infallible>(response) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(30))
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = connection.await {
                tracing::debug!(%peer, error = %e, "metrics connection failed");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(state: &MetricsState, method: Method, path: &str) -> StatusCode {
        state.answer(&method, path).status()
    }

    #[test]
    fn ready_only_between_the_broker_opening_and_shutdown() {
        // A recorder of its own, not installed: nothing global in a test.
        let state = MetricsState::new(PrometheusBuilder::new().build_recorder().handle());
        assert_eq!(status(&state, Method::GET, "/healthz"), StatusCode::OK);
        assert_eq!(
            status(&state, Method::GET, "/readyz"),
            StatusCode::SERVICE_UNAVAILABLE
        );
        let dir = tempfile::tempdir().unwrap();
        let broker = Broker::open(staunch_broker::BrokerConfig {
            data_dir: dir.path().to_owned(),
            ..staunch_broker::BrokerConfig::default()
        })
        .unwrap();
        state.broker_ready(&broker);
        assert_eq!(status(&state, Method::GET, "/readyz"), StatusCode::OK);
        assert_eq!(status(&state, Method::GET, "/metrics"), StatusCode::OK);
        state.shutting_down();
        assert_eq!(
            status(&state, Method::GET, "/readyz"),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(status(&state, Method::GET, "/healthz"), StatusCode::OK);
        assert_eq!(status(&state, Method::GET, "/other"), StatusCode::NOT_FOUND);
        assert_eq!(
            status(&state, Method::POST, "/metrics"),
            StatusCode::METHOD_NOT_ALLOWED
        );
    }
}
