//! Authorization in the handlers, with chosen principals: requests built here, handed to the
//! handlers as a connection of that principal would, answers checked code by code.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use staunch_broker::acl::{AclOperation, AclPermission, PatternType, ResourceType};
use staunch_broker::{Broker, BrokerConfig, Principal};
use staunch_core::ErrorCode;
use staunch_protocol::kafka_protocol::messages::create_acls_request::AclCreation;
use staunch_protocol::kafka_protocol::messages::create_topics_request::CreatableTopic;
use staunch_protocol::kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;
use staunch_protocol::kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use staunch_protocol::kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use staunch_protocol::kafka_protocol::messages::produce_request::{
    PartitionProduceData, TopicProduceData,
};
use staunch_protocol::kafka_protocol::messages::{
    AlterConfigsRequest, CreateAclsRequest, CreateTopicsRequest, DeleteAclsRequest,
    DeleteTopicsRequest, DescribeAclsRequest, FetchRequest, GroupId,
    IncrementalAlterConfigsRequest, InitProducerIdRequest, MetadataRequest, OffsetCommitRequest,
    ProduceRequest, TopicName, alter_configs_request, fetch_request,
    incremental_alter_configs_request,
};

use super::{ClientContext, acls, admin, data, groups, scram, text};
use crate::listener::ListenerConfig;
use crate::server::ListenerInfo;

fn config(dir: &std::path::Path, enabled: bool) -> BrokerConfig {
    BrokerConfig {
        data_dir: dir.to_owned(),
        authorizer_enabled: enabled,
        super_users: vec!["User:admin".to_owned()],
        ..BrokerConfig::default()
    }
}

fn as_user(name: &str) -> ClientContext {
    let addr: SocketAddr = "127.0.0.1:9092".parse().unwrap();
    ClientContext {
        peer: "127.0.0.1:50000".parse().unwrap(),
        principal: Principal::user(name),
        listener: Arc::new(ListenerInfo {
            config: ListenerConfig::plaintext(addr),
            bound: addr,
            tls: None,
            sasl: Arc::new(crate::sasl::SaslShared::new(crate::SaslConfig::default())),
        }),
    }
}

fn acl(
    rt: ResourceType,
    name: &str,
    pattern: PatternType,
    principal: &str,
    op: AclOperation,
    permission: AclPermission,
) -> AclCreation {
    AclCreation::default()
        .with_resource_type(rt.code())
        .with_resource_name(text(name))
        .with_resource_pattern_type(pattern.code())
        .with_principal(text(principal))
        .with_host(text("*"))
        .with_operation(op.code())
        .with_permission_type(permission.code())
}

async fn create_acls(broker: &Broker, who: &str, creations: Vec<AclCreation>) -> Vec<i16> {
    let request = CreateAclsRequest::default().with_creations(creations);
    acls::create_acls(broker, request, &as_user(who))
        .await
        .results
        .iter()
        .map(|r| r.error_code)
        .collect()
}

async fn create_topics(broker: &Broker, who: &str, names: &[&str]) -> Vec<(String, i16)> {
    let request = CreateTopicsRequest::default()
        .with_topics(
            names
                .iter()
                .map(|n| {
                    CreatableTopic::default()
                        .with_name(TopicName(text(*n)))
                        .with_num_partitions(1)
                        .with_replication_factor(1)
                })
                .collect(),
        )
        .with_timeout_ms(10_000);
    admin::create_topics(broker, request, &as_user(who))
        .await
        .topics
        .iter()
        .map(|t| (t.name.0.as_str().to_owned(), t.error_code))
        .collect()
}

async fn produce(broker: &Broker, who: &str, topic: &str) -> i16 {
    let records = staunch_testkit::broker_api_suite::batch(1, &["v"]);
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(text(topic)))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(Bytes::from(records))),
                ]),
        ]);
    let (answer, _) = data::produce(broker, request, "test", &as_user(who)).await;
    let response = answer.await.unwrap().unwrap();
    response.responses[0].partition_responses[0].error_code
}

async fn metadata(broker: &Broker, who: &str, topics: Option<&[&str]>) -> Vec<(String, i16)> {
    let request = MetadataRequest::default()
        .with_allow_auto_topic_creation(true)
        .with_topics(topics.map(|names| {
            names
                .iter()
                .map(|n| MetadataRequestTopic::default().with_name(Some(TopicName(text(*n)))))
                .collect()
        }));
    let mut found: Vec<(String, i16)> = data::metadata(broker, request, 12, &as_user(who))
        .await
        .topics
        .iter()
        .map(|t| (t.name.as_ref().unwrap().0.as_str().to_owned(), t.error_code))
        .collect();
    found.sort();
    found
}

/// A broker with the authorizer on, topics `a` and `b` made by the super user, and alice
/// allowed to WRITE `a` only.
async fn setup(dir: &std::path::Path) -> Broker {
    let broker = Broker::open(config(dir, true)).unwrap();
    let made = create_topics(&broker, "admin", &["a", "b"]).await;
    assert!(made.iter().all(|(_, code)| *code == 0), "{made:?}");
    let codes = create_acls(
        &broker,
        "admin",
        vec![acl(
            ResourceType::Topic,
            "a",
            PatternType::Literal,
            "User:alice",
            AclOperation::Write,
            AclPermission::Allow,
        )],
    )
    .await;
    assert_eq!(codes, vec![0]);
    broker
}

const TAF: i16 = 29; // TOPIC_AUTHORIZATION_FAILED

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_of_one_topic_produces_there_and_nowhere_else() {
    let dir = tempfile::tempdir().unwrap();
    let broker = setup(dir.path()).await;
    assert_eq!(produce(&broker, "alice", "a").await, 0);
    assert_eq!(produce(&broker, "alice", "b").await, TAF);
    assert_eq!(produce(&broker, "bob", "a").await, TAF);
    // Producing to a missing topic does not create it without CREATE, even with WRITE.
    let codes = create_acls(
        &broker,
        "admin",
        vec![acl(
            ResourceType::Topic,
            "c",
            PatternType::Literal,
            "User:alice",
            AclOperation::Write,
            AclPermission::Allow,
        )],
    )
    .await;
    assert_eq!(codes, vec![0]);
    assert_eq!(
        produce(&broker, "alice", "c").await,
        ErrorCode::UnknownTopicOrPartition.code()
    );
    assert!(broker.topic_summary("c").is_none());
    // Idempotent producers: WRITE on some topic is enough (Kafka 3.x); bob has none.
    let init = |who: &'static str| {
        let broker = broker.clone();
        async move {
            data::init_producer_id(
                &broker,
                InitProducerIdRequest::default(),
                "t",
                &as_user(who),
            )
            .await
            .error_code
        }
    };
    assert_eq!(init("alice").await, 0);
    assert_eq!(
        init("bob").await,
        ErrorCode::ClusterAuthorizationFailed.code()
    );
    // Fetch needs READ, which WRITE does not give.
    let fetch = FetchRequest::default()
        .with_max_wait_ms(0)
        .with_topics(vec![
            fetch_request::FetchTopic::default()
                .with_topic(TopicName(text("a")))
                .with_partitions(vec![
                    fetch_request::FetchPartition::default().with_partition(0),
                ]),
        ]);
    let answer = data::fetch(&broker, fetch, &as_user("alice")).await;
    assert_eq!(answer.responses[0].partitions[0].error_code, TAF);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_cannot_delete_topics_alter_configs_or_commit_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let broker = setup(dir.path()).await;
    let alice = as_user("alice");
    let delete = DeleteTopicsRequest::default()
        .with_topic_names(vec![TopicName(text("a")), TopicName(text("b"))]);
    let answer = admin::delete_topics(&broker, delete, 4, &alice).await;
    assert_eq!(answer.responses.len(), 2);
    assert!(answer.responses.iter().all(|r| r.error_code == TAF));
    assert!(broker.topic_summary("a").is_some() && broker.topic_summary("b").is_some());

    let alter = AlterConfigsRequest::default().with_resources(vec![
        alter_configs_request::AlterConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(text("a"))
            .with_configs(vec![
                alter_configs_request::AlterableConfig::default()
                    .with_name(text("retention.ms"))
                    .with_value(Some(text("1"))),
            ]),
        alter_configs_request::AlterConfigsResource::default()
            .with_resource_type(4)
            .with_resource_name(text("1")),
    ]);
    let answer = admin::alter_configs(&broker, alter, &alice).await;
    assert_eq!(answer.responses[0].error_code, TAF);
    assert_eq!(
        answer.responses[1].error_code,
        ErrorCode::ClusterAuthorizationFailed.code()
    );
    let incremental = IncrementalAlterConfigsRequest::default().with_resources(vec![
        incremental_alter_configs_request::AlterConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(text("a"))
            .with_configs(vec![
                incremental_alter_configs_request::AlterableConfig::default()
                    .with_name(text("retention.ms"))
                    .with_config_operation(0)
                    .with_value(Some(text("1"))),
            ]),
    ]);
    let answer = admin::incremental_alter_configs(&broker, incremental, &alice).await;
    assert_eq!(answer.responses[0].error_code, TAF);
    let retention = broker
        .describe_topic_config("a", Some(&["retention.ms".to_owned()]))
        .unwrap();
    assert!(retention.iter().all(|e| !e.is_override), "{retention:?}");

    let commit = |group: &str| {
        OffsetCommitRequest::default()
            .with_group_id(GroupId(text(group)))
            .with_generation_id_or_member_epoch(-1)
            .with_topics(vec![
                OffsetCommitRequestTopic::default()
                    .with_name(TopicName(text("a")))
                    .with_partitions(vec![
                        OffsetCommitRequestPartition::default()
                            .with_partition_index(0)
                            .with_committed_offset(0),
                    ]),
            ])
    };
    let answer = groups::offset_commit(&broker, commit("g"), &alice).await;
    assert_eq!(
        answer.topics[0].partitions[0].error_code,
        ErrorCode::GroupAuthorizationFailed.code()
    );
    // With READ on the group, the topic's READ is checked next: alice has only WRITE on it.
    let codes = create_acls(
        &broker,
        "admin",
        vec![acl(
            ResourceType::Group,
            "g",
            PatternType::Literal,
            "User:alice",
            AclOperation::Read,
            AclPermission::Allow,
        )],
    )
    .await;
    assert_eq!(codes, vec![0]);
    let answer = groups::offset_commit(&broker, commit("g"), &alice).await;
    assert_eq!(answer.topics[0].partitions[0].error_code, TAF);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_hides_topics_a_principal_may_not_describe() {
    let dir = tempfile::tempdir().unwrap();
    let broker = setup(dir.path()).await;
    assert_eq!(
        metadata(&broker, "alice", None).await,
        vec![("a".to_owned(), 0)]
    );
    assert_eq!(metadata(&broker, "bob", None).await, vec![]);
    assert_eq!(
        metadata(&broker, "admin", None).await,
        vec![("a".to_owned(), 0), ("b".to_owned(), 0)]
    );
    assert_eq!(
        metadata(&broker, "alice", Some(&["a", "b"])).await,
        vec![("a".to_owned(), 0), ("b".to_owned(), TAF)]
    );
    // Auto-creation needs CREATE: refused, and nothing is created.
    let codes = create_acls(
        &broker,
        "admin",
        vec![acl(
            ResourceType::Topic,
            "new",
            PatternType::Prefixed,
            "User:alice",
            AclOperation::Describe,
            AclPermission::Allow,
        )],
    )
    .await;
    assert_eq!(codes, vec![0]);
    assert_eq!(
        metadata(&broker, "alice", Some(&["new-1"])).await,
        vec![("new-1".to_owned(), TAF)]
    );
    assert!(broker.topic_summary("new-1").is_none());
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_requests_need_the_cluster_and_delete_exactly_what_matches() {
    let dir = tempfile::tempdir().unwrap();
    let broker = setup(dir.path()).await;
    let cluster_failed = ErrorCode::ClusterAuthorizationFailed.code();
    let bob_acl = acl(
        ResourceType::Topic,
        "b",
        PatternType::Literal,
        "User:bob",
        AclOperation::Read,
        AclPermission::Allow,
    );
    assert_eq!(
        create_acls(&broker, "alice", vec![bob_acl.clone()]).await,
        vec![cluster_failed]
    );
    let bad = bob_acl
        .clone()
        .with_resource_pattern_type(PatternType::Match.code());
    let unknown_op = bob_acl.clone().with_operation(0);
    assert_eq!(
        create_acls(&broker, "admin", vec![bob_acl, bad, unknown_op]).await,
        vec![
            0,
            ErrorCode::InvalidRequest.code(),
            ErrorCode::InvalidRequest.code()
        ]
    );
    let describe_all = DescribeAclsRequest::default()
        .with_resource_type_filter(ResourceType::Any.code())
        .with_resource_name_filter(None)
        .with_pattern_type_filter(PatternType::Any.code())
        .with_principal_filter(None)
        .with_host_filter(None)
        .with_operation(AclOperation::Any.code())
        .with_permission_type(AclPermission::Any.code());
    let denied = acls::describe_acls(&broker, describe_all.clone(), &as_user("alice"));
    assert_eq!(denied.error_code, cluster_failed);
    let all = acls::describe_acls(&broker, describe_all.clone(), &as_user("admin"));
    assert_eq!(all.error_code, 0);
    assert_eq!(all.resources.len(), 2, "{all:?}");

    // Delete bob's ACLs only.
    let filter = DeleteAclsFilter::default()
        .with_resource_type_filter(ResourceType::Any.code())
        .with_resource_name_filter(None)
        .with_pattern_type_filter(PatternType::Any.code())
        .with_principal_filter(Some(text("User:bob")))
        .with_host_filter(None)
        .with_operation(AclOperation::Any.code())
        .with_permission_type(AclPermission::Any.code());
    let request = DeleteAclsRequest::default().with_filters(vec![filter.clone()]);
    let refused = acls::delete_acls(&broker, request.clone(), &as_user("alice")).await;
    assert_eq!(refused.filter_results[0].error_code, cluster_failed);
    let answer = acls::delete_acls(&broker, request, &as_user("admin")).await;
    let result = &answer.filter_results[0];
    assert_eq!(result.error_code, 0);
    assert_eq!(result.matching_acls.len(), 1);
    assert_eq!(result.matching_acls[0].principal.as_str(), "User:bob");
    let left = acls::describe_acls(&broker, describe_all, &as_user("admin"));
    assert_eq!(left.resources.len(), 1);
    assert_eq!(left.resources[0].resource_name.as_str(), "a");
    assert_eq!(left.resources[0].acls[0].principal.as_str(), "User:alice");
    assert_eq!(produce(&broker, "alice", "a").await, 0);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acls_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let broker = setup(dir.path()).await;
    broker.shutdown().await;
    drop(broker);
    let broker = Broker::open(config(dir.path(), true)).unwrap();
    assert_eq!(produce(&broker, "alice", "a").await, 0);
    assert_eq!(produce(&broker, "alice", "b").await, TAF);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_authorizer_off_everything_is_allowed_and_acl_requests_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(config(dir.path(), false)).unwrap();
    let made = create_topics(&broker, "nobody", &["a"]).await;
    assert_eq!(made, vec![("a".to_owned(), 0)]);
    assert_eq!(produce(&broker, "nobody", "a").await, 0);
    let codes = create_acls(
        &broker,
        "admin",
        vec![acl(
            ResourceType::Topic,
            "a",
            PatternType::Literal,
            "User:alice",
            AclOperation::Write,
            AclPermission::Allow,
        )],
    )
    .await;
    assert_eq!(codes, vec![ErrorCode::SecurityDisabled.code()]);
    let delete = DeleteTopicsRequest::default().with_topic_names(vec![TopicName(text("a"))]);
    let answer = admin::delete_topics(&broker, delete, 4, &as_user("nobody")).await;
    assert_eq!(answer.responses[0].error_code, 0);
    broker.shutdown().await;
}

/// Every other API refuses a principal without ACLs with Kafka's code, and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_principal_without_acls_is_refused_by_every_api() {
    use staunch_protocol::kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
    use staunch_protocol::kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
    use staunch_protocol::kafka_protocol::messages::list_offsets_request::{
        ListOffsetsPartition, ListOffsetsTopic,
    };
    use staunch_protocol::kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
    use staunch_protocol::kafka_protocol::messages::{
        CreatePartitionsRequest, DeleteGroupsRequest, DescribeClusterRequest,
        DescribeConfigsRequest, DescribeGroupsRequest, DescribeLogDirsRequest,
        FindCoordinatorRequest, HeartbeatRequest, JoinGroupRequest, ListGroupsRequest,
        ListOffsetsRequest, OffsetFetchRequest, SyncGroupRequest,
    };
    let dir = tempfile::tempdir().unwrap();
    let broker = setup(dir.path()).await;
    let eve = as_user("eve");
    let group_failed = ErrorCode::GroupAuthorizationFailed.code();
    let cluster_failed = ErrorCode::ClusterAuthorizationFailed.code();

    let made = create_topics(&broker, "eve", &["c"]).await;
    assert_eq!(made, vec![("c".to_owned(), TAF)]);
    assert!(broker.topic_summary("c").is_none());
    let grow = CreatePartitionsRequest::default().with_topics(vec![
        CreatePartitionsTopic::default()
            .with_name(TopicName(text("a")))
            .with_count(3),
    ]);
    let answer = admin::create_partitions(&broker, grow, &eve).await;
    assert_eq!(answer.results[0].error_code, TAF);
    assert_eq!(broker.topic_summary("a").map(|(_, n)| n), Some(1));
    let describe = DescribeConfigsRequest::default().with_resources(vec![
        DescribeConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(text("a")),
        DescribeConfigsResource::default()
            .with_resource_type(4)
            .with_resource_name(text("1")),
    ]);
    let answer = admin::describe_configs(&broker, describe, &eve);
    assert_eq!(answer.results[0].error_code, TAF);
    assert!(answer.results[0].configs.is_empty());
    assert_eq!(answer.results[1].error_code, cluster_failed);
    let answer = admin::describe_log_dirs(&broker, DescribeLogDirsRequest::default(), &eve);
    assert_eq!(answer.error_code, cluster_failed);
    assert!(answer.results.is_empty());
    let answer = data::describe_cluster(&broker, DescribeClusterRequest::default(), &eve);
    assert_eq!(answer.error_code, cluster_failed);
    let list = ListOffsetsRequest::default().with_topics(vec![
        ListOffsetsTopic::default()
            .with_name(TopicName(text("a")))
            .with_partitions(vec![ListOffsetsPartition::default().with_timestamp(-1)]),
    ]);
    let answer = data::list_offsets(&broker, list, 7, &eve).await;
    assert_eq!(answer.topics[0].partitions[0].error_code, TAF);

    let find = FindCoordinatorRequest::default().with_key(text("g"));
    let answer = groups::find_coordinator(&broker, find, 3, "t", &eve);
    assert_eq!(answer.error_code, group_failed);
    assert_eq!(answer.node_id.0, -1);
    let join = JoinGroupRequest::default()
        .with_group_id(GroupId(text("g")))
        .with_session_timeout_ms(10_000)
        .with_rebalance_timeout_ms(10_000)
        .with_protocol_type(text("consumer"));
    let answer = groups::join_group(&broker, join, 5, "t", &eve).await;
    assert_eq!(answer.error_code, group_failed);
    let sync = SyncGroupRequest::default().with_group_id(GroupId(text("g")));
    let answer = groups::sync_group(&broker, sync, 3, &eve).await;
    assert_eq!(answer.error_code, group_failed);
    let beat = HeartbeatRequest::default().with_group_id(GroupId(text("g")));
    assert_eq!(
        groups::heartbeat(&broker, beat, &eve).error_code,
        group_failed
    );
    let fetch = OffsetFetchRequest::default()
        .with_group_id(GroupId(text("g")))
        .with_topics(Some(vec![
            OffsetFetchRequestTopic::default()
                .with_name(TopicName(text("a")))
                .with_partition_indexes(vec![0]),
        ]));
    let answer = groups::offset_fetch(&broker, fetch, 7, &eve);
    assert_eq!(answer.error_code, group_failed);
    let describe = DescribeGroupsRequest::default().with_groups(vec![GroupId(text("g"))]);
    let answer = groups::describe_groups(&broker, describe, &eve);
    assert_eq!(answer.groups[0].error_code, group_failed);
    let delete = DeleteGroupsRequest::default().with_groups_names(vec![GroupId(text("g"))]);
    let answer = groups::delete_groups(&broker, delete, &eve).await;
    assert_eq!(answer.results[0].error_code, group_failed);

    // A group the super user made is listed to it, not to eve, until eve may DESCRIBE it.
    broker.groups().ensure_group("g");
    let names = |who: &str| -> Vec<String> {
        groups::list_groups(&broker, ListGroupsRequest::default(), &as_user(who))
            .groups
            .iter()
            .map(|g| g.group_id.0.as_str().to_owned())
            .collect()
    };
    assert_eq!(names("admin"), vec!["g".to_owned()]);
    assert_eq!(names("eve"), Vec::<String>::new());
    let codes = create_acls(
        &broker,
        "admin",
        vec![acl(
            ResourceType::Group,
            "g",
            PatternType::Literal,
            "User:eve",
            AclOperation::Describe,
            AclPermission::Allow,
        )],
    )
    .await;
    assert_eq!(codes, vec![0]);
    assert_eq!(names("eve"), vec!["g".to_owned()]);
    // The authorized-operations bit field shows DESCRIBE (bit 8) only.
    let describe = DescribeGroupsRequest::default()
        .with_groups(vec![GroupId(text("g"))])
        .with_include_authorized_operations(true);
    let answer = groups::describe_groups(&broker, describe, &eve);
    assert_eq!(answer.groups[0].error_code, 0);
    assert_eq!(answer.groups[0].authorized_operations, 1 << 8);

    // The users' SCRAM credentials: DESCRIBE / ALTER on the cluster, which only admin has.
    use staunch_protocol::kafka_protocol::messages::alter_user_scram_credentials_request::ScramCredentialUpsertion;
    use staunch_protocol::kafka_protocol::messages::{
        AlterUserScramCredentialsRequest, DescribeUserScramCredentialsRequest,
    };
    use staunch_protocol::sasl::ScramMechanism;
    let m = ScramMechanism::Sha512;
    let salt = b"0123456789abcdef".to_vec();
    let upsert = || {
        AlterUserScramCredentialsRequest::default().with_upsertions(vec![
            ScramCredentialUpsertion::default()
                .with_name(text("mallory"))
                .with_mechanism(m.kafka_type())
                .with_iterations(4096)
                .with_salt(salt.clone().into())
                .with_salted_password(m.salted_password(b"pw", &salt, 4096).into()),
        ])
    };
    let answer = scram::alter(&broker, upsert(), &eve).await;
    assert_eq!(answer.results[0].error_code, cluster_failed);
    let listed = scram::describe(
        &broker,
        DescribeUserScramCredentialsRequest::default(),
        &eve,
    );
    assert_eq!(listed.error_code, cluster_failed);
    assert!(listed.results.is_empty());
    let admin = as_user("admin");
    let listed = scram::describe(
        &broker,
        DescribeUserScramCredentialsRequest::default(),
        &admin,
    );
    assert!(listed.results.is_empty(), "eve's upsertion created nobody");
    let answer = scram::alter(&broker, upsert(), &admin).await;
    assert_eq!(answer.results[0].error_code, 0);
    let listed = scram::describe(
        &broker,
        DescribeUserScramCredentialsRequest::default(),
        &admin,
    );
    assert_eq!(listed.results.len(), 1);
    broker.shutdown().await;
}
