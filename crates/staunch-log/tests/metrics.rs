//! The log's metrics, recorded through the `metrics` facade into a local debugging recorder:
//! every fsync is timed, and group-commit rounds add up to the records and bytes appended.

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use staunch_log::metrics::{FSYNC_DURATION_SECONDS, GROUP_COMMIT_BYTES, GROUP_COMMIT_RECORDS};
use staunch_log::{FileLog, FlushPolicy, LogConfig, LogStore};
use staunch_testkit::log_store_suite::batch;

/// The values recorded into histogram `name`.
fn histogram(
    snapshot: &[(
        metrics_util::CompositeKey,
        Option<metrics::Unit>,
        Option<metrics::SharedString>,
        DebugValue,
    )],
    name: &str,
) -> Vec<f64> {
    snapshot
        .iter()
        .filter(|(key, ..)| key.key().name() == name)
        .flat_map(|(.., value)| match value {
            DebugValue::Histogram(values) => values.iter().map(|v| v.into_inner()).collect(),
            _ => Vec::new(),
        })
        .collect()
}

#[test]
fn fsyncs_are_timed_and_group_commits_add_up_to_what_was_appended() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let dir = tempfile::tempdir().unwrap();
    let mut appended_bytes = 0u64;
    metrics::with_local_recorder(&recorder, || {
        let config = LogConfig {
            flush: FlushPolicy::Always,
            ..LogConfig::default()
        };
        let log = FileLog::open(dir.path(), config).unwrap();
        for tag in 0..5 {
            let mut b = batch(tag, 3, 1000);
            appended_bytes += b.len() as u64;
            log.append(&mut b, 0).unwrap();
        }
        log.close().unwrap();
    });
    let snapshot = snapshotter.snapshot().into_vec();
    let fsyncs = histogram(&snapshot, FSYNC_DURATION_SECONDS);
    assert!(
        fsyncs.len() >= 5,
        "one fsync per lone append at least: {fsyncs:?}"
    );
    assert!(fsyncs.iter().all(|s| *s >= 0.0 && *s < 60.0), "{fsyncs:?}");
    let records: f64 = histogram(&snapshot, GROUP_COMMIT_RECORDS).iter().sum();
    assert_eq!(
        records, 15.0,
        "5 batches of 3 records, each made durable once"
    );
    let bytes: f64 = histogram(&snapshot, GROUP_COMMIT_BYTES).iter().sum();
    assert_eq!(bytes, appended_bytes as f64);
}
