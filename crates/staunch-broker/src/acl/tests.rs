//! The authorizer's semantics, checked against Kafka's rules, and its store.

use std::collections::BTreeSet;
use std::sync::Arc;

use proptest::prelude::*;
use staunch_testkit::{CrashMode, FaultyIo};

use super::index::AclIndex;
use super::*;
use crate::principal::Principal;

use AclOperation as Op;
use ResourceType as Rt;

fn binding(
    rt: ResourceType,
    name: &str,
    pattern: PatternType,
    principal: &str,
    host: &str,
    op: AclOperation,
    permission: AclPermission,
) -> AclBinding {
    AclBinding {
        pattern: ResourcePattern {
            resource_type: rt,
            name: name.to_owned(),
            pattern_type: pattern,
        },
        entry: AccessControlEntry {
            principal: principal.to_owned(),
            host: host.to_owned(),
            operation: op,
            permission,
        },
    }
}

fn allow(rt: ResourceType, name: &str, principal: &str, op: AclOperation) -> AclBinding {
    binding(
        rt,
        name,
        PatternType::Literal,
        principal,
        "*",
        op,
        AclPermission::Allow,
    )
}

fn deny(rt: ResourceType, name: &str, principal: &str, op: AclOperation) -> AclBinding {
    binding(
        rt,
        name,
        PatternType::Literal,
        principal,
        "*",
        op,
        AclPermission::Deny,
    )
}

fn authorizer(super_users: &[&str], bindings: Vec<AclBinding>) -> Authorizer {
    let disk = FaultyIo::new();
    let supers: Vec<String> = super_users.iter().map(|s| (*s).to_owned()).collect();
    let a = Authorizer::open(Arc::new(disk), "acls.toml".to_owned(), &supers).unwrap();
    for r in a.create(bindings) {
        r.unwrap();
    }
    a
}

fn alice() -> Principal {
    Principal::user("alice")
}

const HOST: &str = "10.0.0.1";

#[test]
fn no_acl_denies_and_a_disabled_authorizer_allows_everything() {
    let a = authorizer(&[], vec![]);
    assert!(!a.authorize(&alice(), HOST, Op::Read, Rt::Topic, "t"));
    assert!(!a.authorize(&alice(), HOST, Op::Describe, Rt::Cluster, CLUSTER_NAME));
    let off = Authorizer::disabled();
    assert!(off.authorize(&alice(), HOST, Op::Delete, Rt::Topic, "t"));
    assert!(off.authorize_any(&alice(), HOST, Op::Write, Rt::Topic));
    assert_eq!(
        off.describe(&AclBindingFilter::any()),
        Err(AclError::SecurityDisabled)
    );
    assert_eq!(
        off.create(vec![allow(Rt::Topic, "t", "User:alice", Op::Read)]),
        vec![Err(AclError::SecurityDisabled)]
    );
}

#[test]
fn an_acl_on_one_resource_grants_nothing_elsewhere() {
    let a = authorizer(&[], vec![allow(Rt::Topic, "a", "User:alice", Op::Write)]);
    assert!(a.authorize(&alice(), HOST, Op::Write, Rt::Topic, "a"));
    assert!(!a.authorize(&alice(), HOST, Op::Write, Rt::Topic, "b"));
    assert!(!a.authorize(&alice(), HOST, Op::Write, Rt::Group, "a"));
    assert!(!a.authorize(&alice(), HOST, Op::Read, Rt::Topic, "a"));
    assert!(!a.authorize(&Principal::user("bob"), HOST, Op::Write, Rt::Topic, "a"));
}

#[test]
fn deny_wins_over_allow() {
    let a = authorizer(
        &[],
        vec![
            allow(Rt::Topic, "*", "User:*", Op::All),
            deny(Rt::Topic, "secret", "User:alice", Op::Read),
        ],
    );
    assert!(!a.authorize(&alice(), HOST, Op::Read, Rt::Topic, "secret"));
    assert!(a.authorize(&alice(), HOST, Op::Write, Rt::Topic, "secret"));
    assert!(a.authorize(&alice(), HOST, Op::Read, Rt::Topic, "other"));
    assert!(a.authorize(&Principal::user("bob"), HOST, Op::Read, Rt::Topic, "secret"));
    // A DENY of ALL refuses every operation, also implied ones.
    let a = authorizer(
        &[],
        vec![
            allow(Rt::Topic, "t", "User:alice", Op::All),
            deny(Rt::Topic, "t", "User:*", Op::All),
        ],
    );
    assert!(!a.authorize(&alice(), HOST, Op::Describe, Rt::Topic, "t"));
}

#[test]
fn read_write_delete_alter_imply_describe_and_alter_configs_implies_describe_configs() {
    for op in [Op::Read, Op::Write, Op::Delete, Op::Alter] {
        let a = authorizer(&[], vec![allow(Rt::Topic, "t", "User:alice", op)]);
        assert!(
            a.authorize(&alice(), HOST, Op::Describe, Rt::Topic, "t"),
            "{op}"
        );
        assert!(
            !a.authorize(&alice(), HOST, Op::DescribeConfigs, Rt::Topic, "t"),
            "{op}"
        );
    }
    let a = authorizer(
        &[],
        vec![allow(Rt::Topic, "t", "User:alice", Op::AlterConfigs)],
    );
    assert!(a.authorize(&alice(), HOST, Op::DescribeConfigs, Rt::Topic, "t"));
    assert!(!a.authorize(&alice(), HOST, Op::Describe, Rt::Topic, "t"));
    // Implication is one way, and a DENY of DESCRIBE does not refuse READ.
    let a = authorizer(
        &[],
        vec![
            allow(Rt::Topic, "t", "User:alice", Op::Describe),
            allow(Rt::Topic, "u", "User:alice", Op::Read),
            deny(Rt::Topic, "u", "User:alice", Op::Describe),
        ],
    );
    assert!(!a.authorize(&alice(), HOST, Op::Read, Rt::Topic, "t"));
    assert!(a.authorize(&alice(), HOST, Op::Read, Rt::Topic, "u"));
    assert!(!a.authorize(&alice(), HOST, Op::Describe, Rt::Topic, "u"));
}

#[test]
fn all_matches_every_operation() {
    let a = authorizer(&[], vec![allow(Rt::Group, "g", "User:alice", Op::All)]);
    for &op in Op::ALL_VALUES.iter().filter(|o| **o != Op::Any) {
        assert!(a.authorize(&alice(), HOST, op, Rt::Group, "g"), "{op}");
    }
}

#[test]
fn prefixed_patterns_match_names_they_start() {
    let a = authorizer(
        &[],
        vec![binding(
            Rt::Topic,
            "orders.",
            PatternType::Prefixed,
            "User:alice",
            "*",
            Op::Write,
            AclPermission::Allow,
        )],
    );
    assert!(a.authorize(&alice(), HOST, Op::Write, Rt::Topic, "orders.eu"));
    assert!(a.authorize(&alice(), HOST, Op::Write, Rt::Topic, "orders."));
    assert!(!a.authorize(&alice(), HOST, Op::Write, Rt::Topic, "orders"));
    assert!(!a.authorize(&alice(), HOST, Op::Write, Rt::Topic, "xorders.eu"));
    // A literal `*` is not a prefix wildcard, and a prefixed "*" matches only names
    // starting with "*".
    let a = authorizer(
        &[],
        vec![binding(
            Rt::Topic,
            "*",
            PatternType::Prefixed,
            "User:alice",
            "*",
            Op::Write,
            AclPermission::Allow,
        )],
    );
    assert!(!a.authorize(&alice(), HOST, Op::Write, Rt::Topic, "t"));
}

#[test]
fn wildcard_principal_host_and_resource() {
    let a = authorizer(
        &[],
        vec![binding(
            Rt::Topic,
            "*",
            PatternType::Literal,
            "User:*",
            "10.0.0.1",
            Op::Read,
            AclPermission::Allow,
        )],
    );
    assert!(a.authorize(
        &Principal::user("anyone"),
        "10.0.0.1",
        Op::Read,
        Rt::Topic,
        "x"
    ));
    assert!(!a.authorize(
        &Principal::user("anyone"),
        "10.0.0.2",
        Op::Read,
        Rt::Topic,
        "x"
    ));
    // `User:*` in an ACL is a wildcard; a principal literally named `*` is not one.
    assert!(a.authorize(&Principal::user("*"), "10.0.0.1", Op::Read, Rt::Topic, "x"));
}

#[test]
fn super_users_may_do_everything_and_others_are_not() {
    let a = authorizer(
        &["User:admin"],
        vec![deny(Rt::Topic, "*", "User:*", Op::All)],
    );
    let admin = Principal::user("admin");
    assert!(a.authorize(&admin, HOST, Op::Delete, Rt::Topic, "t"));
    assert!(a.authorize(&admin, HOST, Op::Alter, Rt::Cluster, CLUSTER_NAME));
    assert!(!a.authorize(&alice(), HOST, Op::Delete, Rt::Topic, "t"));
    assert!(Authorizer::open(Arc::new(FaultyIo::new()), "x".into(), &["admin".into()]).is_err());
}

#[test]
fn write_on_any_topic_is_found_unless_denied() {
    let p = |name: &str, perm| {
        binding(
            Rt::Topic,
            name,
            PatternType::Prefixed,
            "User:alice",
            "*",
            Op::Write,
            perm,
        )
    };
    let a = authorizer(&[], vec![]);
    assert!(!a.authorize_any(&alice(), HOST, Op::Write, Rt::Topic));
    let a = authorizer(&[], vec![allow(Rt::Topic, "a", "User:alice", Op::Write)]);
    assert!(a.authorize_any(&alice(), HOST, Op::Write, Rt::Topic));
    assert!(!a.authorize_any(&alice(), HOST, Op::Read, Rt::Topic));
    assert!(!a.authorize_any(&Principal::user("bob"), HOST, Op::Write, Rt::Topic));
    let a = authorizer(
        &[],
        vec![
            allow(Rt::Topic, "ab", "User:alice", Op::Write),
            p("a", AclPermission::Deny),
        ],
    );
    assert!(!a.authorize_any(&alice(), HOST, Op::Write, Rt::Topic));
    let a = authorizer(
        &[],
        vec![
            p("orders", AclPermission::Allow),
            deny(Rt::Topic, "*", "User:alice", Op::Write),
        ],
    );
    assert!(!a.authorize_any(&alice(), HOST, Op::Write, Rt::Topic));
}

#[test]
fn invalid_bindings_are_refused_one_by_one() {
    let a = authorizer(&[], vec![]);
    let good = allow(Rt::Topic, "t", "User:alice", Op::Read);
    let bad = [
        allow(Rt::Any, "t", "User:alice", Op::Read),
        allow(Rt::Topic, "t", "alice", Op::Read),
        allow(Rt::Topic, "", "User:alice", Op::Read),
        allow(Rt::Topic, "t", "User:alice", Op::Any),
        allow(Rt::Cluster, "other", "User:alice", Op::Alter),
        binding(
            Rt::Topic,
            "t",
            PatternType::Match,
            "User:alice",
            "*",
            Op::Read,
            AclPermission::Allow,
        ),
        binding(
            Rt::Topic,
            "t",
            PatternType::Literal,
            "User:alice",
            "*",
            Op::Read,
            AclPermission::Any,
        ),
    ];
    let mut all = vec![good.clone()];
    all.extend(bad.iter().cloned());
    let answers = a.create(all);
    assert_eq!(answers[0], Ok(()));
    for (answer, b) in answers[1..].iter().zip(&bad) {
        assert!(
            matches!(answer, Err(AclError::Invalid(_))),
            "{b}: {answer:?}"
        );
    }
    assert_eq!(a.describe(&AclBindingFilter::any()).unwrap(), vec![good]);
}

#[test]
fn filters_and_delete_remove_exactly_what_matches() {
    let prefixed = binding(
        Rt::Topic,
        "or",
        PatternType::Prefixed,
        "User:bob",
        "*",
        Op::Read,
        AclPermission::Allow,
    );
    let a = authorizer(
        &[],
        vec![
            allow(Rt::Topic, "orders", "User:alice", Op::Write),
            allow(Rt::Topic, "orders", "User:alice", Op::Read),
            allow(Rt::Topic, "*", "User:carol", Op::Describe),
            allow(Rt::Group, "orders", "User:alice", Op::Read),
            prefixed.clone(),
        ],
    );
    let topic_filter = |name: &str, pattern| AclBindingFilter {
        resource_type: Rt::Topic,
        name: Some(name.to_owned()),
        pattern_type: pattern,
        ..AclBindingFilter::any()
    };
    assert_eq!(
        a.describe(&topic_filter("orders", PatternType::Literal))
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        a.describe(&topic_filter("orders", PatternType::Any))
            .unwrap()
            .len(),
        2
    );
    // MATCH: literal equal, literal `*` and the prefix.
    assert_eq!(
        a.describe(&topic_filter("orders", PatternType::Match))
            .unwrap()
            .len(),
        4
    );
    assert_eq!(
        a.describe(&topic_filter("or", PatternType::Prefixed))
            .unwrap(),
        vec![prefixed]
    );
    let removed = a.delete(&[
        AclBindingFilter {
            operation: Op::Write,
            ..topic_filter("orders", PatternType::Literal)
        },
        AclBindingFilter {
            principal: Some("User:carol".into()),
            ..AclBindingFilter::any()
        },
    ]);
    assert_eq!(removed[0].as_ref().unwrap().len(), 1);
    assert_eq!(removed[1].as_ref().unwrap().len(), 1);
    let left = a.describe(&AclBindingFilter::any()).unwrap();
    assert_eq!(left.len(), 3);
    assert!(!a.authorize(&alice(), HOST, Op::Write, Rt::Topic, "orders"));
    assert!(a.authorize(&alice(), HOST, Op::Read, Rt::Topic, "orders"));
    assert!(AclBindingFilter::any().matches_everything());
}

#[test]
fn acls_survive_a_power_cut_and_a_damaged_file_is_refused_naming_it() {
    let disk = FaultyIo::new();
    let a = Authorizer::open(Arc::new(disk.clone()), "data/acls.toml".into(), &[]).unwrap();
    let b = allow(Rt::Topic, "t", "User:alice", Op::Write);
    assert_eq!(a.create(vec![b.clone()]), vec![Ok(())]);
    drop(a);
    let after = disk.crash(CrashMode::DropUnsynced);
    let a = Authorizer::open(Arc::new(after.clone()), "data/acls.toml".into(), &[]).unwrap();
    assert_eq!(
        a.describe(&AclBindingFilter::any()).unwrap(),
        vec![b.clone()]
    );
    assert!(a.authorize(&alice(), HOST, Op::Write, Rt::Topic, "t"));
    // A changed byte (a DENY become ALLOW would be worse than losing it) is caught.
    let mut bytes = store::encode(&BTreeSet::from([b.clone()])).unwrap();
    let at = bytes.windows(5).position(|w| w == b"ALLOW").unwrap();
    bytes[at..at + 5].copy_from_slice(b"DENY ");
    after.put_file(store::FILE, &bytes);
    let err = Authorizer::open(Arc::new(after.clone()), "data/acls.toml".into(), &[]).unwrap_err();
    assert!(
        err.contains("data/acls.toml") && err.contains("checksum"),
        "{err}"
    );
    after.put_file(store::FILE, b"");
    assert!(Authorizer::open(Arc::new(after), "data/acls.toml".into(), &[]).is_err());
}

fn any_binding() -> impl Strategy<Value = AclBinding> {
    let rt = prop::sample::select(vec![Rt::Topic, Rt::Group]);
    let name = prop::sample::select(vec!["*", "a", "ab", "abc", "b"]);
    let pattern = prop::sample::select(vec![PatternType::Literal, PatternType::Prefixed]);
    let principal = prop::sample::select(vec!["User:*", "User:alice", "User:bob"]);
    let host = prop::sample::select(vec!["*", "h1", "h2"]);
    let op = prop::sample::select(vec![
        Op::All,
        Op::Read,
        Op::Write,
        Op::Describe,
        Op::AlterConfigs,
        Op::DescribeConfigs,
    ]);
    let perm = prop::sample::select(vec![AclPermission::Allow, AclPermission::Deny]);
    (rt, name, pattern, principal, host, op, perm)
        .prop_map(|(rt, n, pt, p, h, op, perm)| binding(rt, n, pt, p, h, op, perm))
}

/// Kafka's rule written out plainly over every binding, for the index to agree with.
fn reference(
    bindings: &BTreeSet<AclBinding>,
    principal: &str,
    host: &str,
    op: AclOperation,
    rt: ResourceType,
    name: &str,
) -> bool {
    let applies: Vec<&AclBinding> = bindings
        .iter()
        .filter(|b| {
            b.pattern.resource_type == rt
                && match b.pattern.pattern_type {
                    PatternType::Literal => b.pattern.name == name || b.pattern.name == "*",
                    _ => name.starts_with(&b.pattern.name),
                }
                && (b.entry.principal == "User:*" || b.entry.principal == principal)
                && (b.entry.host == "*" || b.entry.host == host)
        })
        .collect();
    let grants = |acl_op: AclOperation| {
        acl_op == Op::All
            || acl_op == op
            || (op == Op::Describe
                && [Op::Read, Op::Write, Op::Delete, Op::Alter].contains(&acl_op))
            || (op == Op::DescribeConfigs && acl_op == Op::AlterConfigs)
    };
    let denied = applies.iter().any(|b| {
        b.entry.permission == AclPermission::Deny
            && (b.entry.operation == op || b.entry.operation == Op::All)
    });
    !denied
        && applies
            .iter()
            .any(|b| b.entry.permission == AclPermission::Allow && grants(b.entry.operation))
}

proptest! {
    #[test]
    fn the_index_decides_as_kafkas_rule(
        bindings in prop::collection::btree_set(any_binding(), 0..12),
        principal in prop::sample::select(vec!["alice", "bob", "carol"]),
        host in prop::sample::select(vec!["h1", "h2"]),
        op in prop::sample::select(vec![Op::Read, Op::Write, Op::Describe, Op::DescribeConfigs, Op::AlterConfigs, Op::Delete]),
        rt in prop::sample::select(vec![Rt::Topic, Rt::Group]),
        name in prop::sample::select(vec!["a", "ab", "abc", "abd", "b", "*"]),
    ) {
        let index = AclIndex::new(bindings.clone());
        let p = Principal::user(principal);
        prop_assert_eq!(
            index.authorize(&p, host, op, rt, name),
            reference(&bindings, &p.to_string(), host, op, rt, name)
        );
    }
}
