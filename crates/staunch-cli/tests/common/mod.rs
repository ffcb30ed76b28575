//! A `staunch serve` child process for the integration tests of this crate.

// Each test binary compiles this module and uses a different part of it.
#![allow(dead_code)]

pub(crate) mod programs;

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long `staunch serve` may take to print its listening line.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `staunch serve` may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// A `staunch serve` child process over one data directory, restartable; killed (SIGKILL)
/// when dropped. Its stderr (the log) goes to a file that is printed if the test panics.
pub(crate) struct Staunch {
    data_dir: PathBuf,
    log_path: PathBuf,
    child: Option<Child>,
    addr: SocketAddr,
    starts: usize,
    /// Flags added to `staunch serve` at every start (e.g. `--listeners`, TLS settings).
    extra_args: Vec<String>,
    /// The metrics listener's address, if `--metrics-listen` is among the extra arguments.
    metrics_addr: Option<SocketAddr>,
    /// Each listener's name and bound address, from the last start.
    listeners: Vec<(String, SocketAddr)>,
}

impl Staunch {
    /// Starts a broker with its data and log under `work`.
    pub(crate) fn start(work: &Path) -> Staunch {
        Staunch::start_with(work, &[])
    }

    /// Starts a broker with its data and log under `work` and `extra_args` added to
    /// `staunch serve` (e.g. `--listeners PLAINTEXT://127.0.0.1:0,SSL://127.0.0.1:0`).
    pub(crate) fn start_with(work: &Path, extra_args: &[&str]) -> Staunch {
        let mut staunch = Staunch {
            data_dir: work.join("data"),
            log_path: work.join("staunch.stderr.log"),
            child: None,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            starts: 0,
            extra_args: extra_args.iter().map(|a| (*a).to_owned()).collect(),
            metrics_addr: None,
            listeners: Vec::new(),
        };
        staunch.spawn();
        staunch
    }

    /// The bound address of the listener named `name` (e.g. `SSL`).
    pub(crate) fn listener(&self, name: &str) -> SocketAddr {
        self.listeners
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, addr)| *addr)
            .unwrap_or_else(|| panic!("no listener {name} in {:?}", self.listeners))
    }

    /// The data directory.
    pub(crate) fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The address the broker listens on.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address of the metrics listener (started with `--metrics-listen`).
    pub(crate) fn metrics_addr(&self) -> SocketAddr {
        self.metrics_addr
            .expect("staunch serve was started with --metrics-listen")
    }

    /// `host:port` for the clients' bootstrap servers.
    pub(crate) fn bootstrap(&self) -> String {
        self.addr.to_string()
    }

    /// Everything the broker logged so far (every start), without colour escapes.
    pub(crate) fn log(&self) -> String {
        let log = std::fs::read_to_string(&self.log_path).expect("reading the broker log file");
        log.lines().map(strip_ansi).collect::<Vec<_>>().join("\n")
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
            .args(&self.extra_args)
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
        self.listeners.clear();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines_rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(addr) = line.trim().strip_prefix("staunch metrics listening on ") {
                        self.metrics_addr = Some(addr.parse().unwrap_or_else(|e| {
                            panic!("bad metrics listening line {line:?}: {e}")
                        }));
                    }
                    if let Some((name, addr)) = line
                        .trim()
                        .strip_prefix("staunch listener ")
                        .and_then(|rest| rest.split_once(" on "))
                    {
                        let addr = addr
                            .parse()
                            .unwrap_or_else(|e| panic!("bad listener line {line:?}: {e}"));
                        self.listeners.push((name.to_owned(), addr));
                    }
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

    pub(crate) fn pid(&self) -> u32 {
        self.child.as_ref().expect("staunch serve is running").id()
    }

    /// SIGTERM, then waits for a clean exit (status 0).
    pub(crate) fn stop_gracefully(&mut self) {
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
    pub(crate) fn kill9(&mut self) {
        let mut child = self.child.take().expect("staunch serve is running");
        child.kill().expect("killing staunch serve");
        child.wait().expect("waiting for the killed staunch serve");
    }

    /// Starts the broker again over the same data directory (on a new port).
    pub(crate) fn restart(&mut self) {
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
pub(crate) fn strip_ansi(line: &str) -> String {
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
