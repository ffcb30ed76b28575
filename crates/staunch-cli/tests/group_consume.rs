//! `staunch consume --group` against a `staunch serve` child:
//!
//! - two `--assignor cooperative-sticky -n N` processes split a 4-partition topic, each reads
//!   only its own partitions, none lost and none twice; a later run of the group prints
//!   nothing old (the offsets were committed) and then exactly the one new record;
//! - SIGTERM: the member commits what it printed and leaves the group at once (no member
//!   left to time out), over two topics with `--json`; a member proposing another assignor
//!   is refused with a hint;
//! - flags that make no sense with a group are refused with a clear error;
//! - interop with a real client: a confluent-kafka consumer (librdkafka) and `staunch
//!   consume` processes share one group — cooperative-sticky, and eager `range` — with either
//!   of them leading it (`tests/clients/confluent_staunch_group.py`; see `clients.rs` for the
//!   Python set-up).

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::Staunch;
use common::programs::{client_script, run, run_ok};

/// Bound on every wait for a member's state.
const WAIT: Duration = Duration::from_secs(30);

/// `staunch <args>` against the broker.
fn staunch_cli(staunch: &Staunch, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_staunch"));
    command
        .args(args)
        .env("STAUNCH_BOOTSTRAP", staunch.bootstrap())
        .env("NO_COLOR", "1");
    command
}

/// Produces `lines` to one partition of `topic`.
fn produce(staunch: &Staunch, work: &Path, topic: &str, partition: i32, lines: &[String]) {
    let input: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let p = partition.to_string();
    run_ok(
        &format!("staunch produce {topic} -p {p}"),
        staunch_cli(staunch, &["produce", topic, "-p", &p]),
        Some(input.as_bytes()),
        work,
    );
}

/// A `staunch consume --group` child; its stdout and stderr lines collected by threads.
/// Killed when dropped.
struct Member {
    name: &'static str,
    child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    /// The threads collecting stdout and stderr; each ends at its pipe's end.
    readers: Vec<JoinHandle<()>>,
}

fn collect(
    pipe: impl std::io::Read + Send + 'static,
    into: Arc<Mutex<Vec<String>>>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            into.lock().unwrap().push(line);
        }
    })
}

impl Member {
    fn start(staunch: &Staunch, name: &'static str, args: &[&str]) -> Member {
        let mut child = staunch_cli(staunch, &[&["consume"], args].concat())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning staunch consume");
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let readers = vec![
            collect(child.stdout.take().expect("piped"), Arc::clone(&stdout)),
            collect(child.stderr.take().expect("piped"), Arc::clone(&stderr)),
        ];
        Member {
            name,
            child,
            stdout,
            stderr,
            readers,
        }
    }

    fn lines(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    /// The partition count of the last "owns" line on stderr (0 before any).
    fn owns(&self) -> usize {
        let stderr = self.stderr.lock().unwrap();
        let Some(last) = stderr.iter().rev().find_map(|l| l.split("; owns ").nth(1)) else {
            return 0;
        };
        last.split(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    fn transcript(&self) -> String {
        format!(
            "--- {} stdout ---\n{}\n--- {} stderr ---\n{}",
            self.name,
            self.lines().join("\n"),
            self.name,
            self.stderr.lock().unwrap().join("\n")
        )
    }

    fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("waiting for a member") {
                // The reader threads have taken in the last lines once they reach the end of
                // their pipes.
                while !self.readers.iter().all(JoinHandle::is_finished) {
                    assert!(
                        start.elapsed() < within,
                        "{}'s output did not end within {within:?} of its start\n{}",
                        self.name,
                        self.transcript()
                    );
                    std::thread::sleep(Duration::from_millis(10));
                }
                for reader in self.readers.drain(..) {
                    reader.join().expect("an output reader thread");
                }
                return status;
            }
            assert!(
                start.elapsed() < within,
                "{} still running after {within:?}\n{}",
                self.name,
                self.transcript()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn sigterm(&self) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("running kill -TERM");
        assert!(status.success(), "kill -TERM {pid} failed");
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!("{}", self.transcript());
        }
    }
}

/// Waits until `condition` holds; panics with the members' output after [`WAIT`].
fn wait_until(what: &str, members: &[&Member], condition: impl Fn() -> bool) {
    let start = Instant::now();
    while !condition() {
        let outputs: Vec<String> = members.iter().map(|m| m.transcript()).collect();
        assert!(
            start.elapsed() < WAIT,
            "{what}: not within {WAIT:?}\n{}",
            outputs.join("\n")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `(partition, offset, value)` of each `%p %o %v` line.
fn records(lines: &[String]) -> Vec<(i32, i64, String)> {
    lines
        .iter()
        .map(|l| {
            let mut parts = l.splitn(3, ' ');
            let (p, o, v) = (parts.next(), parts.next(), parts.next());
            match (
                p.and_then(|p| p.parse().ok()),
                o.and_then(|o| o.parse().ok()),
                v,
            ) {
                (Some(p), Some(o), Some(v)) => (p, o, v.to_owned()),
                _ => panic!("not a '%p %o %v' line: {l:?}"),
            }
        })
        .collect()
}

#[test]
fn two_cooperative_members_split_the_records_and_commit_them() {
    let work = tempfile::tempdir().expect("temp dir");
    let staunch = Staunch::start(work.path());
    let (topic, group) = ("split", "split-group");
    run_ok(
        "staunch topics create",
        staunch_cli(&staunch, &["topics", "create", topic, "--partitions", "4"]),
        None,
        work.path(),
    );
    let args = [
        topic,
        "--group",
        group,
        "--assignor",
        "cooperative-sticky",
        "-n",
        "100",
        "--format",
        "%p %o %v",
    ];
    let mut a = Member::start(&staunch, "member a", &args);
    wait_until("a owns all 4 partitions", &[&a], || a.owns() == 4);
    let mut b = Member::start(&staunch, "member b", &args);
    wait_until("a and b own 2 partitions each", &[&a, &b], || {
        a.owns() == 2 && b.owns() == 2
    });
    // 50 records to each partition: 100 for each member, which then stops.
    let mut produced = BTreeSet::new();
    for p in 0..4 {
        let lines: Vec<String> = (0..50).map(|i| format!("{p}-{i}")).collect();
        produce(&staunch, work.path(), topic, p, &lines);
        for (i, v) in lines.into_iter().enumerate() {
            produced.insert((p, i as i64, v));
        }
    }
    for m in [&mut a, &mut b] {
        let status = m.wait_exit(WAIT);
        assert!(
            status.success(),
            "{} exited {status}\n{}",
            m.name,
            m.transcript()
        );
    }
    let (from_a, from_b) = (records(&a.lines()), records(&b.lines()));
    assert_eq!(from_a.len(), 100, "{}", a.transcript());
    assert_eq!(from_b.len(), 100, "{}", b.transcript());
    let parts = |rs: &[(i32, i64, String)]| rs.iter().map(|r| r.0).collect::<BTreeSet<_>>();
    let (parts_a, parts_b) = (parts(&from_a), parts(&from_b));
    assert!(
        parts_a.len() == 2 && parts_b.len() == 2 && parts_a.is_disjoint(&parts_b),
        "each member reads its own two partitions: a {parts_a:?}, b {parts_b:?}"
    );
    let all: Vec<_> = from_a.iter().chain(&from_b).cloned().collect();
    let distinct: BTreeSet<_> = all.iter().cloned().collect();
    assert_eq!(distinct.len(), all.len(), "a record was printed twice");
    assert_eq!(distinct, produced, "printed exactly what was produced");

    // The group's offsets were committed: a new member prints nothing old...
    let again = run_ok(
        "the group again, to the end",
        staunch_cli(&staunch, &["consume", topic, "--group", group, "-e"]),
        None,
        work.path(),
    );
    assert_eq!(again.stdout, "", "nothing old is printed again");
    // ...and exactly what came after.
    produce(&staunch, work.path(), topic, 2, &["late".to_owned()]);
    let late = run_ok(
        "the group again, one new record",
        staunch_cli(
            &staunch,
            &["consume", topic, "--group", group, "-e", "-f", "%p %o %v"],
        ),
        None,
        work.path(),
    );
    assert_eq!(late.stdout, "2 50 late\n");
}

#[test]
fn sigterm_commits_what_was_printed_and_leaves_the_group() {
    let work = tempfile::tempdir().expect("temp dir");
    let staunch = Staunch::start(work.path());
    let group = "term-group";
    for (topic, partitions) in [("term-a", "2"), ("term-b", "1")] {
        run_ok(
            "staunch topics create",
            staunch_cli(
                &staunch,
                &["topics", "create", topic, "--partitions", partitions],
            ),
            None,
            work.path(),
        );
    }
    let mut produced = BTreeSet::new();
    for (topic, p) in [("term-a", 0), ("term-a", 1), ("term-b", 0)] {
        let lines: Vec<String> = (0..10).map(|i| format!("{topic}/{p}/{i}")).collect();
        produce(&staunch, work.path(), topic, p, &lines);
        produced.extend(lines);
    }
    let mut member = Member::start(
        &staunch,
        "member",
        &["term-a", "term-b", "--group", group, "--json"],
    );
    wait_until("all 30 records printed", &[&member], || {
        member.lines().len() >= 30
    });
    // A member proposing another assignor is refused, with what to do about it.
    let refused = run(
        "a member with another assignor",
        staunch_cli(
            &staunch,
            &[
                "consume",
                "term-a",
                "--group",
                group,
                "--assignor",
                "sticky",
            ],
        ),
        None,
        work.path(),
    );
    assert!(!refused.status.success(), "{}", refused.transcript());
    assert!(
        refused.stderr.contains("INCONSISTENT_GROUP_PROTOCOL")
            && refused.stderr.contains("pass the --assignor they use"),
        "{}",
        refused.transcript()
    );
    member.sigterm();
    let status = member.wait_exit(WAIT);
    assert!(
        status.success(),
        "exit after SIGTERM: {status}\n{}",
        member.transcript()
    );
    let printed: BTreeSet<String> = member
        .lines()
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
            let value = v["value"].as_str().expect("a text value").to_owned();
            let expected = format!("{}/{}/", v["topic"].as_str().unwrap(), v["partition"]);
            assert!(value.starts_with(&expected), "{l}");
            value
        })
        .collect();
    assert_eq!(printed, produced);
    assert_eq!(member.lines().len(), 30, "nothing printed twice");

    // Left the group (no member waits out its session timeout) with every offset committed.
    let described = run_ok(
        "staunch groups describe",
        staunch_cli(&staunch, &["groups", "describe", group, "--json"]),
        None,
        work.path(),
    );
    let described: serde_json::Value =
        serde_json::from_str(&described.stdout).expect("groups describe --json");
    assert_eq!(described["members"], serde_json::json!([]), "{described}");
    assert_eq!(described["state"], "Empty", "{described}");
    let offsets = described["offsets"].as_array().expect("offsets");
    assert_eq!(offsets.len(), 3, "{described}");
    for o in offsets {
        assert_eq!(o["committed_offset"], 10, "{described}");
    }
}

#[test]
fn flags_that_do_not_fit_a_group_are_refused() {
    let work = tempfile::tempdir().expect("temp dir");
    // No broker needed: each is refused before connecting.
    let cli = |args: &[&str]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_staunch"));
        command
            .args(args)
            .args(["--bootstrap", "127.0.0.1:1", "--timeout", "1s"]);
        command
    };
    let cases: [(&[&str], &str); 5] = [
        (
            &["consume", "t", "--group", "g", "--partition", "1"],
            "'--group <GROUP>' cannot be used with '--partition <PARTITION>'",
        ),
        (
            &["consume", "t", "--group", "g", "--from", "17"],
            "--from takes only beginning or end with --group",
        ),
        (
            &["consume", "t", "--group", "g", "--from", "-5"],
            "--from takes only beginning or end with --group",
        ),
        (
            &["consume", "t", "u"],
            "2 topics given: reading several topics needs --group",
        ),
        (
            &["consume", "t", "--assignor", "range"],
            "the following required arguments were not provided",
        ),
    ];
    for (args, message) in cases {
        let ran = run(&format!("staunch {args:?}"), cli(args), None, work.path());
        assert!(!ran.status.success(), "{args:?} succeeded");
        assert!(
            ran.stderr.contains(message),
            "{args:?}: expected {message:?} in\n{}",
            ran.stderr
        );
    }
    let ran = run(
        "an unknown assignor",
        cli(&["consume", "t", "--group", "g", "--assignor", "roundrobin"]),
        None,
        work.path(),
    );
    assert!(
        ran.stderr
            .contains("expected range, sticky or cooperative-sticky, got 'roundrobin'"),
        "{}",
        ran.stderr
    );
}

/// Runs the mixed-group script with `first` joining (and leading) first, every member using
/// `assignor`.
fn mixed_group(first: &str, assignor: &str) {
    let work = tempfile::tempdir().expect("temp dir");
    let staunch = Staunch::start(work.path());
    let mut command = client_script("confluent_staunch_group.py", &staunch);
    command.args([
        "--staunch",
        env!("CARGO_BIN_EXE_staunch"),
        "--first",
        first,
        "--assignor",
        assignor,
    ]);
    run_ok(
        &format!("staunch consume and confluent-kafka in one {assignor} group, {first} first"),
        command,
        None,
        work.path(),
    );
}

#[test]
fn confluent_kafka_and_staunch_consume_share_a_group_staunch_leading() {
    mixed_group("staunch", "cooperative-sticky");
}

#[test]
fn confluent_kafka_and_staunch_consume_share_a_group_confluent_leading() {
    mixed_group("confluent", "cooperative-sticky");
}

/// The eager protocol: with `range` every rebalance revokes everything first, and the leader's
/// range assignment must be what the other kind of member expects.
#[test]
fn confluent_kafka_and_staunch_consume_share_a_range_group_staunch_leading() {
    mixed_group("staunch", "range");
}

#[test]
fn confluent_kafka_and_staunch_consume_share_a_range_group_confluent_leading() {
    mixed_group("confluent", "range");
}
