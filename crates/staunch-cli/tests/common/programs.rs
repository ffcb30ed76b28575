//! Running client programs (Python clients, `staunch` subcommands, kcat) from the tests:
//! bounded in time, output captured to files under the test's work directory.

use std::fmt::Write as _;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::Staunch;

/// Upper bound on one client program (each bounds its own waits well below this).
pub(crate) const CLIENT_TIMEOUT: Duration = Duration::from_secs(90);

pub(crate) const INSTALL_HINT: &str =
    "run scripts/install-test-clients (from the repository root) first";

/// The repository root.
pub(crate) fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// What a finished client program did.
pub(crate) struct Ran {
    pub(crate) status: ExitStatus,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Ran {
    pub(crate) fn transcript(&self) -> String {
        let mut text = String::new();
        let _ = writeln!(text, "{}", self.status);
        let _ = writeln!(text, "--- stdout ---\n{}", self.stdout.trim_end());
        let _ = writeln!(text, "--- stderr ---\n{}", self.stderr.trim_end());
        text
    }
}

/// Runs `command` with stdout and stderr captured to files under `work` and `stdin` fed from
/// a file, killing it if it runs longer than `CLIENT_TIMEOUT`. Prints its transcript.
pub(crate) fn run(what: &str, mut command: Command, stdin: Option<&[u8]>, work: &Path) -> Ran {
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
pub(crate) fn run_ok(what: &str, command: Command, stdin: Option<&[u8]>, work: &Path) -> Ran {
    let ran = run(what, command, stdin, work);
    assert!(ran.status.success(), "{what} failed (transcript above)");
    ran
}

/// The virtualenv's Python, checked once to exist and to import every client library.
pub(crate) fn python() -> PathBuf {
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
                .args(["-c", "import aiokafka, confluent_kafka, kafka"])
                .output()
                .map_err(|e| {
                    format!(
                        "Python interpreter {} not usable: {e}; {INSTALL_HINT}",
                        path.display()
                    )
                })?;
            if !output.status.success() {
                return Err(format!(
                    "{} cannot import aiokafka, confluent_kafka and kafka: {}; {INSTALL_HINT}",
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
pub(crate) fn client_script(script: &str, staunch: &Staunch) -> Command {
    let mut command = Command::new(python());
    command
        .arg("-u")
        .arg(repo_root().join("tests/clients").join(script))
        .args(["--bootstrap", &staunch.bootstrap()])
        .env("PYTHONUNBUFFERED", "1");
    command
}
