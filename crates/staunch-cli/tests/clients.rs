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

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long `staunch serve` may take to print its listening line.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `staunch serve` may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Upper bound on one client program (each bounds its own waits well below this).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(90);

const INSTALL_HINT: &str = "run scripts/install-test-clients (from the repository root) first";

/// The repository root.
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A `staunch serve` child process over one data directory, restartable; killed (SIGKILL)
/// when dropped. Its stderr (the log) goes to a file that is printed if the test panics.
struct Staunch {
    data_dir: PathBuf,
    log_path: PathBuf,
    child: Option<Child>,
    addr: SocketAddr,
    starts: usize,
}

impl Staunch {
    /// Starts a broker with its data and log under `work`.
    fn start(work: &Path) -> Staunch {
        let mut staunch = Staunch {
            data_dir: work.join("data"),
            log_path: work.join("staunch.stderr.log"),
            child: None,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            starts: 0,
        };
        staunch.spawn();
        staunch
    }

    /// `host:port` for the clients' bootstrap servers.
    fn bootstrap(&self) -> String {
        self.addr.to_string()
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "staunch serve is already running");
        self.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("opening the broker log file");
        writeln!(log, "===== staunch serve, start #{} =====", self.starts)
            .expect("writing the broker log file");
        let mut child = Command::new(env!("CARGO_BIN_EXE_staunch"))
            .arg("serve")
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&self.data_dir)
            .args(["--group-initial-rebalance-delay", "200ms"])
            .args(["--log-level", "info"])
            .env_remove("STAUNCH_CONFIG")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawning staunch serve");
        let stdout = child.stdout.take().expect("piped stdout");
        let (lines_tx, lines_rx) = mpsc::channel();
        // Reads stdout to its end, so the child never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if lines_tx.send(line).is_err() {
                    break;
                }
            }
        });
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines_rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(addr) = line.trim().strip_prefix("staunch listening on ") {
                        self.addr = addr
                            .parse()
                            .unwrap_or_else(|e| panic!("bad listening line {line:?}: {e}"));
                        return;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => panic!(
                    "staunch serve (start #{}) printed no listening line within {START_TIMEOUT:?}",
                    self.starts
                ),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.child.as_mut().and_then(|c| c.wait().ok());
                    self.child = None;
                    panic!(
                        "staunch serve (start #{}) exited ({status:?}) before listening",
                        self.starts
                    );
                }
            }
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("staunch serve is running").id()
    }

    /// SIGTERM, then waits for a clean exit (status 0).
    fn stop_gracefully(&mut self) {
        let pid = self.pid();
        let status = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("running kill -TERM");
        assert!(status.success(), "kill -TERM {pid} failed: {status}");
        let mut child = self.child.take().expect("staunch serve is running");
        let deadline = Instant::now() + STOP_TIMEOUT;
        let status = loop {
            if let Some(status) = child.try_wait().expect("waiting for staunch serve") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("staunch serve did not exit within {STOP_TIMEOUT:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(
            status.success(),
            "staunch serve exited with {status} after SIGTERM, expected a clean exit (0)"
        );
    }

    /// SIGKILL: no chance to flush or mark anything clean.
    fn kill9(&mut self) {
        let mut child = self.child.take().expect("staunch serve is running");
        child.kill().expect("killing staunch serve");
        child.wait().expect("waiting for the killed staunch serve");
    }

    /// Starts the broker again over the same data directory (on a new port).
    fn restart(&mut self) {
        self.spawn();
    }
}

impl Drop for Staunch {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let shown = &lines[lines.len().saturating_sub(400)..];
            eprintln!(
                "----- staunch serve stderr ({}, last {} of {} lines) -----",
                self.log_path.display(),
                shown.len(),
                lines.len()
            );
            for line in shown {
                eprintln!("{}", strip_ansi(line));
            }
            eprintln!("----- end of staunch serve stderr -----");
        }
    }
}

/// Removes terminal colour escapes (`ESC [ ... m`) from a log line.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
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
