//! The durable log, embedded — and broken on purpose.
//!
//! The program starts a copy of itself that appends batches to a `FileLog` with flush `always`
//! from four threads and prints each offset range the log reported durable. After a moment the
//! parent kills the child with SIGKILL, reopens the log (running crash recovery), checks every
//! printed offset byte for byte, and says what it proved. Run it with
//!
//! ```text
//! cargo run --release -p staunch-examples --example embedded_log [-- DATA_DIR]
//! ```
//!
//! `DATA_DIR` defaults to `./staunch-data/embedded-log`; each run appends to what is there.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use staunch_core::BatchBuilder;
use staunch_core::batch::batches;
use staunch_log::{FileLog, LogConfig, LogStore};

const RECORDS_PER_BATCH: u32 = 16;
const VALUE_BYTES: usize = 1024;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The value of record `i` of batch `tag`: recognisable and checkable after recovery.
fn value(tag: u64, i: u32) -> Vec<u8> {
    let mut v = format!("batch {tag} record {i} ").into_bytes();
    v.resize(VALUE_BYTES, b'.');
    v
}

/// The child: append until killed, printing `ACK base last tag` after each durable append.
fn child(dir: PathBuf) -> ExitCode {
    let log = match FileLog::open(&dir, LogConfig::default()) {
        Ok(log) => Arc::new(log),
        Err(e) => {
            eprintln!("child: cannot open the log: {e}");
            return ExitCode::FAILURE;
        }
    };
    let writers: Vec<_> = (0..4u64)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                for n in 0u64.. {
                    let tag = (u64::from(std::process::id()) << 32) | (t << 24) | n;
                    let mut builder = BatchBuilder::new(now_ms());
                    for i in 0..RECORDS_PER_BATCH {
                        builder = builder.record(Some(&tag.to_be_bytes()), Some(&value(tag, i)));
                    }
                    let mut bytes = builder.build();
                    match log.append(&mut bytes, 0) {
                        Ok(info) => {
                            let mut out = std::io::stdout().lock();
                            let _ = writeln!(
                                out,
                                "ACK {} {} {tag}",
                                info.base_offset, info.last_offset
                            );
                            let _ = out.flush();
                        }
                        Err(e) => {
                            eprintln!("child: append failed: {e}");
                            return;
                        }
                    }
                }
            })
        })
        .collect();
    for w in writers {
        let _ = w.join();
    }
    ExitCode::SUCCESS
}

fn parent(dir: PathBuf) -> Result<(), String> {
    println!("Staunch embedded log demo — data in {}", dir.display());
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = Command::new(exe)
        .arg("--child")
        .arg(&dir)
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start the child: {e}"))?;
    let stdout = child.stdout.take().ok_or("no child stdout")?;
    let started = Instant::now();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let first = rx
        .recv_timeout(Duration::from_secs(60))
        .map_err(|_| "the child acknowledged nothing within 60 s")?;
    std::thread::sleep(Duration::from_millis(1500));
    child.kill().map_err(|e| format!("kill failed: {e}"))?; // SIGKILL: no cleanup, no flush
    let _ = child.wait();
    let ran = started.elapsed();
    let _ = reader.join();
    let mut acks: Vec<(i64, i64, u64)> = Vec::new();
    for line in std::iter::once(first).chain(rx.try_iter()) {
        let f: Vec<&str> = line.split(' ').collect();
        if let [_, base, last, tag] = f[..] {
            let parsed = (base.parse(), last.parse(), tag.parse());
            if let (Ok(b), Ok(l), Ok(t)) = parsed {
                acks.push((b, l, t));
            }
        }
    }
    let acked_records: i64 = acks.iter().map(|(b, l, _)| l - b + 1).sum();
    println!(
        "child appended for {:.1} s with flush=always; it was told {} batches ({} records of {} bytes) are durable; then it got SIGKILL",
        ran.as_secs_f64(),
        acks.len(),
        acked_records,
        VALUE_BYTES
    );

    let opened = Instant::now();
    let log =
        FileLog::open(&dir, LogConfig::default()).map_err(|e| format!("reopen failed: {e}"))?;
    let recovery = log.recovery().clone();
    println!(
        "reopened in {:.1} ms: clean shutdown = {}, segments scanned = {}, torn bytes cut = {}",
        opened.elapsed().as_secs_f64() * 1e3,
        recovery.clean,
        recovery.segments_scanned,
        recovery.bytes_truncated
    );

    let mut wanted: HashMap<i64, (u64, u32)> = HashMap::new();
    for &(base, last, tag) in &acks {
        for o in base..=last {
            wanted.insert(o, (tag, (o - base) as u32));
        }
    }
    let low = acks.iter().map(|a| a.0).min().unwrap_or(0);
    let mut next = low;
    let mut verified = 0usize;
    while next < log.log_end() {
        let read = log
            .read(next, 4 << 20)
            .map_err(|e| format!("read failed: {e}"))?;
        for batch in batches(&read.bytes) {
            let batch = batch.map_err(|e| e.to_string())?;
            batch
                .validate()
                .map_err(|e| format!("invalid batch served: {e}"))?;
            for record in batch.records().map_err(|e| e.to_string())? {
                let record = record.map_err(|e| e.to_string())?;
                if let Some((tag, i)) = wanted.remove(&record.offset) {
                    if record.value != Some(&value(tag, i)[..]) {
                        return Err(format!("offset {} holds the wrong bytes", record.offset));
                    }
                    verified += 1;
                }
            }
        }
        next = read.next_offset;
    }
    if let Some(missing) = wanted.keys().min() {
        return Err(format!(
            "LOST: acknowledged offset {missing} (and {} more) is gone",
            wanted.len() - 1
        ));
    }
    println!(
        "verified: all {verified} acknowledged records are present and byte-identical; log end is {} (the child may have written a few unacknowledged records too)",
        log.log_end()
    );
    log.close().map_err(|e| format!("close failed: {e}"))?;
    drop(log);
    let reopened = FileLog::open(&dir, LogConfig::default()).map_err(|e| e.to_string())?;
    println!(
        "after a clean close the log reopens without scanning: clean shutdown = {}, segments scanned = {}",
        reopened.recovery().clean,
        reopened.recovery().segments_scanned
    );
    reopened.close().map_err(|e| e.to_string())?;
    println!(
        "proved: an acknowledged append survives kill -9; recovery never serves a torn or invalid batch"
    );
    Ok(())
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        Some("--child") => match args.next() {
            Some(dir) => child(PathBuf::from(dir)),
            None => ExitCode::FAILURE,
        },
        other => {
            let dir =
                other.map_or_else(|| PathBuf::from("staunch-data/embedded-log"), PathBuf::from);
            match parent(dir) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("FAILED: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
