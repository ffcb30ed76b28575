//! What an ACL check costs: the Metadata of every topic filtered for one principal, as the
//! server does it (one `authorize` per topic), with 10,000 topics and some thousand ACLs of
//! other principals (literal and prefixed), against the authorizer turned off.
//!
//! ```text
//! cargo bench --bench authorizer
//! ```
//!
//! A benchmark, never a test: it prints numbers and asserts nothing about speed.

use criterion::{Criterion, criterion_group, criterion_main};
use staunch_broker::acl::{
    AccessControlEntry, AclBinding, AclOperation, AclPermission, PatternType, ResourcePattern,
    ResourceType,
};
use staunch_broker::{Authorizer, Broker, BrokerConfig, Principal};

const TOPICS: usize = 10_000;

fn binding(name: String, pattern_type: PatternType, principal: String) -> AclBinding {
    AclBinding {
        pattern: ResourcePattern {
            resource_type: ResourceType::Topic,
            name,
            pattern_type,
        },
        entry: AccessControlEntry {
            principal,
            host: "*".to_owned(),
            operation: AclOperation::Read,
            permission: AclPermission::Allow,
        },
    }
}

/// 2,000 literal ACLs of other users, 200 prefixed ones, and alice's: READ on `team-a.` topics.
fn bindings() -> Vec<AclBinding> {
    let mut all: Vec<AclBinding> = (0..2_000)
        .map(|i| {
            binding(
                format!("team-{}.topic-{i}", i % 50),
                PatternType::Literal,
                format!("User:u{i}"),
            )
        })
        .collect();
    all.extend((0..200).map(|i| {
        binding(
            format!("team-{i}."),
            PatternType::Prefixed,
            format!("User:p{i}"),
        )
    }));
    all.push(binding(
        "team-a.".to_owned(),
        PatternType::Prefixed,
        "User:alice".to_owned(),
    ));
    all
}

fn filter(authorizer: &Authorizer, topics: &[String], principal: &Principal) -> usize {
    topics
        .iter()
        .filter(|t| {
            authorizer.authorize(
                principal,
                "127.0.0.1",
                AclOperation::Describe,
                ResourceType::Topic,
                t,
            )
        })
        .count()
}

fn bench(c: &mut Criterion) {
    let dir = staunch_benches::bench_dir(env!("CARGO_TARGET_TMPDIR"));
    let broker = Broker::open(BrokerConfig {
        data_dir: dir.path().join("data"),
        authorizer_enabled: true,
        ..BrokerConfig::default()
    })
    .expect("opening the broker");
    for answer in broker.authorizer().create(bindings()) {
        answer.expect("creating ACLs");
    }
    let topics: Vec<String> = (0..TOPICS)
        .map(|i| format!("team-{}.topic-{i}", if i % 10 == 0 { "a" } else { "b" }))
        .collect();
    let alice = Principal::user("alice");
    let mut group = c.benchmark_group("metadata_filter_10k_topics");
    group.bench_function("authorizer_on_2201_acls", |b| {
        b.iter(|| filter(broker.authorizer(), &topics, &alice))
    });
    let off = Authorizer::disabled();
    group.bench_function("authorizer_off", |b| {
        b.iter(|| filter(&off, &topics, &alice))
    });
    group.finish();
    println!(
        "alice may describe {} of {TOPICS} topics",
        filter(broker.authorizer(), &topics, &alice)
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
