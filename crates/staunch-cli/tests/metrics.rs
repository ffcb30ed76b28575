//! `staunch serve --metrics-listen`: `/metrics` scraped during and after a produce load parses
//! as the Prometheus text format (checked line by line and by the `prometheus-parse` crate),
//! and its counters equal what was produced and consumed: records and bytes in and out, the
//! group's lag, the records group commit made durable; the latency histograms have counts;
//! `/healthz` and `/readyz` answer 200. JSON log lines carry span fields.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Staunch;
use prometheus_parse::{Scrape, Value};

const TOPIC: &str = "metrics-load";
const RECORDS: usize = 4000;
const VALUE_BYTES: usize = 100;

/// `GET path` over HTTP/1.1: the status code and the body.
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connecting to the metrics listener");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("reading the HTTP response");
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP header end in {response:?}"));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line in {head:?}"));
    (status, body.to_owned())
}

/// Checks every line of `text` against the Prometheus text format (comments `# HELP` /
/// `# TYPE`, or `name{labels} value`) and parses it.
fn parse(text: &str) -> Scrape {
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if let Some(comment) = line.strip_prefix("# ") {
            assert!(
                comment.starts_with("HELP ") || comment.starts_with("TYPE "),
                "unexpected comment line {line:?}"
            );
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value in {line:?}"));
        assert!(
            value == "+Inf" || value == "-Inf" || value == "NaN" || value.parse::<f64>().is_ok(),
            "bad value in {line:?}"
        );
        let name = series.split('{').next().unwrap();
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
                && !name.starts_with(|c: char| c.is_ascii_digit()),
            "bad metric name in {line:?}"
        );
        if let Some(labels) = series.strip_prefix(name) {
            assert!(
                labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}')),
                "bad labels in {line:?}"
            );
        }
    }
    Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("the Prometheus text parses")
}

/// A scrape of `/metrics`, parsed.
fn scrape(staunch: &Staunch) -> Scrape {
    let (status, body) = get(staunch.metrics_addr(), "/metrics");
    assert_eq!(status, 200, "GET /metrics: {body}");
    parse(&body)
}

/// The sum over every series of counter or gauge `name` whose labels include `labels`.
fn sum(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let values: Vec<f64> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
        .map(|s| match s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
            ref other => panic!("{name} is not a counter or gauge: {other:?}"),
        })
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// The observation count of histogram `name` with `labels` (its `+Inf` bucket).
fn histogram_count(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
        .map(|s| match &s.value {
            Value::Histogram(buckets) => buckets
                .iter()
                .find(|b| b.less_than.is_infinite())
                .map(|b| b.count)
                .unwrap_or_else(|| panic!("{name} has no +Inf bucket: {buckets:?}")),
            other => panic!("{name} is not a histogram: {other:?}"),
        })
        .sum()
}

/// The `_sum` line of histogram `name`.
fn histogram_sum(scrape: &Scrape, name: &str) -> f64 {
    sum(scrape, &format!("{name}_sum"), &[]).unwrap_or_else(|| panic!("no {name}_sum"))
}

fn staunch_cli(staunch: &Staunch, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_staunch"));
    command
        .args(args)
        .env("STAUNCH_BOOTSTRAP", staunch.bootstrap())
        .env_remove("STAUNCH_CONFIG");
    command
}

/// Runs `staunch produce TOPIC` with `lines` on stdin, checking it succeeds.
fn produce(staunch: &Staunch, lines: &str) {
    let mut child = staunch_cli(staunch, &["produce", TOPIC])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawning staunch produce");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(lines.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "staunch produce failed");
}

#[test]
fn metrics_count_what_was_produced_and_consumed_and_parse_as_prometheus_text() {
    let work = tempfile::tempdir().expect("temp dir");
    let mut staunch = Staunch::start_with(work.path(), &["--metrics-listen", "127.0.0.1:0"]);
    let metrics = staunch.metrics_addr();
    assert_eq!(get(metrics, "/healthz").0, 200);
    assert_eq!(get(metrics, "/readyz").0, 200);
    assert_eq!(get(metrics, "/nothing-here").0, 404);

    // The load: RECORDS values of VALUE_BYTES each, scraped while it runs.
    let lines: String = (0..RECORDS)
        .map(|i| format!("{i:0width$}\n", width = VALUE_BYTES))
        .collect();
    let mut load = staunch_cli(&staunch, &["produce", TOPIC])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawning staunch produce");
    let mut stdin = load.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(lines.as_bytes()));
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut scrapes_during_load = 0;
    let mut last_seen = 0.0;
    loop {
        let during = scrape(&staunch);
        scrapes_during_load += 1;
        let records_in = sum(
            &during,
            "staunch_broker_records_in_total",
            &[("topic", TOPIC)],
        )
        .unwrap_or(0.0);
        assert!(
            records_in >= last_seen && records_in <= RECORDS as f64,
            "records in went from {last_seen} to {records_in} (of {RECORDS})"
        );
        last_seen = records_in;
        if load.try_wait().unwrap().is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "the produce load did not finish");
        std::thread::sleep(Duration::from_millis(20));
    }
    writer.join().unwrap().expect("writing the load");
    assert!(load.wait().unwrap().success(), "staunch produce failed");
    assert!(scrapes_during_load >= 1);

    let after = scrape(&staunch);
    let topic = [("topic", TOPIC)];
    assert_eq!(
        sum(&after, "staunch_broker_records_in_total", &topic),
        Some(RECORDS as f64)
    );
    let bytes_in = sum(&after, "staunch_broker_bytes_in_total", &topic).expect("bytes in");
    assert!(
        bytes_in >= (RECORDS * VALUE_BYTES) as f64
            && bytes_in < (RECORDS * (VALUE_BYTES + 64)) as f64,
        "bytes in {bytes_in} for {RECORDS} values of {VALUE_BYTES} bytes (plus batch and record headers)"
    );
    assert_eq!(
        sum(&after, "staunch_broker_records_out_total", &topic).unwrap_or(0.0),
        0.0,
        "nothing was fetched yet"
    );
    // Flush `always`: every record was made durable by exactly one group-commit round.
    assert_eq!(
        histogram_sum(&after, "staunch_log_group_commit_records"),
        RECORDS as f64
    );
    assert_eq!(
        histogram_sum(&after, "staunch_log_group_commit_bytes"),
        bytes_in
    );
    assert!(histogram_count(&after, "staunch_log_fsync_duration_seconds", &[]) >= 1.0);
    let produces = histogram_count(
        &after,
        "staunch_server_request_duration_seconds",
        &[("api", "Produce")],
    );
    assert!(produces >= 1.0, "no produce latencies");
    assert_eq!(
        sum(
            &after,
            "staunch_server_requests_total",
            &[("api", "Produce")]
        ),
        Some(produces)
    );

    // Consume everything as group `g`, committing as it goes: its lag is 0.
    let out = staunch_cli(
        &staunch,
        &["consume", TOPIC, "--group", "g", "--exit-at-end"],
    )
    .stderr(Stdio::inherit())
    .output()
    .expect("running staunch consume");
    assert!(out.status.success(), "staunch consume failed");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().count(),
        RECORDS
    );
    let consumed = scrape(&staunch);
    assert_eq!(
        sum(&consumed, "staunch_broker_records_out_total", &topic),
        Some(RECORDS as f64)
    );
    assert_eq!(
        sum(&consumed, "staunch_broker_bytes_out_total", &topic),
        Some(bytes_in),
        "each batch fetched once"
    );
    assert!(
        histogram_count(
            &consumed,
            "staunch_server_request_duration_seconds",
            &[("api", "Fetch")]
        ) >= 1.0
    );
    let group = [("group", "g"), ("topic", TOPIC)];
    assert_eq!(
        sum(&consumed, "staunch_broker_consumer_group_lag", &group),
        Some(0.0)
    );

    // Seven more records: the group lags by seven.
    produce(&staunch, &"late\n".repeat(7));
    let lagging = scrape(&staunch);
    assert_eq!(
        sum(&lagging, "staunch_broker_records_in_total", &topic),
        Some((RECORDS + 7) as f64)
    );
    assert_eq!(
        sum(&lagging, "staunch_broker_consumer_group_lag", &group),
        Some(7.0)
    );
    assert!(sum(&lagging, "staunch_broker_partitions_online", &[]).unwrap() >= 1.0);
    assert_eq!(
        sum(&lagging, "staunch_broker_partitions_offline", &[]),
        Some(0.0)
    );
    assert!(sum(&lagging, "staunch_server_active_connections", &[]).is_some());
    assert!(
        lagging.docs.contains_key("staunch_broker_records_in_total"),
        "help texts are registered"
    );
    staunch.stop_gracefully();
}

#[test]
fn json_log_lines_about_a_partition_carry_its_topic_and_partition() {
    let work = tempfile::tempdir().expect("temp dir");
    let mut staunch = Staunch::start_with(work.path(), &["--log-format", "json"]);
    let out = staunch_cli(
        &staunch,
        &["topics", "create", "spans", "--partitions", "3"],
    )
    .output()
    .expect("running staunch topics create");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = staunch_cli(&staunch, &["produce", "spans", "-p", "2", "--value", "x"])
        .output()
        .expect("running staunch produce");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Recovery after a kill logs a line per partition that held data, inside its span.
    staunch.kill9();
    staunch.restart();
    staunch.stop_gracefully();
    let log = staunch.log();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect();
    let about_partition = lines
        .iter()
        .find(|l| {
            l["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("log recovered"))
                && l["span"]["name"] == "partition"
                && l["span"]["topic"] == "spans"
                && l["span"]["partition"] == 2
        })
        .unwrap_or_else(|| panic!("no JSON line in the span of partition spans-2:\n{log}"));
    assert!(
        about_partition["spans"]
            .as_array()
            .is_some_and(|spans| spans.iter().any(|s| s["name"] == "partition")),
        "{about_partition}"
    );
}
