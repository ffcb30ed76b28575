//! SASL_PLAINTEXT against a `staunch serve` child process, with users made by `staunch users
//! add --data-dir` before it starts: Debian's kcat (PLAIN, SCRAM-SHA-512), confluent-kafka
//! (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512) and kafka-python (PLAIN, SCRAM-SHA-512) produce and
//! consume; a wrong password and an unknown user are refused by each, and nothing they sent is
//! stored; the broker log names the user and never the password. The `staunch` CLI itself
//! talks SASL (topics, produce, consume, users add / list / delete online); a user added
//! online logs in at once and after a restart, a deleted one cannot. confluent-kafka keeps
//! producing across KIP-152 re-authentications.

mod common;

use std::path::Path;
use std::process::Command;

use common::Staunch;
use common::programs::{client_script, run, run_ok};

const PASSWORD: &str = "s3cret-Pa55";
const WRONG: &str = "wrong-Pa55word";

/// `staunch <args>` with the password in STAUNCH_USER_PASSWORD / STAUNCH_SASL_PASSWORD.
fn cli(args: &[&str], password: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_staunch"));
    command
        .args(args)
        .env("STAUNCH_USER_PASSWORD", password)
        .env("STAUNCH_SASL_PASSWORD", password)
        .env_remove("STAUNCH_BOOTSTRAP");
    command
}

/// Adds `user` (every SCRAM mechanism) to the stopped broker's data directory.
fn add_offline(data: &Path, user: &str, work: &Path) {
    let dir = data.to_str().unwrap();
    run_ok(
        "staunch users add --data-dir",
        cli(
            &[
                "users",
                "add",
                user,
                "--mechanism",
                "all",
                "--data-dir",
                dir,
            ],
            PASSWORD,
        ),
        None,
        work,
    );
}

/// Client flags for `staunch` subcommands talking SASL as `user`.
fn sasl_flags<'a>(staunch: &'a str, mechanism: &'a str, user: &'a str) -> Vec<&'a str> {
    vec![
        "-b",
        staunch,
        "--security-protocol",
        "SASL_PLAINTEXT",
        "--sasl-mechanism",
        mechanism,
        "--sasl-username",
        user,
    ]
}

fn kcat(staunch: &Staunch, mechanism: &str, user: &str, password: &str) -> Command {
    let mut command = Command::new("kcat");
    command.args(["-b", &staunch.bootstrap()]).args([
        "-X",
        "security.protocol=SASL_PLAINTEXT",
        "-X",
        &format!("sasl.mechanisms={mechanism}"),
        "-X",
        &format!("sasl.username={user}"),
        "-X",
        &format!("sasl.password={password}"),
    ]);
    command
}

/// A config file with the per-address failure limit raised: every client here connects from
/// 127.0.0.1, and the refusal tests fail on purpose many times (kafka-python retries).
fn config_file(work: &Path, extra: &str) -> String {
    let path = work.join("staunch.toml");
    std::fs::write(
        &path,
        format!("[sasl]\nmax_failures_per_address = 100000\n{extra}"),
    )
    .unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn real_clients_log_in_over_sasl_plaintext_and_wrong_credentials_are_refused() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    add_offline(&data, "admin", work.path());
    let config = config_file(work.path(), "");
    let staunch = Staunch::start_with(
        work.path(),
        &["--listeners", "SASL_PLAINTEXT://127.0.0.1:0", "-c", &config],
    );

    // kcat: produce and consume with PLAIN and SCRAM-SHA-512.
    for mechanism in ["PLAIN", "SCRAM-SHA-512"] {
        let topic = format!("kcat-{}", mechanism.to_lowercase());
        let input: String = (0..5).map(|i| format!("{mechanism} line {i}\n")).collect();
        let mut produce = kcat(&staunch, mechanism, "admin", PASSWORD);
        produce.args(["-P", "-t", &topic]);
        run_ok(
            "kcat -P over SASL",
            produce,
            Some(input.as_bytes()),
            work.path(),
        );
        let mut consume = kcat(&staunch, mechanism, "admin", PASSWORD);
        consume.args(["-C", "-t", &topic, "-e", "-o", "beginning"]);
        let out = run_ok("kcat -C over SASL", consume, None, work.path());
        assert_eq!(out.stdout, input, "kcat {mechanism} read back");
        // A wrong password and an unknown user: refused, nothing stored.
        for (user, password) in [("admin", WRONG), ("mallory", PASSWORD)] {
            let mut produce = kcat(&staunch, mechanism, user, password);
            produce.args(["-P", "-t", &topic, "-X", "message.timeout.ms=5000"]);
            let ran = run(
                "kcat -P refused",
                produce,
                Some(b"must not be stored\n"),
                work.path(),
            );
            assert!(
                ran.stderr
                    .contains("Authentication failed during authentication"),
                "kcat {mechanism} as {user}: {}",
                ran.transcript()
            );
        }
        let mut consume = kcat(&staunch, mechanism, "admin", PASSWORD);
        consume.args(["-C", "-t", &topic, "-e", "-o", "beginning"]);
        let out = run_ok("kcat -C after refusals", consume, None, work.path());
        assert_eq!(out.stdout, input, "nothing stored by refused clients");
    }

    // confluent-kafka and kafka-python.
    for (client, mechanisms) in [
        (
            "confluent",
            &["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"][..],
        ),
        ("kafka-python", &["PLAIN", "SCRAM-SHA-512"][..]),
    ] {
        for mechanism in mechanisms {
            let topic = format!("{client}-{}", mechanism.to_lowercase());
            let script = |user: &str, password: &str| {
                let mut command = client_script("sasl_clients.py", &staunch);
                command.args([
                    "--client",
                    client,
                    "--mechanism",
                    mechanism,
                    "--user",
                    user,
                    "--password",
                    password,
                    "--topic",
                    &topic,
                    "--count",
                    "20",
                ]);
                command
            };
            let ran = run_ok(
                &format!("{client} {mechanism}"),
                script("admin", PASSWORD),
                None,
                work.path(),
            );
            assert!(
                ran.stdout.contains("PRODUCED 20") && ran.stdout.contains("CONSUMED 20"),
                "{}",
                ran.transcript()
            );
            for (user, password) in [("admin", WRONG), ("mallory", PASSWORD)] {
                let mut refused = script(user, password);
                refused.arg("--expect-auth-failure");
                let ran = run_ok(
                    &format!("{client} {mechanism} refused"),
                    refused,
                    None,
                    work.path(),
                );
                assert!(ran.stdout.contains("AUTH FAILED"), "{}", ran.transcript());
            }
        }
    }
    // The confluent round trips read back exactly their 20 messages after the refusals'
    // attempts, checked by the scripts; the log names users and never a password.
    let log = staunch.log();
    assert!(
        log.lines()
            .any(|l| l.contains("authentication failed") && l.contains("\"mallory\"")),
        "no failure line naming the unknown user"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("authentication failed") && l.contains("\"admin\"")),
        "no failure line naming the user"
    );
    assert!(
        !log.contains(WRONG) && !log.contains(PASSWORD),
        "a password in the broker log"
    );
}

#[test]
fn the_staunch_cli_speaks_sasl_and_manages_users_online() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    add_offline(&data, "admin", work.path());
    let config = config_file(work.path(), "");
    let mut staunch = Staunch::start_with(
        work.path(),
        &["--listeners", "SASL_PLAINTEXT://127.0.0.1:0", "-c", &config],
    );
    let w = work.path();
    let ok =
        |staunch: &Staunch, args: &[&str], user: &str, password: &str, stdin: Option<&[u8]>| {
            let bootstrap = staunch.bootstrap();
            let mut all: Vec<&str> = args.to_vec();
            all.extend(sasl_flags(&bootstrap, "SCRAM-SHA-512", user));
            run_ok(
                &format!("staunch {}", args.join(" ")),
                cli(&all, password),
                stdin,
                w,
            )
        };
    ok(
        &staunch,
        &["topics", "create", "orders", "-p", "1"],
        "admin",
        PASSWORD,
        None,
    );
    let out = ok(&staunch, &["topics", "list"], "admin", PASSWORD, None);
    assert!(out.stdout.contains("orders"), "{}", out.transcript());
    ok(
        &staunch,
        &["produce", "orders", "--value", "a", "--value", "b"],
        "admin",
        PASSWORD,
        None,
    );
    let out = ok(
        &staunch,
        &["consume", "orders", "--exit-at-end"],
        "admin",
        PASSWORD,
        None,
    );
    assert_eq!(out.stdout, "a\nb\n");

    // A user added online logs in at once (PLAIN is checked against the SCRAM credential).
    let out = ok(
        &staunch,
        &[
            "users",
            "add",
            "bob",
            "--password-stdin",
            "--iterations",
            "4096",
        ],
        "admin",
        PASSWORD,
        Some(b"bobs-password\n"),
    );
    assert!(
        out.stdout.contains("user bob saved (SCRAM-SHA-512)"),
        "{}",
        out.transcript()
    );
    ok(&staunch, &["topics", "list"], "bob", "bobs-password", None);
    let bootstrap = staunch.bootstrap();
    let mut plain: Vec<&str> = vec!["topics", "list"];
    plain.extend(sasl_flags(&bootstrap, "PLAIN", "bob"));
    run_ok("bob with PLAIN", cli(&plain, "bobs-password"), None, w);
    let out = ok(
        &staunch,
        &["users", "list", "--json"],
        "admin",
        PASSWORD,
        None,
    );
    let users: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let names: Vec<&str> = users
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["user"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["admin", "bob"], "{}", out.stdout);

    // The offline form is refused while the broker runs.
    let ran = run(
        "users add --data-dir while running",
        cli(
            &[
                "users",
                "add",
                "carol",
                "--data-dir",
                data.to_str().unwrap(),
            ],
            PASSWORD,
        ),
        None,
        w,
    );
    assert!(!ran.status.success(), "{}", ran.transcript());
    assert!(
        ran.stderr.contains("is a broker using it"),
        "{}",
        ran.transcript()
    );

    // Still there after a restart.
    staunch.stop_gracefully();
    staunch.restart();
    ok(&staunch, &["topics", "list"], "bob", "bobs-password", None);
    // A wrong password is a clear, non-retried error.
    let bootstrap = staunch.bootstrap();
    let mut args: Vec<&str> = vec!["topics", "list"];
    args.extend(sasl_flags(&bootstrap, "SCRAM-SHA-512", "bob"));
    let ran = run("bob with a wrong password", cli(&args, WRONG), None, w);
    assert!(!ran.status.success());
    assert!(
        ran.stderr
            .contains("SASL authentication with SCRAM-SHA-512 as user \"bob\"")
            && ran.stderr.contains("SASL_AUTHENTICATION_FAILED"),
        "{}",
        ran.transcript()
    );
    // Deleted: refused at once.
    ok(
        &staunch,
        &["users", "delete", "bob"],
        "admin",
        PASSWORD,
        None,
    );
    let ran = run("deleted bob", cli(&args, "bobs-password"), None, w);
    assert!(!ran.status.success(), "{}", ran.transcript());
    assert!(
        ran.stderr.contains("SASL_AUTHENTICATION_FAILED"),
        "{}",
        ran.transcript()
    );
}

#[test]
fn confluent_kafka_keeps_producing_across_re_authentications() {
    let work = tempfile::tempdir().unwrap();
    add_offline(&work.path().join("data"), "admin", work.path());
    let config = config_file(work.path(), "connections_max_reauth_ms = 1000\n");
    let staunch = Staunch::start_with(
        work.path(),
        &["--listeners", "SASL_PLAINTEXT://127.0.0.1:0", "-c", &config],
    );
    let mut command = client_script("sasl_clients.py", &staunch);
    command.args([
        "--client",
        "confluent",
        "--mechanism",
        "SCRAM-SHA-512",
        "--user",
        "admin",
        "--password",
        PASSWORD,
        "--topic",
        "reauth",
        "--count",
        "40",
        "--seconds",
        "5",
    ]);
    let ran = run_ok(
        "confluent across re-authentications",
        command,
        None,
        work.path(),
    );
    assert!(
        ran.stdout.contains("PRODUCED 40") && ran.stdout.contains("CONSUMED 40"),
        "{}",
        ran.transcript()
    );
    // librdkafka re-authenticated on its connections itself, and none was closed as expired
    // (which would also let the produce succeed, through a reconnect).
    let log = staunch.log();
    let reauths = log
        .lines()
        .filter(|l| l.contains("re-authenticated"))
        .count();
    assert!(
        reauths >= 3,
        "{reauths} re-authentications in 5 s of 1 s sessions"
    );
    assert!(
        !log.contains("SASL session of"),
        "a session expired instead of re-authenticating"
    );
}

#[test]
fn users_are_managed_offline_in_a_stopped_brokers_data_directory() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let dir = w.join("data");
    let dir = dir.to_str().unwrap();
    add_offline(Path::new(dir), "admin", w);
    let list = || {
        let ran = run_ok(
            "users list --data-dir",
            cli(&["users", "list", "--data-dir", dir, "--json"], PASSWORD),
            None,
            w,
        );
        serde_json::from_str::<serde_json::Value>(&ran.stdout).unwrap()
    };
    let users = list();
    assert_eq!(users[0]["user"], "admin", "{users}");
    let mechanisms: Vec<&str> = users[0]["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["mechanism"].as_str().unwrap())
        .collect();
    assert_eq!(mechanisms, ["SCRAM-SHA-256", "SCRAM-SHA-512"]);
    assert_eq!(users[0]["credentials"][0]["iterations"], 8192);
    // The file holds no password, only salted and hashed keys.
    let file = std::fs::read_to_string(w.join("data/scram-credentials.toml")).unwrap();
    assert!(
        !file.contains(PASSWORD) && file.contains("stored_key"),
        "{file}"
    );
    run_ok(
        "users delete one mechanism",
        cli(
            &[
                "users",
                "delete",
                "admin",
                "-m",
                "SCRAM-SHA-256",
                "--data-dir",
                dir,
            ],
            PASSWORD,
        ),
        None,
        w,
    );
    let users = list();
    assert_eq!(
        users[0]["credentials"].as_array().unwrap().len(),
        1,
        "{users}"
    );
    // Refusals: an unknown user, a password from nowhere, PLAIN as a credential, too few
    // iterations.
    for (what, args, password) in [
        (
            "delete unknown",
            vec!["users", "delete", "nobody"],
            PASSWORD,
        ),
        ("no password", vec!["users", "add", "x"], ""),
        ("PLAIN", vec!["users", "add", "x", "-m", "PLAIN"], PASSWORD),
        (
            "iterations",
            vec!["users", "add", "x", "--iterations", "1000"],
            PASSWORD,
        ),
    ] {
        let mut all = args.clone();
        all.extend(["--data-dir", dir]);
        let mut command = cli(&all, password);
        if password.is_empty() {
            command.env_remove("STAUNCH_USER_PASSWORD");
        }
        let ran = run(what, command, None, w);
        assert!(!ran.status.success(), "{what}: {}", ran.transcript());
    }
    run_ok(
        "users delete the rest",
        cli(&["users", "delete", "admin", "--data-dir", dir], PASSWORD),
        None,
        w,
    );
    assert_eq!(list(), serde_json::json!([]));
}
