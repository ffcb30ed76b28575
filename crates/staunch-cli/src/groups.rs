//! `staunch groups list|describe`.
//!
//! Requests go to the bootstrap broker, which on a single Staunch node coordinates every
//! group (no FindCoordinator round trip).

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use clap::{Args, Subcommand};
use serde_json::json;
use staunch_client::Connection;
use staunch_client::kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestGroup;
use staunch_client::kafka_protocol::messages::{
    ConsumerProtocolAssignment, DescribeGroupsRequest, GroupId, ListGroupsRequest,
    OffsetFetchRequest,
};
use staunch_client::kafka_protocol::protocol::Decodable;

use crate::client::{self, ClientArgs, LATEST, call, call_error, error_text, text};
use crate::output::{Table, cell, joined, print_json};

/// OffsetFetch v10 names topics by id only; this client names them.
const MAX_OFFSET_FETCH_VERSION: i16 = 9;

/// `staunch groups`.
#[derive(Debug, Args)]
pub(crate) struct GroupsArgs {
    #[command(subcommand)]
    command: GroupsCommand,
}

#[derive(Debug, Subcommand)]
enum GroupsCommand {
    /// List consumer groups with their protocol type and state.
    List(ListArgs),
    /// Show a group's state, members and assignments, and per partition the committed
    /// offset, high watermark and lag.
    Describe(DescribeArgs),
}

#[derive(Debug, Args)]
struct ListArgs {
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, Args)]
struct DescribeArgs {
    /// The group id.
    group: String,
    #[command(flatten)]
    client: ClientArgs,
}

/// Runs a `staunch groups` subcommand.
pub(crate) fn run(args: GroupsArgs) -> Result<(), String> {
    client::block_on(async move {
        match args.command {
            GroupsCommand::List(a) => list(a).await,
            GroupsCommand::Describe(a) => describe(a).await,
        }
    })?
}

async fn list(args: ListArgs) -> Result<(), String> {
    let mut connection = client::connect(&args.client).await?;
    let response = call(&mut connection, ListGroupsRequest::default()).await?;
    if response.error_code != 0 {
        return Err(format!(
            "cannot list groups: {}",
            error_text(response.error_code, None)
        ));
    }
    let mut groups: Vec<(String, String, String)> = response
        .groups
        .iter()
        .map(|g| {
            (
                g.group_id.0.as_str().to_owned(),
                g.protocol_type.as_str().to_owned(),
                // The state is listed from v4 on.
                g.group_state.as_str().to_owned(),
            )
        })
        .collect();
    groups.sort();
    if args.client.json {
        let list: Vec<_> = groups
            .iter()
            .map(|(group, protocol_type, state)| {
                json!({
                    "group": group,
                    "protocol_type": protocol_type,
                    "state": (!state.is_empty()).then_some(state),
                })
            })
            .collect();
        print_json(&json!({ "groups": list }));
        return Ok(());
    }
    if groups.is_empty() {
        println!("No groups.");
        return Ok(());
    }
    let mut table = Table::new(["GROUP", "PROTOCOL-TYPE", "STATE"]);
    for (group, protocol_type, state) in &groups {
        table.row([
            cell(group),
            or_dash(&cell(protocol_type)),
            or_dash(&cell(state)),
        ]);
    }
    table.print();
    Ok(())
}

fn or_dash(text: &str) -> String {
    if text.is_empty() {
        "-".to_owned()
    } else {
        text.to_owned()
    }
}

/// A member's assignment from a consumer-protocol `member_assignment`: topic → partitions.
/// `None` when it cannot be decoded.
pub(crate) fn decode_assignment(bytes: &[u8]) -> Option<BTreeMap<String, Vec<i32>>> {
    if bytes.is_empty() {
        return Some(BTreeMap::new());
    }
    let mut buf = Bytes::copy_from_slice(bytes);
    if buf.len() < 2 {
        return None;
    }
    let version = i16::from_be_bytes([buf[0], buf[1]]);
    let _ = buf.split_to(2);
    // Like Kafka's ConsumerProtocol: newer versions are read as the newest known one.
    let version = version.clamp(0, 3);
    let assignment = ConsumerProtocolAssignment::decode(&mut buf, version).ok()?;
    let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for tp in assignment.assigned_partitions {
        by_topic
            .entry(tp.topic.0.as_str().to_owned())
            .or_default()
            .extend(tp.partitions);
    }
    for partitions in by_topic.values_mut() {
        partitions.sort_unstable();
    }
    Some(by_topic)
}

/// One member of a group.
#[derive(Debug)]
struct Member {
    member_id: String,
    instance_id: Option<String>,
    client_id: String,
    host: String,
    /// Decoded consumer assignment; `None` for other protocol types or undecodable bytes.
    assignment: Option<BTreeMap<String, Vec<i32>>>,
    assignment_bytes: usize,
}

/// A group as DescribeGroups answers.
#[derive(Debug)]
struct Described {
    state: String,
    protocol_type: String,
    protocol: String,
    members: Vec<Member>,
}

async fn describe_group(connection: &mut Connection, group: &str) -> Result<Described, String> {
    let response = call(
        connection,
        DescribeGroupsRequest::default().with_groups(vec![GroupId(text(group))]),
    )
    .await?;
    let g = response
        .groups
        .into_iter()
        .find(|g| g.group_id.0.as_str() == group)
        .ok_or_else(|| format!("the broker did not describe group '{group}'"))?;
    if g.error_code != 0 {
        return Err(format!(
            "cannot describe group '{group}': {}",
            error_text(g.error_code, g.error_message.as_ref())
        ));
    }
    let consumer = g.protocol_type.as_str() == "consumer";
    let mut members: Vec<Member> = g
        .members
        .iter()
        .map(|m| Member {
            member_id: m.member_id.as_str().to_owned(),
            instance_id: m.group_instance_id.as_ref().map(|s| s.as_str().to_owned()),
            client_id: m.client_id.as_str().to_owned(),
            host: m.client_host.as_str().to_owned(),
            assignment: if consumer {
                decode_assignment(&m.member_assignment)
            } else {
                None
            },
            assignment_bytes: m.member_assignment.len(),
        })
        .collect();
    members.sort_by(|a, b| a.member_id.cmp(&b.member_id));
    Ok(Described {
        state: g.group_state.as_str().to_owned(),
        protocol_type: g.protocol_type.as_str().to_owned(),
        protocol: g.protocol_data.as_str().to_owned(),
        members,
    })
}

/// One committed offset.
#[derive(Debug, Clone)]
struct Committed {
    offset: i64,
    metadata: String,
    error: i16,
}

/// Every offset the group has committed: (topic, partition) → committed.
async fn committed_offsets(
    connection: &mut Connection,
    group: &str,
) -> Result<BTreeMap<(String, i32), Committed>, String> {
    let version = client::version::<OffsetFetchRequest>(connection)?.min(MAX_OFFSET_FETCH_VERSION);
    // `topics: null` asks for every committed partition (v2+).
    let request = if version >= 8 {
        OffsetFetchRequest::default().with_groups(vec![
            OffsetFetchRequestGroup::default()
                .with_group_id(GroupId(text(group)))
                .with_topics(None),
        ])
    } else {
        OffsetFetchRequest::default()
            .with_group_id(GroupId(text(group)))
            .with_topics(None)
    };
    let response = connection
        .call_at(version, request)
        .await
        .map_err(call_error::<OffsetFetchRequest>)?;
    let fail = |code: i16| {
        format!(
            "cannot fetch the committed offsets of group '{group}': {}",
            error_text(code, None)
        )
    };
    let mut committed = BTreeMap::new();
    if version >= 8 {
        for g in response
            .groups
            .iter()
            .filter(|g| g.group_id.0.as_str() == group)
        {
            if g.error_code != 0 {
                return Err(fail(g.error_code));
            }
            for t in &g.topics {
                for p in &t.partitions {
                    committed.insert(
                        (t.name.0.as_str().to_owned(), p.partition_index),
                        Committed {
                            offset: p.committed_offset,
                            metadata: p
                                .metadata
                                .as_ref()
                                .map(|m| m.as_str().to_owned())
                                .unwrap_or_default(),
                            error: p.error_code,
                        },
                    );
                }
            }
        }
    } else {
        if response.error_code != 0 {
            return Err(fail(response.error_code));
        }
        for t in &response.topics {
            for p in &t.partitions {
                committed.insert(
                    (t.name.0.as_str().to_owned(), p.partition_index),
                    Committed {
                        offset: p.committed_offset,
                        metadata: p
                            .metadata
                            .as_ref()
                            .map(|m| m.as_str().to_owned())
                            .unwrap_or_default(),
                        error: p.error_code,
                    },
                );
            }
        }
    }
    Ok(committed)
}

/// One row of the offsets table.
#[derive(Debug)]
struct OffsetRow {
    topic: String,
    partition: i32,
    committed: Option<i64>,
    metadata: String,
    high_watermark: Result<i64, String>,
    owner: Option<String>,
    error: Option<String>,
}

impl OffsetRow {
    fn lag(&self) -> Option<i64> {
        match (self.committed, &self.high_watermark) {
            (Some(c), Ok(hw)) => Some((hw - c).max(0)),
            _ => None,
        }
    }
}

async fn describe(args: DescribeArgs) -> Result<(), String> {
    let group = &args.group;
    let mut connection = client::connect(&args.client).await?;
    let committed = committed_offsets(&mut connection, group).await?;
    // DescribeGroups last: a broker without it may close the connection.
    let described = describe_group(&mut connection, group).await;
    let mut connection = match &described {
        Ok(_) => connection,
        Err(_) => client::connect(&args.client).await?,
    };

    // Partitions: every committed one and every assigned one.
    let mut owners: BTreeMap<(String, i32), String> = BTreeMap::new();
    if let Ok(d) = &described {
        for m in &d.members {
            for (topic, partitions) in m.assignment.iter().flatten() {
                for &p in partitions {
                    owners.insert((topic.clone(), p), m.member_id.clone());
                }
            }
        }
    }
    let keys: BTreeSet<(String, i32)> = committed.keys().chain(owners.keys()).cloned().collect();
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (topic, p) in &keys {
        by_topic.entry(topic).or_default().push(*p);
    }
    let mut high_watermarks: BTreeMap<(String, i32), Result<i64, String>> = BTreeMap::new();
    for (topic, partitions) in &by_topic {
        for (p, hw) in client::list_offsets(&mut connection, topic, partitions, LATEST).await? {
            high_watermarks.insert(((*topic).to_owned(), p), hw);
        }
    }
    let rows: Vec<OffsetRow> = keys
        .iter()
        .map(|key| {
            let c = committed.get(key);
            OffsetRow {
                topic: key.0.clone(),
                partition: key.1,
                committed: c.map(|c| c.offset).filter(|&o| o >= 0),
                metadata: c.map(|c| c.metadata.clone()).unwrap_or_default(),
                high_watermark: high_watermarks
                    .get(key)
                    .cloned()
                    .unwrap_or_else(|| Err("unknown".to_owned())),
                owner: owners.get(key).cloned(),
                error: c
                    .filter(|c| c.error != 0)
                    .map(|c| error_text(c.error, None)),
            }
        })
        .collect();

    if args.client.json {
        let (group_json, error) = match &described {
            Ok(d) => (
                json!({
                    "state": d.state,
                    "protocol_type": d.protocol_type,
                    "protocol": d.protocol,
                    "members": d.members.iter().map(|m| json!({
                        "member_id": m.member_id,
                        "group_instance_id": m.instance_id,
                        "client_id": m.client_id,
                        "host": m.host,
                        "assignment": m.assignment,
                    })).collect::<Vec<_>>(),
                }),
                None,
            ),
            Err(e) => (json!({}), Some(e.clone())),
        };
        let offsets: Vec<_> = rows
            .iter()
            .map(|r| {
                json!({
                    "topic": r.topic,
                    "partition": r.partition,
                    "committed_offset": r.committed,
                    "metadata": r.metadata,
                    "high_watermark": r.high_watermark.as_ref().ok(),
                    "lag": r.lag(),
                    "member_id": r.owner,
                    "error": r.error,
                })
            })
            .collect();
        let mut document = json!({ "group": group, "offsets": offsets, "error": error });
        if let (Some(doc), Some(fields)) = (document.as_object_mut(), group_json.as_object()) {
            for (k, v) in fields {
                doc.insert(k.clone(), v.clone());
            }
        }
        print_json(&document);
    } else {
        match &described {
            Ok(d) => {
                println!(
                    "Group: {}  State: {}  Protocol type: {}  Protocol: {}  Members: {}",
                    cell(group),
                    or_dash(&cell(&d.state)),
                    or_dash(&cell(&d.protocol_type)),
                    or_dash(&cell(&d.protocol)),
                    d.members.len()
                );
                if !d.members.is_empty() {
                    println!();
                    let mut table = Table::new([
                        "MEMBER-ID",
                        "CLIENT-ID",
                        "HOST",
                        "INSTANCE-ID",
                        "ASSIGNMENT",
                    ]);
                    for m in &d.members {
                        let assignment = match &m.assignment {
                            Some(a) if a.is_empty() => "-".to_owned(),
                            Some(a) => a
                                .iter()
                                .map(|(t, ps)| format!("{}:{}", cell(t), joined(ps)))
                                .collect::<Vec<_>>()
                                .join(" "),
                            None => format!("({} bytes)", m.assignment_bytes),
                        };
                        table.row([
                            cell(&m.member_id),
                            or_dash(&cell(&m.client_id)),
                            or_dash(&cell(&m.host)),
                            m.instance_id.as_deref().map_or("-".to_owned(), cell),
                            assignment,
                        ]);
                    }
                    table.print();
                }
            }
            Err(_) => println!("Group: {}  State: unknown", cell(group)),
        }
        println!();
        if rows.is_empty() {
            println!("No committed offsets.");
        } else {
            let with_metadata = rows.iter().any(|r| !r.metadata.is_empty());
            let with_errors = rows.iter().any(|r| r.error.is_some());
            let mut headers = vec![
                "TOPIC",
                "PARTITION",
                "COMMITTED",
                "HIGH-WATERMARK",
                "LAG",
                "MEMBER-ID",
            ];
            if with_metadata {
                headers.push("METADATA");
            }
            if with_errors {
                headers.push("ERROR");
            }
            let mut table = Table::new(headers).right(&[1, 2, 3, 4]);
            for r in &rows {
                let mut row = vec![
                    cell(&r.topic),
                    r.partition.to_string(),
                    r.committed.map_or("-".to_owned(), |c| c.to_string()),
                    match &r.high_watermark {
                        Ok(hw) => hw.to_string(),
                        Err(e) => e.clone(),
                    },
                    r.lag().map_or("-".to_owned(), |l| l.to_string()),
                    r.owner.as_deref().map_or("-".to_owned(), cell),
                ];
                if with_metadata {
                    row.push(cell(&r.metadata));
                }
                if with_errors {
                    row.push(r.error.clone().unwrap_or_default());
                }
                table.row(row);
            }
            table.print();
        }
    }
    described.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use staunch_client::kafka_protocol::messages::TopicName;
    use staunch_client::kafka_protocol::messages::consumer_protocol_assignment::TopicPartition;
    use staunch_client::kafka_protocol::protocol::Encodable;

    #[test]
    fn consumer_assignments_decode() {
        for version in [0i16, 1, 3] {
            let assignment = ConsumerProtocolAssignment::default().with_assigned_partitions(vec![
                TopicPartition::default()
                    .with_topic(TopicName(text("b")))
                    .with_partitions(vec![2, 0]),
                TopicPartition::default()
                    .with_topic(TopicName(text("a")))
                    .with_partitions(vec![1]),
            ]);
            let mut bytes = BytesMut::new();
            bytes.extend_from_slice(&version.to_be_bytes());
            assignment.encode(&mut bytes, version).unwrap();
            let decoded = decode_assignment(&bytes).unwrap();
            assert_eq!(
                decoded.into_iter().collect::<Vec<_>>(),
                vec![("a".to_owned(), vec![1]), ("b".to_owned(), vec![0, 2])]
            );
        }
        assert_eq!(decode_assignment(&[]), Some(BTreeMap::new()));
        assert_eq!(decode_assignment(&[0]), None);
        assert_eq!(decode_assignment(&[0, 0, 0, 0, 0, 5]), None);
    }
}
