//! What the client subcommands share: where the broker is, the output mode and timeout;
//! connecting; calls with readable errors; metadata and offset lookups.
//!
//! Every request goes to the one bootstrap broker. That is all a single Staunch node needs;
//! routing to partition leaders of a multi-broker Kafka cluster is left to the real clients
//! (`staunch-producer`, the group consumer) that later issues build.

use std::collections::BTreeMap;
use std::time::Duration;

use clap::Args;
use staunch_client::kafka_protocol::messages::list_offsets_request::{
    ListOffsetsPartition, ListOffsetsTopic,
};
use staunch_client::kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use staunch_client::kafka_protocol::messages::{
    ApiKey, BrokerId, ListOffsetsRequest, MetadataRequest, TopicName,
};
use staunch_client::kafka_protocol::protocol::{Request, StrBytes};
use staunch_client::{Client, ClientConfig, ClientError, Connection};
use staunch_core::ErrorCode;

use crate::client_security::SecurityArgs;

/// The client id the CLI sends.
pub(crate) const CLIENT_ID: &str = "staunch-cli";

/// ListOffsets timestamp for the earliest offset.
pub(crate) const EARLIEST: i64 = -2;
/// ListOffsets timestamp for the latest offset (the high watermark).
pub(crate) const LATEST: i64 = -1;

/// Options of every subcommand that talks to a broker.
#[derive(Debug, Clone, Args)]
pub(crate) struct ClientArgs {
    /// Broker to talk to, as host:port.
    #[arg(
        long,
        short = 'b',
        env = "STAUNCH_BOOTSTRAP",
        default_value = "127.0.0.1:9092",
        value_name = "HOST:PORT"
    )]
    pub(crate) bootstrap: String,
    /// Machine-readable output: one JSON document (for consume, one JSON object per line).
    #[arg(long)]
    pub(crate) json: bool,
    /// How long to wait for the broker to connect and to answer each request, e.g. 10s, 500ms.
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub(crate) timeout: Duration,
    /// TLS and SASL settings.
    #[command(flatten)]
    pub(crate) security: SecurityArgs,
}

/// A duration such as `10s`, `500ms` or `1m`; a bare number is seconds.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    if let Ok(seconds) = text.parse::<u64>() {
        return Ok(Duration::from_secs(seconds));
    }
    humantime_serde::re::humantime::parse_duration(text).map_err(|e| e.to_string())
}

/// `key=value` (the value may contain `=`).
pub(crate) fn parse_key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_owned(), value.to_owned()))
        }
        _ => Err(format!("expected key=value, got '{text}'")),
    }
}

/// Runs `future` on a small runtime of its own.
pub(crate) fn block_on<F: std::future::Future>(future: F) -> Result<F::Output, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the runtime: {e}"))?;
    Ok(runtime.block_on(future))
}

/// A cluster client (the `BrokerApi` the producer and consumer libraries need) to the
/// bootstrap broker, with `--timeout` as its connect and request timeout.
pub(crate) async fn connect_cluster(args: &ClientArgs) -> Result<Client, String> {
    let target = &args.bootstrap;
    let with_port = if target.contains(':') {
        target.clone()
    } else {
        format!("{target}:9092")
    };
    let config = ClientConfig {
        client_id: CLIENT_ID.to_owned(),
        request_timeout: args.timeout,
        connect_timeout: args.timeout,
        security: args.security.resolve()?,
        ..ClientConfig::default()
    };
    Client::connect(vec![with_port], config)
        .await
        .map_err(|e| format!("cannot connect to {target}: {e}"))
}

/// Connects to the bootstrap broker (trying each address its name resolves to).
pub(crate) async fn connect(args: &ClientArgs) -> Result<Connection, String> {
    let target = &args.bootstrap;
    let fail = |why: String| format!("cannot connect to {target}: {why}");
    let with_port = if target.contains(':') {
        target.clone()
    } else {
        format!("{target}:9092")
    };
    let addrs: Vec<_> = tokio::time::timeout(args.timeout, tokio::net::lookup_host(&with_port))
        .await
        .map_err(|_| {
            fail(format!(
                "resolving the name took longer than {:?}",
                args.timeout
            ))
        })?
        .map_err(|e| fail(e.to_string()))?
        .collect();
    let security = args.security.resolve()?;
    let host = with_port
        .rsplit_once(':')
        .map_or(with_port.as_str(), |(host, _)| host);
    let mut last = String::from("the name resolves to no address");
    for addr in addrs {
        match Connection::connect_secured(addr, host, CLIENT_ID, args.timeout, &security).await {
            Ok(connection) => return Ok(connection),
            Err(ClientError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::UnexpectedEof =>
            {
                last = format!(
                    "the connection was closed before the broker answered ApiVersions ({source}); is it a Kafka broker?"
                );
            }
            Err(ClientError::Io { source, .. }) => last = source.to_string(),
            Err(ClientError::Timeout { timeout, .. }) => {
                last = format!("no answer within {timeout:?}");
            }
            Err(e) => last = e.to_string(),
        }
    }
    Err(fail(last))
}

/// The name of a request type's API, e.g. `Metadata`.
pub(crate) fn api_name<Req: Request>() -> String {
    match ApiKey::try_from(Req::KEY) {
        Ok(key) => format!("{key:?}"),
        Err(()) => format!("API {}", Req::KEY),
    }
}

/// A failed call as a sentence naming the request.
pub(crate) fn call_error<Req: Request>(error: ClientError) -> String {
    let api = api_name::<Req>();
    match error {
        ClientError::Io { addr, source }
            if source.kind() == std::io::ErrorKind::UnexpectedEof
                || source.kind() == std::io::ErrorKind::ConnectionReset =>
        {
            format!(
                "{api} request to {addr} failed: the broker closed the connection ({source}); it may not implement {api}"
            )
        }
        other => format!("{api} request failed: {other}"),
    }
}

/// Sends `request` at the highest version both sides speak.
pub(crate) async fn call<Req: Request>(
    connection: &mut Connection,
    request: Req,
) -> Result<Req::Response, String> {
    connection.call(request).await.map_err(call_error::<Req>)
}

/// The highest version of `Req` both sides speak.
pub(crate) fn version<Req: Request>(connection: &Connection) -> Result<i16, String> {
    connection
        .version_for::<Req>()
        .map_err(|e| format!("{} request failed: {e}", api_name::<Req>()))
}

/// An error code (and the broker's message, if any) as text: `NAME: message` or `NAME`.
pub(crate) fn error_text(code: i16, message: Option<&StrBytes>) -> String {
    let name = match ErrorCode::from_code(code) {
        ErrorCode::Other(code) => format!("error code {code}"),
        known => known.name().to_owned(),
    };
    match message.map(|m| m.as_str()).filter(|m| !m.is_empty()) {
        Some(message) => format!("{name}: {message}"),
        None => name,
    }
}

/// Text as the codec's string type.
pub(crate) fn text(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_owned())
}

/// A topic name as the codec's type.
pub(crate) fn topic_name(name: &str) -> TopicName {
    TopicName(text(name))
}

/// One topic as Metadata describes it.
#[derive(Debug, Clone)]
pub(crate) struct TopicInfo {
    pub(crate) name: String,
    /// Kafka's topic id (all zero before Metadata v10).
    pub(crate) id: [u8; 16],
    pub(crate) internal: bool,
    /// The topic's error, e.g. UNKNOWN_TOPIC_OR_PARTITION.
    pub(crate) error: i16,
    /// Sorted by index.
    pub(crate) partitions: Vec<PartitionInfo>,
}

/// One partition as Metadata describes it.
#[derive(Debug, Clone)]
pub(crate) struct PartitionInfo {
    pub(crate) index: i32,
    pub(crate) error: i16,
    pub(crate) leader: i32,
    pub(crate) leader_epoch: i32,
    pub(crate) replicas: Vec<i32>,
    pub(crate) isr: Vec<i32>,
}

impl TopicInfo {
    /// Replication factor: the replica count of the first partition.
    pub(crate) fn replication_factor(&self) -> usize {
        self.partitions.first().map_or(0, |p| p.replicas.len())
    }
}

/// Metadata for the named topics (every topic when `None`), sorted by name. With
/// `auto_create`, the broker may create missing topics (as a Kafka producer allows).
pub(crate) async fn metadata(
    connection: &mut Connection,
    topics: Option<&[String]>,
    auto_create: bool,
) -> Result<Vec<TopicInfo>, String> {
    let version = version::<MetadataRequest>(connection)?;
    let mut request = MetadataRequest::default().with_topics(topics.map(|names| {
        names
            .iter()
            .map(|n| MetadataRequestTopic::default().with_name(Some(topic_name(n))))
            .collect()
    }));
    // The flag exists from v4; older versions always auto-create.
    if version >= 4 {
        request = request.with_allow_auto_topic_creation(auto_create);
    }
    let response = connection
        .call_at(version, request)
        .await
        .map_err(call_error::<MetadataRequest>)?;
    let mut found: Vec<TopicInfo> = response
        .topics
        .into_iter()
        .map(|t| {
            let mut partitions: Vec<PartitionInfo> = t
                .partitions
                .into_iter()
                .map(|p| PartitionInfo {
                    index: p.partition_index,
                    error: p.error_code,
                    leader: p.leader_id.0,
                    leader_epoch: p.leader_epoch,
                    replicas: p.replica_nodes.iter().map(|b| b.0).collect(),
                    isr: p.isr_nodes.iter().map(|b| b.0).collect(),
                })
                .collect();
            partitions.sort_by_key(|p| p.index);
            TopicInfo {
                name: t.name.map(|n| n.0.as_str().to_owned()).unwrap_or_default(),
                id: *t.topic_id.as_bytes(),
                internal: t.is_internal,
                error: t.error_code,
                partitions,
            }
        })
        .collect();
    found.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(found)
}

/// Metadata of one existing topic, or a readable error (e.g. it does not exist). With
/// `auto_create`, waits briefly for a topic the broker is creating to get its partitions.
pub(crate) async fn topic(
    connection: &mut Connection,
    name: &str,
    auto_create: bool,
) -> Result<TopicInfo, String> {
    let names = [name.to_owned()];
    let mut attempts = 0;
    loop {
        let info = metadata(connection, Some(&names), auto_create)
            .await?
            .into_iter()
            .find(|t| t.name == name)
            .ok_or_else(|| format!("the broker did not describe topic '{name}'"))?;
        let code = ErrorCode::from_code(info.error);
        if code == ErrorCode::None && !info.partitions.is_empty() {
            return Ok(info);
        }
        attempts += 1;
        // A topic being created answers LEADER_NOT_AVAILABLE for a moment.
        let unknown = code == ErrorCode::UnknownTopicOrPartition && !auto_create;
        if unknown || !code.is_retriable() || attempts >= 20 {
            return Err(match code {
                ErrorCode::UnknownTopicOrPartition => format!("topic '{name}' does not exist"),
                ErrorCode::None => format!("topic '{name}' has no partitions"),
                _ => format!("topic '{name}': {}", error_text(info.error, None)),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The offsets at `timestamp` (-2 earliest, -1 latest) of `partitions` of `topic`: per
/// partition, the offset or the error text.
pub(crate) async fn list_offsets(
    connection: &mut Connection,
    topic: &str,
    partitions: &[i32],
    timestamp: i64,
) -> Result<BTreeMap<i32, Result<i64, String>>, String> {
    let request = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![
            ListOffsetsTopic::default()
                .with_name(topic_name(topic))
                .with_partitions(
                    partitions
                        .iter()
                        .map(|&p| {
                            ListOffsetsPartition::default()
                                .with_partition_index(p)
                                .with_timestamp(timestamp)
                        })
                        .collect(),
                ),
        ]);
    let response = call(connection, request).await?;
    let mut offsets = BTreeMap::new();
    for t in response
        .topics
        .iter()
        .filter(|t| t.name.0.as_str() == topic)
    {
        for p in &t.partitions {
            let result = if p.error_code == 0 {
                Ok(p.offset)
            } else {
                Err(error_text(p.error_code, None))
            };
            offsets.insert(p.partition_index, result);
        }
    }
    for &p in partitions {
        offsets
            .entry(p)
            .or_insert_with(|| Err("no answer for this partition".to_owned()));
    }
    Ok(offsets)
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_key_values() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("soon").is_err());
        assert_eq!(
            parse_key_value("retention.ms=1000"),
            Ok(("retention.ms".to_owned(), "1000".to_owned()))
        );
        assert_eq!(
            parse_key_value("a=b=c"),
            Ok(("a".to_owned(), "b=c".to_owned()))
        );
        assert!(parse_key_value("novalue").is_err());
        assert!(parse_key_value("=x").is_err());
    }

    #[test]
    fn error_texts() {
        assert_eq!(error_text(3, None), "UNKNOWN_TOPIC_OR_PARTITION");
        assert_eq!(
            error_text(36, Some(&text("Topic 'a' already exists."))),
            "TOPIC_ALREADY_EXISTS: Topic 'a' already exists."
        );
        assert_eq!(error_text(3, Some(&text(""))), "UNKNOWN_TOPIC_OR_PARTITION");
        assert_eq!(error_text(30_000, None), "error code 30000");
    }
}
