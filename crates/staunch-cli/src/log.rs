//! `staunch log check|repair`: offline tools for the logs of a *stopped* broker, the way out
//! when a partition went offline because its log is damaged (Kafka's anchors:
//! `kafka-dump-log.sh --deep-iteration` for check, and its recovery's truncation at the first
//! invalid batch for repair). The work is done by `staunch_log::check`; this is the command
//! line around it: finding the logs in a data directory, and printing tables or JSON.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use serde_json::{Value, json};
use staunch_log::check::{
    self, Damage, DamageKind, IndexState, LogCheck, OnOpen, Repair, RepairCut,
};
use staunch_log::{LogError, TailCut};

use crate::output::{Table, cell, print_json};

/// `staunch log`.
#[derive(Debug, Args)]
pub(crate) struct LogArgs {
    #[command(subcommand)]
    command: LogCommand,
}

#[derive(Debug, Subcommand)]
enum LogCommand {
    /// List every damaged batch of a stopped broker's partition logs (exit status 1 if any).
    ///
    /// Reads every batch of every partition log under DIR — also the sealed segments an open
    /// trusts without reading — and lists each damaged stretch (file, byte position, the offset
    /// expected there, where valid batches resume, records, reason), offsets missing between
    /// segments, and what opening the log would do: open, open cutting a torn tail (data never
    /// acknowledged), or refuse (the partition stays offline). Changes nothing; takes each
    /// log's lock, so the broker must be stopped.
    Check(CheckArgs),
    /// Make damaged logs open again by moving their damaged part aside (needs --move-aside).
    ///
    /// For each damaged log under DIR, repair cuts the log at its FIRST damaged batch and
    /// moves that batch and everything after it into `<log dir>/damaged-<unix-ms>/`: the
    /// damaged segment is copied there whole and then cut in place at the damage, the segments
    /// after it are moved there, and so are the log's recovery point and clean-shutdown marker
    /// (the next open writes new ones). Nothing is deleted.
    ///
    /// Only the part before the damage can stay: a log's offsets are contiguous, so valid
    /// batches after the damage would leave a gap the log refuses to open with (Kafka, too,
    /// truncates a log at its first invalid batch). The records from the cut on leave the log
    /// — consumers and replicas stop seeing them and new appends reuse their offsets — but
    /// their bytes stay in damaged-*/ (Kafka's segment format: `kafka-dump-log.sh` reads them),
    /// from where they can be produced again. Repair prints exactly which offsets and bytes
    /// left each log.
    ///
    /// Run `staunch log check DIR` first to see what would be removed, and stop the broker
    /// (repair takes each log's lock and fails if the log is in use).
    Repair(RepairArgs),
}

#[derive(Debug, Args)]
struct CheckArgs {
    /// A partition's log directory, or a broker's whole data directory (then every
    /// `topics/<topic>/<partition>/` and `consumer-offsets/` in it).
    dir: PathBuf,
    /// Machine-readable output: one JSON document.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct RepairArgs {
    /// A partition's log directory, or a broker's whole data directory (then every
    /// `topics/<topic>/<partition>/` and `consumer-offsets/` in it).
    dir: PathBuf,
    /// Do it: move the damaged part of each damaged log aside. Without it, repair refuses to
    /// change anything.
    #[arg(long)]
    move_aside: bool,
    /// Machine-readable output: one JSON document.
    #[arg(long)]
    json: bool,
}

/// Runs a `staunch log` subcommand.
pub(crate) fn run(args: LogArgs) -> Result<(), String> {
    match args.command {
        LogCommand::Check(a) => check_logs(a),
        LogCommand::Repair(a) => repair_logs(a),
    }
}

/// One log directory found under the DIR argument: a name to show and its path.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Found {
    name: String,
    path: PathBuf,
}

fn subdirs(dir: &Path) -> Result<Vec<String>, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("listing {}: {e}", dir.display()))?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| format!("listing {}: {e}", dir.display()))?;
        if entry.file_type().is_ok_and(|t| t.is_dir())
            && let Some(name) = entry.file_name().to_str()
        {
            names.push(name.to_owned());
        }
    }
    names.sort();
    Ok(names)
}

fn has_segments(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries.flatten().any(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.len() == 24 && n.ends_with(".log"))
        })
    })
}

/// The logs under `dir`: `dir` itself if it holds segment files; otherwise, for a broker's
/// data directory, `consumer-offsets/` and every `topics/<topic>/<partition>/` (directories
/// being created or deleted, whose names start with `.`, are skipped).
fn find_logs(dir: &Path) -> Result<Vec<Found>, String> {
    if !dir.is_dir() {
        return Err(format!("{} is not a directory", dir.display()));
    }
    let topics = dir.join("topics");
    let offsets = dir.join("consumer-offsets");
    if has_segments(dir) || !(topics.is_dir() || offsets.is_dir()) {
        if !has_segments(dir) {
            return Err(format!(
                "{} is neither a log directory (no segment files) nor a data directory (no \
                 topics/ or consumer-offsets/)",
                dir.display()
            ));
        }
        return Ok(vec![Found {
            name: dir.display().to_string(),
            path: dir.to_path_buf(),
        }]);
    }
    let mut logs = Vec::new();
    if offsets.is_dir() {
        logs.push(Found {
            name: "consumer-offsets".into(),
            path: offsets,
        });
    }
    if topics.is_dir() {
        for topic in subdirs(&topics)? {
            if topic.starts_with('.') {
                continue;
            }
            let mut partitions: Vec<(u32, String)> = subdirs(&topics.join(&topic))?
                .into_iter()
                .filter_map(|p| p.parse().ok().map(|n| (n, p)))
                .collect();
            partitions.sort();
            for (_, partition) in partitions {
                logs.push(Found {
                    name: format!("{topic}/{partition}"),
                    path: topics.join(&topic).join(&partition),
                });
            }
        }
    }
    Ok(logs)
}

fn index_text(state: IndexState) -> &'static str {
    match state {
        IndexState::Valid => "valid",
        IndexState::Missing => "missing",
        IndexState::Invalid => "invalid",
    }
}

fn kind_text(kind: DamageKind) -> &'static str {
    match kind {
        DamageKind::Batch => "batch",
        DamageKind::Gap => "gap",
        DamageKind::Missing => "missing",
    }
}

fn records_text(records: u64, exact: bool) -> String {
    if exact {
        records.to_string()
    } else {
        format!(">={records}")
    }
}

fn damage_json(d: &Damage) -> Value {
    json!({
        "kind": kind_text(d.kind),
        "file": d.file,
        "position": d.position,
        "bytes": d.bytes,
        "expected_offset": d.expected_offset,
        "resumes_at": d.resumes_at,
        "records": d.records,
        "records_exact": d.records_exact,
        "reason": d.reason,
    })
}

fn cut_json(c: &TailCut) -> Value {
    json!({
        "file": c.file,
        "position": c.position,
        "first_offset": c.first_offset,
        "bytes": c.bytes,
        "records": c.records,
        "records_exact": c.records_exact,
        "reason": c.reason,
    })
}

fn on_open_json(on_open: &OnOpen) -> Value {
    match on_open {
        OnOpen::Opens => json!({ "result": "opens" }),
        OnOpen::Cuts(cuts) => json!({
            "result": "cuts",
            "cuts": cuts.iter().map(cut_json).collect::<Vec<_>>(),
        }),
        OnOpen::Refuses {
            file,
            position,
            reason,
        } => json!({
            "result": "refuses",
            "file": file,
            "position": position,
            "reason": reason,
        }),
    }
}

fn check_json(found: &Found, report: &LogCheck) -> Value {
    json!({
        "log": found.name,
        "dir": found.path.display().to_string(),
        "damaged": report.is_damaged(),
        "segments": report.segments.iter().map(|s| json!({
            "file": s.file,
            "base_offset": s.base_offset,
            "bytes": s.bytes,
            "batches": s.batches,
            "records": s.records,
            "next_offset": s.next_offset,
            "index": index_text(s.index),
        })).collect::<Vec<_>>(),
        "damage": report.damage.iter().map(damage_json).collect::<Vec<_>>(),
        "recovery_point": report.recovery_point,
        "pending_truncation": report.pending_truncation,
        "clean_shutdown": report.clean_shutdown,
        "on_open": on_open_json(&report.on_open),
    })
}

fn on_open_text(on_open: &OnOpen) -> String {
    match on_open {
        OnOpen::Opens => "opens".into(),
        OnOpen::Cuts(cuts) => {
            let bytes: u64 = cuts.iter().map(|c| c.bytes).sum();
            format!("opens, cutting a torn tail of {bytes} bytes")
        }
        OnOpen::Refuses { .. } => "REFUSES (partition offline)".into(),
    }
}

fn error_text(e: &LogError) -> String {
    let text = e.to_string();
    if text.contains("in use") {
        format!("{text}: stop the broker first")
    } else {
        text
    }
}

fn check_logs(args: CheckArgs) -> Result<(), String> {
    let logs = find_logs(&args.dir)?;
    let results: Vec<(Found, Result<LogCheck, LogError>)> = logs
        .into_iter()
        .map(|found| {
            let report = check::check_dir(&found.path);
            (found, report)
        })
        .collect();
    let damaged = results
        .iter()
        .filter(|(_, r)| r.as_ref().is_ok_and(LogCheck::is_damaged))
        .count();
    let failed = results.iter().filter(|(_, r)| r.is_err()).count();

    if args.json {
        let logs: Vec<Value> = results
            .iter()
            .map(|(found, report)| match report {
                Ok(report) => check_json(found, report),
                Err(e) => json!({
                    "log": found.name,
                    "dir": found.path.display().to_string(),
                    "error": error_text(e),
                }),
            })
            .collect();
        print_json(&json!({ "logs": logs, "damaged": damaged, "errors": failed }));
    } else {
        let mut table =
            Table::new(["LOG", "SEGMENTS", "OFFSETS", "DAMAGED", "ON OPEN"]).right(&[1, 3]);
        let mut damage = Table::new([
            "LOG",
            "FILE",
            "POSITION",
            "BYTES",
            "EXPECTED OFFSET",
            "RESUMES AT",
            "RECORDS",
            "REASON",
        ])
        .right(&[2, 3, 4, 5, 6]);
        let mut notes = Vec::new();
        for (found, report) in &results {
            let report = match report {
                Ok(report) => report,
                Err(e) => {
                    table.row([cell(&found.name), "-".into(), "-".into(), "-".into()]);
                    notes.push(format!("{}: cannot check: {}", found.name, error_text(e)));
                    continue;
                }
            };
            let offsets = match (report.segments.first(), report.end_offset()) {
                (Some(first), Some(end)) => format!("{}..{end}", first.base_offset),
                _ => "-".into(),
            };
            table.row([
                cell(&found.name),
                report.segments.len().to_string(),
                offsets,
                report.damage.len().to_string(),
                on_open_text(&report.on_open),
            ]);
            for d in &report.damage {
                damage.row([
                    cell(&found.name),
                    d.file.clone(),
                    d.position.to_string(),
                    d.bytes.to_string(),
                    d.expected_offset.to_string(),
                    d.resumes_at.map_or_else(|| "-".into(), |o| o.to_string()),
                    records_text(d.records, d.records_exact),
                    cell(&d.reason),
                ]);
            }
            if let OnOpen::Refuses {
                file,
                position,
                reason,
            } = &report.on_open
            {
                notes.push(format!(
                    "{}: an open refuses: {file} at byte {position}: {}",
                    found.name,
                    cell(reason)
                ));
            }
        }
        table.print();
        if !damage.is_empty() {
            println!();
            damage.print();
        }
        if !notes.is_empty() {
            println!();
            for note in &notes {
                println!("{note}");
            }
        }
    }
    if failed > 0 {
        return Err(format!("{failed} log(s) could not be checked"));
    }
    if damaged > 0 {
        let refusing = results
            .iter()
            .filter(|(_, r)| {
                r.as_ref()
                    .is_ok_and(|r| matches!(r.on_open, OnOpen::Refuses { .. }))
            })
            .count();
        return Err(format!(
            "{damaged} damaged log(s), {refusing} of which refuse to open; `staunch log repair \
             {} --move-aside` moves the damage aside (see `staunch log repair --help` for what \
             it removes)",
            args.dir.display()
        ));
    }
    Ok(())
}

/// Why `repair` without `--move-aside` does nothing.
const WITHOUT_MOVE_ASIDE: &str = "repair changes the logs, so it needs --move-aside: for each \
damaged log it cuts the log at its first damaged batch and moves that batch and everything \
after it (the damaged segment copied whole, the later segments, the recovery point and \
clean-shutdown marker) into <log dir>/damaged-<unix-ms>/. Nothing is deleted, but the records \
from the cut on leave the log and their offsets are reused by new appends. Nothing was changed. \
Run `staunch log check DIR` to see what would be removed, stop the broker, then run \
`staunch log repair DIR --move-aside`";

fn repair_cut_json(c: &RepairCut) -> Value {
    json!({
        "file": c.file,
        "position": c.position,
        "from_offset": c.from_offset,
        "to_offset": c.to_offset,
        "bytes": c.bytes,
        "records": c.records,
        "records_exact": c.records_exact,
    })
}

fn repair_text(found: &Found, repair: &Repair) -> String {
    let Some(aside) = &repair.aside else {
        return format!("{}: no damage, unchanged", found.name);
    };
    let aside = found.path.join(aside);
    let mut moved: Vec<String> = repair
        .copied
        .iter()
        .map(|f| format!("{f} (copied whole, then cut)"))
        .collect();
    moved.extend(repair.moved.iter().cloned());
    let what = match &repair.cut {
        Some(c) => format!(
            "cut {} at byte {}: offsets {}..{} left the log ({} records, {} bytes)",
            c.file,
            c.position,
            c.from_offset,
            c.to_offset,
            records_text(c.records, c.records_exact),
            c.bytes
        ),
        None => "the log ends before its recovery point (durable data is missing); no offsets \
                 left the log"
            .into(),
    };
    format!(
        "{}: {what}; moved to {}: {}",
        found.name,
        aside.display(),
        moved.join(", ")
    )
}

fn repair_logs(args: RepairArgs) -> Result<(), String> {
    if !args.move_aside {
        return Err(WITHOUT_MOVE_ASIDE.into());
    }
    let logs = find_logs(&args.dir)?;
    let mut results = Vec::new();
    let mut failures = Vec::new();
    for found in logs {
        match check::repair_dir(&found.path) {
            Ok(repair) => {
                // The point of it: the log opens now.
                if repair.aside.is_some()
                    && let Ok(report) = check::check_dir(&found.path)
                    && let OnOpen::Refuses { reason, .. } = &report.on_open
                {
                    failures.push(format!(
                        "{}: still refuses to open after the repair: {reason}",
                        found.name
                    ));
                }
                results.push((found, Ok(repair)));
            }
            Err(e) => {
                failures.push(format!("{}: cannot repair: {}", found.name, error_text(&e)));
                results.push((found, Err(e)));
            }
        }
    }
    if args.json {
        let logs: Vec<Value> = results
            .iter()
            .map(|(found, result)| match result {
                Ok(repair) => json!({
                    "log": found.name,
                    "dir": found.path.display().to_string(),
                    "aside": repair.aside.as_ref().map(|a| found.path.join(a).display().to_string()),
                    "cut": repair.cut.as_ref().map(repair_cut_json),
                    "moved": repair.moved,
                    "copied": repair.copied,
                }),
                Err(e) => json!({
                    "log": found.name,
                    "dir": found.path.display().to_string(),
                    "error": error_text(e),
                }),
            })
            .collect();
        print_json(&json!({ "logs": logs }));
    } else {
        for (found, result) in &results {
            if let Ok(repair) = result {
                println!("{}", repair_text(found, repair));
            }
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_data_directory_is_walked_topic_by_topic_partition_by_partition() {
        let dir = tempfile::tempdir().unwrap();
        for p in [
            "topics/b/10",
            "topics/b/2",
            "topics/a/0",
            "topics/.creating-x/0",
            "consumer-offsets",
        ] {
            std::fs::create_dir_all(dir.path().join(p)).unwrap();
        }
        let names: Vec<String> = find_logs(dir.path())
            .unwrap()
            .into_iter()
            .map(|f| f.name)
            .collect();
        assert_eq!(names, ["consumer-offsets", "a/0", "b/2", "b/10"]);
        let log = dir.path().join("topics/a/0");
        std::fs::write(log.join("00000000000000000000.log"), b"").unwrap();
        assert_eq!(find_logs(&log).unwrap()[0].path, log);
        assert!(find_logs(&dir.path().join("topics/b")).is_err());
        assert!(find_logs(&dir.path().join("nope")).is_err());
    }
}
