//! `staunch topics list|describe|create|delete|alter`.

use clap::{Args, Subcommand};
use serde_json::json;
use staunch_client::Connection;
use staunch_client::kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use staunch_client::kafka_protocol::messages::create_topics_request::{
    CreatableTopic, CreatableTopicConfig,
};
use staunch_client::kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use staunch_client::kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use staunch_client::kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use staunch_client::kafka_protocol::messages::{
    CreatePartitionsRequest, CreateTopicsRequest, DeleteTopicsRequest, DescribeConfigsRequest,
    IncrementalAlterConfigsRequest,
};

use crate::client::{
    self, ClientArgs, EARLIEST, LATEST, call, call_error, error_text, parse_key_value, text,
    topic_name,
};
use crate::output::{Table, cell, joined, kafka_uuid, print_json};

/// Kafka's resource type for topics in config requests.
const RESOURCE_TOPIC: i8 = 2;

/// `staunch topics`.
#[derive(Debug, Args)]
pub(crate) struct TopicsArgs {
    #[command(subcommand)]
    command: TopicsCommand,
}

#[derive(Debug, Subcommand)]
enum TopicsCommand {
    /// List topics with their partition counts.
    List(ListArgs),
    /// Show a topic's partitions (leader, replicas, in-sync replicas, earliest and latest
    /// offsets) and its configuration.
    Describe(DescribeArgs),
    /// Create a topic.
    Create(CreateArgs),
    /// Delete a topic and its data.
    Delete(DeleteArgs),
    /// Change a topic's configuration overrides, or add partitions.
    Alter(AlterArgs),
}

#[derive(Debug, Args)]
struct ListArgs {
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, Args)]
struct DescribeArgs {
    /// The topic.
    topic: String,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, Args)]
struct CreateArgs {
    /// The topic.
    topic: String,
    /// Number of partitions (default: the broker's default).
    #[arg(long, short = 'p', default_value_t = -1, allow_negative_numbers = true)]
    partitions: i32,
    /// Replication factor (default: the broker's default; Staunch has one replica).
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    replication_factor: i16,
    /// A topic config override, e.g. retention.ms=86400000 (repeatable).
    #[arg(long = "config", short = 'c', value_name = "KEY=VALUE", value_parser = parse_key_value)]
    configs: Vec<(String, String)>,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, Args)]
struct DeleteArgs {
    /// The topic.
    topic: String,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, Args)]
struct AlterArgs {
    /// The topic.
    topic: String,
    /// Set a config override, e.g. retention.ms=3600000 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    set: Vec<(String, String)>,
    /// Remove a config override, returning the setting to its default (repeatable).
    #[arg(long = "delete", value_name = "KEY")]
    delete: Vec<String>,
    /// Grow the topic to this many partitions (partitions cannot be removed).
    #[arg(long)]
    partitions: Option<i32>,
    #[command(flatten)]
    client: ClientArgs,
}

/// Runs a `staunch topics` subcommand.
pub(crate) fn run(args: TopicsArgs) -> Result<(), String> {
    client::block_on(async move {
        match args.command {
            TopicsCommand::List(a) => list(a).await,
            TopicsCommand::Describe(a) => describe(a).await,
            TopicsCommand::Create(a) => create(a).await,
            TopicsCommand::Delete(a) => delete(a).await,
            TopicsCommand::Alter(a) => alter(a).await,
        }
    })?
}

async fn list(args: ListArgs) -> Result<(), String> {
    let mut connection = client::connect(&args.client).await?;
    let topics = client::metadata(&mut connection, None, false).await?;
    if args.client.json {
        let list: Vec<_> = topics
            .iter()
            .map(|t| {
                json!({
                    "name": t.name,
                    "id": kafka_uuid(&t.id),
                    "partitions": t.partitions.len(),
                    "replication_factor": t.replication_factor(),
                    "internal": t.internal,
                    "error": (t.error != 0).then(|| error_text(t.error, None)),
                })
            })
            .collect();
        print_json(&json!({ "topics": list }));
        return Ok(());
    }
    let mut table = Table::new(["TOPIC", "PARTITIONS", "REPLICATION", "ID"]).right(&[1, 2]);
    for t in &topics {
        let mut name = cell(&t.name);
        if t.internal {
            name.push_str(" (internal)");
        }
        if t.error != 0 {
            name.push_str(&format!(" ({})", error_text(t.error, None)));
        }
        table.row([
            name,
            t.partitions.len().to_string(),
            t.replication_factor().to_string(),
            kafka_uuid(&t.id),
        ]);
    }
    if table.is_empty() {
        println!("No topics.");
    } else {
        table.print();
    }
    Ok(())
}

/// Kafka's name for a config source.
fn config_source(source: i8) -> &'static str {
    match source {
        1 => "DYNAMIC_TOPIC_CONFIG",
        2 => "DYNAMIC_BROKER_CONFIG",
        3 => "DYNAMIC_DEFAULT_BROKER_CONFIG",
        4 => "STATIC_BROKER_CONFIG",
        5 => "DEFAULT_CONFIG",
        6 => "DYNAMIC_BROKER_LOGGER_CONFIG",
        7 => "CLIENT_METRICS_CONFIG",
        8 => "GROUP_CONFIG",
        _ => "UNKNOWN",
    }
}

/// One config entry of a topic.
struct ConfigRow {
    name: String,
    value: Option<String>,
    source: i8,
    read_only: bool,
    sensitive: bool,
}

impl ConfigRow {
    /// Whether the topic overrides the default (Kafka: source DYNAMIC_TOPIC_CONFIG).
    fn overridden(&self) -> bool {
        self.source == 1
    }
}

async fn describe_configs(
    connection: &mut Connection,
    topic: &str,
) -> Result<Vec<ConfigRow>, String> {
    let request = DescribeConfigsRequest::default().with_resources(vec![
        DescribeConfigsResource::default()
            .with_resource_type(RESOURCE_TOPIC)
            .with_resource_name(text(topic))
            .with_configuration_keys(None),
    ]);
    let response = call(connection, request).await?;
    let result = response
        .results
        .into_iter()
        .find(|r| r.resource_name.as_str() == topic)
        .ok_or_else(|| format!("the broker did not describe the configs of topic '{topic}'"))?;
    if result.error_code != 0 {
        return Err(format!(
            "cannot describe the configs of topic '{topic}': {}",
            error_text(result.error_code, result.error_message.as_ref())
        ));
    }
    let mut rows: Vec<ConfigRow> = result
        .configs
        .into_iter()
        .map(|c| ConfigRow {
            name: c.name.as_str().to_owned(),
            value: c.value.map(|v| v.as_str().to_owned()),
            source: c.config_source,
            read_only: c.read_only,
            sensitive: c.is_sensitive,
        })
        .collect();
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(rows)
}

fn offset_cell(offset: Option<&Result<i64, String>>) -> String {
    match offset {
        Some(Ok(o)) => o.to_string(),
        Some(Err(e)) => e.clone(),
        None => "-".to_owned(),
    }
}

fn offset_json(offset: Option<&Result<i64, String>>) -> serde_json::Value {
    match offset {
        Some(Ok(o)) => json!(o),
        _ => serde_json::Value::Null,
    }
}

async fn describe(args: DescribeArgs) -> Result<(), String> {
    let mut connection = client::connect(&args.client).await?;
    let info = client::topic(&mut connection, &args.topic, false).await?;
    let indexes: Vec<i32> = info.partitions.iter().map(|p| p.index).collect();
    let earliest = client::list_offsets(&mut connection, &info.name, &indexes, EARLIEST).await?;
    let latest = client::list_offsets(&mut connection, &info.name, &indexes, LATEST).await?;
    let configs = describe_configs(&mut connection, &info.name).await?;

    if args.client.json {
        let partitions: Vec<_> = info
            .partitions
            .iter()
            .map(|p| {
                json!({
                    "partition": p.index,
                    "leader": p.leader,
                    "leader_epoch": p.leader_epoch,
                    "replicas": p.replicas,
                    "isr": p.isr,
                    "earliest_offset": offset_json(earliest.get(&p.index)),
                    "latest_offset": offset_json(latest.get(&p.index)),
                    "error": (p.error != 0).then(|| error_text(p.error, None)),
                })
            })
            .collect();
        let configs: Vec<_> = configs
            .iter()
            .map(|c| {
                json!({
                    "name": c.name,
                    "value": c.value,
                    "source": config_source(c.source),
                    "overridden": c.overridden(),
                    "read_only": c.read_only,
                    "sensitive": c.sensitive,
                })
            })
            .collect();
        print_json(&json!({
            "name": info.name,
            "id": kafka_uuid(&info.id),
            "internal": info.internal,
            "replication_factor": info.replication_factor(),
            "partitions": partitions,
            "configs": configs,
        }));
        return Ok(());
    }

    println!(
        "Topic: {}  ID: {}  Partitions: {}  Replication: {}{}",
        cell(&info.name),
        kafka_uuid(&info.id),
        info.partitions.len(),
        info.replication_factor(),
        if info.internal { "  (internal)" } else { "" }
    );
    println!();
    let errors = info.partitions.iter().any(|p| p.error != 0);
    let mut headers = vec![
        "PARTITION",
        "LEADER",
        "EPOCH",
        "REPLICAS",
        "ISR",
        "EARLIEST",
        "LATEST",
    ];
    if errors {
        headers.push("ERROR");
    }
    let mut table = Table::new(headers).right(&[0, 1, 2, 5, 6]);
    for p in &info.partitions {
        let mut row = vec![
            p.index.to_string(),
            p.leader.to_string(),
            p.leader_epoch.to_string(),
            joined(&p.replicas),
            joined(&p.isr),
            offset_cell(earliest.get(&p.index)),
            offset_cell(latest.get(&p.index)),
        ];
        if errors {
            row.push(if p.error == 0 {
                String::new()
            } else {
                error_text(p.error, None)
            });
        }
        table.row(row);
    }
    table.print();
    println!();
    let mut table = Table::new(["CONFIG", "VALUE", "OVERRIDDEN", "SOURCE"]);
    for c in &configs {
        let value = match (&c.value, c.sensitive) {
            (_, true) => "(sensitive)".to_owned(),
            (Some(v), false) => cell(v),
            (None, false) => "(null)".to_owned(),
        };
        table.row([
            cell(&c.name),
            value,
            if c.overridden() { "yes" } else { "no" }.to_owned(),
            config_source(c.source).to_owned(),
        ]);
    }
    if table.is_empty() {
        println!("No configs.");
    } else {
        table.print();
    }
    Ok(())
}

async fn create(args: CreateArgs) -> Result<(), String> {
    let mut connection = client::connect(&args.client).await?;
    let configs = args
        .configs
        .iter()
        .map(|(k, v)| {
            CreatableTopicConfig::default()
                .with_name(text(k))
                .with_value(Some(text(v)))
        })
        .collect();
    let request = CreateTopicsRequest::default()
        .with_timeout_ms(timeout_ms(&args.client))
        .with_topics(vec![
            CreatableTopic::default()
                .with_name(topic_name(&args.topic))
                .with_num_partitions(args.partitions)
                .with_replication_factor(args.replication_factor)
                .with_configs(configs),
        ]);
    let response = call(&mut connection, request).await?;
    let result = response
        .topics
        .iter()
        .find(|t| t.name.0.as_str() == args.topic)
        .ok_or_else(|| format!("the broker did not answer for topic '{}'", args.topic))?;
    if result.error_code != 0 {
        return Err(format!(
            "cannot create topic '{}': {}",
            args.topic,
            error_text(result.error_code, result.error_message.as_ref())
        ));
    }
    // CreateTopics v5+ reports the partition count; older brokers leave it -1.
    let partitions = if result.num_partitions > 0 {
        result.num_partitions
    } else {
        args.partitions
    };
    if args.client.json {
        print_json(&json!({
            "topic": args.topic,
            "created": true,
            "partitions": (partitions > 0).then_some(partitions),
            "id": kafka_uuid(result.topic_id.as_bytes()),
        }));
    } else if partitions > 0 {
        println!(
            "Created topic {} with {partitions} partition{}.",
            cell(&args.topic),
            if partitions == 1 { "" } else { "s" }
        );
    } else {
        println!("Created topic {}.", cell(&args.topic));
    }
    Ok(())
}

fn timeout_ms(args: &ClientArgs) -> i32 {
    i32::try_from(args.timeout.as_millis()).unwrap_or(i32::MAX)
}

async fn delete(args: DeleteArgs) -> Result<(), String> {
    let mut connection = client::connect(&args.client).await?;
    let version = client::version::<DeleteTopicsRequest>(&connection)?;
    let mut request = DeleteTopicsRequest::default().with_timeout_ms(timeout_ms(&args.client));
    // v6 names topics in `topics` (by name or id); older versions in `topic_names`.
    if version >= 6 {
        request = request.with_topics(vec![
            DeleteTopicState::default().with_name(Some(topic_name(&args.topic))),
        ]);
    } else {
        request = request.with_topic_names(vec![topic_name(&args.topic)]);
    }
    let response = connection
        .call_at(version, request)
        .await
        .map_err(call_error::<DeleteTopicsRequest>)?;
    let result = response
        .responses
        .iter()
        .find(|r| r.name.as_ref().is_some_and(|n| n.0.as_str() == args.topic))
        .or(response.responses.first())
        .ok_or_else(|| format!("the broker did not answer for topic '{}'", args.topic))?;
    if result.error_code != 0 {
        return Err(format!(
            "cannot delete topic '{}': {}",
            args.topic,
            error_text(result.error_code, result.error_message.as_ref())
        ));
    }
    if args.client.json {
        print_json(&json!({ "topic": args.topic, "deleted": true }));
    } else {
        println!("Deleted topic {}.", cell(&args.topic));
    }
    Ok(())
}

async fn alter(args: AlterArgs) -> Result<(), String> {
    if args.set.is_empty() && args.delete.is_empty() && args.partitions.is_none() {
        return Err(
            "nothing to alter: give --set KEY=VALUE, --delete KEY or --partitions N".to_owned(),
        );
    }
    let mut connection = client::connect(&args.client).await?;
    let mut done = Vec::new();
    if !args.set.is_empty() || !args.delete.is_empty() {
        let mut configs: Vec<AlterableConfig> = args
            .set
            .iter()
            .map(|(k, v)| {
                AlterableConfig::default()
                    .with_name(text(k))
                    .with_config_operation(0) // SET
                    .with_value(Some(text(v)))
            })
            .collect();
        configs.extend(args.delete.iter().map(|k| {
            AlterableConfig::default()
                .with_name(text(k))
                .with_config_operation(1) // DELETE
                .with_value(None)
        }));
        let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
            AlterConfigsResource::default()
                .with_resource_type(RESOURCE_TOPIC)
                .with_resource_name(text(&args.topic))
                .with_configs(configs),
        ]);
        let response = call(&mut connection, request).await?;
        let result = response
            .responses
            .iter()
            .find(|r| r.resource_name.as_str() == args.topic)
            .ok_or_else(|| format!("the broker did not answer for topic '{}'", args.topic))?;
        if result.error_code != 0 {
            return Err(format!(
                "cannot alter the configs of topic '{}': {}",
                args.topic,
                error_text(result.error_code, result.error_message.as_ref())
            ));
        }
        for (k, v) in &args.set {
            done.push(format!("Set {} = {}.", cell(k), cell(v)));
        }
        for k in &args.delete {
            done.push(format!("Removed the override of {}.", cell(k)));
        }
    }
    if let Some(count) = args.partitions {
        let request = CreatePartitionsRequest::default()
            .with_timeout_ms(timeout_ms(&args.client))
            .with_topics(vec![
                CreatePartitionsTopic::default()
                    .with_name(topic_name(&args.topic))
                    .with_count(count)
                    .with_assignments(None),
            ]);
        let response = call(&mut connection, request).await?;
        let result = response
            .results
            .iter()
            .find(|r| r.name.0.as_str() == args.topic)
            .ok_or_else(|| format!("the broker did not answer for topic '{}'", args.topic))?;
        if result.error_code != 0 {
            for line in &done {
                eprintln!("{line}");
            }
            return Err(format!(
                "cannot change topic '{}' to {count} partitions: {}",
                args.topic,
                error_text(result.error_code, result.error_message.as_ref())
            ));
        }
        done.push(format!("The topic now has {count} partitions."));
    }
    if args.client.json {
        let set: serde_json::Map<String, serde_json::Value> = args
            .set
            .iter()
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect();
        print_json(&json!({
            "topic": args.topic,
            "set": set,
            "deleted": args.delete,
            "partitions": args.partitions,
        }));
    } else {
        println!("Altered topic {}:", cell(&args.topic));
        for line in done {
            println!("  {line}");
        }
    }
    Ok(())
}
