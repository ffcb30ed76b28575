//! Crash tests with zero-filling on (flush `always`): a background thread writes and fsyncs
//! zeros past the data of the active segment while appends, rolls and truncations go on.

use std::time::{Duration, Instant};

use staunch_log::{FlushPolicy, LogConfig, LogError, LogStore};
use staunch_testkit::log_store_suite::batch;
use staunch_testkit::{CrashMode, FaultyIo};

use super::{config, open_configured, power_loss_during_concurrent_appends, values};

const FIRST_SEGMENT: &str = "00000000000000000000.log";

/// Flush `always` with small segments that zero-fill `zero_fill_bytes` ahead.
fn zero_filling(segment_bytes: u64, zero_fill_bytes: u64) -> LogConfig {
    LogConfig {
        segment_bytes,
        zero_fill_bytes,
        ..config(FlushPolicy::Always)
    }
}

/// Waits (at most 10 s) until `done` holds.
fn eventually(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Every acknowledged append survives a power loss while zeros are written ahead of the data
/// and segments roll every few appends (each roll waits for a running zero-fill).
#[test]
fn zero_fill_power_loss_during_concurrent_appends_loses_nothing_acknowledged() {
    power_loss_during_concurrent_appends(zero_filling(16 * 1024, 4 * 1024));
}

/// The zeros past the data are written and fsynced by the background thread; appends land in
/// them; they are never served; a power loss leaves them as a tail that recovery trims without
/// calling it damage; a truncation and a close trim them too.
#[test]
fn zeros_ahead_of_the_data_are_never_served_and_are_trimmed() {
    let io = FaultyIo::new();
    let cfg = zero_filling(1024 * 1024, 16 * 1024);
    let log = open_configured(&io, cfg.clone()).unwrap();
    log.append(&mut batch(0, 4, 1_000), 0).unwrap();
    let file_len = || io.live_bytes(FIRST_SEGMENT).unwrap().len() as u64;
    eventually("zeros are written past the data", || {
        io.durable_len(FIRST_SEGMENT).unwrap() as u64 > log.size_bytes()
    });
    let live = io.live_bytes(FIRST_SEGMENT).unwrap();
    assert!(
        live[log.size_bytes() as usize..].iter().all(|&b| b == 0),
        "only zeros past the data"
    );

    // Appends go into the zeroed part (and past it: the zeros keep moving ahead).
    for i in 1..200 {
        log.append(&mut batch(i, 4, 1_000), 0).unwrap();
    }
    assert!(
        log.size_bytes() > 16 * 1024,
        "appends went past the first zeros"
    );
    let acknowledged = values(&log);
    assert_eq!(acknowledged.len(), 800, "zeros are never served as records");

    let image = io.crash(CrashMode::DropUnsynced);
    let recovered = open_configured(&image, cfg.clone()).unwrap();
    assert_eq!(values(&recovered), acknowledged);
    assert_eq!(
        recovered.recovery().truncation_reason,
        None,
        "a zero tail is not damage"
    );
    drop(recovered);

    // A truncation waits for a running zero-fill and cuts the zeros with the data.
    eventually("zeros are written past the data", || {
        file_len() > log.size_bytes()
    });
    assert_eq!(log.truncate_to(400).unwrap(), 400);
    assert_eq!(values(&log), acknowledged[..400]);
    for i in 300..320 {
        log.append(&mut batch(i, 4, 1_000), 0).unwrap();
    }
    let acknowledged = values(&log);
    let recovered = open_configured(&io.crash(CrashMode::DropUnsynced), cfg.clone()).unwrap();
    assert_eq!(values(&recovered), acknowledged);
    drop(recovered);

    // A close leaves the file exactly as long as its data, and the reopen trusts it.
    log.close().unwrap();
    assert_eq!(file_len(), log.size_bytes(), "close trims the zeros");
    drop(log);
    let reopened = open_configured(&io, cfg).unwrap();
    assert!(reopened.recovery().clean);
    assert_eq!(values(&reopened), acknowledged);
}

/// A failed fsync poisons the log whether the group commit or the zero-filler hits it: the
/// append that saw it fails, every later one fails, and everything acknowledged before
/// survives a power loss.
#[test]
fn zero_fill_failed_fsync_fails_the_log_wherever_it_lands() {
    let cfg = zero_filling(1024 * 1024, 16 * 1024);
    for failing_sync in 1..=4 {
        let io = FaultyIo::new();
        let log = open_configured(&io, cfg.clone()).unwrap();
        log.append(&mut batch(0, 4, 1_000), 0).unwrap();
        io.fail_one_sync_after(failing_sync);
        let mut failed = None;
        let mut acknowledged_records = 4;
        for i in 1..1_000 {
            match log.append(&mut batch(i, 4, 1_000), 0) {
                Ok(_) => acknowledged_records += 4,
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        let err = failed.expect("the failed fsync reached an append");
        assert!(matches!(err, LogError::Failed { .. }), "got {err}");
        assert!(
            err.to_string().contains("fdatasync"),
            "the error says why: {err}"
        );
        assert!(
            log.append(&mut batch(5_000, 1, 1_000), 0).is_err(),
            "sync {failing_sync}: a failed log stays failed"
        );
        // Everything written, the failed append's batch included (it may or may not survive).
        let written = values(&log);
        let recovered = open_configured(&io.crash(CrashMode::DropUnsynced), cfg.clone()).unwrap();
        let found = values(&recovered);
        assert!(
            found.len() >= acknowledged_records && found[..] == written[..found.len()],
            "sync {failing_sync}: recovered {} records of {acknowledged_records} acknowledged",
            found.len(),
        );
    }
}
