//! Real Kafka clients no one here wrote — Debian's `kcat` (librdkafka 2.0.2), confluent-kafka
//! and kafka-python (pinned in `tests/clients/requirements.txt`) — against a `staunch serve`
//! child process: metadata and a produce/consume round trip, 10,000 idempotent messages
//! consumed by a group that resumes at its committed offset after a restart (graceful and
//! kill -9), two consumers splitting four partitions and one taking over after the other
//! leaves, and topic administration.
//!
//! The Python programs live in `tests/clients/`; `scripts/install-test-clients` installs kcat
//! and the virtualenv. A missing client fails the test (it never skips silently). The Python
//! interpreter is `$STAUNCH_PYTHON` if set, else `${STAUNCH_VENV:-$HOME/.cache/staunch/venv}`'s.

mod common;

use common::Staunch;
use common::programs::{INSTALL_HINT, client_script, run, run_ok};
use std::process::Command;

/// A `kcat` command against the broker, after checking kcat is installed.
fn kcat(staunch: &Staunch) -> Command {
    match Command::new("kcat").arg("-V").output() {
        Ok(output) if output.status.success() => {}
        Ok(output) => panic!(
            "kcat -V failed ({}): {}; {INSTALL_HINT}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ),
        Err(e) => panic!("kcat not found on PATH: {e}; {INSTALL_HINT}"),
    }
    let mut command = Command::new("kcat");
    command.args(["-b", &staunch.bootstrap()]);
    command
}

#[test]
fn kcat_metadata_produce_consume_round_trip() {
    let work = tempfile::tempdir().expect("temp dir");
    let staunch = Staunch::start(work.path());
    let topic = "kcat-round-trip";

    let listing = run_ok(
        "kcat -L",
        with_args(kcat(&staunch), &["-L"]),
        None,
        work.path(),
    );
    let broker_line = format!("broker 1 at {} ", staunch.bootstrap());
    assert!(
        listing.stdout.contains(" 1 brokers:") && listing.stdout.contains(&broker_line),
        "kcat -L does not list exactly one broker at {}:\n{}",
        staunch.bootstrap(),
        listing.stdout
    );

    let lines: Vec<(String, String)> = (0..20)
        .map(|i| (format!("key-{i}"), format!("value {i} with spaces")))
        .collect();
    let input: String = lines.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    run_ok(
        "kcat -P",
        with_args(kcat(&staunch), &["-P", "-t", topic, "-p", "0", "-K:"]),
        Some(input.as_bytes()),
        work.path(),
    );

    let listing = run_ok(
        "kcat -L -t",
        with_args(kcat(&staunch), &["-L", "-t", topic]),
        None,
        work.path(),
    );
    assert!(
        listing
            .stdout
            .contains(&format!("topic \"{topic}\" with 1 partitions"))
            && listing.stdout.contains("partition 0, leader 1"),
        "kcat -L does not show topic {topic} with partition 0 led by broker 1:\n{}",
        listing.stdout
    );

    let consumed = run_ok(
        "kcat -C",
        with_args(
            kcat(&staunch),
            &[
                "-C",
                "-t",
                topic,
                "-p",
                "0",
                "-e",
                "-o",
                "beginning",
                "-f",
                "%o %k %s\\n",
            ],
        ),
        None,
        work.path(),
    );
    let expected: String = lines
        .iter()
        .enumerate()
        .map(|(offset, (k, v))| format!("{offset} {k} {v}\n"))
        .collect();
    assert_eq!(
        consumed.stdout, expected,
        "kcat -C did not read back exactly what kcat -P wrote"
    );
}

fn with_args(mut command: Command, args: &[&str]) -> Command {
    command.args(args);
    command
}

/// The produce → consume part → restart → resume scenario; `restart` is how the broker goes
/// down between the consumer's commit and the resume.
fn produce_consume_resume(restart: fn(&mut Staunch)) {
    let work = tempfile::tempdir().expect("temp dir");
    let mut staunch = Staunch::start(work.path());
    let script = "confluent_produce_consume_resume.py";
    run_ok(
        "produce 10,000 (acks=all, idempotence)",
        with_args(client_script(script, &staunch), &["--phase", "produce"]),
        None,
        work.path(),
    );
    staunch.stop_gracefully();
    staunch.restart();
    run_ok(
        "group consumer reads 4,000 and commits",
        with_args(
            client_script(script, &staunch),
            &["--phase", "consume-part", "--count", "4000"],
        ),
        None,
        work.path(),
    );
    restart(&mut staunch);
    staunch.restart();
    run_ok(
        "group consumer resumes at 4,000",
        with_args(
            client_script(script, &staunch),
            &["--phase", "resume", "--expect-start", "4000"],
        ),
        None,
        work.path(),
    );
    staunch.stop_gracefully();
}

#[test]
fn confluent_kafka_produce_consume_resume_after_restart() {
    produce_consume_resume(Staunch::stop_gracefully);
}

#[test]
fn confluent_kafka_produce_consume_resume_after_kill9() {
    produce_consume_resume(Staunch::kill9);
}

#[test]
fn confluent_kafka_group_split_and_takeover() {
    let work = tempfile::tempdir().expect("temp dir");
    let staunch = Staunch::start(work.path());
    run_ok(
        "two consumers split 4 partitions, one leaves",
        client_script("confluent_group_rebalance.py", &staunch),
        None,
        work.path(),
    );
}

#[test]
fn kafka_python_admin_and_round_trip() {
    let work = tempfile::tempdir().expect("temp dir");
    let staunch = Staunch::start(work.path());
    // Two runs, so a failure of one part does not hide the other's result.
    let failed: Vec<&str> = ["admin", "round-trip"]
        .into_iter()
        .filter(|part| {
            let what = format!("kafka-python {part}");
            let command = with_args(
                client_script("kafka_python_admin.py", &staunch),
                &["--only", part],
            );
            !run(&what, command, None, work.path()).status.success()
        })
        .collect();
    assert!(
        failed.is_empty(),
        "kafka-python parts failed: {failed:?} (transcripts above)"
    );
}
