//! A real process appends with flush `always` and prints every offset it was told is durable;
//! the test kills it with SIGKILL at a random moment, reopens the log and finds every printed
//! offset intact — three rounds on the same directory, each resuming after recovery.
//!
//! The child is this same test binary running the ignored test `child_appender`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use staunch_log::{FileLog, LogConfig, LogStore};
use staunch_testkit::log_store_suite::{batch, read_all};

const DIR_VAR: &str = "STAUNCH_KILL9_DIR";

/// Not a test on its own: the child process of `acknowledged_offsets_survive_kill_9`.
#[test]
#[ignore = "child process of acknowledged_offsets_survive_kill_9"]
fn child_appender() {
    let dir = std::env::var(DIR_VAR).unwrap_or_else(|_| {
        panic!(
            "child_appender is the child half of acknowledged_offsets_survive_kill_9 and must \
             be started by it with {DIR_VAR} set; run that test instead"
        )
    });
    let config = LogConfig {
        segment_bytes: 2 * 1024 * 1024,
        ..LogConfig::default()
    };
    let log = Arc::new(FileLog::open(&dir, config).expect("child opens the log"));
    let writers: Vec<_> = (0..4u32)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                let round = std::process::id();
                for i in 0u32.. {
                    let tag = (round % 1000) * 1_000_000 + t * 100_000 + i % 100_000;
                    let mut bytes = batch(tag, 1 + i % 8, 1_000);
                    let info = log.append(&mut bytes, 0).expect("append");
                    // Printed only after the append returned as durable.
                    println!("ACK {} {} {}", info.base_offset, info.last_offset, tag);
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
}

#[test]
fn acknowledged_offsets_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut total_acked = 0;
    for round in 0..3 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "kill9::child_appender",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(DIR_VAR, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("ACK ") && tx.send(line).is_err() {
                    break;
                }
            }
        });
        // Wait for the first acknowledgement, then kill at a random moment after it. The random
        // delay is part of what is tested (where the kill lands), not synchronisation.
        let first = rx.recv_timeout(Duration::from_secs(120));
        std::thread::sleep(Duration::from_millis(fastrand::u64(0..500)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        reader.join().unwrap();
        let mut lines: Vec<String> = first.into_iter().collect();
        lines.extend(rx.try_iter());
        assert!(
            !lines.is_empty(),
            "round {round}: the child acknowledged nothing"
        );

        let log = FileLog::open(dir.path(), LogConfig::default()).unwrap();
        assert!(
            !log.recovery().clean,
            "a killed process leaves no clean-shutdown marker"
        );
        let records: std::collections::HashMap<i64, Vec<u8>> =
            read_all(&log, 0).into_iter().collect();
        for line in &lines {
            let fields: Vec<i64> = line[4..].split(' ').map(|f| f.parse().unwrap()).collect();
            let (base, last, tag) = (fields[0], fields[1], fields[2]);
            for offset in base..=last {
                let expected = format!("{tag}:{}", offset - base);
                assert_eq!(
                    records.get(&offset).map(Vec::as_slice),
                    Some(expected.as_bytes()),
                    "round {round}: acknowledged offset {offset} lost or changed"
                );
            }
        }
        total_acked += lines.len();
        drop(log);
    }
    assert!(total_acked > 0);
}
