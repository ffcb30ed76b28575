//! The `staunch` command for people, run against a live `staunch serve` child: topics
//! create, list, describe, alter and delete; produce keyed lines from standard input and
//! consume them back; groups list and describe; clear errors with a non-zero exit.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::BytesMut;
use serde_json::Value;
use staunch_client::Connection;
use staunch_client::kafka_protocol::messages::consumer_protocol_assignment::TopicPartition;
use staunch_client::kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use staunch_client::kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use staunch_client::kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use staunch_client::kafka_protocol::messages::{
    ConsumerProtocolAssignment, ConsumerProtocolSubscription, GroupId, JoinGroupRequest,
    OffsetCommitRequest, SyncGroupRequest, TopicName,
};
use staunch_client::kafka_protocol::protocol::{Encodable, StrBytes};

/// A `staunch serve` child on a free port with its own data directory; killed when dropped.
struct ServeProcess {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl ServeProcess {
    fn start() -> ServeProcess {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("serve.log");
        let stderr = std::fs::File::create(&log).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_staunch"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--group-initial-rebalance-delay",
                "0ms",
                "--data-dir",
            ])
            .arg(dir.path().join("data"))
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut stdout = BufReader::new(stdout);
        let mut line = String::new();
        // One `staunch listener NAME on ADDR` line per listener comes first (a few at most).
        for _ in 0..16 {
            line.clear();
            stdout.read_line(&mut line).unwrap();
            if !line.starts_with("staunch listener ") {
                break;
            }
        }
        let Some(addr) = line.trim().strip_prefix("staunch listening on ") else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "unexpected first line from staunch serve: {line:?}; log: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        };
        let addr = addr.parse().unwrap();
        ServeProcess {
            child,
            addr,
            _dir: dir,
        }
    }

    /// Runs `staunch <args>` against this broker, with `stdin` as standard input.
    fn run(&self, args: &[&str], stdin: Option<&str>) -> Run {
        run_staunch(&self.addr.to_string(), args, stdin)
    }

    /// Runs `staunch <args>`, which must succeed; its standard output.
    fn ok(&self, args: &[&str]) -> String {
        self.run(args, None).ok()
    }

    /// Runs `staunch <args> --json`, which must succeed; the parsed document.
    fn json(&self, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.push("--json");
        let out = self.ok(&args);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {out}"))
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What one `staunch` run did.
#[derive(Debug)]
struct Run {
    args: Vec<String>,
    success: bool,
    stdout: String,
    stderr: String,
}

impl Run {
    fn ok(self) -> String {
        assert!(
            self.success,
            "staunch {:?} failed:\nstdout: {}\nstderr: {}",
            self.args, self.stdout, self.stderr
        );
        self.stdout
    }

    fn fails(self) -> Run {
        assert!(
            !self.success,
            "staunch {:?} should have failed:\nstdout: {}\nstderr: {}",
            self.args, self.stdout, self.stderr
        );
        self
    }
}

fn run_staunch(bootstrap: &str, args: &[&str], stdin: Option<&str>) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_staunch"))
        .args(args)
        .env("STAUNCH_BOOTSTRAP", bootstrap)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(text) = stdin {
        let mut input = child.stdin.take().unwrap();
        input.write_all(text.as_bytes()).unwrap();
        // Dropping `input` closes standard input: end of input.
    }
    let output = child.wait_with_output().unwrap();
    Run {
        args: args.iter().map(|a| (*a).to_owned()).collect(),
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Kafka's murmur2, written out again here so the test does not trust the code it checks.
fn murmur2(data: &[u8]) -> i32 {
    let m: i32 = 0x5bd1e995;
    let mut h: i32 = 0x9747b28c_u32 as i32 ^ data.len() as i32;
    let n = data.len() / 4;
    for i in 0..n {
        let b = |j: usize| i32::from(data[i * 4 + j]);
        let mut k = b(0) | (b(1) << 8) | (b(2) << 16) | (b(3) << 24);
        k = k.wrapping_mul(m);
        k ^= ((k as u32) >> 24) as i32;
        k = k.wrapping_mul(m);
        h = h.wrapping_mul(m);
        h ^= k;
    }
    let tail = &data[n * 4..];
    if tail.len() == 3 {
        h ^= i32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= i32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= i32::from(tail[0]);
        h = h.wrapping_mul(m);
    }
    h ^= ((h as u32) >> 13) as i32;
    h = h.wrapping_mul(m);
    h ^= ((h as u32) >> 15) as i32;
    h
}

/// The table row (whitespace-separated cells) whose first cell is `first`.
fn row<'a>(table: &'a str, first: &str) -> Vec<&'a str> {
    table
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|cells| cells.first() == Some(&first))
        .unwrap_or_else(|| panic!("no row starting with {first:?} in:\n{table}"))
}

fn config<'a>(described: &'a Value, name: &str) -> &'a Value {
    described["configs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no config {name} in {described}"))
}

#[test]
fn topics_are_created_listed_described_filled_read_back_and_deleted() {
    let serve = ServeProcess::start();

    let out = serve.ok(&[
        "topics",
        "create",
        "orders",
        "--partitions",
        "3",
        "--config",
        "retention.ms=86400000",
    ]);
    assert_eq!(out.trim(), "Created topic orders with 3 partitions.");

    // list: a table, and JSON.
    let out = serve.ok(&["topics", "list"]);
    assert_eq!(
        out.lines()
            .next()
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["TOPIC", "PARTITIONS", "REPLICATION", "ID"]
    );
    assert_eq!(row(&out, "orders")[1..3], ["3", "1"]);
    let listed = serve.json(&["topics", "list"]);
    let orders = listed["topics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "orders")
        .unwrap_or_else(|| panic!("orders not listed: {listed}"));
    assert_eq!(orders["partitions"], 3);
    assert_eq!(orders["replication_factor"], 1);
    assert_eq!(orders["internal"], false);

    // describe: partitions with leader, replicas, isr, offsets; configs with overrides.
    let out = serve.ok(&["topics", "describe", "orders"]);
    assert!(out.starts_with("Topic: orders  ID: "), "{out}");
    for p in ["0", "1", "2"] {
        assert_eq!(row(&out, p)[1..], ["1", "0", "1", "1", "0", "0"], "{out}");
    }
    assert_eq!(
        row(&out, "retention.ms")[1..],
        ["86400000", "yes", "DYNAMIC_TOPIC_CONFIG"]
    );
    assert_eq!(row(&out, "segment.ms")[2..], ["no", "DEFAULT_CONFIG"]);
    let described = serve.json(&["topics", "describe", "orders"]);
    assert_eq!(described["partitions"].as_array().unwrap().len(), 3);
    assert_eq!(described["partitions"][2]["leader"], 1);
    assert_eq!(described["partitions"][2]["isr"], serde_json::json!([1]));
    assert_eq!(config(&described, "retention.ms")["value"], "86400000");
    assert_eq!(config(&described, "retention.ms")["overridden"], true);
    assert_eq!(config(&described, "cleanup.policy")["overridden"], false);

    // produce keyed lines from standard input.
    let lines: Vec<(String, String)> = (0..40)
        .map(|i| (format!("user-{}", i % 13), format!("event {i}")))
        .collect();
    let input: String = lines.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    let out = serve
        .run(&["produce", "orders", "--key-separator", "="], Some(&input))
        .ok();
    assert!(
        out.lines()
            .any(|l| l.starts_with("partition ") && l.contains("offsets 0-")),
        "{out}"
    );
    assert_eq!(out.lines().last(), Some("Produced 40 records to orders."));

    // consume them back as JSON lines, stopping at the end.
    let out = serve.ok(&["consume", "orders", "--exit-at-end", "--json"]);
    let records: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 40, "{out}");
    let mut by_partition: BTreeMap<i64, Vec<(i64, String, String)>> = BTreeMap::new();
    for r in &records {
        let key = r["key"].as_str().unwrap().to_owned();
        let partition = r["partition"].as_i64().unwrap();
        assert_eq!(r["topic"], "orders");
        assert_eq!(
            partition,
            i64::from((murmur2(key.as_bytes()) & 0x7fff_ffff) % 3),
            "key {key} is in the wrong partition"
        );
        by_partition.entry(partition).or_default().push((
            r["offset"].as_i64().unwrap(),
            key,
            r["value"].as_str().unwrap().to_owned(),
        ));
    }
    assert!(by_partition.len() > 1, "every key landed in one partition");
    for (partition, got) in &by_partition {
        let offsets: Vec<i64> = got.iter().map(|(o, _, _)| *o).collect();
        assert_eq!(offsets, (0..got.len() as i64).collect::<Vec<_>>());
        // Per partition, the records are in the order they were produced.
        let expected: Vec<(String, String)> = lines
            .iter()
            .filter(|(k, _)| i64::from((murmur2(k.as_bytes()) & 0x7fff_ffff) % 3) == *partition)
            .cloned()
            .collect();
        let got: Vec<(String, String)> =
            got.iter().map(|(_, k, v)| (k.clone(), v.clone())).collect();
        assert_eq!(got, expected);
    }

    // A format, one partition, a maximum.
    let (&first, got) = by_partition.iter().next().unwrap();
    let out = serve.ok(&[
        "consume",
        "orders",
        "--partition",
        &first.to_string(),
        "--format",
        "%p|%o|%k|%v",
        "--max",
        "2",
    ]);
    let expected: String = got
        .iter()
        .take(2)
        .map(|(o, k, v)| format!("{first}|{o}|{k}|{v}\n"))
        .collect();
    assert_eq!(out, expected);

    // describe now shows the latest offsets.
    let described = serve.json(&["topics", "describe", "orders"]);
    let total: i64 = described["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["latest_offset"].as_i64().unwrap())
        .sum();
    assert_eq!(total, 40);

    // Unkeyed values go to one partition per batch.
    let out = serve.ok(&["produce", "orders", "--value", "a", "--value", "b"]);
    assert!(out.starts_with("partition 0: offsets "), "{out}");

    let out = serve.ok(&["topics", "delete", "orders"]);
    assert_eq!(out.trim(), "Deleted topic orders.");
    let listed = serve.json(&["topics", "list"]);
    assert!(
        listed["topics"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["name"] != "orders"),
        "{listed}"
    );
    let failed = serve.run(&["topics", "describe", "orders"], None).fails();
    assert_eq!(
        failed.stderr.trim(),
        "staunch: topic 'orders' does not exist"
    );
}

#[test]
fn altered_configs_and_partitions_are_described_back() {
    let serve = ServeProcess::start();
    serve.ok(&["topics", "create", "settings", "--partitions", "1"]);

    let out = serve.ok(&["topics", "alter", "settings", "--partitions", "4"]);
    assert!(out.contains("now has 4 partitions"), "{out}");
    let described = serve.json(&["topics", "describe", "settings"]);
    assert_eq!(described["partitions"].as_array().unwrap().len(), 4);

    let out = serve.ok(&[
        "topics",
        "alter",
        "settings",
        "--set",
        "retention.ms=3600000",
        "--set",
        "segment.bytes=2097152",
    ]);
    assert!(out.contains("Set retention.ms = 3600000."), "{out}");
    let described = serve.json(&["topics", "describe", "settings"]);
    assert_eq!(config(&described, "retention.ms")["value"], "3600000");
    assert_eq!(config(&described, "retention.ms")["overridden"], true);
    assert_eq!(config(&described, "segment.bytes")["value"], "2097152");

    serve.ok(&["topics", "alter", "settings", "--delete", "retention.ms"]);
    let out = serve.ok(&["topics", "describe", "settings"]);
    assert_eq!(row(&out, "retention.ms")[2..], ["no", "DEFAULT_CONFIG"]);
    assert_eq!(row(&out, "segment.bytes")[1..3], ["2097152", "yes"]);

    // The topic still takes writes after its reconfiguration.
    serve.ok(&["produce", "settings", "--value", "after"]);
    let out = serve.ok(&["consume", "settings", "--exit-at-end"]);
    assert_eq!(out, "after\n");
}

/// `staunch bench produce` writes exactly the records it says (in requests of `--batch`), and
/// `staunch bench consume` reads them all back; both report in `--json` too. (The speed
/// itself is a benchmark's business, not a test's.)
#[test]
fn bench_produce_and_consume_move_every_record_and_report_in_json() {
    let serve = ServeProcess::start();
    let produced = serve.json(&[
        "bench",
        "produce",
        "--topic",
        "load",
        "--messages",
        "3000",
        "--size",
        "100",
        "--batch",
        "100",
        "--connections",
        "2",
    ]);
    assert_eq!(produced["requests"], 30, "{produced}");
    assert!(produced["records_per_second"].as_f64().unwrap() > 0.0);
    let described = serve.json(&["topics", "describe", "load"]);
    assert_eq!(
        described["partitions"][0]["latest_offset"], 3000,
        "{described}"
    );
    let consumed = serve.json(&["bench", "consume", "--topic", "load"]);
    assert_eq!(consumed["records"], 3000, "{consumed}");
    let out = serve.ok(&["bench", "produce", "--topic", "load", "--messages", "10"]);
    assert!(out.contains("produce: 10 records of 1024 B"), "{out}");
}

#[test]
fn errors_are_clear_and_exit_non_zero() {
    let serve = ServeProcess::start();

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let failed = run_staunch(&format!("127.0.0.1:{port}"), &["topics", "list"], None).fails();
    assert!(
        failed
            .stderr
            .starts_with(&format!("staunch: cannot connect to 127.0.0.1:{port}: ")),
        "{}",
        failed.stderr
    );

    serve.ok(&["topics", "create", "once", "--partitions", "2"]);
    let failed = serve
        .run(&["topics", "create", "once", "--partitions", "2"], None)
        .fails();
    assert!(
        failed
            .stderr
            .starts_with("staunch: cannot create topic 'once': TOPIC_ALREADY_EXISTS"),
        "{}",
        failed.stderr
    );
    let failed = serve
        .run(&["topics", "create", "odd", "--config", "no.such=1"], None)
        .fails();
    assert!(
        failed.stderr.contains("INVALID_CONFIG"),
        "{}",
        failed.stderr
    );
    let failed = serve
        .run(&["topics", "alter", "once", "--partitions", "1"], None)
        .fails();
    assert!(
        failed.stderr.contains("INVALID_PARTITIONS"),
        "{}",
        failed.stderr
    );
    let failed = serve
        .run(
            &["produce", "once", "--partition", "7", "--value", "x"],
            None,
        )
        .fails();
    assert!(
        failed.stderr.contains("has no partition 7"),
        "{}",
        failed.stderr
    );
    let failed = serve
        .run(&["consume", "missing", "--exit-at-end"], None)
        .fails();
    assert_eq!(
        failed.stderr.trim(),
        "staunch: topic 'missing' does not exist"
    );
    let failed = serve
        .run(&["consume", "once", "--from", "5", "--exit-at-end"], None)
        .fails();
    assert!(failed.stderr.contains("out of range"), "{}", failed.stderr);
    let failed = serve.run(&["topics", "delete", "missing"], None).fails();
    assert!(
        failed.stderr.contains("UNKNOWN_TOPIC_OR_PARTITION"),
        "{}",
        failed.stderr
    );
}

/// Joins `group` as its only member and, as leader, assigns every partition of `topic` to
/// itself; returns the connection (kept open, so the member stays) and the member id.
async fn join_and_assign(
    addr: SocketAddr,
    group: &str,
    topic: &str,
    partitions: Vec<i32>,
) -> (Connection, String) {
    let mut connection = Connection::connect(addr, "cli-test-member", Duration::from_secs(10))
        .await
        .unwrap();
    let mut subscription = BytesMut::new();
    subscription.extend_from_slice(&0i16.to_be_bytes());
    ConsumerProtocolSubscription::default()
        .with_topics(vec![StrBytes::from_string(topic.to_owned())])
        .encode(&mut subscription, 0)
        .unwrap();
    let mut member_id = String::new();
    let joined = loop {
        let joined = connection
            .call(
                JoinGroupRequest::default()
                    .with_group_id(GroupId(StrBytes::from_string(group.to_owned())))
                    .with_session_timeout_ms(30_000)
                    .with_rebalance_timeout_ms(30_000)
                    .with_member_id(StrBytes::from_string(member_id.clone()))
                    .with_protocol_type(StrBytes::from_static_str("consumer"))
                    .with_protocols(vec![
                        JoinGroupRequestProtocol::default()
                            .with_name(StrBytes::from_static_str("range"))
                            .with_metadata(subscription.clone().freeze()),
                    ]),
            )
            .await
            .unwrap();
        // MEMBER_ID_REQUIRED: join again with the id the coordinator handed out.
        if joined.error_code == 79 {
            member_id = joined.member_id.as_str().to_owned();
            continue;
        }
        assert_eq!(joined.error_code, 0, "JoinGroup failed: {joined:?}");
        break joined;
    };
    let member_id = joined.member_id.as_str().to_owned();
    assert_eq!(joined.leader.as_str(), member_id);
    let mut assignment = BytesMut::new();
    assignment.extend_from_slice(&0i16.to_be_bytes());
    ConsumerProtocolAssignment::default()
        .with_assigned_partitions(vec![
            TopicPartition::default()
                .with_topic(TopicName(StrBytes::from_string(topic.to_owned())))
                .with_partitions(partitions),
        ])
        .encode(&mut assignment, 0)
        .unwrap();
    let synced = connection
        .call(
            SyncGroupRequest::default()
                .with_group_id(GroupId(StrBytes::from_string(group.to_owned())))
                .with_generation_id(joined.generation_id)
                .with_member_id(StrBytes::from_string(member_id.clone()))
                .with_protocol_type(Some(StrBytes::from_static_str("consumer")))
                .with_protocol_name(Some(StrBytes::from_static_str("range")))
                .with_assignments(vec![
                    SyncGroupRequestAssignment::default()
                        .with_member_id(StrBytes::from_string(member_id.clone()))
                        .with_assignment(assignment.freeze()),
                ]),
        )
        .await
        .unwrap();
    assert_eq!(synced.error_code, 0, "SyncGroup failed: {synced:?}");
    (connection, member_id)
}

async fn commit(addr: SocketAddr, group: &str, topic: &str, offsets: &[(i32, i64)]) {
    let mut connection = Connection::connect(addr, "cli-test-committer", Duration::from_secs(10))
        .await
        .unwrap();
    let response = connection
        .call(
            OffsetCommitRequest::default()
                .with_group_id(GroupId(StrBytes::from_string(group.to_owned())))
                .with_topics(vec![
                    OffsetCommitRequestTopic::default()
                        .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
                        .with_partitions(
                            offsets
                                .iter()
                                .map(|&(p, o)| {
                                    OffsetCommitRequestPartition::default()
                                        .with_partition_index(p)
                                        .with_committed_offset(o)
                                        .with_committed_metadata(Some(StrBytes::from_static_str(
                                            "attempts=1",
                                        )))
                                })
                                .collect(),
                        ),
                ]),
        )
        .await
        .unwrap();
    for t in &response.topics {
        for p in &t.partitions {
            assert_eq!(p.error_code, 0, "commit failed: {response:?}");
        }
    }
}

#[test]
fn groups_are_listed_and_described_with_members_assignments_and_lag() {
    let serve = ServeProcess::start();
    serve.ok(&["topics", "create", "lagging", "--partitions", "2"]);
    let ten: Vec<String> = (0..10).map(|i| format!("v{i}")).collect();
    let mut args = vec!["produce", "lagging", "--partition", "0"];
    for v in &ten {
        args.extend(["--value", v.as_str()]);
    }
    serve.ok(&args);
    serve.ok(&[
        "produce", "lagging", "-p", "1", "--value", "a", "--value", "b",
    ]);

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Committed before anyone joins (a simple consumer's commit), then a member joins.
    runtime.block_on(commit(
        serve.addr,
        "cli-group",
        "lagging",
        &[(0, 4), (1, 2)],
    ));
    let (_member_connection, member_id) = runtime.block_on(join_and_assign(
        serve.addr,
        "cli-group",
        "lagging",
        vec![0, 1],
    ));

    let listed = serve.json(&["groups", "list"]);
    let group = listed["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["group"] == "cli-group")
        .unwrap_or_else(|| panic!("cli-group not listed: {listed}"));
    assert_eq!(group["protocol_type"], "consumer");
    assert_eq!(group["state"], "Stable");
    let out = serve.ok(&["groups", "list"]);
    assert_eq!(row(&out, "cli-group")[1..], ["consumer", "Stable"]);

    let described = serve.json(&["groups", "describe", "cli-group"]);
    assert_eq!(described["state"], "Stable");
    assert_eq!(described["protocol_type"], "consumer");
    assert_eq!(described["protocol"], "range");
    let members = described["members"].as_array().unwrap();
    assert_eq!(members.len(), 1, "{described}");
    assert_eq!(members[0]["member_id"], member_id.as_str());
    assert_eq!(members[0]["client_id"], "cli-test-member");
    assert_eq!(
        members[0]["assignment"],
        serde_json::json!({ "lagging": [0, 1] })
    );
    let offsets = described["offsets"].as_array().unwrap();
    assert_eq!(offsets.len(), 2, "{described}");
    assert_eq!(offsets[0]["partition"], 0);
    assert_eq!(offsets[0]["committed_offset"], 4);
    assert_eq!(offsets[0]["high_watermark"], 10);
    assert_eq!(offsets[0]["lag"], 6);
    assert_eq!(offsets[0]["metadata"], "attempts=1");
    assert_eq!(offsets[0]["member_id"], member_id.as_str());
    assert_eq!(offsets[1]["lag"], 0);

    let out = serve.ok(&["groups", "describe", "cli-group"]);
    assert!(out.starts_with("Group: cli-group  State: Stable"), "{out}");
    assert!(out.contains("lagging:0,1"), "{out}");
    assert_eq!(
        row(&out, "lagging")[1..6],
        ["0", "4", "10", "6", member_id.as_str()]
    );
}
