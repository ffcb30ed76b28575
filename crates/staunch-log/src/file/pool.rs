//! [`BackgroundPool`]: a few threads that do the background work of every log opened on them,
//! instead of one thread per log, and the budget of zeros those logs may hold ahead of their
//! data.
//!
//! # Scheduling
//! A log asks for work (sealing a closed segment, zero-filling) by queueing itself on the pool,
//! and sets deadlines (interval flush, recovery point, trimming idle zeros) as timers. A log is
//! queued at most once and runs at most one job at a time: its `Background` state (the
//! `background` module) says whether it is queued or running, and a request that arrives while
//! it runs is picked up by the same worker when the job ends. A log with nothing to do costs no
//! thread and no queue entry — only, while it has deadlines, one entry in the timer heap.
//!
//! The pool has up to `threads` workers, started on demand, and one timekeeper thread
//! (`staunch-bg-time`) that never touches a disk: it moves logs whose deadline came into the
//! ready queue and watches the running jobs.
//!
//! # A hung disk under one log
//! Every fsync a job makes through the log's `timed_sync` is bounded by that log's
//! [`sync_timeout`](crate::LogConfig::sync_timeout): once it overruns, the log is failed (and
//! a failed log does no more work). The thread stuck in the syscall cannot be freed, though.
//! So the timekeeper gives up on any job that has run longer than its log's `sync_timeout`: it
//! runs the log's health check (which fails the log if one of its fsyncs is overdue), stops
//! counting that worker, and starts a replacement if work is waiting. The stuck thread
//! finishes its job whenever the kernel returns and then ends. So a hung log holds up other
//! logs' work for at most its `sync_timeout`, and the pool's threads are at most `threads` + 1
//! plus one per log whose job is stuck (such a log starts no second job: a log's jobs never run
//! concurrently).
//!
//! # Zero-fill budget
//! Zeros written ahead of the data (flush `always`, the `zero_fill` module) reserve disk. The
//! pool holds one budget for all its logs ([`PoolConfig::zero_fill_budget`]): a log takes from
//! it before writing each chunk of zeros and does not zero-fill when it cannot (appends then
//! grow the file, as with zero-filling off: only slower, never less durable). A log gives its
//! share back when data overwrites its zeros, when it rolls, truncates or closes, and when it
//! has not been written for [`PoolConfig::zero_fill_idle`] (it then trims its zeros off the
//! file). So the disk held in zeros by all logs of a pool never exceeds the budget.

use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant};

use super::Inner;

/// Settings of a [`BackgroundPool`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConfig {
    /// Worker threads, at most (started when work arrives). At least 1. Default 4.
    pub threads: usize,
    /// Bytes of zeros that all logs of the pool together may hold written ahead of their data
    /// (flush `always`). Default 256 MiB; 0 turns zero-filling off for every log of the pool.
    pub zero_fill_budget: u64,
    /// A log that has not been written for this long trims its zeros and gives their budget
    /// back. Default 30 s.
    pub zero_fill_idle: Duration,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            threads: 4,
            zero_fill_budget: 256 << 20,
            zero_fill_idle: Duration::from_secs(30),
        }
    }
}

/// The background threads shared by many [`FileLog`](crate::FileLog)s: sealing closed
/// segments, interval flushes, recovery points and zero-filling of every log opened with it
/// (see [`FileLog::open_with_pool`](crate::FileLog::open_with_pool)), on at most
/// [`PoolConfig::threads`] workers plus one timekeeper thread. Cheap to clone: clones share the
/// threads and the zero-fill budget. The threads end once every clone and every log opened on
/// the pool are gone. Group commit (the fsyncs appends wait for) does not run here: appenders
/// do it themselves.
#[derive(Clone)]
pub struct BackgroundPool {
    shared: Arc<Shared>,
    /// Dropped with the last clone: tells the threads to end.
    _owner: Arc<Owner>,
}

impl std::fmt::Debug for BackgroundPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackgroundPool")
            .field("config", &self.shared.config)
            .field("zero_fill_reserved", &self.zero_fill_reserved())
            .finish_non_exhaustive()
    }
}

impl BackgroundPool {
    /// A pool of at most `threads` workers (at least 1) with the default zero-fill budget.
    /// Starts no thread until a log asks for work.
    pub fn new(threads: usize) -> Self {
        Self::with_config(PoolConfig {
            threads,
            ..PoolConfig::default()
        })
    }

    /// A pool with these settings. Starts no thread until a log asks for work.
    pub fn with_config(config: PoolConfig) -> Self {
        let config = PoolConfig {
            threads: config.threads.max(1),
            ..config
        };
        let shared = Arc::new(Shared {
            budget: ZeroBudget {
                capacity: config.zero_fill_budget,
                used: AtomicU64::new(0),
            },
            config,
            jobs_started: AtomicU64::new(0),
            state: Mutex::new(PoolState::default()),
            work: Condvar::new(),
            clock: Condvar::new(),
        });
        BackgroundPool {
            _owner: Arc::new(Owner(shared.clone())),
            shared,
        }
    }

    /// The process-wide pool that logs opened without one use ([`PoolConfig::default`]),
    /// created at first use.
    pub fn process_default() -> &'static BackgroundPool {
        static DEFAULT: OnceLock<BackgroundPool> = OnceLock::new();
        DEFAULT.get_or_init(|| BackgroundPool::with_config(PoolConfig::default()))
    }

    /// The pool's settings.
    pub fn config(&self) -> &PoolConfig {
        &self.shared.config
    }

    /// Background jobs started so far on this pool, of all its logs (a diagnostic).
    pub fn jobs_started(&self) -> u64 {
        self.shared.jobs_started.load(Ordering::Acquire)
    }

    /// Bytes of the zero-fill budget its logs hold now (zeros written or being written ahead
    /// of their data). Never more than [`PoolConfig::zero_fill_budget`].
    pub fn zero_fill_reserved(&self) -> u64 {
        self.shared.budget.used.load(Ordering::Acquire)
    }

    pub(super) fn budget(&self) -> &ZeroBudget {
        &self.shared.budget
    }

    /// Queues `log` to run a job (the caller has marked it queued).
    pub(super) fn enqueue(&self, log: Weak<Inner>) {
        let mut st = self.shared.lock();
        st.ready.push_back(log);
        ensure_timekeeper(&self.shared, &mut st);
        if st.idle > 0 {
            self.shared.work.notify_one();
        } else if st.workers < self.shared.config.threads {
            spawn_worker(&self.shared, &mut st);
        }
    }

    /// Queues `log` when `at` comes (unless it has been dropped or stopped by then).
    pub(super) fn add_timer(&self, at: Instant, log: Weak<Inner>) {
        let mut st = self.shared.lock();
        let seq = st.next_seq;
        st.next_seq += 1;
        st.timers.push(Timer { at, seq, log });
        ensure_timekeeper(&self.shared, &mut st);
        self.shared.clock.notify_one();
    }
}

/// The bytes of zeros a pool's logs may hold ahead of their data.
#[derive(Debug)]
pub(super) struct ZeroBudget {
    capacity: u64,
    used: AtomicU64,
}

impl ZeroBudget {
    /// Takes `n` bytes if that many are left.
    pub(super) fn try_take(&self, n: u64) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|&after| after <= self.capacity)
            })
            .is_ok()
    }

    /// Returns `n` bytes taken before.
    pub(super) fn give_back(&self, n: u64) {
        if n > 0 {
            let before = self.used.fetch_sub(n, Ordering::AcqRel);
            debug_assert!(before >= n, "zero-fill budget given back twice");
        }
    }
}

struct Owner(Arc<Shared>);

impl Drop for Owner {
    fn drop(&mut self) {
        self.0.lock().shutdown = true;
        self.0.work.notify_all();
        self.0.clock.notify_all();
    }
}

struct Shared {
    config: PoolConfig,
    budget: ZeroBudget,
    jobs_started: AtomicU64,
    state: Mutex<PoolState>,
    /// Workers wait here for ready logs.
    work: Condvar,
    /// The timekeeper waits here for the next deadline.
    clock: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[derive(Default)]
struct PoolState {
    /// Logs waiting for a worker, in order.
    ready: VecDeque<Weak<Inner>>,
    timers: BinaryHeap<Timer>,
    next_seq: u64,
    /// Jobs running now, by worker id. A worker whose entry the timekeeper removed has been
    /// given up on: it ends after its job.
    running: HashMap<u64, Running>,
    /// Workers counted against `threads` (not given up on).
    workers: usize,
    /// Of those, how many wait for work.
    idle: usize,
    next_worker: u64,
    timekeeper: bool,
    shutdown: bool,
}

struct Running {
    since: Instant,
    limit: Duration,
    log: Weak<Inner>,
}

/// A log's deadline in the timer heap, earliest first.
struct Timer {
    at: Instant,
    seq: u64,
    log: Weak<Inner>,
}

impl PartialEq for Timer {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Timer {}
impl PartialOrd for Timer {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Timer {
    /// Reversed: `BinaryHeap` is a max-heap and the earliest deadline must come first.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

fn spawn_worker(shared: &Arc<Shared>, st: &mut PoolState) {
    let id = st.next_worker;
    st.next_worker += 1;
    let for_thread = shared.clone();
    match std::thread::Builder::new()
        .name("staunch-bg".into())
        .spawn(move || worker(&for_thread, id))
    {
        Ok(_) => st.workers += 1,
        // The work waits for the next request, which tries again (or for a running worker).
        Err(e) => tracing::error!(error = %e, "cannot start a log background thread"),
    }
}

fn ensure_timekeeper(shared: &Arc<Shared>, st: &mut PoolState) {
    if st.timekeeper {
        return;
    }
    let for_thread = shared.clone();
    match std::thread::Builder::new()
        .name("staunch-bg-time".into())
        .spawn(move || timekeeper(&for_thread))
    {
        Ok(_) => st.timekeeper = true,
        Err(e) => tracing::error!(error = %e, "cannot start the log timekeeper thread"),
    }
}

/// A worker: runs one ready log's job at a time.
fn worker(shared: &Arc<Shared>, id: u64) {
    let mut st = shared.lock();
    loop {
        if st.shutdown {
            st.workers -= 1;
            return;
        }
        let Some(weak) = st.ready.pop_front() else {
            st.idle += 1;
            st = shared.work.wait(st).unwrap_or_else(|p| p.into_inner());
            st.idle -= 1;
            continue;
        };
        drop(st);
        if let Some(log) = weak.upgrade()
            && log.begin_job()
        {
            shared.jobs_started.fetch_add(1, Ordering::AcqRel);
            shared.lock().running.insert(
                id,
                Running {
                    since: Instant::now(),
                    limit: log.config.sync_timeout,
                    log: weak,
                },
            );
            // The timekeeper watches it from now on.
            shared.clock.notify_one();
            log.run_job();
            log.end_job();
            drop(log);
            st = shared.lock();
            if st.running.remove(&id).is_none() {
                // Given up on while it ran: a replacement has taken its place.
                return;
            }
        } else {
            st = shared.lock();
        }
    }
}

/// The timekeeper: queues logs whose deadline came, and gives up on jobs that overran their
/// log's `sync_timeout` (see the module docs).
fn timekeeper(shared: &Arc<Shared>) {
    let mut st = shared.lock();
    loop {
        if st.shutdown {
            return;
        }
        let now = Instant::now();
        let mut fired = Vec::new();
        while st.timers.peek().is_some_and(|t| t.at <= now) {
            if let Some(timer) = st.timers.pop() {
                fired.push(timer);
            }
        }
        let overdue: Vec<u64> = st
            .running
            .iter()
            .filter(|(_, r)| r.since + r.limit <= now)
            .map(|(id, _)| *id)
            .collect();
        let mut stuck = Vec::new();
        for id in overdue {
            if let Some(running) = st.running.remove(&id) {
                st.workers -= 1;
                stuck.push(running);
            }
        }
        if !stuck.is_empty() && !st.ready.is_empty() && st.idle == 0 {
            spawn_worker(shared, &mut st);
        }
        if !fired.is_empty() || !stuck.is_empty() {
            drop(st);
            for running in stuck {
                if let Some(log) = running.log.upgrade() {
                    // Fails the log if one of its fsyncs is what hangs.
                    let health = log.check_health();
                    tracing::warn!(
                        log = ?log.io,
                        running_for = ?now.duration_since(running.since),
                        health = ?health.err().map(|e| e.to_string()),
                        "a log's background job has run longer than its sync_timeout; the pool \
                         goes on without the thread running it"
                    );
                }
            }
            for timer in fired {
                if let Some(log) = timer.log.upgrade() {
                    log.timer_fired(timer.at);
                }
            }
            st = shared.lock();
            continue;
        }
        let next_timer = st.timers.peek().map(|t| t.at);
        let next_overrun = st.running.values().map(|r| r.since + r.limit).min();
        let next = match (next_timer, next_overrun) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        st = match next {
            Some(at) => {
                shared
                    .clock
                    .wait_timeout(st, at.saturating_duration_since(now))
                    .unwrap_or_else(|p| p.into_inner())
                    .0
            }
            None => shared.clock.wait(st).unwrap_or_else(|p| p.into_inner()),
        };
    }
}
