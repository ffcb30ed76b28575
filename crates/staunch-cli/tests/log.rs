//! `staunch log check` and `staunch log repair` on a stopped broker's data directory with a
//! bit-rotted partition: check lists the damaged batch and exits non-zero; repair refuses
//! without --move-aside; with it, the partition opens again with every record before the
//! damage, the damaged bytes are kept aside, and check is clean afterwards.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use staunch_core::BatchBuilder;
use staunch_log::{FileLog, LogConfig, LogStore};

const RECORDS_PER_BATCH: i64 = 4;

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 4096,
        max_batch_bytes: 4096,
        ..LogConfig::default()
    }
}

/// A log in `dir` with `batches` batches of four records, closed cleanly.
fn fill(dir: &Path, batches: u32) {
    let log = FileLog::open(dir, config()).unwrap();
    for i in 0..batches {
        let mut b = BatchBuilder::new(1_700_000_000_000);
        for r in 0..RECORDS_PER_BATCH {
            b = b.record(None, Some(format!("value {i}/{r}").as_bytes()));
        }
        log.append(&mut b.build(), 0).unwrap();
    }
    log.close().unwrap();
}

/// Every file under `dir`, with its bytes.
fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if !path.ends_with(".lock") {
                out.insert(path.clone(), std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn staunch(args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_staunch"))
        .args(args)
        .output()
        .unwrap();
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn segments(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".log"))
        .collect();
    names.sort();
    names
}

#[test]
fn check_finds_the_damage_and_repair_moves_it_aside_so_the_partition_opens() {
    let data = tempfile::tempdir().unwrap();
    let damaged = data.path().join("topics/orders/0");
    let intact = data.path().join("topics/orders/1");
    let offsets = data.path().join("consumer-offsets");
    fill(&damaged, 100);
    fill(&intact, 10);
    fill(&offsets, 3);

    // Bit rot in the last segment, then a crash (no clean-shutdown marker): the open must scan
    // it, finds the damage below the recovery point, and refuses.
    std::fs::remove_file(damaged.join("clean-shutdown")).unwrap();
    let last = segments(&damaged).pop().unwrap();
    let base: i64 = last[..20].parse().unwrap();
    let path = damaged.join(&last);
    let mut bytes = std::fs::read(&path).unwrap();
    let second = 12 + i32::from_be_bytes(bytes[8..12].try_into().unwrap()) as usize;
    bytes[second + 40] ^= 0x10;
    std::fs::write(&path, &bytes).unwrap();
    let err = FileLog::open(&damaged, config()).unwrap_err().to_string();
    assert!(
        err.contains(&last) && err.contains(&format!("byte {second}")),
        "{err}"
    );
    let data_dir = data.path().to_str().unwrap();

    // check: the table names the log, file and byte; the exit status says it is damaged.
    let run = staunch(&["log", "check", data_dir]);
    assert_eq!(run.code, Some(1), "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("orders/0"), "{}", run.stdout);
    assert!(run.stdout.contains(&last), "{}", run.stdout);
    assert!(run.stdout.contains(&second.to_string()), "{}", run.stdout);
    assert!(run.stdout.contains("REFUSES"), "{}", run.stdout);
    assert!(run.stderr.contains("--move-aside"), "{}", run.stderr);

    let run = staunch(&["log", "check", data_dir, "--json"]);
    assert_eq!(run.code, Some(1));
    let doc: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(doc["damaged"], 1);
    let logs = doc["logs"].as_array().unwrap();
    let names: Vec<&str> = logs.iter().map(|l| l["log"].as_str().unwrap()).collect();
    assert_eq!(names, ["consumer-offsets", "orders/0", "orders/1"]);
    let log = &logs[1];
    assert_eq!(log["damaged"], true);
    let damage = &log["damage"][0];
    assert_eq!(damage["file"], last.as_str());
    assert_eq!(damage["position"], second as u64);
    let expected = base + RECORDS_PER_BATCH;
    assert_eq!(damage["expected_offset"], expected);
    assert_eq!(damage["kind"], "batch");
    assert!(damage["reason"].as_str().unwrap().contains("CRC"));
    assert_eq!(log["on_open"]["result"], "refuses");
    assert_eq!(logs[2]["damaged"], false);

    // repair without --move-aside explains itself and changes nothing.
    let before = tree(data.path());
    let run = staunch(&["log", "repair", data_dir]);
    assert_eq!(run.code, Some(1));
    assert!(run.stderr.contains("--move-aside"), "{}", run.stderr);
    assert!(run.stderr.contains("Nothing was changed"), "{}", run.stderr);
    assert_eq!(tree(data.path()), before);

    // repair --move-aside says exactly what left the log.
    let run = staunch(&["log", "repair", data_dir, "--move-aside"]);
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    let end = 100 * RECORDS_PER_BATCH;
    let said = format!("cut {last} at byte {second}: offsets {expected}..{end} left the log");
    assert!(run.stdout.contains(&said), "{}", run.stdout);
    assert!(
        run.stdout.contains("orders/1: no damage, unchanged"),
        "{}",
        run.stdout
    );

    // Nothing was deleted: the damaged segment is aside, byte for byte.
    let aside: Vec<PathBuf> = std::fs::read_dir(&damaged)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(aside.len(), 1);
    assert!(
        aside[0]
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("damaged-")
    );
    assert_eq!(std::fs::read(aside[0].join(&last)).unwrap(), bytes);

    let log = FileLog::open(&damaged, config()).unwrap();
    assert_eq!(log.log_end(), expected);
    log.close().unwrap();
    let run = staunch(&["log", "check", data_dir]);
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    let run = staunch(&["log", "check", damaged.to_str().unwrap()]);
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
}

#[test]
fn a_log_in_use_is_not_touched_and_a_wrong_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let log = FileLog::open(dir.path(), config()).unwrap();
    let run = staunch(&["log", "check", dir.path().to_str().unwrap()]);
    assert_eq!(run.code, Some(1));
    assert!(run.stdout.contains("in use"), "{}", run.stdout);
    assert!(run.stdout.contains("stop the broker"), "{}", run.stdout);
    let run = staunch(&[
        "log",
        "repair",
        dir.path().to_str().unwrap(),
        "--move-aside",
    ]);
    assert_eq!(run.code, Some(1));
    assert!(run.stderr.contains("in use"), "{}", run.stderr);
    drop(log);

    let empty = tempfile::tempdir().unwrap();
    let run = staunch(&["log", "check", empty.path().to_str().unwrap()]);
    assert_eq!(run.code, Some(1));
    assert!(
        run.stderr.contains("neither a log directory"),
        "{}",
        run.stderr
    );
}
