//! Helpers shared by Staunch's criterion benchmarks (`benches/benches/*.rs`).
//!
//! - [`bench_dir`]: a scratch directory on a real disk (`$STAUNCH_BENCH_DIR`, or the target
//!   directory), never tmpfs, so fsync costs what it costs in production.
//! - [`batch`]: a v2 record batch of 1 KiB-value records, built once per appender.
//! - [`Timings`]: the wall times the benchmarks measure themselves in `iter_custom`, kept so a
//!   summary table can be printed after criterion has finished.
//!
//! Run them with `cargo bench -p staunch-benches` (all) or
//! `cargo bench -p staunch-benches --bench log_append` (one).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use staunch_core::BatchBuilder;
use tempfile::TempDir;

/// Size of every record value in the benchmarks.
pub const VALUE_BYTES: usize = 1024;

/// Environment variable naming the directory benchmark logs are created in.
pub const BENCH_DIR_ENV: &str = "STAUNCH_BENCH_DIR";

/// Creates a fresh, self-deleting scratch directory inside `$STAUNCH_BENCH_DIR`, or inside
/// `default_base` (a bench passes `env!("CARGO_TARGET_TMPDIR")`, i.e. `target/tmp`) when the
/// variable is unset. Warns on stderr if the directory is on tmpfs, where fsync is free and
/// the numbers mean nothing.
pub fn bench_dir(default_base: impl AsRef<Path>) -> TempDir {
    let base = std::env::var_os(BENCH_DIR_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| default_base.as_ref().to_path_buf());
    std::fs::create_dir_all(&base)
        .unwrap_or_else(|e| panic!("creating bench directory {}: {e}", base.display()));
    if let Some(fs) = filesystem_type(&base).filter(|fs| fs == "tmpfs" || fs == "ramfs") {
        eprintln!(
            "warning: bench data in {} is on {fs}: fsync costs nothing there; \
             set {BENCH_DIR_ENV} to a directory on a real disk",
            base.display()
        );
    }
    tempfile::Builder::new()
        .prefix("staunch-bench-")
        .tempdir_in(&base)
        .unwrap_or_else(|e| panic!("creating a scratch directory in {}: {e}", base.display()))
}

/// The type of the filesystem holding `path` (Linux: the longest matching mount point in
/// `/proc/self/mounts`), or `None` if it cannot be told.
fn filesystem_type(path: &Path) -> Option<String> {
    let path = path.canonicalize().ok()?;
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (_device, mount_point, fs) = (fields.next()?, fields.next()?, fields.next()?);
            path.starts_with(mount_point)
                .then(|| (mount_point.len(), fs.to_owned()))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, fs)| fs)
}

/// One uncompressed v2 batch of `records` records, each without key and with a
/// [`VALUE_BYTES`]-byte value, timestamped now.
pub fn batch(records: usize) -> Vec<u8> {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let value: Vec<u8> = (0..VALUE_BYTES).map(|i| (i % 251) as u8).collect();
    (0..records)
        .fold(BatchBuilder::new(now_ms), |b, _| {
            b.record(None, Some(&value))
        })
        .build()
}

/// Wall times measured inside criterion's `iter_custom`, by benchmark id, in call order.
///
/// Criterion first calls the routine during warm-up and then once per sample, so the last
/// `sample_size` calls of an id are its measured samples; [`Timings::per_iter`] averages those.
#[derive(Debug, Default)]
pub struct Timings {
    calls: Mutex<BTreeMap<String, Vec<(u64, Duration)>>>,
}

impl Timings {
    /// Notes that one call of benchmark `id` ran `iters` iterations in `elapsed`.
    pub fn record(&self, id: &str, iters: u64, elapsed: Duration) {
        self.calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(id.to_owned())
            .or_default()
            .push((iters, elapsed));
    }

    /// Mean wall time of one iteration of `id` over its last `samples` calls (total time over
    /// total iterations), or `None` if `id` did not run in this process.
    pub fn per_iter(&self, id: &str, samples: usize) -> Option<Duration> {
        let calls = self.calls.lock().unwrap_or_else(|p| p.into_inner());
        let calls = calls.get(id)?;
        let measured = &calls[calls.len().saturating_sub(samples)..];
        let iters: u64 = measured.iter().map(|(n, _)| n).sum();
        let elapsed: Duration = measured.iter().map(|(_, t)| *t).sum();
        (iters > 0).then(|| elapsed.div_f64(iters as f64))
    }

    /// Wall time of one iteration of `id` in its fastest of the last `samples` calls (that
    /// call's time over its iterations), or `None` if `id` did not run in this process. Less
    /// disturbed than the mean by other work on a shared machine.
    pub fn fastest_per_iter(&self, id: &str, samples: usize) -> Option<Duration> {
        let calls = self.calls.lock().unwrap_or_else(|p| p.into_inner());
        let calls = calls.get(id)?;
        calls[calls.len().saturating_sub(samples)..]
            .iter()
            .filter(|(n, _)| *n > 0)
            .map(|(n, t)| t.div_f64(*n as f64))
            .min()
    }

    /// Whether nothing was measured (criterion was asked to list, or filtered everything out).
    pub fn is_empty(&self) -> bool {
        self.calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }
}

/// Whether criterion is really measuring: not `--test` (one iteration each, the mode of
/// `cargo test --benches`), `--list` or `--profile-time`, whose timings a summary must not report.
pub fn measuring() -> bool {
    !std::env::args().any(|a| a == "--test" || a == "--list" || a.starts_with("--profile-time"))
}

/// `count` per `per` as a rate per second.
pub fn per_second(count: f64, per: Duration) -> f64 {
    count / per.as_secs_f64()
}

/// Decimal megabytes (10^6 bytes) per second.
pub fn mb_per_second(bytes: f64, per: Duration) -> f64 {
    per_second(bytes, per) / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;
    use staunch_core::RecordBatch;

    #[test]
    fn batch_is_valid_and_sized() {
        let bytes = batch(16);
        let parsed = RecordBatch::parse(&bytes).unwrap();
        parsed.validate().unwrap();
        assert_eq!(parsed.record_count(), 16);
        assert!(bytes.len() > 16 * VALUE_BYTES);
    }

    #[test]
    fn timings_average_the_last_samples() {
        let t = Timings::default();
        t.record("x", 1, Duration::from_secs(100)); // warm-up, ignored
        t.record("x", 2, Duration::from_secs(2));
        t.record("x", 2, Duration::from_secs(4));
        assert_eq!(t.per_iter("x", 2), Some(Duration::from_millis(1500)));
        assert_eq!(t.per_iter("y", 2), None);
        assert_eq!(t.fastest_per_iter("x", 2), Some(Duration::from_secs(1)));
        assert_eq!(t.fastest_per_iter("y", 2), None);
    }
}
