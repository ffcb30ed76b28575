//! ACLs against a `staunch serve` child process: kafka-python's `KafkaAdminClient` creates,
//! lists and deletes them (`tests/clients/kafka_python_acls.py`), `staunch acls add / list /
//! remove` round-trips them, they survive a restart, and without a super user or an ACL the
//! anonymous principal is refused. Clients connect over PLAINTEXT as `User:ANONYMOUS`, the
//! super user of these brokers unless a test says otherwise.

mod common;

use common::Staunch;
use common::programs::{client_script, run, run_ok};
use std::process::Command;

/// The broker settings of these tests: the authorizer on, `User:ANONYMOUS` a super user.
const AUTHORIZER_ON: &[&str] = &[
    "--authorizer-enabled",
    "true",
    "--super-users",
    "User:ANONYMOUS",
];

/// `staunch <args>` against the broker.
fn staunch_cli(staunch: &Staunch, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_staunch"));
    command
        .args(args)
        .env("STAUNCH_BOOTSTRAP", staunch.bootstrap())
        .env("NO_COLOR", "1");
    command
}

/// `staunch acls list --json` as (resource type, name, pattern, principal, host, operation,
/// permission) rows.
fn listed(staunch: &Staunch, work: &std::path::Path) -> Vec<Vec<String>> {
    let ran = run_ok(
        "staunch acls list",
        staunch_cli(staunch, &["acls", "list", "--json"]),
        None,
        work,
    );
    let doc: serde_json::Value = serde_json::from_str(&ran.stdout).expect("JSON output");
    let fields = [
        "resource_type",
        "name",
        "pattern_type",
        "principal",
        "host",
        "operation",
        "permission",
    ];
    doc["acls"]
        .as_array()
        .expect("an acls array")
        .iter()
        .map(|acl| {
            fields
                .iter()
                .map(|f| acl[*f].as_str().expect("a string field").to_owned())
                .collect()
        })
        .collect()
}

fn row(fields: [&str; 7]) -> Vec<String> {
    fields.iter().map(|f| (*f).to_owned()).collect()
}

#[test]
fn kafka_python_admin_creates_lists_and_deletes_acls_and_they_survive_a_restart() {
    let work = tempfile::tempdir().expect("temp dir");
    let mut staunch = Staunch::start_with(work.path(), AUTHORIZER_ON);
    run_ok(
        "kafka-python ACLs",
        client_script("kafka_python_acls.py", &staunch),
        None,
        work.path(),
    );
    // The script leaves User:bob's DENY on group billing from 10.0.0.7.
    let bob = row([
        "GROUP", "billing", "LITERAL", "User:bob", "10.0.0.7", "ALL", "DENY",
    ]);
    assert_eq!(listed(&staunch, work.path()), vec![bob.clone()]);
    staunch.kill9();
    staunch.restart();
    assert_eq!(listed(&staunch, work.path()), vec![bob]);
}

#[test]
fn kafka_python_acl_requests_without_the_authorizer_are_security_disabled() {
    let work = tempfile::tempdir().expect("temp dir");
    let staunch = Staunch::start(work.path());
    let mut command = client_script("kafka_python_acls.py", &staunch);
    command.arg("--expect-disabled");
    run_ok("kafka-python ACLs (disabled)", command, None, work.path());
}

#[test]
fn staunch_acls_add_list_remove_round_trip() {
    let work = tempfile::tempdir().expect("temp dir");
    let staunch = Staunch::start_with(work.path(), AUTHORIZER_ON);
    let w = work.path();
    run_ok(
        "staunch acls add",
        staunch_cli(
            &staunch,
            &[
                "acls",
                "add",
                "--allow-principal",
                "User:alice",
                "--operation",
                "Write",
                "--operation",
                "describe",
                "--topic",
                "orders",
            ],
        ),
        None,
        w,
    );
    run_ok(
        "staunch acls add (prefixed deny)",
        staunch_cli(
            &staunch,
            &[
                "acls",
                "add",
                "--deny-principal",
                "User:bob",
                "--deny-host",
                "10.1.2.3",
                "--operation",
                "READ",
                "--group",
                "pay",
                "--resource-pattern-type",
                "prefixed",
            ],
        ),
        None,
        w,
    );
    let alice_write = row([
        "TOPIC",
        "orders",
        "LITERAL",
        "User:alice",
        "*",
        "WRITE",
        "ALLOW",
    ]);
    let alice_describe = row([
        "TOPIC",
        "orders",
        "LITERAL",
        "User:alice",
        "*",
        "DESCRIBE",
        "ALLOW",
    ]);
    let bob = row([
        "GROUP", "pay", "PREFIXED", "User:bob", "10.1.2.3", "READ", "DENY",
    ]);
    let mut all = vec![alice_write.clone(), alice_describe.clone(), bob.clone()];
    all.sort();
    let mut now = listed(&staunch, w);
    now.sort();
    assert_eq!(now, all);

    // A bad operation is refused before anything is sent; so is a remove of everything.
    let bad = run(
        "staunch acls add (bad operation)",
        staunch_cli(
            &staunch,
            &[
                "acls",
                "add",
                "--allow-principal",
                "User:x",
                "--operation",
                "Fly",
                "--topic",
                "t",
            ],
        ),
        None,
        w,
    );
    assert!(!bad.status.success());
    let everything = run(
        "staunch acls remove (everything)",
        staunch_cli(&staunch, &["acls", "remove"]),
        None,
        w,
    );
    assert!(!everything.status.success());
    assert!(
        everything.stderr.contains("--force"),
        "{}",
        everything.stderr
    );

    // Remove alice's WRITE only.
    let ran = run_ok(
        "staunch acls remove",
        staunch_cli(
            &staunch,
            &[
                "acls",
                "remove",
                "--topic",
                "orders",
                "--principal",
                "User:alice",
                "--operation",
                "write",
                "--json",
            ],
        ),
        None,
        w,
    );
    let doc: serde_json::Value = serde_json::from_str(&ran.stdout).expect("JSON output");
    assert_eq!(doc["removed"].as_array().map(Vec::len), Some(1), "{doc}");
    let mut left = vec![alice_describe, bob];
    left.sort();
    let mut now = listed(&staunch, w);
    now.sort();
    assert_eq!(now, left);
    run_ok(
        "staunch acls remove --force",
        staunch_cli(&staunch, &["acls", "remove", "--force"]),
        None,
        w,
    );
    assert_eq!(listed(&staunch, w), Vec::<Vec<String>>::new());
}

#[test]
fn without_an_acl_the_anonymous_principal_is_refused() {
    let work = tempfile::tempdir().expect("temp dir");
    let staunch = Staunch::start_with(work.path(), &["--authorizer-enabled", "true"]);
    let w = work.path();
    let create = run(
        "staunch topics create",
        staunch_cli(&staunch, &["topics", "create", "t"]),
        None,
        w,
    );
    assert!(!create.status.success());
    assert!(
        create.stderr.contains("TOPIC_AUTHORIZATION_FAILED"),
        "{}",
        create.stderr
    );
    let list = run(
        "staunch acls list",
        staunch_cli(&staunch, &["acls", "list"]),
        None,
        w,
    );
    assert!(!list.status.success());
    assert!(
        list.stderr.contains("CLUSTER_AUTHORIZATION_FAILED"),
        "{}",
        list.stderr
    );
}
