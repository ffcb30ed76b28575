//! The broker under simulated power cuts: seeded random workloads through the in-process
//! `BrokerApi` (produce with acks 0 / 1 / all from several idempotent producers, fetch, offset
//! commits with metadata, topic create / delete / alter, retention, offsets compaction, group
//! joins) on a `FaultyIo` disk whose power is cut at a random operation — also while the
//! broker recovers, and during a clean shutdown. Segments are small, so the logs roll (and
//! write producer-state snapshots) within a few batches; offsets compaction and clean
//! shutdowns write committed-offsets snapshots, so reopens load snapshots of every age. Only what was made durable (fsynced bytes, directory entries whose
//! directory was fsynced) survives a cut, optionally with torn unsynced tails.
//!
//! After every reopen the checker demands:
//! - every acknowledged record is at the offset it was acknowledged with, byte for byte (unless
//!   retention, which the workload ran, removed it, or its topic was deleted);
//! - every acknowledged commit is there (or a later one that was attempted);
//! - every batch served passes its CRC;
//! - the high watermark never moves backwards;
//! - an idempotent producer's acknowledged batch sent again is de-duplicated to its offset;
//! - an acknowledged topic still exists, with its acknowledged configs.
//!
//! `STAUNCH_SIM_SEEDS` (default 2000) seeds run, bounded by `STAUNCH_SIM_SECONDS` (default
//! 120 s); `STAUNCH_SIM_SEED=n` replays one seed. A failure names its seed.

mod model;
mod workload;

use std::sync::Arc;
use std::time::{Duration, Instant};

use staunch_broker::{Broker, BrokerConfig, Storage};
use staunch_core::ManualClock;
use staunch_log::LogConfig;
use staunch_testkit::{CrashMode, FaultyIo};

use model::Model;
use workload::Workload;

/// Rounds (open, work, cut) per seed.
const ROUNDS: usize = 3;

fn config() -> BrokerConfig {
    BrokerConfig {
        data_dir: "/sim".into(),
        auto_create_topics: false,
        group_initial_rebalance_delay: Duration::ZERO,
        // Small segments and zeros, so rolls, sealing, indexes and zero-filling all happen
        // within a few dozen records.
        log: LogConfig {
            segment_bytes: 4096,
            max_batch_bytes: 2048,
            zero_fill_bytes: 2048,
            index_interval_bytes: 256,
            ..LogConfig::default()
        },
        offsets_compaction_records: 40,
        offsets_segment_bytes: 4096,
        ..BrokerConfig::default()
    }
}

/// Opens the broker on `disk`; `None` if the power went during the open.
async fn open(disk: &FaultyIo, clock: &Arc<ManualClock>) -> Result<Broker, String> {
    let storage = Storage::new(Arc::new(disk.clone()), clock.clone());
    tokio::task::spawn_blocking(move || Broker::open_with(config(), storage))
        .await
        .expect("open does not panic")
        .map_err(|e| e.to_string())
}

/// Runs one seed; `Err` names what the checker found.
async fn run_seed(seed: u64) -> Result<(), String> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let clock = Arc::new(ManualClock::new(1_750_000_000_000));
    let mut disk = FaultyIo::new();
    let mut model = Model::default();
    for round in 0..ROUNDS {
        // Sometimes the power goes again while the broker recovers.
        if round > 0 && rng.u8(0..3) == 0 {
            disk.cut_power_after(rng.u64(1..300), crash_mode(&mut rng));
            match open(&disk, &clock).await {
                Ok(broker) => {
                    disk.disarm();
                    if !disk.power_is_cut() {
                        broker.shutdown().await;
                    }
                }
                Err(e) if !disk.power_is_cut() => {
                    return Err(format!("round {round}: open failed: {e}"));
                }
                Err(_) => {}
            }
            if let Some(after) = disk.after_power_cut() {
                disk = after;
            }
        }
        let broker = open(&disk, &clock)
            .await
            .map_err(|e| format!("round {round}: open failed: {e}"))?;
        model
            .check(&broker)
            .await
            .map_err(|e| format!("round {round}: after reopen: {e}"))?;
        model
            .retry_after_restart(&broker)
            .await
            .map_err(|e| format!("round {round}: idempotent retry: {e}"))?;
        disk.cut_power_after(rng.u64(1..1500), crash_mode(&mut rng));
        let steps = rng.usize(10..60);
        let mut workload = Workload::new(&mut rng, &broker, &clock, &mut model);
        for _ in 0..steps {
            if disk.power_is_cut() {
                break;
            }
            workload.step().await?;
        }
        // Sometimes a clean shutdown first (it writes producer-state and committed-offsets
        // snapshots, which the next open loads), during which the armed cut may come; the
        // power goes in the end either way.
        let clean = rng.u8(0..3) == 0;
        if !clean {
            disk.cut_power_now(crash_mode(&mut rng));
        }
        tokio::time::timeout(Duration::from_secs(30), broker.shutdown())
            .await
            .map_err(|_| format!("round {round}: shutdown hung (clean: {clean})"))?;
        disk.cut_power_now(crash_mode(&mut rng));
        disk = disk.after_power_cut().expect("the power was cut");
    }
    let broker = open(&disk, &clock)
        .await
        .map_err(|e| format!("final open failed: {e}"))?;
    model
        .check(&broker)
        .await
        .map_err(|e| format!("final: {e}"))?;
    broker.shutdown().await;
    Ok(())
}

fn crash_mode(rng: &mut fastrand::Rng) -> CrashMode {
    if rng.bool() {
        CrashMode::DropUnsynced
    } else {
        CrashMode::TornTail { seed: rng.u64(..) }
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, not {v:?}"))
    })
}

#[test]
fn acknowledged_data_survives_power_cuts_at_random_points() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    if let Some(seed) = env_u64("STAUNCH_SIM_SEED") {
        // A replay shows the broker's own account (RUST_LOG, default info).
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "info".into()),
            )
            .with_test_writer()
            .try_init();
        runtime
            .block_on(run_seed(seed))
            .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        return;
    }
    let seeds = env_u64("STAUNCH_SIM_SEEDS").unwrap_or(2000);
    let limit = Duration::from_secs(env_u64("STAUNCH_SIM_SECONDS").unwrap_or(120));
    let start = Instant::now();
    let first = env_u64("STAUNCH_SIM_FIRST_SEED").unwrap_or(0);
    let mut ran = 0;
    for seed in first..first + seeds {
        if start.elapsed() > limit {
            break;
        }
        if let Err(e) = runtime.block_on(run_seed(seed)) {
            panic!(
                "seed {seed}: {e}\n(replay it alone with STAUNCH_SIM_SEED={seed} cargo test -p staunch-broker --test power_cut)"
            );
        }
        ran += 1;
    }
    eprintln!(
        "power-cut simulation: {ran} seeds in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    assert!(
        ran >= seeds.min(100),
        "only {ran} seeds ran within {limit:?}"
    );
}
