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

use std::fmt::Write as _;

use common::Staunch;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Upper bound on one client program (each bounds its own waits well below this).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(90);

const INSTALL_HINT: &str = "run scripts/install-test-clients (from the repository root) first";

/// The repository root.
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// What a finished client program did.
struct Ran {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Ran {
    fn transcript(&self) -> String {
        let mut text = String::new();
        let _ = writeln!(text, "{}", self.status);
        let _ = writeln!(text, "--- stdout ---\n{}", self.stdout.trim_end());
        let _ = writeln!(text, "--- stderr ---\n{}", self.stderr.trim_end());
        text
    }
}

/// Runs `command` with stdout and stderr captured to files under `work` and `stdin` fed from
/// a file, killing it if it runs longer than `CLIENT_TIMEOUT`. Prints its transcript.
fn run(what: &str, mut command: Command, stdin: Option<&[u8]>, work: &Path) -> Ran {
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    let n = RUNS.fetch_add(1, Ordering::Relaxed);
    let base = work.join(format!("client-{n}"));
    let out_path = base.with_extension("stdout");
    let err_path = base.with_extension("stderr");
    let stdin = match stdin {
        Some(bytes) => {
            let in_path = base.with_extension("stdin");
            std::fs::write(&in_path, bytes).expect("writing client stdin");
            Stdio::from(File::open(&in_path).expect("opening client stdin"))
        }
        None => Stdio::null(),
    };
    let mut child = command
        .stdin(stdin)
        .stdout(File::create(&out_path).expect("creating client stdout"))
        .stderr(File::create(&err_path).expect("creating client stderr"))
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: cannot start {command:?}: {e}; {INSTALL_HINT}"));
    let started = Instant::now();
    let (status, timed_out) = loop {
        if let Some(status) = child.try_wait().expect("waiting for a client") {
            break (status, false);
        }
        if started.elapsed() > CLIENT_TIMEOUT {
            let _ = child.kill();
            break (child.wait().expect("waiting for a killed client"), true);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let ran = Ran {
        status,
        stdout: std::fs::read_to_string(&out_path).unwrap_or_default(),
        stderr: std::fs::read_to_string(&err_path).unwrap_or_default(),
    };
    assert!(
        !timed_out,
        "{what}: still running after {CLIENT_TIMEOUT:?}, killed\n{}",
        ran.transcript()
    );
    println!(
        "===== {what} ({:.2}s) =====\n{}",
        started.elapsed().as_secs_f64(),
        ran.transcript()
    );
    ran
}

/// Like [`run`], and the program must exit 0.
fn run_ok(what: &str, command: Command, stdin: Option<&[u8]>, work: &Path) -> Ran {
    let ran = run(what, command, stdin, work);
    assert!(ran.status.success(), "{what} failed (transcript above)");
    ran
}

/// The virtualenv's Python, checked once to exist and to import both client libraries.
fn python() -> PathBuf {
    static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            let path = match std::env::var_os("STAUNCH_PYTHON") {
                Some(python) => PathBuf::from(python),
                None => {
                    let venv = match std::env::var_os("STAUNCH_VENV") {
                        Some(venv) => PathBuf::from(venv),
                        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                            .join(".cache/staunch/venv"),
                    };
                    venv.join("bin/python")
                }
            };
            let output = Command::new(&path)
                .args(["-c", "import confluent_kafka, kafka"])
                .output()
                .map_err(|e| {
                    format!(
                        "Python interpreter {} not usable: {e}; {INSTALL_HINT}",
                        path.display()
                    )
                })?;
            if !output.status.success() {
                return Err(format!(
                    "{} cannot import confluent_kafka and kafka: {}; {INSTALL_HINT}",
                    path.display(),
                    String::from_utf8_lossy(&output.stderr).trim()
                ));
            }
            Ok(path)
        })
        .clone()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// A command running `tests/clients/<script>` against the broker.
fn client_script(script: &str, staunch: &Staunch) -> Command {
    let mut command = Command::new(python());
    command
        .arg("-u")
        .arg(repo_root().join("tests/clients").join(script))
        .args(["--bootstrap", &staunch.bootstrap()])
        .env("PYTHONUNBUFFERED", "1");
    command
}

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
