//! Real Kafka clients no one here wrote — Debian's `kcat` (librdkafka 2.0.2), confluent-kafka,
//! kafka-python and aiokafka (pinned in `tests/clients/requirements.txt`) — against a `staunch
//! serve` child process: metadata and a produce/consume round trip, 10,000 idempotent messages
//! consumed by a group that resumes at its committed offset after a restart (graceful and
//! kill -9), two consumers splitting four partitions and one taking over after the other
//! leaves, topic administration, compressed batches of every codec both ways (`staunch
//! produce --compression` read by confluent-kafka; confluent-kafka's `compression.type` read by
//! `staunch consume`), and transactional producers (confluent-kafka, aiokafka) refused at once
//! with a fatal error, since Staunch has no transactions.
//!
//! The Python programs live in `tests/clients/`; `scripts/install-test-clients` installs kcat
//! and the virtualenv. A missing client fails the test (it never skips silently). The Python
//! interpreter is `$STAUNCH_PYTHON` if set, else `${STAUNCH_VENV:-$HOME/.cache/staunch/venv}`'s.

mod common;

use common::Staunch;
use common::programs::{INSTALL_HINT, client_script, run, run_ok};
use staunch_core::batch::{Compression, batches};
use std::collections::BTreeSet;
use std::path::Path;
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

/// The codecs the compression tests cover (every one Kafka has).
const CODECS: [Compression; 4] = [
    Compression::Gzip,
    Compression::Snappy,
    Compression::Lz4,
    Compression::Zstd,
];

/// `staunch <args>` against the broker.
fn staunch_cli(staunch: &Staunch, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_staunch"));
    command
        .args(args)
        .env("STAUNCH_BOOTSTRAP", staunch.bootstrap())
        .env("NO_COLOR", "1");
    command
}

/// Records as `key=value` lines (every tenth without a key): compressible text of varying
/// length, and two values of 100 KB that span several snappy (32 KiB) and LZ4 (64 KiB) blocks
/// and get batches of their own.
fn compression_input() -> (Vec<(Option<String>, String)>, Vec<u8>) {
    let mut records = Vec::new();
    for i in 0..400 {
        let value = format!(
            "value {i:04} {}",
            "lorem ipsum dolor sit amet ".repeat(i % 37)
        );
        let key = (i % 10 != 0).then(|| format!("key-{}", i % 7));
        records.push((key, value));
        if i == 150 || i == 300 {
            let big: String = (0..100_000)
                .map(|j| char::from(b'a' + ((j / 7 + j / 1000 + i) % 26) as u8))
                .collect();
            records.push((Some(format!("big-{i}")), big));
        }
    }
    let mut text = String::new();
    for (key, value) in &records {
        if let Some(key) = key {
            text.push_str(key);
            text.push('=');
        }
        text.push_str(value);
        text.push('\n');
    }
    (records, text.into_bytes())
}

/// The codecs of every batch stored for `topic`, read from its segment files under the
/// broker's data directory (the bytes exactly as the producer sent them).
fn stored_codecs(work: &Path, topic: &str) -> BTreeSet<Option<Compression>> {
    fn segments(dir: &Path, topic: &str, under_topic: bool, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("reading the data directory") {
            let path = entry.expect("a directory entry").path();
            let in_topic = under_topic || path.file_name().is_some_and(|n| n == topic);
            if path.is_dir() {
                segments(&path, topic, in_topic, out);
            } else if in_topic && path.extension().is_some_and(|e| e == "log") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    segments(&work.join("data"), topic, false, &mut files);
    assert!(!files.is_empty(), "no segment files for {topic}");
    let mut codecs = BTreeSet::new();
    let mut count = 0;
    for file in files {
        let bytes = std::fs::read(&file).expect("reading a segment");
        for batch in batches(&bytes).map_while(Result::ok) {
            batch.verify_integrity().expect("stored batches are intact");
            codecs.insert(batch.compression());
            count += 1;
        }
    }
    assert!(count > 0, "no batches stored for {topic}");
    codecs
}

/// `staunch produce --compression X`, i.e. the Rust producer, writes batches of codec X that
/// confluent-kafka (librdkafka) reads back exactly.
#[test]
fn confluent_kafka_reads_what_staunch_produce_compressed() {
    let work = tempfile::tempdir().expect("temp dir");
    let staunch = Staunch::start(work.path());
    let (records, input) = compression_input();
    let input_path = work.path().join("records.txt");
    std::fs::write(&input_path, &input).expect("writing the input");
    let input_arg = input_path.to_str().expect("a UTF-8 path");
    for codec in CODECS {
        let topic = format!("from-staunch-{codec}");
        run_ok(
            &format!("staunch topics create {topic}"),
            staunch_cli(&staunch, &["topics", "create", &topic, "--partitions", "1"]),
            None,
            work.path(),
        );
        let ran = run_ok(
            &format!("staunch produce --compression {codec}"),
            staunch_cli(
                &staunch,
                &[
                    "produce",
                    &topic,
                    "-K",
                    "=",
                    "--compression",
                    codec.name(),
                    "--linger",
                    "50ms",
                ],
            ),
            Some(&input),
            work.path(),
        );
        assert!(
            ran.stdout
                .contains(&format!("Produced {} records to {topic}.", records.len())),
            "{}",
            ran.transcript()
        );
        assert_eq!(
            stored_codecs(work.path(), &topic),
            BTreeSet::from([Some(codec)]),
            "every batch staunch produce wrote is {codec}"
        );
        run_ok(
            &format!("confluent-kafka consumes the {codec} batches"),
            with_args(
                client_script("confluent_compression.py", &staunch),
                &["--mode", "consume", "--topic", &topic, "--input", input_arg],
            ),
            None,
            work.path(),
        );
    }
}

/// confluent-kafka with `compression.type=X` writes batches the broker accepts and stores as
/// sent, and `staunch consume` prints every record of them.
#[test]
fn staunch_consume_reads_what_confluent_kafka_compressed() {
    let work = tempfile::tempdir().expect("temp dir");
    let staunch = Staunch::start(work.path());
    let (records, input) = compression_input();
    let input_path = work.path().join("records.txt");
    std::fs::write(&input_path, &input).expect("writing the input");
    let input_arg = input_path.to_str().expect("a UTF-8 path");
    for codec in CODECS {
        let topic = format!("from-confluent-{codec}");
        run_ok(
            &format!("staunch topics create {topic}"),
            staunch_cli(&staunch, &["topics", "create", &topic, "--partitions", "1"]),
            None,
            work.path(),
        );
        run_ok(
            &format!("confluent-kafka produces with compression.type={codec}"),
            with_args(
                client_script("confluent_compression.py", &staunch),
                &[
                    "--mode",
                    "produce",
                    "--topic",
                    &topic,
                    "--compression",
                    codec.name(),
                    "--input",
                    input_arg,
                ],
            ),
            None,
            work.path(),
        );
        assert_eq!(
            stored_codecs(work.path(), &topic),
            BTreeSet::from([Some(codec)]),
            "confluent-kafka's batches are stored as {codec}"
        );
        let ran = run_ok(
            &format!("staunch consume ({codec})"),
            staunch_cli(&staunch, &["consume", &topic, "--exit-at-end", "--json"]),
            None,
            work.path(),
        );
        let read: Vec<(i64, Option<String>, String)> = ran
            .stdout
            .lines()
            .map(|line| {
                let v: serde_json::Value =
                    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
                (
                    v["offset"].as_i64().expect("an offset"),
                    v["key"].as_str().map(str::to_owned),
                    v["value"].as_str().expect("a UTF-8 value").to_owned(),
                )
            })
            .collect();
        assert_eq!(read.len(), records.len(), "{codec}: records read");
        for (i, ((offset, key, value), (want_key, want_value))) in
            read.iter().zip(&records).enumerate()
        {
            assert_eq!(*offset, i as i64, "{codec}");
            assert_eq!(key, want_key, "{codec}: key at offset {i}");
            assert!(
                value == want_value,
                "{codec}: value at offset {i} differs ({} bytes, expected {})",
                value.len(),
                want_value.len()
            );
        }
    }
}

/// The longest a transactional producer may take to learn that Staunch has no transactions
/// (the bound for "fails fast"; the refusal takes one round trip after bootstrap).
const TRANSACTIONS_REFUSED_WITHIN: f64 = 5.0;

/// Runs a `tests/clients/*_transactions_refused.py` program with `transactional_id` and checks
/// that the client failed within [`TRANSACTIONS_REFUSED_WITHIN`] with an `ERROR` line holding
/// every one of `expected` (the program itself also checks the bound and that the error is not
/// retriable), and that the broker logged the refusal naming the transactional id.
fn transactional_producer_refused(
    what: &str,
    script: &str,
    transactional_id: &str,
    expected: &[&str],
) {
    let work = tempfile::tempdir().expect("temp dir");
    let staunch = Staunch::start(work.path());
    let ran = run_ok(
        what,
        with_args(
            client_script(script, &staunch),
            &["--transactional-id", transactional_id],
        ),
        None,
        work.path(),
    );
    let elapsed: f64 = ran
        .stdout
        .lines()
        .find_map(|line| line.strip_prefix("ELAPSED "))
        .unwrap_or_else(|| panic!("{what}: no ELAPSED line\n{}", ran.transcript()))
        .trim()
        .parse()
        .expect("ELAPSED is a number of seconds");
    assert!(
        elapsed <= TRANSACTIONS_REFUSED_WITHIN,
        "{what}: failed after {elapsed:.2}s, more than {TRANSACTIONS_REFUSED_WITHIN}s"
    );
    let error = ran
        .stdout
        .lines()
        .find(|line| line.starts_with("ERROR "))
        .unwrap_or_else(|| panic!("{what}: no ERROR line\n{}", ran.transcript()));
    for part in expected {
        assert!(
            error.contains(part),
            "{what}: the error does not say {part:?}: {error}"
        );
    }
    let refusal = format!(
        "transactions are not supported by Staunch; transactional id \"{transactional_id}\" refused"
    );
    let log = staunch.log();
    assert!(
        log.lines()
            .any(|line| line.contains("WARN") && line.contains(&refusal)),
        "{what}: the broker logged no warning containing {refusal:?}:\n{log}"
    );
}

/// librdkafka's `init_transactions()` raises a fatal TRANSACTIONAL_ID_AUTHORIZATION_FAILED
/// carrying the broker's reason at once, instead of retrying until its 30 s timeout.
#[test]
fn confluent_kafka_transactional_producer_is_refused_at_once() {
    transactional_producer_refused(
        "confluent-kafka init_transactions()",
        "confluent_transactions_refused.py",
        "txn-confluent",
        &[
            "ERROR TRANSACTIONAL_ID_AUTHORIZATION_FAILED fatal=True retriable=False",
            "transactions are not supported by Staunch",
        ],
    );
}

/// aiokafka's `start()` raises a non-retriable TransactionalIdAuthorizationFailed at once,
/// instead of never returning.
#[test]
fn aiokafka_transactional_producer_is_refused_at_once() {
    transactional_producer_refused(
        "aiokafka start()",
        "aiokafka_transactions_refused.py",
        "txn-aiokafka",
        &[
            "ERROR TransactionalIdAuthorizationFailed retriable=False",
            "txn-aiokafka",
        ],
    );
}
