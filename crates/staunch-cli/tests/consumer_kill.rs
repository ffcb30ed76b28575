//! Kill -9 of a consumer *process* (`staunch-consumer` over `staunch-client`) against a real
//! `staunch serve` child, then a new consumer process in the same group:
//!
//! - restart mid-retry: kill the consumer process after attempt 3 of 5, start a new one: it
//!   continues at 4 (the attempt count lives in the committed offset's metadata), the record
//!   reaches `<topic>.DLT` after attempt 5 and the next record is processed;
//! - kill mid-stream: a consumer of a 3-partition topic is killed while records are in
//!   flight; after the restart every record has been processed at least once.
//!
//! The consumer runs in a child process that re-executes this test binary with
//! [`MODE`] set, selecting the ignored test [`consumer_child`]. It prints one line per
//! delivery and one per success on stdout; the parent reads them and kills by PID.

#![allow(dead_code)]

mod common;

#[path = "../../staunch-consumer/tests/consumer/support.rs"]
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::Staunch;
use staunch_client::{Client, ClientConfig};
use staunch_consumer::headers as h;
use staunch_consumer::ledger::RetryLedger;
use staunch_consumer::{Consumer, ConsumerConfig, FailurePolicy, HandlerError, handler_fn};
use staunch_core::{BackOff, TopicPartition};

use support::{committed, create, header, produce, read_all};

/// Selects the child's behaviour; the child test fails when it is unset (not started by a parent).
const MODE: &str = "STAUNCH_KILLTEST_MODE";
const BOOTSTRAP: &str = "STAUNCH_KILLTEST_BOOTSTRAP";
const TOPIC: &str = "STAUNCH_KILLTEST_TOPIC";
const GROUP: &str = "STAUNCH_KILLTEST_GROUP";
/// `<partition>:<offset>`: the handler hangs on that record instead of handling it.
const HANG_AT: &str = "STAUNCH_KILLTEST_HANG_AT";

/// A child consumer exits on its own after this long, should its parent be gone.
const CHILD_LIFETIME: Duration = Duration::from_secs(180);
/// The longest the parent waits for any one thing (a line, a commit, an exit).
const WAIT: Duration = Duration::from_secs(60);
/// The value of the record whose handler always fails.
const POISON: &str = "X";

// ----- the child -----------------------------------------------------------------------------

/// How a child consumer is set up, chosen by [`MODE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChildMode {
    /// Blocking retry, 5 attempts; the wait before attempt 4 is an hour, so the process is
    /// certainly still waiting (not in attempt 4) when the parent kills it after attempt 3.
    RetryHold,
    /// Blocking retry, 5 attempts, 20 ms apart.
    Retry,
    /// Group member of a multi-partition topic; every record succeeds after a short pause.
    Stream,
}

impl ChildMode {
    fn name(self) -> &'static str {
        match self {
            ChildMode::RetryHold => "retry-hold",
            ChildMode::Retry => "retry",
            ChildMode::Stream => "stream",
        }
    }

    fn parse(s: &str) -> ChildMode {
        match s {
            "retry-hold" => ChildMode::RetryHold,
            "retry" => ChildMode::Retry,
            "stream" => ChildMode::Stream,
            other => panic!("unknown {MODE} {other:?}"),
        }
    }

    fn config(self, group: &str) -> ConsumerConfig {
        let tick = Duration::from_millis(20);
        let failure = match self {
            // Four retries, i.e. five attempts, in both retry modes.
            ChildMode::RetryHold => FailurePolicy::Blocking(BackOff::levels(
                vec![tick, tick, Duration::from_secs(3600), tick],
                4,
            )),
            ChildMode::Retry => FailurePolicy::Blocking(BackOff::fixed(tick, 4)),
            ChildMode::Stream => FailurePolicy::default(),
        };
        ConsumerConfig {
            failure,
            fetch_max_wait: Duration::from_millis(50),
            heartbeat_interval: Duration::from_millis(200),
            // The broker's minimum: a killed member leaves the group this long after its death.
            session_timeout: Duration::from_secs(6),
            rebalance_timeout: Duration::from_secs(10),
            // Small fetches, so a stream is committed many times before it is done.
            partition_max_bytes: 2048,
            ..ConsumerConfig::new(group)
        }
    }
}

/// One line on stdout, flushed at once: the parent acts on it.
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").expect("writing to the parent");
    out.flush().expect("flushing to the parent");
}

/// Not a test on its own: the consumer process of the tests below. Consumes [`TOPIC`] as
/// [`GROUP`] until it is killed (or [`CHILD_LIFETIME`] passes), printing
/// `DELIVERY <partition> <offset> <attempt>` when the handler starts on a record and
/// `PROCESSED <partition> <offset>` just before it returns success. The record valued
/// [`POISON`] always fails with a retriable error; at the record named by [`HANG_AT`] the
/// handler prints `HANG <partition> <offset>` and never returns.
#[test]
#[ignore = "child process of the consumer kill -9 tests"]
fn consumer_child() {
    let mode = std::env::var(MODE).unwrap_or_else(|_| {
        panic!(
            "consumer_child is the child half of the consumer kill -9 tests \
             (restart_mid_retry_kill_9_after_attempt_3_of_5_continues_at_4, \
             kill_9_mid_stream_loses_nothing) and must be started by one of them \
             with {MODE} set; run those tests instead"
        )
    });
    let mode = ChildMode::parse(&mode);
    let bootstrap = std::env::var(BOOTSTRAP).expect("bootstrap address");
    let topic = std::env::var(TOPIC).expect("topic");
    let group = std::env::var(GROUP).expect("group");
    let hang: Option<(i32, i64)> = std::env::var(HANG_AT).ok().map(|v| {
        let (p, o) = v.split_once(':').expect("partition:offset");
        (p.parse().expect("partition"), o.parse().expect("offset"))
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let client = tokio::time::timeout(
            Duration::from_secs(30),
            Client::connect(vec![bootstrap], ClientConfig::default()),
        )
        .await
        .expect("connect in time")
        .expect("client connects");
        let mut consumer =
            Consumer::new(Arc::new(client), mode.config(&group)).expect("consumer config");
        match mode {
            ChildMode::Stream => consumer.subscribe(&[&topic]).await.expect("subscribe"),
            ChildMode::Retry | ChildMode::RetryHold => consumer
                .assign(vec![TopicPartition::new(topic.as_str(), 0)])
                .await
                .expect("assign"),
        }
        let handler = handler_fn(move |r| async move {
            say(&format!(
                "DELIVERY {} {} {}",
                r.partition, r.offset, r.delivery_attempt
            ));
            if hang == Some((r.partition, r.offset)) {
                say(&format!("HANG {} {}", r.partition, r.offset));
                tokio::time::sleep(CHILD_LIFETIME).await;
            }
            if r.value.as_deref() == Some(POISON.as_bytes()) {
                return Err(HandlerError::retriable(
                    "KillTest",
                    "this record always fails",
                ));
            }
            if mode == ChildMode::Stream {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            say(&format!("PROCESSED {} {}", r.partition, r.offset));
            Ok(())
        });
        let started = Instant::now();
        while started.elapsed() < CHILD_LIFETIME {
            if let Err(e) = consumer.poll(&handler).await {
                eprintln!("poll failed: {e}");
            }
        }
        eprintln!("consumer child: lifetime over, exiting");
    });
}

// ----- the parent's view of a child --------------------------------------------------------

/// What a child printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    Delivery {
        partition: i32,
        offset: i64,
        attempt: u32,
    },
    Processed {
        partition: i32,
        offset: i64,
    },
    Hang {
        partition: i32,
        offset: i64,
    },
}

impl Event {
    /// Finds the event in `line`. The first line a child prints follows libtest's
    /// `test consumer_child ... ` on the same line, hence the search.
    fn parse(line: &str) -> Option<Event> {
        let start = ["DELIVERY ", "PROCESSED ", "HANG "]
            .iter()
            .filter_map(|k| line.find(k))
            .min()?;
        let mut words = line[start..].split_whitespace();
        let kind = words.next()?;
        let mut n = || words.next()?.parse::<i64>().ok();
        match kind {
            "DELIVERY" => Some(Event::Delivery {
                partition: i32::try_from(n()?).ok()?,
                offset: n()?,
                attempt: u32::try_from(n()?).ok()?,
            }),
            "PROCESSED" => Some(Event::Processed {
                partition: i32::try_from(n()?).ok()?,
                offset: n()?,
            }),
            "HANG" => Some(Event::Hang {
                partition: i32::try_from(n()?).ok()?,
                offset: n()?,
            }),
            _ => None,
        }
    }
}

/// A consumer child process. Killed (SIGKILL, by PID) when dropped; if the test is failing,
/// its stderr and the last events it printed are shown.
struct ConsumerProcess {
    name: String,
    child: Option<Child>,
    lines: mpsc::Receiver<String>,
    events: Vec<Event>,
    stderr_path: PathBuf,
}

impl ConsumerProcess {
    fn start(name: &str, mode: ChildMode, work: &Path, bootstrap: &str, topic: &str) -> Self {
        Self::start_with(name, mode, work, bootstrap, topic, None)
    }

    /// [`ConsumerProcess::start`] with the handler hanging at `hang` (partition, offset).
    fn start_with(
        name: &str,
        mode: ChildMode,
        work: &Path,
        bootstrap: &str,
        topic: &str,
        hang: Option<(i32, i64)>,
    ) -> Self {
        let stderr_path = work.join(format!("{name}.stderr.log"));
        let mut command = Command::new(std::env::current_exe().expect("test binary path"));
        if let Some((p, o)) = hang {
            command.env(HANG_AT, format!("{p}:{o}"));
        }
        let mut child = command
            .args([
                "--exact",
                "consumer_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(MODE, mode.name())
            .env(BOOTSTRAP, bootstrap)
            .env(TOPIC, topic)
            .env(GROUP, format!("g-{topic}"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(File::create(&stderr_path).expect("child stderr file"))
            .spawn()
            .expect("spawning the consumer child");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        // Reads stdout to its end (the child's death), so the child never blocks on the pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        ConsumerProcess {
            name: name.to_owned(),
            child: Some(child),
            lines,
            events: Vec::new(),
            stderr_path,
        }
    }

    /// Reads events until `done` holds for the events so far; panics after [`WAIT`] or if the
    /// child's stdout ends first.
    fn wait_until(&mut self, what: &str, mut done: impl FnMut(&[Event]) -> bool) {
        let deadline = Instant::now() + WAIT;
        while !done(&self.events) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.events.extend(Event::parse(&line)),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("{}: not seen within {WAIT:?}: {what}", self.name)
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.child.as_mut().and_then(|c| c.try_wait().ok());
                    panic!("{}: stdout ended ({status:?}) before: {what}", self.name)
                }
            }
        }
    }

    /// SIGKILL to the child's PID, wait for it, then collect everything it printed before
    /// it died.
    fn kill9(&mut self) {
        let mut child = self.child.take().expect("child is running");
        child.kill().expect("kill -9 of the consumer child");
        child.wait().expect("waiting for the killed consumer child");
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.events.extend(Event::parse(&line)),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("{}: stdout still open {WAIT:?} after kill -9", self.name)
                }
            }
        }
    }

    /// The attempts delivered for `offset` of partition `partition`, in order.
    fn attempts(&self, partition: i32, offset: i64) -> Vec<u32> {
        self.events
            .iter()
            .filter_map(|e| match *e {
                Event::Delivery {
                    partition: p,
                    offset: o,
                    attempt,
                } if p == partition && o == offset => Some(attempt),
                _ => None,
            })
            .collect()
    }

    /// (partition, offset) of every success, in order, repeats included.
    fn processed(&self) -> Vec<(i32, i64)> {
        self.events
            .iter()
            .filter_map(|e| match *e {
                Event::Processed { partition, offset } => Some((partition, offset)),
                Event::Delivery { .. } | Event::Hang { .. } => None,
            })
            .collect()
    }
}

impl Drop for ConsumerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            let stderr = std::fs::read_to_string(&self.stderr_path).unwrap_or_default();
            let lines: Vec<&str> = stderr.lines().collect();
            eprintln!("----- {} stderr (last 100 lines) -----", self.name);
            for line in &lines[lines.len().saturating_sub(100)..] {
                eprintln!("{}", common::strip_ansi(line));
            }
            let shown = &self.events[self.events.len().saturating_sub(40)..];
            eprintln!(
                "----- {}: last {} of {} events -----",
                self.name,
                shown.len(),
                self.events.len()
            );
            for e in shown {
                eprintln!("{e:?}");
            }
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

async fn connect(staunch: &Staunch) -> Client {
    tokio::time::timeout(
        Duration::from_secs(30),
        Client::connect(vec![staunch.bootstrap()], ClientConfig::default()),
    )
    .await
    .expect("connect in time")
    .expect("client connects")
}

/// Polls the broker until `done` holds for the committed offset (and metadata) of `tp`.
async fn wait_for_commit(
    client: &Client,
    group: &str,
    tp: &TopicPartition,
    what: &str,
    done: impl Fn(i64, &str) -> bool,
) -> (i64, String) {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(c) = committed(client, group, tp).await
            && done(c.offset, &c.metadata)
        {
            return (c.offset, c.metadata);
        }
        assert!(
            Instant::now() < deadline,
            "not committed within {WAIT:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ----- the tests -----------------------------------------------------------------------------

/// The issue's "restart mid-retry: kill the consumer process after attempt 3 of 5, start a new
/// one: it continues at 4", with a real process and kill -9.
///
/// What "after attempt 3" guarantees: the consumer commits a failed delivery's attempt count
/// (in the offset metadata) at most one failure behind its deliveries (by default; see
/// `blocking_retry_runs_at_most_one_failure_ahead_of_the_committed_count` in
/// staunch-consumer). So a process killed any time after attempt 3's count was committed
/// resumes at 4; one killed while attempt 3 was still running, or before its failure was
/// committed, delivers attempt 3 again (the count of an unfinished delivery dies with it;
/// the record never does). The parent therefore kills only once it sees the count 3 in the
/// broker's committed metadata, and the first child waits an hour before attempt 4, so the
/// kill certainly lands between attempt 3 and attempt 4. The second child retries 20 ms
/// apart: whether a restarted consumer honours the rest of the back-off is not what this
/// test is about.
#[test]
fn restart_mid_retry_kill_9_after_attempt_3_of_5_continues_at_4() {
    let work = tempfile::tempdir().expect("temp dir");
    let staunch = Staunch::start(work.path());
    let rt = runtime();
    let topic = "kill-retry";
    let group = format!("g-{topic}");
    let tp = TopicPartition::new(topic, 0);
    let client = rt.block_on(async {
        let client = connect(&staunch).await;
        create(&client, topic, 1).await;
        produce(
            &client,
            &tp,
            &[
                ("k0", "a"),
                ("k1", "b"),
                ("kx", POISON),
                ("k3", "c"),
                ("k4", "d"),
            ],
        )
        .await;
        client
    });
    let poison = 2;
    let last = 4;

    let mut first = ConsumerProcess::start(
        "consumer-1",
        ChildMode::RetryHold,
        work.path(),
        &staunch.bootstrap(),
        topic,
    );
    first.wait_until("attempt 3 of the poison record", |events| {
        events.contains(&Event::Delivery {
            partition: 0,
            offset: poison,
            attempt: 3,
        })
    });
    // The evidence that attempt 3's failure is durable: the ledger in the committed metadata.
    let (offset, metadata) = rt.block_on(wait_for_commit(
        &client,
        &group,
        &tp,
        "the attempt count 3 of the poison record",
        |_, metadata| {
            RetryLedger::decode(metadata)
                .get(poison)
                .map(|e| e.attempts)
                == Some(3)
        },
    ));
    assert_eq!(
        offset, poison,
        "committed up to the failing record: {metadata}"
    );
    let ledger = RetryLedger::decode(&metadata)
        .get(poison)
        .expect("ledger entry");
    first.kill9();
    assert_eq!(first.attempts(0, poison), [1, 2, 3], "first process");
    assert_eq!(first.processed(), [(0, 0), (0, 1)], "first process");

    let mut second = ConsumerProcess::start(
        "consumer-2",
        ChildMode::Retry,
        work.path(),
        &staunch.bootstrap(),
        topic,
    );
    second.wait_until("the last record processed", |events| {
        events.contains(&Event::Processed {
            partition: 0,
            offset: last,
        })
    });
    let (end, metadata) = rt.block_on(wait_for_commit(
        &client,
        &group,
        &tp,
        "everything",
        |offset, _| offset == last + 1,
    ));
    second.kill9();
    assert_eq!(
        second.events.first(),
        Some(&Event::Delivery {
            partition: 0,
            offset: poison,
            attempt: 4
        }),
        "the new process starts at the poison record's attempt 4 (not 1)"
    );
    assert_eq!(
        second.attempts(0, poison),
        [4, 5],
        "the new process continues the count at 4 and stops after 5"
    );
    assert_eq!(metadata, "", "no retry left in the ledger");
    assert_eq!(end, last + 1);
    assert_eq!(second.processed(), [(0, 3), (0, 4)], "second process");

    let dead = rt.block_on(read_all(&client, &format!("{topic}.DLT")));
    assert_eq!(
        dead.len(),
        1,
        "the poison record exactly once in the DLT: {dead:?}"
    );
    let d = &dead[0];
    assert_eq!(d.value.as_deref(), Some(POISON.as_bytes()));
    assert_eq!(d.key.as_deref(), Some(&b"kx"[..]));
    assert_eq!(header(d, h::ORIGINAL_TOPIC), Some(topic));
    assert_eq!(header(d, h::ORIGINAL_OFFSET), Some("2"));
    assert_eq!(header(d, h::ATTEMPTS), Some("5"));
    assert_eq!(header(d, h::ERROR_TYPE), Some("KillTest"));
    assert_eq!(header(d, h::CONSUMER_GROUP), Some(group.as_str()));
    let first_failure = ledger.first_failure_ms.to_string();
    assert_eq!(
        header(d, h::FIRST_FAILURE),
        Some(first_failure.as_str()),
        "the first failure time came through the restart too"
    );
    drop(staunch);
}

/// A consumer process is killed with -9 in the middle of a 3-partition stream: its handler
/// hangs on a record picked at random, with the rest of that fetch not handled yet and earlier
/// fetches committed. Then:
/// - every offset the group committed was processed by the dead process (nothing was
///   committed ahead of the handler);
/// - a new process in the same group (it takes over once the dead member's session expires)
///   resumes exactly at the committed offsets, and in the end every record has been processed
///   at least once. Duplicates (processed, not yet committed at the kill) are allowed and
///   reported.
#[test]
fn kill_9_mid_stream_loses_nothing() {
    const PARTITIONS: i32 = 3;
    const PER_PARTITION: i64 = 600;
    let work = tempfile::tempdir().expect("temp dir");
    let staunch = Staunch::start(work.path());
    let rt = runtime();
    let topic = "kill-stream";
    let group = format!("g-{topic}");
    let tps: Vec<TopicPartition> = (0..PARTITIONS)
        .map(|p| TopicPartition::new(topic, p))
        .collect();
    let client = rt.block_on(async {
        let client = connect(&staunch).await;
        create(&client, topic, PARTITIONS).await;
        for tp in &tps {
            let values: Vec<String> = (0..PER_PARTITION)
                .map(|i| format!("{}-{i}", tp.partition))
                .collect();
            let records: Vec<(&str, &str)> = values.iter().map(|v| ("k", v.as_str())).collect();
            // Small batches: a fetch returns whole batches, and the consumer commits per fetch.
            for chunk in records.chunks(10) {
                produce(&client, tp, chunk).await;
            }
        }
        client
    });
    let total = usize::try_from(i64::from(PARTITIONS) * PER_PARTITION).expect("count");
    let seed = fastrand::u64(..);
    let hang = (
        i32::try_from(seed % u64::from(PARTITIONS.unsigned_abs())).expect("partition"),
        fastrand::Rng::with_seed(seed).i64(PER_PARTITION / 4..PER_PARTITION * 3 / 4),
    );
    let committed_now = |client: &Client| -> BTreeMap<i32, i64> {
        rt.block_on(async {
            let mut out = BTreeMap::new();
            for tp in &tps {
                let c = committed(client, &group, tp).await.map_or(0, |c| c.offset);
                out.insert(tp.partition, c);
            }
            out
        })
    };

    let mut first = ConsumerProcess::start_with(
        "consumer-1",
        ChildMode::Stream,
        work.path(),
        &staunch.bootstrap(),
        topic,
        Some(hang),
    );
    first.wait_until("the handler hangs", |events| {
        events.contains(&Event::Hang {
            partition: hang.0,
            offset: hang.1,
        })
    });
    // The consumer commits only between fetches, and the handler hangs inside one: every
    // commit of this process has landed.
    first.kill9();
    let at_kill = committed_now(&client);
    let by_first: BTreeSet<(i32, i64)> = first.processed().into_iter().collect();
    for (&p, &c) in &at_kill {
        let unprocessed: Vec<i64> = (0..c).filter(|o| !by_first.contains(&(p, *o))).collect();
        assert!(
            unprocessed.is_empty(),
            "partition {p}: committed {c}, but {:?} were never processed (seed {seed})",
            &unprocessed[..unprocessed.len().min(10)]
        );
    }
    assert!(
        at_kill[&hang.0] <= hang.1,
        "partition {}: committed {} with the handler hanging at {} (seed {seed})",
        hang.0,
        at_kill[&hang.0],
        hang.1
    );
    assert!(
        at_kill.values().all(|&c| c > 0),
        "nothing committed before the kill on some partition ({at_kill:?}): the restart has \
         nothing to resume from and the test proves little (seed {seed})"
    );
    assert!(
        !by_first.contains(&hang),
        "the hanging record never succeeded"
    );

    let mut second = ConsumerProcess::start(
        "consumer-2",
        ChildMode::Stream,
        work.path(),
        &staunch.bootstrap(),
        topic,
    );
    rt.block_on(async {
        for tp in &tps {
            wait_for_commit(&client, &group, tp, "the whole partition", |offset, _| {
                offset == PER_PARTITION
            })
            .await;
        }
    });
    second.kill9();

    let by_second: Vec<(i32, i64)> = second.processed();
    let mut resumed_at: BTreeMap<i32, i64> = BTreeMap::new();
    for &(p, o) in &by_second {
        resumed_at.entry(p).or_insert(o);
    }
    for (&p, &c) in &at_kill {
        if c < PER_PARTITION {
            assert_eq!(
                resumed_at.get(&p),
                Some(&c),
                "partition {p}: the new process resumes at the committed offset (seed {seed})"
            );
        }
    }
    let union: BTreeSet<(i32, i64)> = by_first
        .iter()
        .copied()
        .chain(by_second.iter().copied())
        .collect();
    let lost: Vec<(i32, i64)> = (0..PARTITIONS)
        .flat_map(|p| (0..PER_PARTITION).map(move |o| (p, o)))
        .filter(|k| !union.contains(k))
        .collect();
    assert!(
        lost.is_empty(),
        "{} records never processed, e.g. {:?} (seed {seed})",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
    let duplicates = by_first.len() + by_second.len() - total;
    eprintln!(
        "hung at {hang:?} after {} processed, committed {at_kill:?} (seed {seed}); the new process processed {}; {duplicates} duplicates",
        by_first.len(),
        by_second.len()
    );
    drop(staunch);
}
