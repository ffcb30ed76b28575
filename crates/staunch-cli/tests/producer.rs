//! `staunch-producer` over `staunch-client` against a real `staunch serve` child process:
//!
//! - `send` returns the partition and offset that reading the topic back confirms;
//! - `send_async` calls each of 2,000 callbacks exactly once, and every acknowledged record is
//!   read back where it was acknowledged;
//! - `send_oneway` records arrive;
//! - kill -9 of the broker in the middle of an idempotent load, then a restart: every record
//!   the producer acknowledged is in the log exactly once, in send order per partition, and
//!   every other record either comes back as a failure or is delivered after the restart;
//! - keyed records land on the same partition as confluent-kafka's Java-compatible
//!   `murmur2_random` partitioner puts them (`tests/clients/confluent_keyed.py`);
//! - `staunch produce` reports each failed record (why, where, which input line) and exits
//!   non-zero.
//!
//! Records are read back with `staunch consume --exit-at-end --json`. The Python interpreter is
//! found as in `clients.rs`: `$STAUNCH_PYTHON` if set, else
//! `${STAUNCH_VENV:-$HOME/.cache/staunch/venv}`'s; a missing one fails the test (it never
//! skips silently) — run `scripts/install-test-clients`.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::Staunch;
use common::programs::{client_script, run, run_ok};
use serde_json::Value;
use staunch_client::{Client, ClientConfig};
use staunch_producer::{
    Producer, ProducerConfig, ProducerRecord, RecordMetadata, SendError, SendResult,
    partition_for_key,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;

/// Upper bound on one awaited producer or client call in these tests.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("building a runtime")
}

/// `future`, which must finish within `limit`.
async fn bounded<F: std::future::Future>(what: &str, limit: Duration, future: F) -> F::Output {
    tokio::time::timeout(limit, future)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {limit:?}"))
}

/// `staunch <args>` against the broker.
fn staunch_cli(staunch: &Staunch, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_staunch"));
    command
        .args(args)
        .env("STAUNCH_BOOTSTRAP", staunch.bootstrap())
        .env("NO_COLOR", "1");
    command
}

fn create_topic(staunch: &Staunch, work: &Path, topic: &str, partitions: u32) {
    let partitions = partitions.to_string();
    run_ok(
        &format!("staunch topics create {topic}"),
        staunch_cli(
            staunch,
            &["topics", "create", topic, "--partitions", &partitions],
        ),
        None,
        work,
    );
}

/// One record as `staunch consume --json` prints it.
#[derive(Debug, Clone, PartialEq)]
struct Read {
    partition: i32,
    offset: i64,
    key: Option<String>,
    value: Option<String>,
    headers: Vec<(String, Option<String>)>,
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => panic!("expected a UTF-8 string or null, got {other}"),
    }
}

/// Every record of `topic`, read from the beginning to the end of each partition.
fn read_back(staunch: &Staunch, work: &Path, topic: &str) -> Vec<Read> {
    let ran = run_ok(
        &format!("staunch consume {topic}"),
        staunch_cli(staunch, &["consume", topic, "--exit-at-end", "--json"]),
        None,
        work,
    );
    ran.stdout
        .lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line).unwrap_or_else(|e| {
                panic!("consume printed a line that is not JSON ({e}): {line}")
            });
            assert_eq!(v["topic"], topic, "{line}");
            Read {
                partition: v["partition"].as_i64().expect("partition") as i32,
                offset: v["offset"].as_i64().expect("offset"),
                key: text(&v["key"]),
                value: text(&v["value"]),
                headers: v["headers"]
                    .as_array()
                    .expect("headers")
                    .iter()
                    .map(|h| (text(&h["key"]).expect("header key"), text(&h["value"])))
                    .collect(),
            }
        })
        .collect()
}

/// A network client of the broker at `bootstrap`.
async fn client(bootstrap: String, config: ClientConfig) -> Client {
    bounded(
        "Client::connect",
        CALL_TIMEOUT,
        Client::connect(vec![bootstrap], config),
    )
    .await
    .expect("connecting the client")
}

/// One record's callback: how many times it ran, and the last result it got.
type Slot = (u32, Option<SendResult>);

/// The outcomes `send_async` callbacks delivered, by record index, each with how many times
/// its callback ran.
#[derive(Debug, Clone)]
struct Outcomes {
    inner: Arc<Mutex<Vec<Slot>>>,
    /// Callbacks handed to the producer that it has neither run nor dropped yet.
    live: Arc<AtomicUsize>,
}

/// Owned by one callback: counts it in [`Outcomes::live`] until it has run or been dropped.
struct Live(Arc<AtomicUsize>);

impl Drop for Live {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Outcomes {
    fn new(records: usize) -> Outcomes {
        Outcomes {
            inner: Arc::new(Mutex::new(vec![(0, None); records])),
            live: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// A callback for record `index`.
    fn callback(&self, index: usize) -> impl FnOnce(SendResult) + Send + 'static {
        let inner = self.inner.clone();
        self.live.fetch_add(1, Ordering::SeqCst);
        let live = Live(self.live.clone());
        move |result| {
            // Dropped last, after the outcome is recorded.
            let _live = live;
            let mut outcomes = inner.lock().unwrap();
            outcomes[index].0 += 1;
            outcomes[index].1 = Some(result);
        }
    }

    /// Waits until the producer holds no callback any more (each has run, or been dropped):
    /// from then on none can run again, so a late call has been counted.
    fn wait_until_no_callback_is_held(&self) {
        let deadline = Instant::now() + CALL_TIMEOUT;
        loop {
            let live = self.live.load(Ordering::SeqCst);
            if live == 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{live} send_async callbacks neither ran nor were dropped within {CALL_TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Asserts every callback ran exactly once, once the producer holds none of them any
    /// more; the results.
    fn exactly_once(&self) -> Vec<SendResult> {
        self.wait_until_no_callback_is_held();
        let slots = self.inner.lock().unwrap().clone();
        let mut results = Vec::with_capacity(slots.len());
        for (i, (calls, result)) in slots.into_iter().enumerate() {
            assert_eq!(calls, 1, "the callback of record {i} ran {calls} times");
            results.push(result.expect("a result"));
        }
        results
    }
}

#[test]
fn send_returns_the_partition_and_offset_that_reading_back_confirms() {
    let work = tempfile::tempdir().expect("temp dir");
    let staunch = Staunch::start(work.path());
    create_topic(&staunch, work.path(), "sync", 3);
    let records: Vec<ProducerRecord> = (0..30)
        .map(|i| {
            let record = ProducerRecord::new("sync", format!("value-{i}"));
            match i % 3 {
                0 => record.with_key(format!("key-{i}")),
                1 => record.with_partition(i % 3).with_header("n", i.to_string()),
                _ => record,
            }
        })
        .collect();
    let placed: Vec<RecordMetadata> = runtime().block_on(async {
        let producer = Producer::new(
            client(staunch.bootstrap(), ClientConfig::default()).await,
            ProducerConfig::default(),
        )
        .expect("producer");
        let mut placed = Vec::new();
        for record in &records {
            let metadata = bounded("send", CALL_TIMEOUT, producer.send(record.clone()))
                .await
                .unwrap_or_else(|e| panic!("send of {record:?} failed: {e}"));
            placed.push(metadata);
        }
        bounded("close", CALL_TIMEOUT, producer.close()).await;
        let metrics = producer.metrics();
        assert_eq!(
            (metrics.sent, metrics.acknowledged, metrics.failed),
            (30, 30, 0)
        );
        placed
    });

    let read = read_back(&staunch, work.path(), "sync");
    assert_eq!(read.len(), records.len(), "{read:?}");
    let at: HashMap<(i32, i64), &Read> =
        read.iter().map(|r| ((r.partition, r.offset), r)).collect();
    let mut next_offset = [0i64; 3];
    for (i, (record, metadata)) in records.iter().zip(&placed).enumerate() {
        assert_eq!(metadata.partition.topic, "sync");
        let partition = metadata.partition.partition;
        match (i % 3, &record.key) {
            (0, Some(key)) => assert_eq!(partition, partition_for_key(key, 3)),
            (1, _) => assert_eq!(partition, (i % 3) as i32),
            _ => {}
        }
        // One record per send, in order: a partition's offsets are 0, 1, 2, ...
        assert_eq!(
            metadata.offset, next_offset[partition as usize],
            "record {i}: {metadata:?}"
        );
        next_offset[partition as usize] += 1;
        let found = at
            .get(&(partition, metadata.offset))
            .unwrap_or_else(|| panic!("record {i} not found at {metadata:?}"));
        assert_eq!(found.value.as_deref(), Some(format!("value-{i}").as_str()));
        assert_eq!(
            found.key,
            record
                .key
                .as_ref()
                .map(|k| String::from_utf8(k.to_vec()).unwrap())
        );
        if i % 3 == 1 {
            assert_eq!(found.headers, vec![("n".to_owned(), Some(i.to_string()))]);
        }
    }
}

#[test]
fn send_async_calls_back_exactly_once_per_record_and_every_acknowledged_record_is_read_back() {
    const RECORDS: usize = 2000;
    let work = tempfile::tempdir().expect("temp dir");
    let staunch = Staunch::start(work.path());
    create_topic(&staunch, work.path(), "async", 4);
    let outcomes = Outcomes::new(RECORDS);
    let runtime = runtime();
    let started = Instant::now();
    runtime.block_on(async {
        let producer = Producer::new(
            client(staunch.bootstrap(), ClientConfig::default()).await,
            ProducerConfig::default(),
        )
        .expect("producer");
        for i in 0..RECORDS {
            let mut record = ProducerRecord::new("async", format!("value-{i}"));
            if i % 3 == 0 {
                record = record.with_key(format!("key-{}", i % 17));
            }
            bounded(
                "send_async",
                CALL_TIMEOUT,
                producer.send_async(record, outcomes.callback(i)),
            )
            .await;
        }
        bounded("flush", CALL_TIMEOUT, producer.flush()).await;
        let metrics = producer.metrics();
        assert_eq!(metrics.sent, RECORDS as u64, "{metrics:?}");
        assert_eq!(metrics.pending(), 0, "{metrics:?}");
        bounded("close", CALL_TIMEOUT, producer.close()).await;
        // A late second call of any callback is counted by `exactly_once`, which first waits
        // until the producer holds no callback any more.
    });
    println!(
        "{RECORDS} records sent with send_async and flushed in {:.2}s",
        started.elapsed().as_secs_f64()
    );
    let results = outcomes.exactly_once();
    let failed: Vec<(usize, &SendError)> = results
        .iter()
        .enumerate()
        .filter_map(|(i, r)| r.as_ref().err().map(|e| (i, e)))
        .collect();
    assert!(failed.is_empty(), "records failed: {failed:?}");

    let read = read_back(&staunch, work.path(), "async");
    assert_eq!(
        read.len(),
        RECORDS,
        "the topic holds other than the records sent"
    );
    let at: HashMap<(i32, i64), &Read> =
        read.iter().map(|r| ((r.partition, r.offset), r)).collect();
    for (i, result) in results.iter().enumerate() {
        let metadata = result.as_ref().expect("acknowledged");
        let found = at
            .get(&(metadata.partition.partition, metadata.offset))
            .unwrap_or_else(|| panic!("record {i} is not at {metadata:?}"));
        assert_eq!(found.value.as_deref(), Some(format!("value-{i}").as_str()));
        if i % 3 == 0 {
            assert_eq!(
                metadata.partition.partition,
                partition_for_key(format!("key-{}", i % 17).as_bytes(), 4)
            );
        }
    }
}

#[test]
fn send_oneway_records_arrive() {
    const RECORDS: usize = 300;
    let work = tempfile::tempdir().expect("temp dir");
    let staunch = Staunch::start(work.path());
    create_topic(&staunch, work.path(), "oneway", 2);
    runtime().block_on(async {
        let producer = Producer::new(
            client(staunch.bootstrap(), ClientConfig::default()).await,
            ProducerConfig::default(),
        )
        .expect("producer");
        for i in 0..RECORDS {
            let record = ProducerRecord::new("oneway", format!("oneway-{i}"));
            bounded("send_oneway", CALL_TIMEOUT, producer.send_oneway(record))
                .await
                .unwrap_or_else(|e| panic!("record {i} not accepted: {e}"));
        }
        bounded("close", CALL_TIMEOUT, producer.close()).await;
        let metrics = producer.metrics();
        assert_eq!(
            (metrics.sent, metrics.acknowledged, metrics.failed),
            (RECORDS as u64, RECORDS as u64, 0),
            "{metrics:?}"
        );
    });
    let mut values: Vec<String> = read_back(&staunch, work.path(), "oneway")
        .into_iter()
        .map(|r| r.value.expect("a value"))
        .collect();
    values.sort();
    let mut expected: Vec<String> = (0..RECORDS).map(|i| format!("oneway-{i}")).collect();
    expected.sort();
    assert_eq!(values, expected);
}

/// A TCP forwarder on a fixed loopback port to the broker's current address: the harness
/// restarts the broker on a new port, and the client's bootstrap address must survive that.
/// (Only bootstrap metadata goes through it; the client then connects to the address the
/// broker advertises.)
struct Proxy {
    addr: SocketAddr,
    target: Arc<Mutex<SocketAddr>>,
}

impl Proxy {
    async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let target = Arc::new(Mutex::new(target));
        let shared = target.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let to = *shared.lock().unwrap();
                tokio::spawn(async move {
                    let connect = TcpStream::connect(to);
                    if let Ok(Ok(mut outbound)) =
                        tokio::time::timeout(Duration::from_secs(5), connect).await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Proxy { addr, target }
    }

    fn retarget(&self, to: SocketAddr) {
        *self.target.lock().unwrap() = to;
    }
}

#[test]
fn kill9_mid_load_loses_no_acknowledged_record_and_duplicates_none() {
    const RECORDS: usize = 8000;
    const PARTITIONS: i32 = 3;
    const KEYS: usize = 30;
    let work = tempfile::tempdir().expect("temp dir");
    let mut staunch = Staunch::start(work.path());
    create_topic(&staunch, work.path(), "crash", PARTITIONS as u32);
    let runtime = runtime();
    let proxy = runtime.block_on(Proxy::start(staunch.addr()));
    let client_config = ClientConfig {
        request_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(2),
        ..ClientConfig::default()
    };
    let producer = runtime.block_on(async {
        Producer::new(
            client(proxy.addr.to_string(), client_config).await,
            ProducerConfig {
                // Long enough to span the kill and the restart.
                delivery_timeout: Duration::from_secs(30),
                request_timeout: Duration::from_secs(5),
                ..ProducerConfig::default()
            },
        )
        .expect("producer")
    });
    assert!(producer.config().idempotence);
    let key = |i: usize| format!("key-{}", i % KEYS);
    let outcomes = Outcomes::new(RECORDS);
    let started = Instant::now();
    // The load: bursts of 100 records every 25 ms or so, about 4,000 a second, so it runs on
    // through the kill and the restart and a burst is usually in flight when the kill comes.
    let load = runtime.spawn({
        let producer = producer.clone();
        let outcomes = outcomes.clone();
        async move {
            for i in 0..RECORDS {
                let record = ProducerRecord::new("crash", format!("{i:06}")).with_key(key(i));
                producer.send_async(record, outcomes.callback(i)).await;
                if i % 100 == 99 {
                    // The load's pace, not synchronisation: it keeps records coming through
                    // the kill and the restart.
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
            }
        }
    });

    // Kill once 1,500 are acknowledged, at a moment when records are waiting for their
    // acknowledgement (some of them in a request the broker may have written but not answered).
    let deadline = Instant::now() + CALL_TIMEOUT;
    loop {
        let metrics = producer.metrics();
        if metrics.acknowledged >= 1500 && metrics.pending() >= 20 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not 1,500 records acknowledged and 20 pending within {CALL_TIMEOUT:?}: {metrics:?}",
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let at_kill = producer.metrics();
    staunch.kill9();
    let killed_at = started.elapsed();
    // The broker stays down until the load has sent another burst into the outage: records
    // accepted while nothing can be acknowledged, which must be delivered after the restart.
    let into_the_outage = (at_kill.sent + 100).min(RECORDS as u64);
    let deadline = Instant::now() + CALL_TIMEOUT;
    loop {
        let metrics = producer.metrics();
        if metrics.sent >= into_the_outage {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the load sent no further 100 records within {CALL_TIMEOUT:?} of the kill: {metrics:?}",
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    staunch.restart();
    proxy.retarget(staunch.addr());
    let restarted_at = started.elapsed();

    runtime.block_on(async {
        bounded("the load", CALL_TIMEOUT, load)
            .await
            .expect("the load task");
        bounded("flush", CALL_TIMEOUT, producer.flush()).await;
        bounded("close", CALL_TIMEOUT, producer.close()).await;
    });
    let metrics = producer.metrics();
    println!(
        "kill -9 at {:.2}s with {at_kill:?}; restarted at {:.2}s; done at {:.2}s with {metrics:?}",
        killed_at.as_secs_f64(),
        restarted_at.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        at_kill.sent < RECORDS as u64 && at_kill.acknowledged < RECORDS as u64,
        "the load was over before the kill: {at_kill:?}"
    );

    let results = outcomes.exactly_once();
    let read = read_back(&staunch, work.path(), "crash");
    // Where each record is in the log, by index; no index twice.
    let mut found: BTreeMap<usize, &Read> = BTreeMap::new();
    for r in &read {
        let value = r.value.as_deref().expect("a value");
        let i: usize = value.parse().expect("a record index");
        assert!(i < RECORDS, "unknown record {value} in the log");
        assert_eq!(r.key.as_deref(), Some(key(i).as_str()), "record {i}");
        assert_eq!(
            r.partition,
            partition_for_key(key(i).as_bytes(), PARTITIONS),
            "record {i}"
        );
        if let Some(first) = found.insert(i, r) {
            panic!("record {i} is in the log twice: {first:?} and {r:?}");
        }
    }
    // Per partition, the log holds records in the order they were sent.
    let mut by_partition: BTreeMap<i32, Vec<(i64, usize)>> = BTreeMap::new();
    for (&i, r) in &found {
        by_partition
            .entry(r.partition)
            .or_default()
            .push((r.offset, i));
    }
    for (partition, mut records) in by_partition {
        records.sort();
        let order: Vec<usize> = records.iter().map(|(_, i)| *i).collect();
        assert!(
            order.windows(2).all(|w| w[0] < w[1]),
            "partition {partition} holds records out of send order: {order:?}"
        );
    }
    let mut acknowledged = 0;
    let mut failures = Vec::new();
    for (i, result) in results.iter().enumerate() {
        match result {
            Ok(metadata) => {
                acknowledged += 1;
                let r = found
                    .get(&i)
                    .unwrap_or_else(|| panic!("acknowledged record {i} ({metadata:?}) is LOST"));
                assert_eq!(metadata.partition.partition, r.partition, "record {i}");
                // -1: a retry answered DUPLICATE_SEQUENCE_NUMBER without the original offset.
                if metadata.offset != -1 {
                    assert_eq!(
                        metadata.offset, r.offset,
                        "record {i} acknowledged elsewhere"
                    );
                }
            }
            Err(e) => {
                if !e.may_have_been_appended {
                    assert!(
                        !found.contains_key(&i),
                        "record {i} failed as certainly not written ({e}), yet it is in the log"
                    );
                }
                failures.push((i, e.error.to_string()));
            }
        }
    }
    println!(
        "{acknowledged} acknowledged, {} failed, {} in the log",
        failures.len(),
        found.len()
    );
    assert_eq!(
        metrics.possible_duplicates, 0,
        "the producer reports possible duplicates: {metrics:?}"
    );
    // The delivery timeout spans the outage: nothing should have failed.
    assert!(
        failures.is_empty(),
        "{} records failed despite a delivery timeout spanning the restart, first: {:?}",
        failures.len(),
        failures.first()
    );
    assert_eq!(found.len(), RECORDS);
}

fn unhex(text: &str) -> Vec<u8> {
    assert!(text.len().is_multiple_of(2), "odd hex {text:?}");
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
        .collect()
}

#[test]
fn keyed_records_land_where_confluent_kafka_murmur2_random_puts_them() {
    const PARTITIONS: i32 = 7;
    let work = tempfile::tempdir().expect("temp dir");
    let staunch = Staunch::start(work.path());
    let mut python = client_script("confluent_keyed.py", &staunch);
    python.args([
        "--topic",
        "keyed-confluent",
        "--partitions",
        &PARTITIONS.to_string(),
        "--count",
        "200",
    ]);
    let ran = run_ok("confluent_keyed.py", python, None, work.path());
    println!("===== confluent_keyed.py =====\n{}", ran.transcript());
    // "KEY <hex> <partition>"; the hex is empty for the empty key.
    let confluent: Vec<(Vec<u8>, i32)> = ran
        .stdout
        .lines()
        .filter_map(|line| line.strip_prefix("KEY "))
        .map(|rest| {
            let (hex, partition) = rest.rsplit_once(' ').expect("KEY <hex> <partition>");
            (unhex(hex), partition.parse().expect("a partition"))
        })
        .collect();
    assert_eq!(confluent.len(), 200, "{}", ran.transcript());

    create_topic(&staunch, work.path(), "keyed-rust", PARTITIONS as u32);
    let outcomes = Outcomes::new(confluent.len());
    runtime().block_on(async {
        let producer = Producer::new(
            client(staunch.bootstrap(), ClientConfig::default()).await,
            ProducerConfig::default(),
        )
        .expect("producer");
        for (i, (key, _)) in confluent.iter().enumerate() {
            let record =
                ProducerRecord::new("keyed-rust", "value").with_key(Bytes::from(key.clone()));
            bounded(
                "send_async",
                CALL_TIMEOUT,
                producer.send_async(record, outcomes.callback(i)),
            )
            .await;
        }
        bounded("close", CALL_TIMEOUT, producer.close()).await;
    });
    let mut mismatches = Vec::new();
    for ((key, theirs), result) in confluent.iter().zip(outcomes.exactly_once()) {
        let ours = result
            .unwrap_or_else(|e| panic!("key {key:02x?} failed: {e}"))
            .partition
            .partition;
        if ours != *theirs {
            mismatches.push(format!(
                "key {key:02x?}: confluent {theirs}, staunch {ours}"
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} keys on another partition than confluent-kafka's murmur2_random put them:\n{}",
        mismatches.len(),
        confluent.len(),
        mismatches.join("\n")
    );
    let used: std::collections::BTreeSet<i32> = confluent.iter().map(|(_, p)| *p).collect();
    assert_eq!(
        used.len(),
        PARTITIONS as usize,
        "keys did not spread: {used:?}"
    );
}

#[test]
fn cli_produce_reports_each_failed_record_and_exits_non_zero() {
    let work = tempfile::tempdir().expect("temp dir");
    let staunch = Staunch::start(work.path());
    create_topic(&staunch, work.path(), "cli", 2);
    // Line 2 is larger than the producer's largest request (1 MiB): refused, the rest go.
    let mut input = b"first\n".to_vec();
    input.extend(std::iter::repeat_n(b'x', 2 << 20));
    input.extend(b"\nthird\n");
    let ran = run(
        "staunch produce with an oversized line",
        staunch_cli(&staunch, &["produce", "cli", "--partition", "1"]),
        Some(&input),
        work.path(),
    );
    assert!(!ran.status.success(), "{}", ran.transcript());
    let reported = ran
        .stderr
        .lines()
        .find(|l| l.starts_with("staunch: record from line 2 to cli/1 FAILED: record of "))
        .unwrap_or_else(|| panic!("no failure line for line 2\n{}", ran.transcript()));
    assert!(
        reported.contains("exceeds the limit of 1048576 bytes; record not accepted"),
        "{reported}"
    );
    assert!(
        ran.stdout.contains(
            "partition 1: offsets 0-1 (2 records)\nProduced 2 of 3 records to cli; 1 FAILED."
        ),
        "{}",
        ran.transcript()
    );
    assert!(
        ran.stderr
            .ends_with("staunch: 1 of 3 records to 'cli' failed\n"),
        "{}",
        ran.transcript()
    );

    // Flags reach the producer; --json reports the same.
    let ran = run(
        "staunch produce --json",
        staunch_cli(
            &staunch,
            &[
                "produce",
                "cli",
                "-K",
                "=",
                "--linger",
                "20ms",
                "--delivery-timeout",
                "20s",
                "--no-idempotence",
                "--json",
            ],
        ),
        Some(b"a=1\nb=2\nc=3\n"),
        work.path(),
    );
    assert!(ran.status.success(), "{}", ran.transcript());
    let report: Value = serde_json::from_str(&ran.stdout).expect("JSON");
    assert_eq!(report["idempotence"], false, "{report}");
    assert_eq!(report["acknowledged"], 3, "{report}");
    assert_eq!(report["failed"], 0, "{report}");
    let read = read_back(&staunch, work.path(), "cli");
    assert_eq!(read.len(), 5, "{read:?}");
    for r in read.iter().filter(|r| r.key.is_some()) {
        let key = r.key.as_deref().unwrap();
        assert_eq!(r.partition, partition_for_key(key.as_bytes(), 2), "{r:?}");
    }
}

/// Waits until `done` holds for the outbox of `producing`, which must not exit meanwhile.
fn wait_for_outbox(what: &str, producing: &mut std::process::Child, done: impl Fn() -> bool) {
    let deadline = Instant::now() + CALL_TIMEOUT;
    while !done() {
        if let Some(status) = producing.try_wait().unwrap() {
            panic!("{what}: staunch produce exited {status} first");
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {CALL_TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether the files of the outbox in `dir` hold every one of `values` as a record value
/// (stored uncompressed; a match must not run on into further digits, so `line-4` is not
/// found in `line-40`).
fn outbox_holds(dir: &Path, values: &[String]) -> bool {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_owned()];
    while let Some(d) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                files.push(bytes);
            }
        }
    }
    values.iter().all(|value| {
        let value = value.as_bytes();
        files.iter().any(|bytes| {
            bytes.windows(value.len()).enumerate().any(|(at, window)| {
                window == value && !bytes.get(at + value.len()).is_some_and(u8::is_ascii_digit)
            })
        })
    })
}

/// `staunch produce --outbox DIR` killed with -9 while the broker is down: the records it had
/// read are in its outbox, and the next run with the same DIR sends every one of them first.
#[test]
fn cli_produce_with_an_outbox_loses_nothing_when_killed() {
    const LINES: usize = 50;
    let work = tempfile::tempdir().expect("temp dir");
    let outbox = work.path().join("outbox");
    let mut staunch = Staunch::start(work.path());
    create_topic(&staunch, work.path(), "outboxed", 1);
    let mut producing = staunch_cli(
        &staunch,
        &["produce", "outboxed", "--outbox", outbox.to_str().unwrap()],
    )
    .stdin(std::process::Stdio::piped())
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null())
    .spawn()
    .expect("staunch produce starts");
    // The producer has connected once it opens its outbox (it reads the partition count
    // first); now the broker dies and nothing it is sent can be acknowledged.
    wait_for_outbox("staunch produce opens its outbox", &mut producing, || {
        outbox.is_dir()
    });
    staunch.kill9();
    {
        use std::io::Write;
        let mut stdin = producing.stdin.take().unwrap();
        for i in 0..LINES {
            writeln!(stdin, "line-{i}").unwrap();
        }
    }
    // Each line is fsynced into the outbox as it is read. The producer then waits for
    // acknowledgements that cannot come, until it is killed.
    let lines: Vec<String> = (0..LINES).map(|i| format!("line-{i}")).collect();
    wait_for_outbox("every line is in the outbox", &mut producing, || {
        outbox_holds(&outbox, &lines)
    });
    assert!(
        producing.try_wait().unwrap().is_none(),
        "staunch produce finished although the broker was down"
    );
    producing.kill().unwrap();
    producing.wait().unwrap();

    staunch.restart();
    let ran = run_ok(
        "staunch produce --outbox (the next run)",
        staunch_cli(
            &staunch,
            &["produce", "outboxed", "--outbox", outbox.to_str().unwrap()],
        ),
        Some(b""),
        work.path(),
    );
    assert!(
        ran.stderr.contains(&format!(
            "Sending {LINES} record(s) an earlier run left in the outbox first."
        )),
        "{}",
        ran.transcript()
    );
    let values: Vec<String> = read_back(&staunch, work.path(), "outboxed")
        .into_iter()
        .map(|r| r.value.unwrap_or_default())
        .collect();
    let expected: Vec<String> = (0..LINES).map(|i| format!("line-{i}")).collect();
    assert_eq!(values, expected, "every line once, in order");
}
