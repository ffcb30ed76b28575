//! The metrics this crate records, through the [`metrics`] facade: names in one place, and
//! [`describe`] to give them help texts. The `staunch serve` binary installs a Prometheus
//! recorder before it binds the server; without one every handle is a no-op.

use std::time::Instant;

use metrics::{Gauge, Unit};
use staunch_protocol::kafka_protocol::messages::ApiKey;

/// Histogram, label `api` (the Kafka API name, e.g. `Produce`, `Fetch`): seconds from a
/// request's frame being read to its answer being ready — for a produce, until its records are
/// as durable as the flush policy promises; for a fetch, long-poll wait included.
pub const REQUEST_DURATION_SECONDS: &str = "staunch_server_request_duration_seconds";
/// Counter, label `api`: requests handled.
pub const REQUESTS_TOTAL: &str = "staunch_server_requests_total";
/// Gauge: client connections open now.
pub const ACTIVE_CONNECTIONS: &str = "staunch_server_active_connections";
/// Counter: connections accepted since the start.
pub const CONNECTIONS_TOTAL: &str = "staunch_server_connections_total";
/// Counter, label `mechanism`: failed client authentications (SASL).
pub const AUTHENTICATION_FAILURES_TOTAL: &str = "staunch_authentication_failures_total";
/// Counter: SASL attempts refused unheard because their address failed too often.
pub const AUTHENTICATION_RATE_LIMITED_TOTAL: &str = "staunch_authentication_rate_limited_total";

/// Registers the help text and unit of every metric above with the installed recorder.
pub fn describe() {
    metrics::describe_histogram!(
        REQUEST_DURATION_SECONDS,
        Unit::Seconds,
        "Time from reading a request to its answer being ready, by Kafka API"
    );
    metrics::describe_counter!(
        REQUESTS_TOTAL,
        Unit::Count,
        "Requests handled, by Kafka API"
    );
    metrics::describe_gauge!(
        ACTIVE_CONNECTIONS,
        Unit::Count,
        "Client connections open now"
    );
    metrics::describe_counter!(
        CONNECTIONS_TOTAL,
        Unit::Count,
        "Client connections accepted"
    );
    metrics::describe_counter!(
        AUTHENTICATION_FAILURES_TOTAL,
        Unit::Count,
        "Failed client authentications, by SASL mechanism"
    );
    metrics::describe_counter!(
        AUTHENTICATION_RATE_LIMITED_TOTAL,
        Unit::Count,
        "SASL attempts refused unheard: their client address failed too often"
    );
}

/// Counts one failed authentication of `mechanism` (e.g. `PLAIN`, `SCRAM-SHA-256`).
pub(crate) fn authentication_failed(mechanism: &'static str) {
    metrics::counter!(AUTHENTICATION_FAILURES_TOTAL, "mechanism" => mechanism).increment(1);
}

/// Counts one SASL attempt refused by the per-address failure limit.
pub(crate) fn authentication_rate_limited() {
    metrics::counter!(AUTHENTICATION_RATE_LIMITED_TOTAL).increment(1);
}

/// Counts one open connection in [`ACTIVE_CONNECTIONS`] while it lives.
#[derive(Debug)]
pub(crate) struct ConnectionGauge(Gauge);

impl ConnectionGauge {
    /// Counts a connection just accepted.
    pub(crate) fn open() -> Self {
        metrics::counter!(CONNECTIONS_TOTAL).increment(1);
        let gauge = metrics::gauge!(ACTIVE_CONNECTIONS);
        gauge.increment(1.0);
        ConnectionGauge(gauge)
    }
}

impl Drop for ConnectionGauge {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// The API's name as the `api` label shows it.
fn api_name(api: ApiKey) -> &'static str {
    match api {
        ApiKey::Produce => "Produce",
        ApiKey::Fetch => "Fetch",
        ApiKey::ListOffsets => "ListOffsets",
        ApiKey::Metadata => "Metadata",
        ApiKey::OffsetCommit => "OffsetCommit",
        ApiKey::OffsetFetch => "OffsetFetch",
        ApiKey::FindCoordinator => "FindCoordinator",
        ApiKey::JoinGroup => "JoinGroup",
        ApiKey::Heartbeat => "Heartbeat",
        ApiKey::LeaveGroup => "LeaveGroup",
        ApiKey::SyncGroup => "SyncGroup",
        ApiKey::DescribeGroups => "DescribeGroups",
        ApiKey::ListGroups => "ListGroups",
        ApiKey::SaslHandshake => "SaslHandshake",
        ApiKey::ApiVersions => "ApiVersions",
        ApiKey::CreateTopics => "CreateTopics",
        ApiKey::DeleteTopics => "DeleteTopics",
        ApiKey::InitProducerId => "InitProducerId",
        ApiKey::OffsetForLeaderEpoch => "OffsetForLeaderEpoch",
        ApiKey::DescribeConfigs => "DescribeConfigs",
        ApiKey::AlterConfigs => "AlterConfigs",
        ApiKey::DescribeLogDirs => "DescribeLogDirs",
        ApiKey::SaslAuthenticate => "SaslAuthenticate",
        ApiKey::CreatePartitions => "CreatePartitions",
        ApiKey::DeleteGroups => "DeleteGroups",
        ApiKey::IncrementalAlterConfigs => "IncrementalAlterConfigs",
        ApiKey::DescribeCluster => "DescribeCluster",
        _ => "Other",
    }
}

/// Times one request from when it was read; [`RequestTimer::done`] records it.
#[derive(Debug)]
pub(crate) struct RequestTimer {
    api: &'static str,
    started: Instant,
}

impl RequestTimer {
    /// Starts timing a request of `api`.
    pub(crate) fn start(api: ApiKey) -> Self {
        RequestTimer {
            api: api_name(api),
            started: Instant::now(),
        }
    }

    /// Records the request as answered now.
    pub(crate) fn done(self) {
        let api = self.api;
        metrics::counter!(REQUESTS_TOTAL, "api" => api).increment(1);
        metrics::histogram!(REQUEST_DURATION_SECONDS, "api" => api)
            .record(self.started.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    use super::*;

    #[test]
    fn requests_are_counted_and_timed_by_api_and_connections_while_open() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let snapshot = metrics::with_local_recorder(&recorder, || {
            let first = ConnectionGauge::open();
            let second = ConnectionGauge::open();
            drop(first);
            RequestTimer::start(ApiKey::Produce).done();
            RequestTimer::start(ApiKey::Produce).done();
            RequestTimer::start(ApiKey::Fetch).done();
            authentication_failed("PLAIN");
            // Taken while the second connection is open.
            let snapshot = snapshotter.snapshot().into_vec();
            drop(second);
            snapshot
        });
        let find = |name: &str, api: Option<&str>| {
            snapshot
                .iter()
                .find(|(k, ..)| {
                    k.key().name() == name
                        && api.is_none_or(|a| k.key().labels().any(|l| l.value() == a))
                })
                .map(|(.., v)| v)
        };
        assert_eq!(
            find(ACTIVE_CONNECTIONS, None),
            Some(&DebugValue::Gauge(1.0.into()))
        );
        assert_eq!(find(CONNECTIONS_TOTAL, None), Some(&DebugValue::Counter(2)));
        assert_eq!(
            find(REQUESTS_TOTAL, Some("Produce")),
            Some(&DebugValue::Counter(2))
        );
        assert_eq!(
            find(REQUESTS_TOTAL, Some("Fetch")),
            Some(&DebugValue::Counter(1))
        );
        match find(REQUEST_DURATION_SECONDS, Some("Produce")) {
            Some(DebugValue::Histogram(values)) => assert_eq!(values.len(), 2),
            other => panic!("no produce latencies: {other:?}"),
        }
        assert_eq!(
            find(AUTHENTICATION_FAILURES_TOTAL, Some("PLAIN")),
            Some(&DebugValue::Counter(1))
        );
    }
}
