//! Topic administration: create, delete, add partitions, describe and alter configs.

use staunch_broker::{Broker, ConfigOp, NewTopic};
use staunch_core::ErrorCode;
use staunch_protocol::kafka_protocol::messages::create_partitions_response::{
    CreatePartitionsResponse, CreatePartitionsTopicResult,
};
use staunch_protocol::kafka_protocol::messages::create_topics_response::{
    CreatableTopicResult, CreateTopicsResponse,
};
use staunch_protocol::kafka_protocol::messages::delete_topics_response::{
    DeletableTopicResult, DeleteTopicsResponse,
};
use staunch_protocol::kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResponse, DescribeConfigsResult,
};
use staunch_protocol::kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResponse, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use staunch_protocol::kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, CreatePartitionsRequest, CreateTopicsRequest,
    DeleteTopicsRequest, DescribeConfigsRequest, DescribeLogDirsRequest,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse, TopicName,
    alter_configs_response, incremental_alter_configs_response,
};

use staunch_protocol::kafka_protocol::protocol::StrBytes;

use super::auth::Access;
use super::{ClientContext, text};
use staunch_broker::acl::{AclOperation, ResourceType};

/// Kafka's resource type for topics in config requests.
const RESOURCE_TOPIC: i8 = 2;
/// Kafka's resource type for brokers.
const RESOURCE_BROKER: i8 = 4;
/// Kafka's resource type for broker loggers.
const RESOURCE_BROKER_LOGGER: i8 = 8;

pub(super) async fn create_topics(
    broker: &Broker,
    request: CreateTopicsRequest,
    context: &ClientContext,
) -> CreateTopicsResponse {
    let access = Access::new(broker, context, "CreateTopics");
    let mut denied = Vec::new();
    let wanted: Vec<NewTopic> = request
        .topics
        .iter()
        .filter(|t| {
            let ok = access.allows_create_topic(t.name.0.as_str());
            if !ok {
                denied.push(
                    CreatableTopicResult::default()
                        .with_name(t.name.clone())
                        .with_error_code(ErrorCode::TopicAuthorizationFailed.code()),
                );
            }
            ok
        })
        .map(|t| NewTopic {
            name: t.name.0.as_str().to_owned(),
            partitions: t.num_partitions,
            replication_factor: t.replication_factor,
            configs: t
                .configs
                .iter()
                .filter_map(|c| {
                    Some((
                        c.name.as_str().to_owned(),
                        c.value.as_ref()?.as_str().to_owned(),
                    ))
                })
                .collect(),
        })
        .collect();
    let outcomes = broker.create_topics(wanted, request.validate_only).await;
    let topics = outcomes
        .into_iter()
        .map(|o| {
            let mut result = CreatableTopicResult::default()
                .with_name(TopicName(text(o.name.clone())))
                .with_error_code(o.error.code())
                .with_error_message(o.error_message.map(text));
            if o.error == ErrorCode::None {
                let metadata = broker.topic_summary(&o.name);
                if let Some((id, partitions)) = metadata {
                    result = result
                        .with_topic_id(id)
                        .with_num_partitions(partitions)
                        .with_replication_factor(1);
                }
            }
            result
        })
        .chain(denied)
        .collect();
    CreateTopicsResponse::default().with_topics(topics)
}

pub(super) async fn delete_topics(
    broker: &Broker,
    request: DeleteTopicsRequest,
    version: i16,
    context: &ClientContext,
) -> DeleteTopicsResponse {
    let access = Access::new(broker, context, "DeleteTopics");
    let mut names: Vec<String> = request
        .topic_names
        .iter()
        .map(|n| n.0.as_str().to_owned())
        .collect();
    let mut unknown_ids = Vec::new();
    for state in &request.topics {
        match &state.name {
            Some(name) => names.push(name.0.as_str().to_owned()),
            None => match broker.topic_name_by_id(state.topic_id) {
                Some(name) => names.push(name),
                None => unknown_ids.push(state.topic_id),
            },
        }
    }
    let (names, denied): (Vec<String>, Vec<String>) = names
        .into_iter()
        .partition(|n| access.allows(AclOperation::Delete, ResourceType::Topic, n));
    let ids: Vec<_> = names
        .iter()
        .map(|n| broker.topic_summary(n).map(|(id, _)| id))
        .collect();
    let outcomes = broker.delete_topics(names).await;
    let mut responses: Vec<DeletableTopicResult> = outcomes
        .into_iter()
        .zip(ids)
        .map(|(o, id)| {
            DeletableTopicResult::default()
                .with_name(Some(TopicName(text(o.name))))
                .with_topic_id(id.unwrap_or_default())
                .with_error_code(o.error.code())
                .with_error_message(if version >= 5 {
                    o.error_message.map(text)
                } else {
                    None
                })
        })
        .collect();
    for name in denied {
        responses.push(
            DeletableTopicResult::default()
                .with_name(Some(TopicName(text(name))))
                .with_error_code(ErrorCode::TopicAuthorizationFailed.code()),
        );
    }
    for id in unknown_ids {
        responses.push(
            DeletableTopicResult::default()
                .with_topic_id(id)
                .with_error_code(ErrorCode::UnknownTopicId.code()),
        );
    }
    DeleteTopicsResponse::default().with_responses(responses)
}

pub(super) async fn create_partitions(
    broker: &Broker,
    request: CreatePartitionsRequest,
    context: &ClientContext,
) -> CreatePartitionsResponse {
    let access = Access::new(broker, context, "CreatePartitions");
    let (allowed, denied): (Vec<_>, Vec<_>) = request
        .topics
        .iter()
        .partition(|t| access.allows(AclOperation::Alter, ResourceType::Topic, t.name.0.as_str()));
    let changes = allowed
        .iter()
        .map(|t| (t.name.0.as_str().to_owned(), t.count))
        .collect();
    let outcomes = broker
        .create_partitions(changes, request.validate_only)
        .await;
    CreatePartitionsResponse::default().with_results(
        outcomes
            .into_iter()
            .map(|o| {
                CreatePartitionsTopicResult::default()
                    .with_name(TopicName(text(o.name)))
                    .with_error_code(o.error.code())
                    .with_error_message(o.error_message.map(text))
            })
            .chain(denied.into_iter().map(|t| {
                CreatePartitionsTopicResult::default()
                    .with_name(t.name.clone())
                    .with_error_code(ErrorCode::TopicAuthorizationFailed.code())
            }))
            .collect(),
    )
}

pub(super) fn describe_configs(
    broker: &Broker,
    request: DescribeConfigsRequest,
    context: &ClientContext,
) -> DescribeConfigsResponse {
    let access = Access::new(broker, context, "DescribeConfigs");
    let results = request
        .resources
        .into_iter()
        .map(|resource| {
            let name = resource.resource_name.as_str().to_owned();
            let result = DescribeConfigsResult::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(text(name.clone()));
            if let Some(code) = refusal(
                &access,
                AclOperation::DescribeConfigs,
                resource.resource_type,
                &name,
            ) {
                return result
                    .with_error_code(code.code())
                    .with_error_message(Some(text(format!(
                        "{} is not allowed",
                        AclOperation::DescribeConfigs
                    ))));
            }
            if resource.resource_type == RESOURCE_BROKER {
                // Broker configs are set in the config file, not over the wire; none listed.
                return result;
            }
            if resource.resource_type != RESOURCE_TOPIC {
                return result
                    .with_error_code(ErrorCode::InvalidRequest.code())
                    .with_error_message(Some(text(format!(
                        "resource type {} is not supported",
                        resource.resource_type
                    ))));
            }
            let keys: Option<Vec<String>> = resource
                .configuration_keys
                .map(|k| k.iter().map(|k| k.as_str().to_owned()).collect());
            match broker.describe_topic_config(&name, keys.as_deref()) {
                Ok(entries) => result.with_configs(
                    entries
                        .into_iter()
                        .map(|e| {
                            let read_only = e.name == staunch_broker::broker::RECOVERY_ENTRY;
                            DescribeConfigsResourceResult::default()
                                .with_name(text(e.name))
                                .with_value(Some(text(e.value)))
                                // 1 = DYNAMIC_TOPIC_CONFIG, 5 = DEFAULT_CONFIG
                                .with_config_source(if e.is_override { 1 } else { 5 })
                                .with_read_only(read_only)
                        })
                        .collect(),
                ),
                Err(outcome) => result
                    .with_error_code(outcome.error.code())
                    .with_error_message(outcome.error_message.map(text)),
            }
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

/// The authorization error refusing `operation` on the config resource `name` of Kafka's
/// config resource type `resource_type` (topics: the topic; brokers and broker loggers: the
/// cluster), or `None` if it is allowed or the type is not one with ACLs.
fn refusal(
    access: &Access<'_>,
    operation: AclOperation,
    resource_type: i8,
    name: &str,
) -> Option<ErrorCode> {
    match resource_type {
        RESOURCE_TOPIC => (!access.allows(operation, ResourceType::Topic, name))
            .then_some(ErrorCode::TopicAuthorizationFailed),
        RESOURCE_BROKER | RESOURCE_BROKER_LOGGER => {
            (!access.allows_cluster(operation)).then_some(ErrorCode::ClusterAuthorizationFailed)
        }
        _ => None,
    }
}

/// Applies one resource's config changes; `entries` is `Err` when the request itself was
/// refused. Returns the error code and message both AlterConfigs versions answer with.
async fn alter_resource(
    broker: &Broker,
    access: &Access<'_>,
    resource_type: i8,
    name: String,
    entries: Result<Vec<(String, ConfigOp, String)>, String>,
    incremental: bool,
    validate_only: bool,
) -> (i16, Option<StrBytes>) {
    if let Some(code) = refusal(access, AclOperation::AlterConfigs, resource_type, &name) {
        return (
            code.code(),
            Some(text(format!(
                "{} is not allowed",
                AclOperation::AlterConfigs
            ))),
        );
    }
    if resource_type != RESOURCE_TOPIC {
        return (
            ErrorCode::InvalidRequest.code(),
            Some(text("only topic configs can be altered")),
        );
    }
    let entries = match entries {
        Ok(entries) => entries,
        Err(message) => return (ErrorCode::InvalidConfig.code(), Some(text(message))),
    };
    let outcome = broker
        .alter_topic_config(name, entries, incremental, validate_only)
        .await;
    (outcome.error.code(), outcome.error_message.map(text))
}

pub(super) async fn alter_configs(
    broker: &Broker,
    request: AlterConfigsRequest,
    context: &ClientContext,
) -> AlterConfigsResponse {
    let access = Access::new(broker, context, "AlterConfigs");
    let mut responses = Vec::with_capacity(request.resources.len());
    for resource in request.resources {
        let name = resource.resource_name.as_str().to_owned();
        // AlterConfigs replaces the whole set: a null value removes the override.
        let entries = resource
            .configs
            .iter()
            .map(|c| match &c.value {
                Some(v) => (
                    c.name.as_str().to_owned(),
                    ConfigOp::Set,
                    v.as_str().to_owned(),
                ),
                None => (c.name.as_str().to_owned(), ConfigOp::Delete, String::new()),
            })
            .collect();
        let (code, message) = alter_resource(
            broker,
            &access,
            resource.resource_type,
            name.clone(),
            Ok(entries),
            false,
            request.validate_only,
        )
        .await;
        responses.push(
            alter_configs_response::AlterConfigsResourceResponse::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(text(name))
                .with_error_code(code)
                .with_error_message(message),
        );
    }
    AlterConfigsResponse::default().with_responses(responses)
}

pub(super) async fn incremental_alter_configs(
    broker: &Broker,
    request: IncrementalAlterConfigsRequest,
    context: &ClientContext,
) -> IncrementalAlterConfigsResponse {
    let access = Access::new(broker, context, "IncrementalAlterConfigs");
    let mut responses = Vec::with_capacity(request.resources.len());
    for resource in request.resources {
        let name = resource.resource_name.as_str().to_owned();
        let entries = resource
            .configs
            .iter()
            .map(|c| {
                let key = c.name.as_str().to_owned();
                let value = c.value.as_ref().map(|v| v.as_str().to_owned()).unwrap_or_default();
                match c.config_operation {
                    0 => Ok((key, ConfigOp::Set, value)),
                    1 => Ok((key, ConfigOp::Delete, value)),
                    op => Err(format!(
                        "config operation {op} (APPEND/SUBTRACT) is not supported for '{key}': no list-valued topic config exists"
                    )),
                }
            })
            .collect();
        let (code, message) = alter_resource(
            broker,
            &access,
            resource.resource_type,
            name.clone(),
            entries,
            true,
            request.validate_only,
        )
        .await;
        responses.push(
            incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(text(name))
                .with_error_code(code)
                .with_error_message(message),
        );
    }
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}

/// DescribeLogDirs: one log directory (the broker's data directory) with the size in bytes of
/// each partition asked for (every partition for a null topic list), as
/// `kafka-log-dirs.sh --describe` shows it. Offline partitions are left out.
pub(super) fn describe_log_dirs(
    broker: &Broker,
    request: DescribeLogDirsRequest,
    context: &ClientContext,
) -> DescribeLogDirsResponse {
    let access = Access::new(broker, context, "DescribeLogDirs");
    if !access.allows_cluster(AclOperation::Describe) {
        // As Kafka: no directories, and (v3+) the error at the top.
        return DescribeLogDirsResponse::default()
            .with_error_code(ErrorCode::ClusterAuthorizationFailed.code());
    }
    let wanted = request.topics.map(|topics| {
        topics
            .into_iter()
            .map(|t| (t.topic.0.as_str().to_owned(), t.partitions))
            .collect()
    });
    let topics = broker
        .partition_sizes(wanted)
        .into_iter()
        .map(|(name, partitions)| {
            DescribeLogDirsTopic::default()
                .with_name(TopicName(text(name)))
                .with_partitions(
                    partitions
                        .into_iter()
                        .map(|(index, size)| {
                            DescribeLogDirsPartition::default()
                                .with_partition_index(index)
                                .with_partition_size(i64::try_from(size).unwrap_or(i64::MAX))
                        })
                        .collect(),
                )
        })
        .collect();
    let dir = broker.config().data_dir.display().to_string();
    DescribeLogDirsResponse::default().with_results(vec![
        DescribeLogDirsResult::default()
            .with_log_dir(text(dir))
            .with_topics(topics)
            .with_total_bytes(-1)
            .with_usable_bytes(-1),
    ])
}
