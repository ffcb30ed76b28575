//! The classic group protocol for one member: join, sync (the leader assigns), heartbeat in a
//! background task, leave.
//!
//! The heartbeat task only *signals* (an atomic flag) that the member must rejoin; the polling
//! task does the rejoin, after committing what it processed, so offsets are never committed by
//! a task that does not know what was processed.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use staunch_core::api::{
    GroupMembership, GroupProtocol, JoinGroupCall, JoinOutcome, JoinedGroup, MemberAssignment,
    SyncGroupCall,
};
use staunch_core::{ApiError, BrokerApi, ErrorCode, TopicPartition};
use staunch_protocol::consumer_protocol::{
    Assignment, CONSUMER_PROTOCOL_TYPE, Subscription, decode_assignment, decode_subscription,
    encode_assignment, encode_subscription,
};
use tokio::task::JoinHandle;

use crate::assignor::{Assignor, resolve_owned};
use crate::error::ConsumerError;

/// A member's session in a group.
#[derive(Debug)]
pub(crate) struct GroupSession {
    pub(crate) topics: Vec<String>,
    pub(crate) membership: Arc<Mutex<GroupMembership>>,
    pub(crate) rejoin: Arc<AtomicBool>,
    pub(crate) owned: Vec<TopicPartition>,
    heartbeat: Option<JoinHandle<()>>,
    /// Joins that failed in a row, and when the next one may be made.
    join_failures: u32,
    next_join_at: Option<tokio::time::Instant>,
}

/// The wait before a join after one that failed, doubling per failure in a row up to
/// [`JOIN_RETRY_MAX`] (Kafka's `retry.backoff.ms` / `retry.backoff.max.ms`), so a poll loop
/// that only logs the error does not hammer the coordinator.
const JOIN_RETRY_INITIAL: Duration = Duration::from_millis(100);
/// The longest wait between failed joins.
const JOIN_RETRY_MAX: Duration = Duration::from_secs(1);

impl Drop for GroupSession {
    fn drop(&mut self) {
        self.stop_heartbeat();
    }
}

/// Settings the group calls need.
#[derive(Debug, Clone)]
pub(crate) struct GroupSettings {
    pub(crate) group_id: String,
    pub(crate) assignor: Assignor,
    pub(crate) session_timeout: Duration,
    pub(crate) rebalance_timeout: Duration,
    pub(crate) heartbeat_interval: Duration,
}

fn is_code(e: &ApiError, codes: &[ErrorCode]) -> bool {
    e.code().is_some_and(|c| codes.contains(&c))
}

impl GroupSession {
    pub(crate) fn new(group_id: &str, topics: Vec<String>) -> Self {
        GroupSession {
            topics,
            membership: Arc::new(Mutex::new(GroupMembership {
                group_id: group_id.to_owned(),
                generation_id: -1,
                member_id: String::new(),
                group_instance_id: None,
            })),
            rejoin: Arc::new(AtomicBool::new(true)),
            owned: Vec::new(),
            heartbeat: None,
            join_failures: 0,
            next_join_at: None,
        }
    }

    /// The current membership (for commits).
    pub(crate) fn member(&self) -> GroupMembership {
        self.membership
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_member(&self, m: GroupMembership) {
        *self.membership.lock().unwrap_or_else(|p| p.into_inner()) = m;
    }

    pub(crate) fn needs_rejoin(&self) -> bool {
        self.rejoin.load(Ordering::Acquire)
    }

    pub(crate) fn stop_heartbeat(&mut self) {
        if let Some(task) = self.heartbeat.take() {
            task.abort();
        }
    }

    /// Joins (and syncs) until this member has an assignment for a generation; returns it.
    /// After a failed join the next one first waits ([`JOIN_RETRY_INITIAL`], doubling).
    pub(crate) async fn join<B: BrokerApi>(
        &mut self,
        api: &Arc<B>,
        settings: &GroupSettings,
    ) -> Result<Vec<TopicPartition>, ConsumerError> {
        if let Some(at) = self.next_join_at {
            tokio::time::sleep_until(at).await;
        }
        let joined = self.join_now(api, settings).await;
        if joined.is_ok() {
            self.join_failures = 0;
            self.next_join_at = None;
        } else {
            self.join_failures = self.join_failures.saturating_add(1);
            let doublings = (self.join_failures - 1).min(16);
            let wait = JOIN_RETRY_INITIAL
                .saturating_mul(1 << doublings)
                .min(JOIN_RETRY_MAX);
            self.next_join_at = Some(tokio::time::Instant::now() + wait);
        }
        joined
    }

    async fn join_now<B: BrokerApi>(
        &mut self,
        api: &Arc<B>,
        settings: &GroupSettings,
    ) -> Result<Vec<TopicPartition>, ConsumerError> {
        self.stop_heartbeat();
        let mut member = self.member();
        let subscription = Subscription {
            topics: self.topics.clone(),
            user_data: None,
            owned_partitions: self.owned.clone(),
            generation_id: member.generation_id,
            rack_id: None,
        };
        let metadata = encode_subscription(&subscription).map_err(|e| ConsumerError::Group(e.0))?;
        for _ in 0..50 {
            let call = JoinGroupCall {
                group_id: settings.group_id.clone(),
                member_id: member.member_id.clone(),
                group_instance_id: None,
                session_timeout: settings.session_timeout,
                rebalance_timeout: settings.rebalance_timeout,
                protocol_type: CONSUMER_PROTOCOL_TYPE.to_owned(),
                protocols: vec![GroupProtocol {
                    name: settings.assignor.protocol_name().to_owned(),
                    metadata: metadata.clone(),
                }],
            };
            let joined = match api.join_group(call).await {
                Ok(JoinOutcome::MemberIdRequired { member_id }) => {
                    member.member_id = member_id;
                    continue;
                }
                Ok(JoinOutcome::Joined(joined)) => joined,
                Err(e) if is_code(&e, &[ErrorCode::UnknownMemberId]) => {
                    member.member_id.clear();
                    continue;
                }
                Err(e) if e.is_retriable() || is_code(&e, &[ErrorCode::RebalanceInProgress]) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                Err(e) => return Err(ConsumerError::Api(e)),
            };
            member = GroupMembership {
                group_id: settings.group_id.clone(),
                generation_id: joined.generation_id,
                member_id: joined.member_id.clone(),
                group_instance_id: None,
            };
            self.set_member(member.clone());
            let assignments = if joined.is_leader() {
                leader_assign(api.as_ref(), settings.assignor, &joined).await?
            } else {
                Vec::new()
            };
            let sync = SyncGroupCall {
                member: member.clone(),
                protocol_type: Some(
                    joined
                        .protocol_type
                        .clone()
                        .unwrap_or_else(|| CONSUMER_PROTOCOL_TYPE.to_owned()),
                ),
                protocol_name: joined.protocol_name.clone(),
                assignments,
            };
            match api.sync_group(sync).await {
                Ok(bytes) => {
                    let assignment = if bytes.is_empty() {
                        Assignment::default()
                    } else {
                        decode_assignment(&bytes).map_err(|e| ConsumerError::Group(e.0))?
                    };
                    self.owned = assignment.partitions.clone();
                    // Only now: a join that failed, or was dropped half-way, is made again
                    // by the next poll.
                    self.rejoin.store(false, Ordering::Release);
                    self.start_heartbeat(Arc::clone(api), settings.heartbeat_interval);
                    return Ok(assignment.partitions);
                }
                Err(e) if is_code(&e, &[ErrorCode::UnknownMemberId]) => member.member_id.clear(),
                Err(e)
                    if e.is_retriable()
                        || is_code(
                            &e,
                            &[ErrorCode::RebalanceInProgress, ErrorCode::IllegalGeneration],
                        ) => {}
                Err(e) => return Err(ConsumerError::Api(e)),
            }
        }
        Err(ConsumerError::Group(
            "could not complete a rebalance after 50 joins".into(),
        ))
    }

    fn start_heartbeat<B: BrokerApi>(&mut self, api: Arc<B>, interval: Duration) {
        let membership = Arc::clone(&self.membership);
        let rejoin = Arc::clone(&self.rejoin);
        self.heartbeat = Some(tokio::spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                let member = membership.lock().unwrap_or_else(|p| p.into_inner()).clone();
                if let Err(e) = api.heartbeat(&member).await {
                    if is_code(
                        &e,
                        &[
                            ErrorCode::RebalanceInProgress,
                            ErrorCode::UnknownMemberId,
                            ErrorCode::IllegalGeneration,
                            ErrorCode::FencedInstanceId,
                        ],
                    ) {
                        rejoin.store(true, Ordering::Release);
                    } else {
                        tracing::debug!(error = %e, "heartbeat failed");
                    }
                }
            }
        }));
    }

    /// Leaves the group (best effort).
    pub(crate) async fn leave<B: BrokerApi>(&mut self, api: &B) {
        self.stop_heartbeat();
        let member = self.member();
        if !member.member_id.is_empty()
            && let Err(e) = api.leave_group(&member).await
        {
            tracing::debug!(error = %e, "leave_group failed");
        }
    }
}

async fn leader_assign<B: BrokerApi>(
    api: &B,
    assignor: Assignor,
    joined: &JoinedGroup,
) -> Result<Vec<MemberAssignment>, ConsumerError> {
    let mut claims = BTreeMap::new();
    let mut topics = Vec::new();
    for m in &joined.members {
        let sub = decode_subscription(&m.metadata).unwrap_or_else(|e| {
            // A member of another client that speaks a newer or broken subscription format:
            // it gets nothing this generation, and the leader says so instead of staying silent.
            tracing::warn!(member = %m.member_id, error = %e.0, "cannot read a member's subscription; assigning it no partitions");
            Subscription::default()
        });
        for t in &sub.topics {
            if !topics.contains(t) {
                topics.push(t.clone());
            }
        }
        claims.insert(
            m.member_id.clone(),
            (sub.topics, sub.owned_partitions, sub.generation_id),
        );
    }
    let members = resolve_owned(claims);
    let mut partitions = BTreeMap::new();
    for t in topics {
        match api.topic(&t).await {
            Ok(info) => {
                partitions.insert(t, i32::try_from(info.partitions.len()).unwrap_or(0));
            }
            Err(e) => tracing::warn!(topic = %t, error = %e, "subscribed topic not assignable"),
        }
    }
    let out = assignor.assign(&members, &partitions);
    out.into_iter()
        .map(|(member_id, partitions)| {
            let assignment = encode_assignment(&Assignment {
                partitions,
                user_data: None,
            })
            .map_err(|e| ConsumerError::Group(e.0))?;
            Ok(MemberAssignment {
                member_id,
                assignment,
            })
        })
        .collect()
}
