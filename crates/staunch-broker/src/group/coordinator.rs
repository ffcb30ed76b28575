//! The classic consumer-group coordinator: Kafka's JoinGroup / SyncGroup / Heartbeat /
//! LeaveGroup protocol, as librdkafka, kafka-python and the Java client speak it, plus
//! ListGroups, DescribeGroups and DeleteGroups.
//!
//! The state machine and its rules follow Apache Kafka's `GroupCoordinator` and
//! `GroupMetadata` (the pre-KIP-848 "classic" protocol):
//!
//! - states `Empty` → `PreparingRebalance` → `CompletingRebalance` → `Stable`, back to
//!   `PreparingRebalance` whenever membership or metadata changes;
//! - a rebalance completes when every known member has rejoined (and no member that was told
//!   `MEMBER_ID_REQUIRED` is still expected), or when the largest rebalance timeout of the
//!   members runs out, dropping the dynamic members that did not rejoin;
//! - a group that rebalances out of `Empty` waits `group.initial.rebalance.delay.ms` first, and
//!   again (bounded by the rebalance timeout) while new members keep arriving;
//! - the generation increments on every completed rebalance; the leader is kept if it rejoined,
//!   otherwise any rejoined member takes over; the protocol is the one all members support,
//!   chosen by each member's first preference (a vote);
//! - members expire when their session runs out without a heartbeat, and members that got
//!   their JoinGroup response but never send SyncGroup are dropped after the rebalance timeout;
//! - static members (`group.instance.id`) keep their place across restarts: a rejoin with an
//!   unknown member id replaces the old member id (which is then fenced) and, when the group
//!   is `Stable` and the selected protocol would not change, does not rebalance.
//!
//! It speaks in plain domain types; `staunch-server` converts to and from the wire. All state
//! sits behind one `std::sync::Mutex` that is never held across an `.await`; waiting JoinGroup
//! and SyncGroup calls are parked on `tokio::sync::oneshot` channels, and one background task
//! (spawned on first use, so the coordinator must be used inside a tokio runtime) fires the
//! session, rebalance, initial-delay and sync deadlines. No request waits unboundedly: a join
//! waits at most until the rebalance completes (bounded by the rebalance timeout), a sync at
//! most until the leader's assignment, a new rebalance or the sync deadline, and
//! [`GroupCoordinator::shutdown`] answers every waiter with `COORDINATOR_NOT_AVAILABLE`.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use bytes::Bytes;
use staunch_core::ErrorCode;
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

/// How long a brand-new member may wait in its first JoinGroup before it is dropped
/// (Kafka's `GroupCoordinator.NewMemberJoinTimeoutMs`).
const NEW_MEMBER_JOIN_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// The shortest wait before retrying a rebalance that no member rejoined, so a zero rebalance
/// timeout cannot spin the timer task.
const MIN_REBALANCE_RETRY: Duration = Duration::from_millis(100);

/// Group-coordinator settings, named after Kafka's broker configs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupConfig {
    /// `group.min.session.timeout.ms`: shorter session timeouts are refused with
    /// `INVALID_SESSION_TIMEOUT`. Default 6 s.
    pub min_session_timeout: Duration,
    /// `group.max.session.timeout.ms`: longer session timeouts are refused with
    /// `INVALID_SESSION_TIMEOUT`. Default 30 min.
    pub max_session_timeout: Duration,
    /// `group.initial.rebalance.delay.ms`: how long a rebalance out of an empty group waits for
    /// more members before completing. Default 3 s.
    pub initial_rebalance_delay: Duration,
    /// `group.max.size`: the most members a group may have; `None` is unlimited (Kafka's
    /// default of `Int.MaxValue`).
    pub max_group_size: Option<usize>,
}

impl Default for GroupConfig {
    fn default() -> Self {
        Self {
            min_session_timeout: Duration::from_millis(6_000),
            max_session_timeout: Duration::from_millis(1_800_000),
            initial_rebalance_delay: Duration::from_millis(3_000),
            max_group_size: None,
        }
    }
}

/// The state of a group, as Kafka names it in DescribeGroups and ListGroups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GroupState {
    /// No members (the group may still have committed offsets).
    Empty,
    /// Waiting for the members to (re)join.
    PreparingRebalance,
    /// Joined; waiting for the leader's assignment.
    CompletingRebalance,
    /// Every member has its assignment.
    Stable,
    /// The group does not exist (or was deleted).
    Dead,
}

impl GroupState {
    /// Kafka's name for the state: `"Empty"`, `"PreparingRebalance"`, `"CompletingRebalance"`,
    /// `"Stable"` or `"Dead"`.
    pub fn as_str(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

impl fmt::Display for GroupState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A JoinGroup request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinGroup {
    /// The group to join.
    pub group_id: String,
    /// The member's session timeout in milliseconds.
    pub session_timeout_ms: i32,
    /// How long the member may take to rejoin during a rebalance, in milliseconds; for
    /// JoinGroup v0 the server passes the session timeout.
    pub rebalance_timeout_ms: i32,
    /// The member id the coordinator gave this member, or empty on a first join.
    pub member_id: String,
    /// `group.instance.id` of a static member.
    pub group_instance_id: Option<String>,
    /// The protocol type, e.g. `"consumer"`.
    pub protocol_type: String,
    /// The protocols the member supports, in order of preference, each with its metadata.
    pub protocols: Vec<(String, Bytes)>,
    /// The client id of the request.
    pub client_id: String,
    /// The client's host, as Kafka shows it (e.g. `"/127.0.0.1"`).
    pub client_host: String,
    /// Whether a first join must go through `MEMBER_ID_REQUIRED` (JoinGroup v4 and later).
    pub requires_known_member_id: bool,
}

/// One member of the group as the leader sees it in its JoinGroup response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinGroupMember {
    /// The member id.
    pub member_id: String,
    /// The member's `group.instance.id`, if static.
    pub group_instance_id: Option<String>,
    /// The member's metadata for the selected protocol.
    pub metadata: Bytes,
}

/// The answer to a JoinGroup request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinGroupResult {
    /// The error, or `NONE`.
    pub error: ErrorCode,
    /// The generation the member joined, or -1 on error.
    pub generation_id: i32,
    /// The group's protocol type (`None` on error; JoinGroup v7+ sends it).
    pub protocol_type: Option<String>,
    /// The selected protocol (`None` on error; before v7 the server sends `""`).
    pub protocol_name: Option<String>,
    /// The leader's member id, or empty on error.
    pub leader: String,
    /// The member's id: the assigned one, the one to retry with after `MEMBER_ID_REQUIRED`,
    /// or the one sent on other errors.
    pub member_id: String,
    /// Every member with its metadata, for the leader only; empty for followers.
    pub members: Vec<JoinGroupMember>,
    /// KIP-814's `SkipAssignment`; this coordinator always answers `false`.
    pub skip_assignment: bool,
}

/// A SyncGroup request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncGroup {
    /// The group.
    pub group_id: String,
    /// The generation the member joined.
    pub generation_id: i32,
    /// The member id.
    pub member_id: String,
    /// `group.instance.id` of a static member.
    pub group_instance_id: Option<String>,
    /// The protocol type the member expects (SyncGroup v5+), checked when present.
    pub protocol_type: Option<String>,
    /// The protocol name the member expects (SyncGroup v5+), checked when present.
    pub protocol_name: Option<String>,
    /// The leader's assignment per member id; empty from followers.
    pub assignments: Vec<(String, Bytes)>,
}

/// The answer to a SyncGroup request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncGroupResult {
    /// The error, or `NONE`.
    pub error: ErrorCode,
    /// The group's protocol type (SyncGroup v5+), `None` on error.
    pub protocol_type: Option<String>,
    /// The group's protocol (SyncGroup v5+), `None` on error.
    pub protocol_name: Option<String>,
    /// The member's assignment; empty on error.
    pub assignment: Bytes,
}

/// One member named in a LeaveGroup request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeavingMember {
    /// The member id; may be empty in v3+ when `group_instance_id` names the member.
    pub member_id: String,
    /// `group.instance.id` of a static member (v3+).
    pub group_instance_id: Option<String>,
}

/// The outcome for one member of a LeaveGroup request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaveMemberResult {
    /// The member id as requested.
    pub member_id: String,
    /// The `group.instance.id` as requested.
    pub group_instance_id: Option<String>,
    /// The error for this member, or `NONE`.
    pub error: ErrorCode,
}

/// The answer to a LeaveGroup request. For LeaveGroup v0–v2 (a single member) the server
/// reports the top-level error if set, else that member's error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaveGroupResult {
    /// The request-level error, or `NONE`.
    pub error: ErrorCode,
    /// One entry per requested member, in request order (empty when `error` is set).
    pub members: Vec<LeaveMemberResult>,
}

/// One group in a ListGroups answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    /// The group id.
    pub group_id: String,
    /// The group's protocol type, or empty if no member ever joined.
    pub protocol_type: String,
    /// The group's state.
    pub state: GroupState,
}

/// One member in a DescribeGroups answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDescription {
    /// The member id.
    pub member_id: String,
    /// The member's `group.instance.id`, if static.
    pub group_instance_id: Option<String>,
    /// The client id the member joined with.
    pub client_id: String,
    /// The host the member joined from.
    pub client_host: String,
    /// The member's metadata for the group's protocol (empty unless the group is `Stable`).
    pub metadata: Bytes,
    /// The member's assignment (empty unless the group is `Stable`).
    pub assignment: Bytes,
}

/// The answer to DescribeGroups for one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    /// The error, or `NONE` (also for an unknown group, which is described as `Dead`).
    pub error: ErrorCode,
    /// The group id.
    pub group_id: String,
    /// The group's state.
    pub state: GroupState,
    /// The group's protocol type, or empty.
    pub protocol_type: String,
    /// The selected protocol while `Stable`, else empty (as Kafka).
    pub protocol: String,
    /// The members.
    pub members: Vec<MemberDescription>,
}

/// The classic group coordinator. Cheap to clone; every clone shares the same groups.
#[derive(Debug, Clone)]
pub struct GroupCoordinator {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    config: GroupConfig,
    state: Mutex<State>,
    /// Wakes the timer task when a new, earlier deadline is scheduled or on shutdown.
    notify: Arc<Notify>,
    /// The timer task, restarted if it ended (e.g. its runtime went away).
    timer: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Lets the timer task notice that the coordinator is gone.
        self.notify.notify_one();
    }
}

#[derive(Debug, Default)]
struct State {
    groups: HashMap<String, Group>,
    /// Deadlines per group; an entry is live only if it equals the group's `scheduled`.
    wakeups: BinaryHeap<Reverse<(Instant, String)>>,
    shut_down: bool,
}

impl State {
    /// Makes sure the timer task wakes for `group_id`'s next deadline. Returns whether a new,
    /// earlier wake-up was queued (the caller then notifies the timer task).
    fn schedule(&mut self, group_id: &str) -> bool {
        let Some(group) = self.groups.get_mut(group_id) else {
            return false;
        };
        let Some(next) = group.next_deadline() else {
            return false;
        };
        if group.scheduled.is_some_and(|at| at <= next) {
            return false;
        }
        group.scheduled = Some(next);
        self.wakeups.push(Reverse((next, group_id.to_owned())));
        true
    }

    /// Fires every deadline due at `now`; returns the next wake-up.
    fn run_due(&mut self, now: Instant, config: &GroupConfig) -> Option<Instant> {
        while let Some(Reverse((at, _))) = self.wakeups.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((at, group_id))) = self.wakeups.pop() else {
                break;
            };
            let Some(group) = self.groups.get_mut(&group_id) else {
                continue;
            };
            if group.scheduled != Some(at) {
                continue;
            }
            group.scheduled = None;
            group.tick(now, config);
            self.schedule(&group_id);
        }
        self.wakeups.peek().map(|Reverse((at, _))| *at)
    }
}

/// A result that is either ready now or arrives later on a channel.
enum Pending<T> {
    Ready(T),
    Wait(oneshot::Receiver<T>),
}

impl GroupCoordinator {
    /// A coordinator with no groups. Its timer task starts on first use, so it must be used
    /// from inside a tokio runtime.
    pub fn new(config: GroupConfig) -> Self {
        Self {
            shared: Arc::new(Shared {
                config,
                state: Mutex::new(State::default()),
                notify: Arc::new(Notify::new()),
                timer: Mutex::new(None),
            }),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &GroupConfig {
        &self.shared.config
    }

    /// Handles JoinGroup. Resolves when the rebalance the member joined completes (at most
    /// after the rebalance timeout), or at once with an error, `MEMBER_ID_REQUIRED`, or the
    /// current generation when no rebalance is needed.
    pub async fn join(&self, request: JoinGroup) -> JoinGroupResult {
        let member_id = request.member_id.clone();
        match self.join_now(request) {
            Pending::Ready(result) => result,
            Pending::Wait(receiver) => receiver
                .await
                .unwrap_or_else(|_| join_error(member_id, ErrorCode::CoordinatorNotAvailable)),
        }
    }

    /// Handles SyncGroup. The leader's call stores the assignment and answers every member;
    /// followers wait for it, or for `REBALANCE_IN_PROGRESS` if a new rebalance starts first.
    pub async fn sync(&self, request: SyncGroup) -> SyncGroupResult {
        match self.sync_now(request) {
            Pending::Ready(result) => result,
            Pending::Wait(receiver) => receiver
                .await
                .unwrap_or_else(|_| sync_error(ErrorCode::CoordinatorNotAvailable)),
        }
    }

    /// Handles Heartbeat: keeps the member's session alive and tells it whether it must
    /// rejoin (`REBALANCE_IN_PROGRESS`).
    pub fn heartbeat(
        &self,
        group_id: &str,
        generation_id: i32,
        member_id: &str,
        group_instance_id: Option<&str>,
    ) -> ErrorCode {
        self.ensure_timer();
        let now = Instant::now();
        let mut state = self.lock();
        if state.shut_down {
            return ErrorCode::CoordinatorNotAvailable;
        }
        if group_id.is_empty() {
            return ErrorCode::InvalidGroupId;
        }
        let Some(group) = state.groups.get_mut(group_id) else {
            return ErrorCode::UnknownMemberId;
        };
        let error = group.heartbeat(generation_id, member_id, group_instance_id, now);
        self.schedule(&mut state, group_id);
        error
    }

    /// Handles LeaveGroup for one member (v0–v2) or a batch identified by member id and/or
    /// `group.instance.id` (v3+).
    pub fn leave(&self, group_id: &str, members: Vec<LeavingMember>) -> LeaveGroupResult {
        self.ensure_timer();
        let now = Instant::now();
        let config = &self.shared.config;
        let mut state = self.lock();
        if state.shut_down {
            return leave_error(ErrorCode::CoordinatorNotAvailable);
        }
        if group_id.is_empty() {
            return leave_error(ErrorCode::InvalidGroupId);
        }
        let Some(group) = state.groups.get_mut(group_id) else {
            let members = members
                .into_iter()
                .map(|m| leave_member(m, ErrorCode::UnknownMemberId))
                .collect();
            return LeaveGroupResult {
                error: ErrorCode::None,
                members,
            };
        };
        let members = members
            .into_iter()
            .map(|m| {
                let error = group.leave(&m, now, config);
                leave_member(m, error)
            })
            .collect();
        self.schedule(&mut state, group_id);
        LeaveGroupResult {
            error: ErrorCode::None,
            members,
        }
    }

    /// Every group this coordinator knows, sorted by group id.
    pub fn list(&self) -> Vec<GroupListing> {
        let state = self.lock();
        let mut listings: Vec<GroupListing> = state
            .groups
            .values()
            .map(|group| GroupListing {
                group_id: group.id.clone(),
                protocol_type: group.protocol_type.clone().unwrap_or_default(),
                state: group.state,
            })
            .collect();
        listings.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        listings
    }

    /// Describes one group; an unknown group is `Dead` with no error, as in Kafka.
    pub fn describe(&self, group_id: &str) -> GroupDescription {
        let state = self.lock();
        if state.shut_down {
            let mut description = dead_group(group_id);
            description.error = ErrorCode::CoordinatorNotAvailable;
            return description;
        }
        match state.groups.get(group_id) {
            Some(group) => group.describe(),
            None => dead_group(group_id),
        }
    }

    /// Deletes groups: only `Empty` ones can go (`NON_EMPTY_GROUP` otherwise,
    /// `GROUP_ID_NOT_FOUND` if unknown). One answer per distinct id, in request order; the
    /// caller deletes the committed offsets of those answered `NONE`.
    pub fn delete(&self, group_ids: &[String]) -> Vec<(String, ErrorCode)> {
        let mut state = self.lock();
        let mut seen = HashSet::new();
        let mut results = Vec::new();
        for group_id in group_ids {
            if !seen.insert(group_id.as_str()) {
                continue;
            }
            let error = if state.shut_down {
                ErrorCode::CoordinatorNotAvailable
            } else {
                match state.groups.get(group_id).map(|group| group.state) {
                    None | Some(GroupState::Dead) => ErrorCode::GroupIdNotFound,
                    Some(GroupState::Empty) => {
                        state.groups.remove(group_id);
                        info!(group = %group_id, "group deleted");
                        ErrorCode::None
                    }
                    Some(_) => ErrorCode::NonEmptyGroup,
                }
            };
            results.push((group_id.clone(), error));
        }
        results
    }

    /// Checks an OffsetCommit against the group as Kafka's `validateOffsetCommit` does.
    ///
    /// Generation -1 with an empty member id and no instance id is a "simple" commit from a
    /// consumer outside group management: allowed when the group is `Empty` or unknown (an
    /// unknown group is then created `Empty`, so it is listed). Otherwise the member must be
    /// current (`UNKNOWN_MEMBER_ID` / `FENCED_INSTANCE_ID`) and the generation must match
    /// (`ILLEGAL_GENERATION`); a commit while `CompletingRebalance` gets
    /// `REBALANCE_IN_PROGRESS`. An accepted commit from a member counts as a heartbeat.
    pub fn validate_offset_commit(
        &self,
        group_id: &str,
        generation_id: i32,
        member_id: &str,
        group_instance_id: Option<&str>,
    ) -> Result<(), ErrorCode> {
        self.ensure_timer();
        let now = Instant::now();
        let mut state = self.lock();
        if state.shut_down {
            return Err(ErrorCode::CoordinatorNotAvailable);
        }
        if !state.groups.contains_key(group_id) {
            if generation_id >= 0 {
                return Err(ErrorCode::IllegalGeneration);
            }
            state
                .groups
                .insert(group_id.to_owned(), Group::new(group_id.to_owned()));
        }
        let Some(group) = state.groups.get_mut(group_id) else {
            return Err(ErrorCode::CoordinatorNotAvailable);
        };
        let result = group.validate_offset_commit(generation_id, member_id, group_instance_id, now);
        self.schedule(&mut state, group_id);
        result
    }

    /// Whether the coordinator knows the group (in any state).
    pub fn group_is_known(&self, group_id: &str) -> bool {
        self.lock().groups.contains_key(group_id)
    }

    /// Makes the group exist, `Empty` if it did not: for groups that have committed offsets
    /// (e.g. after a restart) so that they are listed and described.
    pub fn ensure_group(&self, group_id: &str) {
        let mut state = self.lock();
        if state.shut_down {
            return;
        }
        state
            .groups
            .entry(group_id.to_owned())
            .or_insert_with(|| Group::new(group_id.to_owned()));
    }

    /// Stops the coordinator: every waiting JoinGroup and SyncGroup is answered
    /// `COORDINATOR_NOT_AVAILABLE`, the timer task ends, groups are unloaded, and every later
    /// call fails with `COORDINATOR_NOT_AVAILABLE`.
    pub fn shutdown(&self) {
        let mut state = self.lock();
        if state.shut_down {
            return;
        }
        state.shut_down = true;
        for group in state.groups.values_mut() {
            group.fail_waiters(ErrorCode::CoordinatorNotAvailable);
        }
        state.groups.clear();
        state.wakeups.clear();
        drop(state);
        self.shared.notify.notify_one();
        info!("group coordinator shut down");
    }

    fn join_now(&self, request: JoinGroup) -> Pending<JoinGroupResult> {
        self.ensure_timer();
        let now = Instant::now();
        let config = &self.shared.config;
        let mut state = self.lock();
        if state.shut_down {
            return Pending::Ready(join_error(
                request.member_id,
                ErrorCode::CoordinatorNotAvailable,
            ));
        }
        if request.group_id.is_empty() {
            return Pending::Ready(join_error(request.member_id, ErrorCode::InvalidGroupId));
        }
        if !session_timeout_is_valid(request.session_timeout_ms, config) {
            return Pending::Ready(join_error(
                request.member_id,
                ErrorCode::InvalidSessionTimeout,
            ));
        }
        let group_id = request.group_id.clone();
        let unknown_member = request.member_id.is_empty();
        let created = !state.groups.contains_key(&group_id);
        if created {
            if !unknown_member {
                // Only a first join may create a group.
                return Pending::Ready(join_error(request.member_id, ErrorCode::UnknownMemberId));
            }
            state
                .groups
                .insert(group_id.clone(), Group::new(group_id.clone()));
        }
        let Some(group) = state.groups.get_mut(&group_id) else {
            return Pending::Ready(join_error(
                request.member_id,
                ErrorCode::CoordinatorNotAvailable,
            ));
        };
        let outcome = if !group.accepts_joining_member(&request.member_id, config.max_group_size) {
            group.remove_member(&request.member_id);
            info!(group = %group_id, "group is full; member refused");
            Pending::Ready(join_error(String::new(), ErrorCode::GroupMaxSizeReached))
        } else if unknown_member {
            group.join_new_member(request, now, config)
        } else {
            group.join_current_member(request, now, config)
        };
        group.try_complete_join(now);
        if created && group.is_vacant() {
            // A first join that failed outright leaves no group behind.
            state.groups.remove(&group_id);
        }
        self.schedule(&mut state, &group_id);
        outcome
    }

    fn sync_now(&self, request: SyncGroup) -> Pending<SyncGroupResult> {
        self.ensure_timer();
        let now = Instant::now();
        let mut state = self.lock();
        if state.shut_down {
            return Pending::Ready(sync_error(ErrorCode::CoordinatorNotAvailable));
        }
        if request.group_id.is_empty() {
            return Pending::Ready(sync_error(ErrorCode::InvalidGroupId));
        }
        let group_id = request.group_id.clone();
        let Some(group) = state.groups.get_mut(&group_id) else {
            return Pending::Ready(sync_error(ErrorCode::UnknownMemberId));
        };
        let outcome = group.sync(request, now);
        self.schedule(&mut state, &group_id);
        outcome
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn schedule(&self, state: &mut State, group_id: &str) {
        if state.schedule(group_id) {
            self.shared.notify.notify_one();
        }
    }

    /// Starts the timer task if it is not running and a tokio runtime is at hand.
    fn ensure_timer(&self) {
        let mut timer = self
            .shared
            .timer
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if timer.as_ref().is_some_and(|task| !task.is_finished()) {
            return;
        }
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let weak = Arc::downgrade(&self.shared);
            let notify = Arc::clone(&self.shared.notify);
            *timer = Some(handle.spawn(run_timers(weak, notify)));
        }
    }
}

/// The timer task: sleeps until the earliest group deadline (or a notification), then fires
/// what is due. Ends on shutdown or when every coordinator handle is dropped.
async fn run_timers(shared: Weak<Shared>, notify: Arc<Notify>) {
    loop {
        let next = {
            let Some(shared) = shared.upgrade() else {
                return;
            };
            let mut state = shared.state.lock().unwrap_or_else(PoisonError::into_inner);
            if state.shut_down {
                return;
            }
            state.run_due(Instant::now(), &shared.config)
        };
        match next {
            Some(at) => {
                // Either the deadline passed or something new was scheduled; both re-check.
                let _ = tokio::time::timeout_at(at, notify.notified()).await;
            }
            None => notify.notified().await,
        }
    }
}

/// One member of a group.
#[derive(Debug)]
struct Member {
    id: String,
    instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    /// Set while the member waits in JoinGroup (Kafka's `isAwaitingJoin`).
    join_waiter: Option<oneshot::Sender<JoinGroupResult>>,
    /// Set while the member waits in SyncGroup.
    sync_waiter: Option<oneshot::Sender<SyncGroupResult>>,
    /// Joined but has not yet completed a rebalance.
    is_new: bool,
    last_heartbeat: Instant,
    /// When the member's session runs out; `None` while it is kept alive by waiting.
    expires_at: Option<Instant>,
}

impl Member {
    fn new(id: String, request: &JoinGroup, now: Instant) -> Self {
        Self {
            id,
            instance_id: request.group_instance_id.clone(),
            client_id: request.client_id.clone(),
            client_host: request.client_host.clone(),
            session_timeout: millis(request.session_timeout_ms),
            rebalance_timeout: millis(request.rebalance_timeout_ms),
            protocols: request.protocols.clone(),
            assignment: Bytes::new(),
            join_waiter: None,
            sync_waiter: None,
            is_new: true,
            last_heartbeat: now,
            expires_at: None,
        }
    }

    fn awaiting_join(&self) -> bool {
        self.join_waiter.is_some()
    }

    fn supports(&self, protocol: &str) -> bool {
        self.protocols.iter().any(|(name, _)| name == protocol)
    }

    fn metadata(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(name, _)| name == protocol)
            .map(|(_, metadata)| metadata.clone())
            .unwrap_or_default()
    }

    /// Whether the member's protocols and metadata are exactly these, in the same order.
    fn matches(&self, protocols: &[(String, Bytes)]) -> bool {
        self.protocols == protocols
    }

    /// Records a heartbeat and arms the session deadline `timeout` from now.
    fn touch(&mut self, now: Instant, timeout: Duration) {
        self.last_heartbeat = now;
        self.expires_at = Some(after(now, timeout));
    }

    /// Kafka's `shouldKeepAlive`: a member waiting in JoinGroup (unless brand new and waiting
    /// too long) or in SyncGroup does not expire.
    fn keep_alive(&self, now: Instant) -> bool {
        if self.awaiting_join() {
            !self.is_new || after(self.last_heartbeat, NEW_MEMBER_JOIN_TIMEOUT) > now
        } else {
            self.sync_waiter.is_some() || after(self.last_heartbeat, self.session_timeout) > now
        }
    }

    /// Parks a JoinGroup on this member, answering a superseded one.
    fn wait_for_join(&mut self) -> oneshot::Receiver<JoinGroupResult> {
        let (sender, receiver) = oneshot::channel();
        if let Some(old) = self.join_waiter.replace(sender) {
            let _ = old.send(join_error(self.id.clone(), ErrorCode::RebalanceInProgress));
        }
        receiver
    }

    /// Parks a SyncGroup on this member, answering a superseded one.
    fn wait_for_sync(&mut self) -> oneshot::Receiver<SyncGroupResult> {
        let (sender, receiver) = oneshot::channel();
        if let Some(old) = self.sync_waiter.replace(sender) {
            let _ = old.send(sync_error(ErrorCode::RebalanceInProgress));
        }
        receiver
    }

    /// Answers the waiting JoinGroup, if any; returns whether there was one.
    fn complete_join(&mut self, result: JoinGroupResult) -> bool {
        match self.join_waiter.take() {
            Some(waiter) => {
                let _ = waiter.send(result);
                true
            }
            None => false,
        }
    }

    /// Answers the waiting SyncGroup, if any; returns whether there was one.
    fn complete_sync(&mut self, result: SyncGroupResult) -> bool {
        match self.sync_waiter.take() {
            Some(waiter) => {
                let _ = waiter.send(result);
                true
            }
            None => false,
        }
    }

    /// Takes the protocols and timeouts of a (re)join.
    fn update(&mut self, request: &JoinGroup) {
        self.protocols = request.protocols.clone();
        self.session_timeout = millis(request.session_timeout_ms);
        self.rebalance_timeout = millis(request.rebalance_timeout_ms);
    }
}

/// One group's membership state (Kafka's `GroupMetadata`).
#[derive(Debug)]
struct Group {
    id: String,
    state: GroupState,
    generation: i32,
    protocol_type: Option<String>,
    protocol_name: Option<String>,
    leader: Option<String>,
    /// In join order, so a replacement leader is the longest-standing member.
    members: Vec<Member>,
    /// Member ids handed out with `MEMBER_ID_REQUIRED`, with when they lapse.
    pending_members: HashMap<String, Instant>,
    /// Members of the current generation that have not sent SyncGroup yet.
    pending_sync: HashSet<String>,
    /// When the rebalance in progress completes regardless of who rejoined.
    join_deadline: Option<Instant>,
    /// While the initial delayed join runs: how much more it may be extended.
    initial_delay_remaining: Option<Duration>,
    /// A new member joined during the initial delay (it may be extended).
    new_member_added: bool,
    /// When members still in `pending_sync` are removed.
    sync_deadline: Option<Instant>,
    /// The live wake-up queued for this group.
    scheduled: Option<Instant>,
}

impl Group {
    fn new(id: String) -> Self {
        Self {
            id,
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol_name: None,
            leader: None,
            members: Vec::new(),
            pending_members: HashMap::new(),
            pending_sync: HashSet::new(),
            join_deadline: None,
            initial_delay_remaining: None,
            new_member_added: false,
            sync_deadline: None,
            scheduled: None,
        }
    }

    fn member(&self, member_id: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.id == member_id)
    }

    fn member_mut(&mut self, member_id: &str) -> Option<&mut Member> {
        self.members.iter_mut().find(|m| m.id == member_id)
    }

    /// Empty with nobody expected: nothing would be lost by forgetting it.
    fn is_vacant(&self) -> bool {
        self.state == GroupState::Empty
            && self.members.is_empty()
            && self.pending_members.is_empty()
    }

    fn has(&self, member_id: &str) -> bool {
        self.member(member_id).is_some()
    }

    fn is_leader(&self, member_id: &str) -> bool {
        self.leader.as_deref() == Some(member_id)
    }

    fn static_member_id(&self, instance_id: &str) -> Option<&str> {
        self.members
            .iter()
            .find(|m| m.instance_id.as_deref() == Some(instance_id))
            .map(|m| m.id.as_str())
    }

    /// The largest rebalance timeout of the members.
    fn rebalance_timeout(&self) -> Duration {
        self.members
            .iter()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or(Duration::ZERO)
    }

    /// Kafka's `supportsProtocols`: an empty group takes any non-empty protocol type and list;
    /// otherwise the type must match and one of the protocols must be supported by every
    /// current member.
    fn supports_protocols(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if self.state == GroupState::Empty {
            return !protocol_type.is_empty() && !protocols.is_empty();
        }
        self.protocol_type.as_deref() == Some(protocol_type)
            && protocols
                .iter()
                .any(|(name, _)| self.members.iter().all(|m| m.supports(name)))
    }

    /// Kafka's `selectProtocol`: among the protocols every member supports, each member votes
    /// for its most preferred; the most votes win (ties go to the earlier candidate in the
    /// first member's order).
    fn select_protocol(&self) -> Option<String> {
        let first = self.members.first()?;
        let candidates: Vec<&str> = first
            .protocols
            .iter()
            .map(|(name, _)| name.as_str())
            .filter(|name| self.members.iter().all(|m| m.supports(name)))
            .collect();
        let mut votes = vec![0usize; candidates.len()];
        for member in &self.members {
            let choice = member
                .protocols
                .iter()
                .find_map(|(name, _)| candidates.iter().position(|c| c == name));
            if let Some(index) = choice {
                votes[index] += 1;
            }
        }
        let mut best: Option<(usize, usize)> = None;
        for (index, count) in votes.into_iter().enumerate() {
            if best.is_none_or(|(_, most)| count > most) {
                best = Some((index, count));
            }
        }
        best.map(|(index, _)| candidates[index].to_owned())
    }

    /// Kafka's `validateCurrentMember`: a static member must be the current holder of its
    /// instance id, a dynamic one must be known.
    fn validate_current_member(
        &self,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> Result<(), ErrorCode> {
        match instance_id {
            Some(instance_id) => match self.static_member_id(instance_id) {
                Some(current) if current != member_id => {
                    info!(group = %self.id, member = member_id, instance = instance_id,
                        current, "static member fenced");
                    Err(ErrorCode::FencedInstanceId)
                }
                Some(_) => Ok(()),
                None => Err(ErrorCode::UnknownMemberId),
            },
            None if self.has(member_id) => Ok(()),
            None => Err(ErrorCode::UnknownMemberId),
        }
    }

    /// Kafka's `acceptJoiningMember` against `group.max.size`.
    fn accepts_joining_member(&self, member_id: &str, max_size: Option<usize>) -> bool {
        let Some(max_size) = max_size else {
            return true;
        };
        match self.state {
            GroupState::Empty | GroupState::Dead => true,
            GroupState::PreparingRebalance => {
                self.member(member_id).is_some_and(Member::awaiting_join)
                    || self.members.iter().filter(|m| m.awaiting_join()).count() < max_size
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                self.has(member_id) || self.members.len() < max_size
            }
        }
    }

    /// A JoinGroup with an empty member id.
    fn join_new_member(
        &mut self,
        request: JoinGroup,
        now: Instant,
        config: &GroupConfig,
    ) -> Pending<JoinGroupResult> {
        if !self.supports_protocols(&request.protocol_type, &request.protocols) {
            return Pending::Ready(join_error(
                String::new(),
                ErrorCode::InconsistentGroupProtocol,
            ));
        }
        let prefix = request
            .group_instance_id
            .as_deref()
            .unwrap_or(&request.client_id);
        let new_id = format!("{prefix}-{}", uuid::Uuid::new_v4());
        if let Some(instance_id) = request.group_instance_id.as_deref() {
            if let Some(old_id) = self.static_member_id(instance_id).map(str::to_owned) {
                return self.replace_static_member(&old_id, new_id, request, now, config);
            }
            return self.add_member_and_rebalance(new_id, request, now, config);
        }
        if request.requires_known_member_id {
            debug!(group = %self.id, member = %new_id, "member id required");
            let deadline = after(now, millis(request.session_timeout_ms));
            self.pending_members.insert(new_id.clone(), deadline);
            return Pending::Ready(join_error(new_id, ErrorCode::MemberIdRequired));
        }
        self.add_member_and_rebalance(new_id, request, now, config)
    }

    /// A JoinGroup with a member id.
    fn join_current_member(
        &mut self,
        request: JoinGroup,
        now: Instant,
        config: &GroupConfig,
    ) -> Pending<JoinGroupResult> {
        let member_id = request.member_id.clone();
        if !self.supports_protocols(&request.protocol_type, &request.protocols) {
            return Pending::Ready(join_error(member_id, ErrorCode::InconsistentGroupProtocol));
        }
        if self.pending_members.contains_key(&member_id) {
            if request.group_instance_id.is_some() {
                // Pending ids are only handed to dynamic members.
                return Pending::Ready(join_error(member_id, ErrorCode::UnknownMemberId));
            }
            return self.add_member_and_rebalance(member_id, request, now, config);
        }
        if let Err(error) =
            self.validate_current_member(&member_id, request.group_instance_id.as_deref())
        {
            return Pending::Ready(join_error(member_id, error));
        }
        let matches = self
            .member(&member_id)
            .is_some_and(|m| m.matches(&request.protocols));
        match self.state {
            GroupState::PreparingRebalance => {
                self.update_member_and_rebalance(&member_id, &request, now, config)
            }
            GroupState::CompletingRebalance if matches => {
                // The member missed its JoinGroup response: answer with the current generation.
                Pending::Ready(self.join_result_for(&member_id, None))
            }
            GroupState::Stable if matches && !self.is_leader(&member_id) => {
                Pending::Ready(self.join_result_for(&member_id, None))
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                // Changed metadata, or the leader asking for a rebalance.
                self.update_member_and_rebalance(&member_id, &request, now, config)
            }
            GroupState::Empty | GroupState::Dead => {
                warn!(group = %self.id, member = %member_id, state = %self.state,
                    "rejoin in unexpected state");
                Pending::Ready(join_error(member_id, ErrorCode::UnknownMemberId))
            }
        }
    }

    fn add_member_and_rebalance(
        &mut self,
        member_id: String,
        request: JoinGroup,
        now: Instant,
        config: &GroupConfig,
    ) -> Pending<JoinGroupResult> {
        let mut member = Member::new(member_id.clone(), &request, now);
        let receiver = member.wait_for_join();
        // New members cannot heartbeat before their first JoinGroup returns.
        member.touch(now, NEW_MEMBER_JOIN_TIMEOUT);
        if self.state == GroupState::PreparingRebalance && self.generation == 0 {
            self.new_member_added = true;
        }
        if self.members.is_empty() {
            self.protocol_type = Some(request.protocol_type.clone());
        }
        if self.leader.is_none() {
            self.leader = Some(member_id.clone());
        }
        self.pending_members.remove(&member_id);
        self.members.push(member);
        info!(group = %self.id, member = %member_id,
            instance = ?request.group_instance_id, "member added");
        self.maybe_prepare_rebalance(now, config, "new member");
        Pending::Wait(receiver)
    }

    fn update_member_and_rebalance(
        &mut self,
        member_id: &str,
        request: &JoinGroup,
        now: Instant,
        config: &GroupConfig,
    ) -> Pending<JoinGroupResult> {
        let Some(member) = self.member_mut(member_id) else {
            return Pending::Ready(join_error(member_id.to_owned(), ErrorCode::UnknownMemberId));
        };
        member.update(request);
        let receiver = member.wait_for_join();
        self.maybe_prepare_rebalance(now, config, "member rejoined");
        Pending::Wait(receiver)
    }

    /// A static member rejoining with an unknown member id takes over the old member's place
    /// under a new id; the old id is fenced.
    fn replace_static_member(
        &mut self,
        old_id: &str,
        new_id: String,
        request: JoinGroup,
        now: Instant,
        config: &GroupConfig,
    ) -> Pending<JoinGroupResult> {
        let previous_leader = self.leader.clone().unwrap_or_default();
        let Some(member) = self.member_mut(old_id) else {
            return Pending::Ready(join_error(String::new(), ErrorCode::UnknownMemberId));
        };
        member.complete_join(join_error(old_id.to_owned(), ErrorCode::FencedInstanceId));
        member.complete_sync(sync_error(ErrorCode::FencedInstanceId));
        member.id = new_id.clone();
        member.client_id = request.client_id.clone();
        member.client_host = request.client_host.clone();
        member.update(&request);
        member.touch(now, member.session_timeout);
        if self.is_leader(old_id) {
            self.leader = Some(new_id.clone());
        }
        if self.pending_sync.remove(old_id) {
            self.pending_sync.insert(new_id.clone());
        }
        info!(group = %self.id, old = old_id, new = %new_id,
            instance = ?request.group_instance_id, state = %self.state, "static member replaced");
        match self.state {
            GroupState::Stable if self.select_protocol() == self.protocol_name => {
                // No rebalance. Answer with the previous leader id so that a restarted leader
                // does not compute an assignment a stable group would not distribute.
                Pending::Ready(JoinGroupResult {
                    error: ErrorCode::None,
                    generation_id: self.generation,
                    protocol_type: self.protocol_type.clone(),
                    protocol_name: self.protocol_name.clone(),
                    leader: previous_leader,
                    member_id: new_id,
                    members: Vec::new(),
                    skip_assignment: false,
                })
            }
            _ => {
                let Some(member) = self.member_mut(&new_id) else {
                    return Pending::Ready(join_error(new_id, ErrorCode::UnknownMemberId));
                };
                let receiver = member.wait_for_join();
                // In CompletingRebalance the leader may have assigned to the old id: redo it.
                self.maybe_prepare_rebalance(now, config, "static member replaced");
                Pending::Wait(receiver)
            }
        }
    }

    /// The JoinGroup answer for `member_id` in the current generation (members for the
    /// leader only).
    fn join_result_for(
        &self,
        member_id: &str,
        leader_members: Option<&[JoinGroupMember]>,
    ) -> JoinGroupResult {
        let members = if self.is_leader(member_id) {
            leader_members.map_or_else(|| self.leader_view(), <[JoinGroupMember]>::to_vec)
        } else {
            Vec::new()
        };
        JoinGroupResult {
            error: ErrorCode::None,
            generation_id: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            leader: self.leader.clone().unwrap_or_default(),
            member_id: member_id.to_owned(),
            members,
            skip_assignment: false,
        }
    }

    /// Every member with its metadata for the selected protocol, as the leader gets them.
    fn leader_view(&self) -> Vec<JoinGroupMember> {
        let protocol = self.protocol_name.as_deref().unwrap_or_default();
        self.members
            .iter()
            .map(|m| JoinGroupMember {
                member_id: m.id.clone(),
                group_instance_id: m.instance_id.clone(),
                metadata: m.metadata(protocol),
            })
            .collect()
    }

    fn can_rebalance(&self) -> bool {
        matches!(
            self.state,
            GroupState::Empty | GroupState::CompletingRebalance | GroupState::Stable
        )
    }

    fn maybe_prepare_rebalance(&mut self, now: Instant, config: &GroupConfig, reason: &str) {
        if self.can_rebalance() {
            self.prepare_rebalance(now, config, reason);
        }
    }

    /// Moves to `PreparingRebalance`: members waiting in SyncGroup are told to rejoin, and the
    /// join deadline is set (the initial delay when starting from `Empty`).
    fn prepare_rebalance(&mut self, now: Instant, config: &GroupConfig, reason: &str) {
        if self.state == GroupState::CompletingRebalance {
            self.reset_and_propagate_error(ErrorCode::RebalanceInProgress, now);
        }
        self.sync_deadline = None;
        self.pending_sync.clear();
        let rebalance_timeout = self.rebalance_timeout();
        if self.state == GroupState::Empty {
            let delay = config.initial_rebalance_delay;
            self.initial_delay_remaining = Some(rebalance_timeout.saturating_sub(delay));
            self.join_deadline = Some(after(now, delay));
        } else {
            self.initial_delay_remaining = None;
            self.join_deadline = Some(after(now, rebalance_timeout));
        }
        info!(group = %self.id, from = %self.state, generation = self.generation, reason,
            "preparing rebalance");
        self.state = GroupState::PreparingRebalance;
        self.try_complete_join(now);
    }

    /// Completes the rebalance early once everyone expected has rejoined (never during the
    /// initial delay).
    fn try_complete_join(&mut self, now: Instant) {
        if self.state == GroupState::PreparingRebalance
            && self.initial_delay_remaining.is_none()
            && self.pending_members.is_empty()
            && self.members.iter().all(Member::awaiting_join)
        {
            self.complete_join(now);
        }
    }

    /// The join deadline passed: extend the initial delay if new members keep coming,
    /// otherwise complete the rebalance with whoever rejoined.
    fn on_join_deadline(&mut self, now: Instant, config: &GroupConfig) {
        if let Some(remaining) = self.initial_delay_remaining
            && self.new_member_added
            && !remaining.is_zero()
        {
            self.new_member_added = false;
            let delay = config.initial_rebalance_delay.min(remaining);
            self.initial_delay_remaining = Some(remaining - delay);
            self.join_deadline = Some(after(now, delay));
            return;
        }
        self.complete_join(now);
    }

    /// Kafka's `onCompleteJoin`: drops dynamic members that did not rejoin, keeps or elects
    /// the leader, starts the next generation and answers every waiting JoinGroup.
    fn complete_join(&mut self, now: Instant) {
        let dropped: Vec<String> = self
            .members
            .iter()
            .filter(|m| !m.awaiting_join() && m.instance_id.is_none())
            .map(|m| m.id.clone())
            .collect();
        for member_id in &dropped {
            info!(group = %self.id, member = %member_id, "member did not rejoin in time; removed");
            self.remove_member(member_id);
        }
        if !self.elect_joined_leader() && !self.members.is_empty() {
            // Only static members remain and none rejoined: wait for them or their sessions.
            warn!(group = %self.id, "no member rejoined; postponing the rebalance");
            self.initial_delay_remaining = None;
            self.join_deadline = Some(after(
                now,
                self.rebalance_timeout().max(MIN_REBALANCE_RETRY),
            ));
            return;
        }
        self.init_next_generation();
        if self.state == GroupState::Empty {
            info!(group = %self.id, generation = self.generation, "group is now empty");
            return;
        }
        info!(group = %self.id, generation = self.generation, protocol = ?self.protocol_name,
            members = self.members.len(), "rebalance completed; awaiting sync");
        let leader_members = self.leader_view();
        let results: Vec<JoinGroupResult> = self
            .members
            .iter()
            .map(|m| self.join_result_for(&m.id, Some(&leader_members)))
            .collect();
        for (member, result) in self.members.iter_mut().zip(results) {
            member.complete_join(result);
            member.touch(now, member.session_timeout);
            member.is_new = false;
            self.pending_sync.insert(member.id.clone());
        }
        self.sync_deadline = Some(after(now, self.rebalance_timeout()));
    }

    /// Kafka's `maybeElectNewJoinedLeader`: keep the leader if it rejoined, else pick any
    /// member that did. Returns whether the group has a rejoined leader.
    fn elect_joined_leader(&mut self) -> bool {
        let Some(leader) = self.leader.as_deref() else {
            return false;
        };
        if self.member(leader).is_some_and(Member::awaiting_join) {
            return true;
        }
        match self.members.iter().find(|m| m.awaiting_join()) {
            Some(member) => {
                info!(group = %self.id, old = leader, new = %member.id, "new leader elected");
                self.leader = Some(member.id.clone());
                true
            }
            None => false,
        }
    }

    fn init_next_generation(&mut self) {
        self.generation = self.generation.checked_add(1).unwrap_or(1);
        self.join_deadline = None;
        self.initial_delay_remaining = None;
        self.new_member_added = false;
        self.pending_sync.clear();
        self.sync_deadline = None;
        if self.members.is_empty() {
            self.protocol_name = None;
            self.state = GroupState::Empty;
        } else {
            self.protocol_name = self.select_protocol();
            self.state = GroupState::CompletingRebalance;
        }
    }

    /// Clears every assignment and answers waiting SyncGroups with `error`.
    fn reset_and_propagate_error(&mut self, error: ErrorCode, now: Instant) {
        for member in &mut self.members {
            member.assignment = Bytes::new();
            if member.complete_sync(sync_error(error)) {
                member.touch(now, member.session_timeout);
            }
        }
    }

    /// Stores the leader's assignment (members it left out get an empty one) and answers
    /// every waiting SyncGroup.
    fn set_and_propagate_assignment(&mut self, assignments: Vec<(String, Bytes)>, now: Instant) {
        let mut by_member: HashMap<String, Bytes> = assignments.into_iter().collect();
        for member in &mut self.members {
            member.assignment = by_member.remove(&member.id).unwrap_or_default();
            let result = SyncGroupResult {
                error: ErrorCode::None,
                protocol_type: self.protocol_type.clone(),
                protocol_name: self.protocol_name.clone(),
                assignment: member.assignment.clone(),
            };
            if member.complete_sync(result) {
                member.touch(now, member.session_timeout);
            }
        }
    }

    fn sync(&mut self, request: SyncGroup, now: Instant) -> Pending<SyncGroupResult> {
        let member_id = request.member_id.as_str();
        if let Err(error) =
            self.validate_current_member(member_id, request.group_instance_id.as_deref())
        {
            return Pending::Ready(sync_error(error));
        }
        if request.generation_id != self.generation {
            return Pending::Ready(sync_error(ErrorCode::IllegalGeneration));
        }
        if request
            .protocol_type
            .as_ref()
            .is_some_and(|t| self.protocol_type.as_ref() != Some(t))
            || request
                .protocol_name
                .as_ref()
                .is_some_and(|n| self.protocol_name.as_ref() != Some(n))
        {
            return Pending::Ready(sync_error(ErrorCode::InconsistentGroupProtocol));
        }
        match self.state {
            GroupState::Empty | GroupState::Dead => {
                Pending::Ready(sync_error(ErrorCode::UnknownMemberId))
            }
            GroupState::PreparingRebalance => {
                Pending::Ready(sync_error(ErrorCode::RebalanceInProgress))
            }
            GroupState::CompletingRebalance => self.sync_completing(request, now),
            GroupState::Stable => {
                self.synced(&request.member_id);
                let Some(member) = self.member_mut(&request.member_id) else {
                    return Pending::Ready(sync_error(ErrorCode::UnknownMemberId));
                };
                member.touch(now, member.session_timeout);
                let assignment = member.assignment.clone();
                Pending::Ready(SyncGroupResult {
                    error: ErrorCode::None,
                    protocol_type: self.protocol_type.clone(),
                    protocol_name: self.protocol_name.clone(),
                    assignment,
                })
            }
        }
    }

    /// SyncGroup while `CompletingRebalance`: park the member; the leader's call distributes.
    fn sync_completing(&mut self, request: SyncGroup, now: Instant) -> Pending<SyncGroupResult> {
        let Some(member) = self.member_mut(&request.member_id) else {
            return Pending::Ready(sync_error(ErrorCode::UnknownMemberId));
        };
        let receiver = member.wait_for_sync();
        self.synced(&request.member_id);
        if self.is_leader(&request.member_id) {
            info!(group = %self.id, generation = self.generation, "assignment received from leader");
            self.set_and_propagate_assignment(request.assignments, now);
            self.state = GroupState::Stable;
        }
        Pending::Wait(receiver)
    }

    /// Notes that a member of the current generation sent SyncGroup.
    fn synced(&mut self, member_id: &str) {
        self.pending_sync.remove(member_id);
        if self.pending_sync.is_empty() {
            self.sync_deadline = None;
        }
    }

    /// Members that never sent SyncGroup within the rebalance timeout are removed, and the
    /// group rebalances (Kafka's `onExpirePendingSync`).
    fn on_sync_deadline(&mut self, now: Instant, config: &GroupConfig) {
        self.sync_deadline = None;
        let stale = !matches!(
            self.state,
            GroupState::CompletingRebalance | GroupState::Stable
        );
        if stale || self.pending_sync.is_empty() {
            self.pending_sync.clear();
            return;
        }
        let missing: Vec<String> = self.pending_sync.drain().collect();
        for member_id in &missing {
            info!(group = %self.id, member = %member_id, "member did not sync in time; removed");
            self.remove_member(member_id);
        }
        self.prepare_rebalance(now, config, "members did not sync in time");
    }

    fn heartbeat(
        &mut self,
        generation_id: i32,
        member_id: &str,
        instance_id: Option<&str>,
        now: Instant,
    ) -> ErrorCode {
        if let Err(error) = self.validate_current_member(member_id, instance_id) {
            return error;
        }
        if generation_id != self.generation {
            return ErrorCode::IllegalGeneration;
        }
        let state = self.state;
        let Some(member) = self.member_mut(member_id) else {
            return ErrorCode::UnknownMemberId;
        };
        match state {
            GroupState::Empty | GroupState::Dead => ErrorCode::UnknownMemberId,
            GroupState::PreparingRebalance => {
                member.touch(now, member.session_timeout);
                ErrorCode::RebalanceInProgress
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                member.touch(now, member.session_timeout);
                ErrorCode::None
            }
        }
    }

    fn leave(&mut self, leaving: &LeavingMember, now: Instant, config: &GroupConfig) -> ErrorCode {
        let member_id = leaving.member_id.as_str();
        let instance_id = leaving.group_instance_id.as_deref();
        if member_id.is_empty() {
            // Administrative removal by group.instance.id.
            let Some(current) = instance_id
                .and_then(|i| self.static_member_id(i))
                .map(str::to_owned)
            else {
                return ErrorCode::UnknownMemberId;
            };
            self.remove_member_and_update(&current, now, config, "left the group");
            return ErrorCode::None;
        }
        if self.pending_members.remove(member_id).is_some() {
            info!(group = %self.id, member = member_id, "pending member left");
            self.try_complete_join(now);
            return ErrorCode::None;
        }
        if let Err(error) = self.validate_current_member(member_id, instance_id) {
            return error;
        }
        self.remove_member_and_update(member_id, now, config, "left the group");
        ErrorCode::None
    }

    /// Removes a member, answering any call it has waiting with `UNKNOWN_MEMBER_ID`; moves
    /// leadership to the longest-standing remaining member.
    fn remove_member(&mut self, member_id: &str) -> Option<Member> {
        let index = self.members.iter().position(|m| m.id == member_id)?;
        let mut member = self.members.remove(index);
        member.complete_join(join_error(String::new(), ErrorCode::UnknownMemberId));
        member.complete_sync(sync_error(ErrorCode::UnknownMemberId));
        if self.is_leader(member_id) {
            self.leader = self.members.first().map(|m| m.id.clone());
        }
        self.pending_members.remove(member_id);
        self.pending_sync.remove(member_id);
        Some(member)
    }

    /// Removes a member and lets the group react: rebalance, or complete the rebalance in
    /// progress if the member was the last one awaited.
    fn remove_member_and_update(
        &mut self,
        member_id: &str,
        now: Instant,
        config: &GroupConfig,
        reason: &str,
    ) {
        if self.remove_member(member_id).is_none() {
            return;
        }
        info!(group = %self.id, member = member_id, reason, "member removed");
        match self.state {
            GroupState::Empty | GroupState::Dead => {}
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.maybe_prepare_rebalance(now, config, reason);
            }
            GroupState::PreparingRebalance => self.try_complete_join(now),
        }
    }

    fn validate_offset_commit(
        &mut self,
        generation_id: i32,
        member_id: &str,
        instance_id: Option<&str>,
        now: Instant,
    ) -> Result<(), ErrorCode> {
        if generation_id >= 0 || !member_id.is_empty() || instance_id.is_some() {
            self.validate_current_member(member_id, instance_id)?;
            if generation_id != self.generation {
                return Err(ErrorCode::IllegalGeneration);
            }
        } else if self.state != GroupState::Empty {
            // A commit from outside group management while the group has members.
            return Err(ErrorCode::UnknownMemberId);
        }
        match self.state {
            GroupState::Empty => Ok(()),
            GroupState::Dead => Err(ErrorCode::CoordinatorNotAvailable),
            GroupState::CompletingRebalance => Err(ErrorCode::RebalanceInProgress),
            GroupState::Stable | GroupState::PreparingRebalance => {
                if let Some(member) = self.member_mut(member_id) {
                    member.touch(now, member.session_timeout);
                }
                Ok(())
            }
        }
    }

    fn describe(&self) -> GroupDescription {
        let stable_protocol = match self.state {
            GroupState::Stable => self.protocol_name.clone(),
            _ => None,
        };
        let members = self
            .members
            .iter()
            .map(|m| MemberDescription {
                member_id: m.id.clone(),
                group_instance_id: m.instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                metadata: stable_protocol
                    .as_deref()
                    .map(|p| m.metadata(p))
                    .unwrap_or_default(),
                assignment: if stable_protocol.is_some() {
                    m.assignment.clone()
                } else {
                    Bytes::new()
                },
            })
            .collect();
        GroupDescription {
            error: ErrorCode::None,
            group_id: self.id.clone(),
            state: self.state,
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            protocol: stable_protocol.unwrap_or_default(),
            members,
        }
    }

    /// Fires whatever is due at `now`. Leaves no deadline at or before `now`.
    fn tick(&mut self, now: Instant, config: &GroupConfig) {
        let pending_before = self.pending_members.len();
        self.pending_members.retain(|_, lapses| *lapses > now);
        if self.pending_members.len() != pending_before {
            debug!(group = %self.id, "pending member ids lapsed");
            self.try_complete_join(now);
        }
        self.expire_members(now, config);
        if self.state == GroupState::PreparingRebalance
            && self.join_deadline.is_some_and(|at| at <= now)
        {
            self.on_join_deadline(now, config);
        }
        if self.sync_deadline.is_some_and(|at| at <= now) {
            self.on_sync_deadline(now, config);
        }
    }

    /// Removes members whose session ran out (unless they are waiting in JoinGroup or
    /// SyncGroup, which keeps them alive until the rebalance moves on).
    fn expire_members(&mut self, now: Instant, config: &GroupConfig) {
        let due: Vec<String> = self
            .members
            .iter()
            .filter(|m| m.expires_at.is_some_and(|at| at <= now))
            .map(|m| m.id.clone())
            .collect();
        for member_id in due {
            let Some(member) = self.member_mut(&member_id) else {
                continue;
            };
            if member.expires_at.is_none_or(|at| at > now) {
                continue; // re-armed by a rebalance triggered by an earlier expiry
            }
            if member.keep_alive(now) {
                member.expires_at = None;
            } else {
                self.remove_member_and_update(&member_id, now, config, "session expired");
            }
        }
    }

    /// The group's earliest deadline.
    fn next_deadline(&self) -> Option<Instant> {
        let join = match self.state {
            GroupState::PreparingRebalance => self.join_deadline,
            _ => None,
        };
        self.pending_members
            .values()
            .copied()
            .chain(self.members.iter().filter_map(|m| m.expires_at))
            .chain(join)
            .chain(self.sync_deadline)
            .min()
    }

    /// Answers every waiting call with `error` (on shutdown).
    fn fail_waiters(&mut self, error: ErrorCode) {
        for member in &mut self.members {
            member.complete_join(join_error(member.id.clone(), error));
            member.complete_sync(sync_error(error));
        }
    }
}

/// `now + duration`, saturating far in the future instead of overflowing.
fn after(now: Instant, duration: Duration) -> Instant {
    now.checked_add(duration)
        .or_else(|| now.checked_add(Duration::from_secs(365 * 24 * 3600)))
        .unwrap_or(now)
}

fn millis(ms: i32) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

fn session_timeout_is_valid(session_timeout_ms: i32, config: &GroupConfig) -> bool {
    let ms = u128::try_from(session_timeout_ms).unwrap_or(0);
    session_timeout_ms >= 0
        && ms >= config.min_session_timeout.as_millis()
        && ms <= config.max_session_timeout.as_millis()
}

fn join_error(member_id: String, error: ErrorCode) -> JoinGroupResult {
    JoinGroupResult {
        error,
        generation_id: -1,
        protocol_type: None,
        protocol_name: None,
        leader: String::new(),
        member_id,
        members: Vec::new(),
        skip_assignment: false,
    }
}

fn sync_error(error: ErrorCode) -> SyncGroupResult {
    SyncGroupResult {
        error,
        protocol_type: None,
        protocol_name: None,
        assignment: Bytes::new(),
    }
}

fn leave_error(error: ErrorCode) -> LeaveGroupResult {
    LeaveGroupResult {
        error,
        members: Vec::new(),
    }
}

fn leave_member(member: LeavingMember, error: ErrorCode) -> LeaveMemberResult {
    LeaveMemberResult {
        member_id: member.member_id,
        group_instance_id: member.group_instance_id,
        error,
    }
}

fn dead_group(group_id: &str) -> GroupDescription {
    GroupDescription {
        error: ErrorCode::None,
        group_id: group_id.to_owned(),
        state: GroupState::Dead,
        protocol_type: String::new(),
        protocol: String::new(),
        members: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SESSION_MS: i32 = 10_000;
    const REBALANCE_MS: i32 = 20_000;

    fn config() -> GroupConfig {
        GroupConfig {
            initial_rebalance_delay: Duration::from_millis(100),
            ..GroupConfig::default()
        }
    }

    fn coordinator() -> GroupCoordinator {
        GroupCoordinator::new(config())
    }

    fn join_request(group: &str, member_id: &str, client: &str) -> JoinGroup {
        JoinGroup {
            group_id: group.to_owned(),
            session_timeout_ms: SESSION_MS,
            rebalance_timeout_ms: REBALANCE_MS,
            member_id: member_id.to_owned(),
            group_instance_id: None,
            protocol_type: "consumer".to_owned(),
            protocols: vec![("range".to_owned(), Bytes::from(format!("meta-{client}")))],
            client_id: client.to_owned(),
            client_host: "/127.0.0.1".to_owned(),
            requires_known_member_id: false,
        }
    }

    fn sync_request(
        group: &str,
        joined: &JoinGroupResult,
        assignments: Vec<(String, Bytes)>,
    ) -> SyncGroup {
        SyncGroup {
            group_id: group.to_owned(),
            generation_id: joined.generation_id,
            member_id: joined.member_id.clone(),
            group_instance_id: None,
            protocol_type: Some("consumer".to_owned()),
            protocol_name: joined.protocol_name.clone(),
            assignments,
        }
    }

    fn spawn_join(
        coordinator: &GroupCoordinator,
        request: JoinGroup,
    ) -> tokio::task::JoinHandle<JoinGroupResult> {
        let coordinator = coordinator.clone();
        tokio::spawn(async move { coordinator.join(request).await })
    }

    fn spawn_sync(
        coordinator: &GroupCoordinator,
        request: SyncGroup,
    ) -> tokio::task::JoinHandle<SyncGroupResult> {
        let coordinator = coordinator.clone();
        tokio::spawn(async move { coordinator.sync(request).await })
    }

    /// Lets spawned tasks run until they park (paused time advances only when all are idle).
    async fn settle() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }

    /// Joins one member into a fresh group and syncs it to `Stable`.
    async fn stable_single(c: &GroupCoordinator, group: &str, client: &str) -> JoinGroupResult {
        let joined = c.join(join_request(group, "", client)).await;
        assert_eq!(joined.error, ErrorCode::None);
        let synced = c
            .sync(sync_request(
                group,
                &joined,
                vec![(joined.member_id.clone(), Bytes::from_static(b"all"))],
            ))
            .await;
        assert_eq!(synced.error, ErrorCode::None);
        joined
    }

    /// Two members `a` (leader) and `b` joined and synced; returns (a, b).
    async fn stable_pair(c: &GroupCoordinator, group: &str) -> (JoinGroupResult, JoinGroupResult) {
        let a = spawn_join(c, join_request(group, "", "a"));
        settle().await;
        let b = spawn_join(c, join_request(group, "", "b"));
        let (a, b) = (a.await.unwrap(), b.await.unwrap());
        assert_eq!(a.error, ErrorCode::None);
        assert_eq!(b.error, ErrorCode::None);
        let follower = spawn_sync(c, sync_request(group, &b, vec![]));
        let leader = c
            .sync(sync_request(
                group,
                &a,
                vec![
                    (a.member_id.clone(), Bytes::from_static(b"p0")),
                    (b.member_id.clone(), Bytes::from_static(b"p1")),
                ],
            ))
            .await;
        assert_eq!(leader.error, ErrorCode::None);
        assert_eq!(follower.await.unwrap().error, ErrorCode::None);
        assert_eq!(c.describe(group).state, GroupState::Stable);
        (a, b)
    }

    #[tokio::test(start_paused = true)]
    async fn single_member_joins_and_syncs_to_stable_generation_one() {
        let c = coordinator();
        let started = Instant::now();
        let joined = c.join(join_request("g", "", "client-1")).await;
        assert_eq!(joined.error, ErrorCode::None);
        assert!(
            started.elapsed() >= Duration::from_millis(100),
            "initial delay applies"
        );
        assert_eq!(joined.generation_id, 1);
        assert_eq!(joined.leader, joined.member_id);
        assert!(joined.member_id.starts_with("client-1-"));
        assert_eq!(joined.protocol_type.as_deref(), Some("consumer"));
        assert_eq!(joined.protocol_name.as_deref(), Some("range"));
        assert_eq!(joined.members.len(), 1);
        assert_eq!(
            joined.members[0].metadata,
            Bytes::from_static(b"meta-client-1")
        );
        assert_eq!(c.describe("g").state, GroupState::CompletingRebalance);

        let synced = c
            .sync(sync_request(
                "g",
                &joined,
                vec![(joined.member_id.clone(), Bytes::from_static(b"assignment"))],
            ))
            .await;
        assert_eq!(synced.error, ErrorCode::None);
        assert_eq!(synced.assignment, Bytes::from_static(b"assignment"));
        assert_eq!(synced.protocol_name.as_deref(), Some("range"));

        let described = c.describe("g");
        assert_eq!(described.state, GroupState::Stable);
        assert_eq!(described.state.as_str(), "Stable");
        assert_eq!(described.protocol, "range");
        assert_eq!(
            described.members[0].assignment,
            Bytes::from_static(b"assignment")
        );
        assert_eq!(
            described.members[0].metadata,
            Bytes::from_static(b"meta-client-1")
        );
        assert_eq!(described.members[0].client_host, "/127.0.0.1");
        assert_eq!(
            c.heartbeat("g", 1, &joined.member_id, None),
            ErrorCode::None
        );
    }

    #[tokio::test(start_paused = true)]
    async fn default_config_is_kafkas() {
        let config = GroupConfig::default();
        assert_eq!(config.min_session_timeout, Duration::from_secs(6));
        assert_eq!(config.max_session_timeout, Duration::from_secs(30 * 60));
        assert_eq!(config.initial_rebalance_delay, Duration::from_secs(3));
        assert_eq!(config.max_group_size, None);
        let c = GroupCoordinator::new(config);
        let started = Instant::now();
        let joined = c.join(join_request("g", "", "x")).await;
        assert_eq!(joined.error, ErrorCode::None);
        assert_eq!(started.elapsed(), Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn member_id_required_then_rejoin_with_the_given_id() {
        let c = coordinator();
        let mut request = join_request("g", "", "client-7");
        request.requires_known_member_id = true;
        let first = c.join(request.clone()).await;
        assert_eq!(first.error, ErrorCode::MemberIdRequired);
        assert_eq!(first.generation_id, -1);
        assert!(
            first.member_id.starts_with("client-7-"),
            "{}",
            first.member_id
        );
        assert!(first.member_id.len() > "client-7-".len() + 30);
        // The group exists (Empty) before the member really joins.
        assert_eq!(c.list()[0].state, GroupState::Empty);

        request.member_id = first.member_id.clone();
        let second = c.join(request).await;
        assert_eq!(second.error, ErrorCode::None);
        assert_eq!(second.member_id, first.member_id);
        assert_eq!(second.generation_id, 1);
        assert_eq!(second.leader, first.member_id);
    }

    #[tokio::test(start_paused = true)]
    async fn a_pending_member_id_holds_the_rebalance_until_it_lapses() {
        let c = coordinator();
        let a = stable_single(&c, "g", "a").await;
        let mut newcomer = join_request("g", "", "c");
        newcomer.requires_known_member_id = true;
        let pending = c.join(newcomer).await;
        assert_eq!(pending.error, ErrorCode::MemberIdRequired);
        assert_eq!(
            c.describe("g").state,
            GroupState::Stable,
            "no rebalance yet"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(c.heartbeat("g", 1, &a.member_id, None), ErrorCode::None);
        // The leader rejoins: everyone known has joined, but the pending id is still expected
        // until it lapses (its session timeout after it was handed out).
        let started = Instant::now();
        let rejoined = c.join(join_request("g", &a.member_id, "a")).await;
        assert_eq!(
            started.elapsed(),
            Duration::from_millis(SESSION_MS as u64 - 2_000)
        );
        assert_eq!(rejoined.generation_id, 2);
        assert_eq!(rejoined.members.len(), 1);
        // The lapsed id is unknown now.
        let mut late = join_request("g", &pending.member_id, "c");
        late.requires_known_member_id = true;
        assert_eq!(c.join(late).await.error, ErrorCode::UnknownMemberId);
    }

    #[tokio::test(start_paused = true)]
    async fn a_pending_member_coming_back_joins_the_same_rebalance() {
        let c = coordinator();
        let a = stable_single(&c, "g", "a").await;
        let mut newcomer = join_request("g", "", "c");
        newcomer.requires_known_member_id = true;
        let pending = c.join(newcomer.clone()).await;
        let leader = spawn_join(&c, join_request("g", &a.member_id, "a"));
        settle().await;
        assert!(!leader.is_finished(), "waits for the pending member");
        newcomer.member_id = pending.member_id.clone();
        let joined = c.join(newcomer).await;
        let leader = leader.await.unwrap();
        assert_eq!((joined.generation_id, leader.generation_id), (2, 2));
        assert_eq!(joined.member_id, pending.member_id);
        assert_eq!(leader.members.len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn two_members_share_a_generation_and_the_leader_assigns() {
        let c = coordinator();
        let a = spawn_join(&c, join_request("g", "", "a"));
        settle().await;
        let b = spawn_join(&c, join_request("g", "", "b"));
        let (a, b) = (a.await.unwrap(), b.await.unwrap());
        assert_eq!((a.error, b.error), (ErrorCode::None, ErrorCode::None));
        assert_eq!((a.generation_id, b.generation_id), (1, 1));
        assert_eq!(a.leader, a.member_id, "first joiner leads");
        assert_eq!(b.leader, a.member_id);
        assert!(b.members.is_empty(), "followers get no member list");
        let mut seen: Vec<(String, Bytes)> = a
            .members
            .iter()
            .map(|m| (m.member_id.clone(), m.metadata.clone()))
            .collect();
        seen.sort();
        let mut expected = vec![
            (a.member_id.clone(), Bytes::from_static(b"meta-a")),
            (b.member_id.clone(), Bytes::from_static(b"meta-b")),
        ];
        expected.sort();
        assert_eq!(seen, expected);

        // The follower waits until the leader syncs.
        let follower = spawn_sync(&c, sync_request("g", &b, vec![]));
        settle().await;
        assert!(!follower.is_finished());
        let leader = c
            .sync(sync_request(
                "g",
                &a,
                vec![
                    (a.member_id.clone(), Bytes::from_static(b"p0")),
                    (b.member_id.clone(), Bytes::from_static(b"p1")),
                ],
            ))
            .await;
        assert_eq!(leader.assignment, Bytes::from_static(b"p0"));
        let follower = follower.await.unwrap();
        assert_eq!(follower.error, ErrorCode::None);
        assert_eq!(follower.assignment, Bytes::from_static(b"p1"));
        assert_eq!(c.describe("g").state, GroupState::Stable);
    }

    #[tokio::test(start_paused = true)]
    async fn a_third_member_triggers_a_rebalance_and_the_generation_increments() {
        let c = coordinator();
        let (a, b) = stable_pair(&c, "g").await;
        let third = spawn_join(&c, join_request("g", "", "c"));
        settle().await;
        assert_eq!(c.describe("g").state, GroupState::PreparingRebalance);
        assert_eq!(
            c.heartbeat("g", 1, &a.member_id, None),
            ErrorCode::RebalanceInProgress
        );
        assert_eq!(
            c.heartbeat("g", 1, &b.member_id, None),
            ErrorCode::RebalanceInProgress
        );
        // A sync now is refused as well.
        let early = c.sync(sync_request("g", &a, vec![])).await;
        assert_eq!(early.error, ErrorCode::RebalanceInProgress);

        let a2 = spawn_join(&c, join_request("g", &a.member_id, "a"));
        let b2 = spawn_join(&c, join_request("g", &b.member_id, "b"));
        let (a2, b2, c3) = (a2.await.unwrap(), b2.await.unwrap(), third.await.unwrap());
        for joined in [&a2, &b2, &c3] {
            assert_eq!(joined.error, ErrorCode::None);
            assert_eq!(joined.generation_id, 2);
            assert_eq!(joined.leader, a.member_id, "the leader is kept");
        }
        assert_eq!(a2.members.len(), 3);
        assert_eq!(
            c.heartbeat("g", 1, &a.member_id, None),
            ErrorCode::IllegalGeneration
        );
        assert_eq!(c.heartbeat("g", 2, &a.member_id, None), ErrorCode::None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_member_expires_and_the_other_rebalances_alone() {
        let c = coordinator();
        let (a, b) = stable_pair(&c, "g").await;
        // a heartbeats every 3 s; b stays silent.
        let mut error = ErrorCode::None;
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_secs(3)).await;
            error = c.heartbeat("g", 1, &a.member_id, None);
            if error != ErrorCode::None {
                break;
            }
        }
        assert_eq!(error, ErrorCode::RebalanceInProgress);
        assert_eq!(
            c.heartbeat("g", 1, &b.member_id, None),
            ErrorCode::UnknownMemberId
        );
        let rejoined = c.join(join_request("g", &a.member_id, "a")).await;
        assert_eq!(rejoined.error, ErrorCode::None);
        assert_eq!(rejoined.generation_id, 2);
        assert_eq!(rejoined.members.len(), 1);
        assert_eq!(rejoined.members[0].member_id, a.member_id);
    }

    #[tokio::test(start_paused = true)]
    async fn the_rebalance_timeout_drops_a_member_that_does_not_rejoin() {
        let c = coordinator();
        let (a, b) = stable_pair(&c, "g").await;
        let mut request = join_request("g", &a.member_id, "a");
        request.session_timeout_ms = 30_000;
        request.rebalance_timeout_ms = 5_000;
        // b keeps heartbeating (so its session does not expire) but never rejoins.
        let started = Instant::now();
        let rejoin = {
            let c = c.clone();
            tokio::spawn(async move { (c.join(request).await, started.elapsed()) })
        };
        let mut b_errors = Vec::new();
        for _ in 0..120 {
            if rejoin.is_finished() {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            b_errors.push(c.heartbeat("g", 1, &b.member_id, None));
        }
        assert!(rejoin.is_finished(), "never completed");
        let (rejoined, took) = rejoin.await.unwrap();
        // The group's rebalance timeout is the largest of the members': b's 20 s.
        assert_eq!(took, Duration::from_millis(REBALANCE_MS as u64));
        assert_eq!(rejoined.error, ErrorCode::None);
        assert_eq!(rejoined.generation_id, 2);
        assert_eq!(rejoined.members.len(), 1);
        assert!(b_errors.contains(&ErrorCode::RebalanceInProgress));
        assert_eq!(
            c.heartbeat("g", 2, &b.member_id, None),
            ErrorCode::UnknownMemberId
        );
    }

    #[tokio::test(start_paused = true)]
    async fn leave_makes_the_remaining_member_rebalance() {
        let c = coordinator();
        let (a, b) = stable_pair(&c, "g").await;
        let left = c.leave(
            "g",
            vec![LeavingMember {
                member_id: b.member_id.clone(),
                group_instance_id: None,
            }],
        );
        assert_eq!(left.error, ErrorCode::None);
        assert_eq!(left.members[0].error, ErrorCode::None);
        assert_eq!(
            c.heartbeat("g", 1, &a.member_id, None),
            ErrorCode::RebalanceInProgress
        );
        let rejoined = c.join(join_request("g", &a.member_id, "a")).await;
        assert_eq!(rejoined.generation_id, 2);
        assert_eq!(rejoined.members.len(), 1);
        // Leaving again with an unknown id is reported per member.
        let again = c.leave(
            "g",
            vec![LeavingMember {
                member_id: b.member_id.clone(),
                group_instance_id: None,
            }],
        );
        assert_eq!(again.members[0].error, ErrorCode::UnknownMemberId);
    }

    fn static_request(group: &str, member_id: &str, instance: &str, protocol: &str) -> JoinGroup {
        let mut request = join_request(group, member_id, instance);
        request.group_instance_id = Some(instance.to_owned());
        request.protocols = vec![(protocol.to_owned(), Bytes::from_static(b"m"))];
        request.requires_known_member_id = true; // never applies to static members
        request
    }

    #[tokio::test(start_paused = true)]
    async fn a_static_member_rejoining_replaces_and_fences_the_old_id_without_rebalance() {
        let c = coordinator();
        let first = c.join(static_request("g", "", "i1", "range")).await;
        assert_eq!(
            first.error,
            ErrorCode::None,
            "no MEMBER_ID_REQUIRED for static members"
        );
        assert!(first.member_id.starts_with("i1-"));
        let mut sync = sync_request(
            "g",
            &first,
            vec![(first.member_id.clone(), Bytes::from_static(b"a1"))],
        );
        sync.group_instance_id = Some("i1".to_owned());
        assert_eq!(c.sync(sync).await.error, ErrorCode::None);

        // The process restarts: same instance id, no member id.
        let second = c.join(static_request("g", "", "i1", "range")).await;
        assert_eq!(second.error, ErrorCode::None);
        assert_ne!(second.member_id, first.member_id);
        assert_eq!(second.generation_id, 1, "no rebalance");
        assert_eq!(
            second.leader, first.member_id,
            "old leader id, so no assignment is run"
        );
        assert_eq!(c.describe("g").state, GroupState::Stable);

        assert_eq!(
            c.heartbeat("g", 1, &first.member_id, Some("i1")),
            ErrorCode::FencedInstanceId
        );
        assert_eq!(
            c.heartbeat("g", 1, &second.member_id, Some("i1")),
            ErrorCode::None
        );
        let mut sync = sync_request("g", &second, vec![]);
        sync.group_instance_id = Some("i1".to_owned());
        let synced = c.sync(sync).await;
        assert_eq!(synced.error, ErrorCode::None);
        assert_eq!(
            synced.assignment,
            Bytes::from_static(b"a1"),
            "keeps its assignment"
        );
        let left = c.leave(
            "g",
            vec![LeavingMember {
                member_id: first.member_id.clone(),
                group_instance_id: Some("i1".to_owned()),
            }],
        );
        assert_eq!(left.members[0].error, ErrorCode::FencedInstanceId);
    }

    #[tokio::test(start_paused = true)]
    async fn a_static_member_changing_the_selected_protocol_rebalances() {
        let c = coordinator();
        let mut request = static_request("g", "", "i1", "range");
        request.protocols = vec![
            ("range".to_owned(), Bytes::from_static(b"m")),
            ("roundrobin".to_owned(), Bytes::from_static(b"m")),
        ];
        let first = c.join(request).await;
        assert_eq!(first.protocol_name.as_deref(), Some("range"));
        let mut sync = sync_request("g", &first, vec![]);
        sync.group_instance_id = Some("i1".to_owned());
        assert_eq!(c.sync(sync).await.error, ErrorCode::None);

        let second = c.join(static_request("g", "", "i1", "roundrobin")).await;
        assert_eq!(second.error, ErrorCode::None);
        assert_eq!(second.generation_id, 2);
        assert_eq!(second.protocol_name.as_deref(), Some("roundrobin"));
        assert_eq!(second.leader, second.member_id);
    }

    #[tokio::test(start_paused = true)]
    async fn a_static_member_that_does_not_rejoin_stays_in_the_generation() {
        let c = coordinator();
        let s = spawn_join(&c, static_request("g", "", "i1", "range"));
        settle().await;
        let d = spawn_join(&c, join_request("g", "", "d"));
        let (s, d) = (s.await.unwrap(), d.await.unwrap());
        assert_eq!(s.generation_id, 1);
        let mut leader_sync = sync_request("g", &s, vec![]);
        leader_sync.group_instance_id = Some("i1".to_owned());
        let follower = spawn_sync(&c, sync_request("g", &d, vec![]));
        assert_eq!(c.sync(leader_sync).await.error, ErrorCode::None);
        assert_eq!(follower.await.unwrap().error, ErrorCode::None);
        // d rejoins with new metadata; the static leader keeps heartbeating but does not rejoin.
        let mut changed = join_request("g", &d.member_id, "d");
        changed.protocols = vec![("range".to_owned(), Bytes::from_static(b"new-topics"))];
        let rejoin = spawn_join(&c, changed);
        for _ in 0..120 {
            if rejoin.is_finished() {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            let _ = c.heartbeat("g", 1, &s.member_id, Some("i1"));
        }
        assert!(rejoin.is_finished(), "never completed");
        let rejoined = rejoin.await.unwrap();
        assert_eq!(rejoined.generation_id, 2);
        assert_eq!(rejoined.leader, d.member_id, "a rejoined member leads");
        assert_eq!(rejoined.members.len(), 2, "the static member is kept");
    }

    #[tokio::test(start_paused = true)]
    async fn heartbeat_errors() {
        let c = coordinator();
        let joined = stable_single(&c, "g", "a").await;
        assert_eq!(
            c.heartbeat("g", 7, &joined.member_id, None),
            ErrorCode::IllegalGeneration
        );
        assert_eq!(
            c.heartbeat("g", 1, "nobody", None),
            ErrorCode::UnknownMemberId
        );
        assert_eq!(
            c.heartbeat("other", 1, &joined.member_id, None),
            ErrorCode::UnknownMemberId
        );
        assert_eq!(
            c.heartbeat("", 1, &joined.member_id, None),
            ErrorCode::InvalidGroupId
        );
        assert_eq!(
            c.heartbeat("g", 1, &joined.member_id, Some("i9")),
            ErrorCode::UnknownMemberId
        );
        let sync = c
            .sync(sync_request(
                "g",
                &JoinGroupResult {
                    generation_id: 3,
                    ..joined.clone()
                },
                vec![],
            ))
            .await;
        assert_eq!(sync.error, ErrorCode::IllegalGeneration);
        // A join with a member id the group never gave out.
        let unknown = c.join(join_request("g", "made-up", "x")).await;
        assert_eq!(unknown.error, ErrorCode::UnknownMemberId);
        let no_group = c.join(join_request("nope", "made-up", "x")).await;
        assert_eq!(no_group.error, ErrorCode::UnknownMemberId);
        assert!(!c.group_is_known("nope"));
    }

    #[tokio::test(start_paused = true)]
    async fn inconsistent_protocols_are_refused() {
        let c = coordinator();
        let joined = stable_single(&c, "g", "a").await;
        let mut other_type = join_request("g", "", "b");
        other_type.protocol_type = "connect".to_owned();
        let refused = c.join(other_type).await;
        assert_eq!(refused.error, ErrorCode::InconsistentGroupProtocol);
        let mut no_common = join_request("g", "", "b");
        no_common.protocols = vec![("sticky".to_owned(), Bytes::new())];
        assert_eq!(
            c.join(no_common).await.error,
            ErrorCode::InconsistentGroupProtocol
        );
        let mut empty = join_request("fresh", "", "b");
        empty.protocols.clear();
        assert_eq!(
            c.join(empty).await.error,
            ErrorCode::InconsistentGroupProtocol
        );
        assert!(
            !c.group_is_known("fresh"),
            "a failed first join creates no group"
        );
        let mut wrong_name = sync_request("g", &joined, vec![]);
        wrong_name.protocol_name = Some("roundrobin".to_owned());
        assert_eq!(
            c.sync(wrong_name).await.error,
            ErrorCode::InconsistentGroupProtocol
        );
        assert_eq!(
            c.describe("g").state,
            GroupState::Stable,
            "refusals change nothing"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn session_timeouts_outside_the_bounds_are_refused() {
        let c = coordinator();
        for session in [0, 5_999, 1_800_001, -1] {
            let mut request = join_request("g", "", "a");
            request.session_timeout_ms = session;
            assert_eq!(
                c.join(request).await.error,
                ErrorCode::InvalidSessionTimeout,
                "{session}"
            );
        }
        let mut request = join_request("g", "", "a");
        request.session_timeout_ms = 6_000;
        assert_eq!(c.join(request).await.error, ErrorCode::None);
    }

    #[tokio::test(start_paused = true)]
    async fn protocol_selection_is_by_vote_among_common_protocols() {
        let c = coordinator();
        let prefs = [
            vec!["roundrobin", "range"],
            vec!["range", "roundrobin", "sticky"],
            vec!["range", "roundrobin"],
        ];
        let mut handles = Vec::new();
        for (i, pref) in prefs.iter().enumerate() {
            let mut request = join_request("g", "", &format!("m{i}"));
            request.protocols = pref
                .iter()
                .map(|p| ((*p).to_owned(), Bytes::from(format!("{p}-{i}"))))
                .collect();
            handles.push(spawn_join(&c, request));
            settle().await;
        }
        for handle in handles {
            let joined = handle.await.unwrap();
            assert_eq!(joined.protocol_name.as_deref(), Some("range"));
            if joined.leader == joined.member_id {
                assert!(
                    joined
                        .members
                        .iter()
                        .all(|m| m.metadata.starts_with(b"range-"))
                );
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn describe_list_and_delete_follow_the_states() {
        let c = coordinator();
        let unknown = c.describe("nope");
        assert_eq!(
            (unknown.error, unknown.state.as_str()),
            (ErrorCode::None, "Dead")
        );
        let (a, b) = stable_pair(&c, "g").await;
        let listed = c.list();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].group_id, "g");
        assert_eq!(listed[0].protocol_type, "consumer");
        assert_eq!(listed[0].state, GroupState::Stable);
        let described = c.describe("g");
        assert_eq!(described.members.len(), 2);
        assert_eq!(described.protocol_type, "consumer");

        let results = c.delete(&["g".to_owned(), "nope".to_owned()]);
        assert_eq!(
            results,
            vec![
                ("g".to_owned(), ErrorCode::NonEmptyGroup),
                ("nope".to_owned(), ErrorCode::GroupIdNotFound)
            ]
        );
        let left = c.leave(
            "g",
            vec![
                LeavingMember {
                    member_id: a.member_id.clone(),
                    group_instance_id: None,
                },
                LeavingMember {
                    member_id: b.member_id.clone(),
                    group_instance_id: None,
                },
            ],
        );
        assert!(left.members.iter().all(|m| m.error == ErrorCode::None));
        let described = c.describe("g");
        assert_eq!(described.state, GroupState::Empty);
        assert_eq!(described.protocol, "");
        assert_eq!(described.protocol_type, "consumer");
        assert!(described.members.is_empty());
        assert_eq!(
            c.delete(&["g".to_owned(), "g".to_owned()]),
            vec![("g".to_owned(), ErrorCode::None)]
        );
        assert!(!c.group_is_known("g"));
        assert!(c.list().is_empty());
        assert_eq!(c.describe("g").state, GroupState::Dead);
    }

    #[tokio::test(start_paused = true)]
    async fn ensure_group_creates_an_empty_listed_group() {
        let c = coordinator();
        c.ensure_group("restored");
        assert!(c.group_is_known("restored"));
        assert_eq!(c.list()[0].state, GroupState::Empty);
        assert_eq!(c.list()[0].protocol_type, "");
        let joined = c.join(join_request("restored", "", "a")).await;
        assert_eq!(joined.generation_id, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn offset_commit_validation_follows_kafka() {
        let c = coordinator();
        // Simple commit to an unknown group creates it Empty.
        assert_eq!(c.validate_offset_commit("simple", -1, "", None), Ok(()));
        assert!(c.group_is_known("simple"));
        assert_eq!(c.list()[0].state, GroupState::Empty);
        assert_eq!(c.validate_offset_commit("simple", -1, "", None), Ok(()));
        // A generation for a group that does not exist.
        assert_eq!(
            c.validate_offset_commit("ghost", 3, "m", None),
            Err(ErrorCode::IllegalGeneration)
        );
        assert!(!c.group_is_known("ghost"));
        // Member commits against an Empty group.
        assert_eq!(
            c.validate_offset_commit("simple", -1, "m", None),
            Err(ErrorCode::UnknownMemberId)
        );

        let (a, _) = stable_pair(&c, "g").await;
        assert_eq!(c.validate_offset_commit("g", 1, &a.member_id, None), Ok(()));
        assert_eq!(
            c.validate_offset_commit("g", 2, &a.member_id, None),
            Err(ErrorCode::IllegalGeneration)
        );
        assert_eq!(
            c.validate_offset_commit("g", 1, "stranger", None),
            Err(ErrorCode::UnknownMemberId)
        );
        assert_eq!(
            c.validate_offset_commit("g", -1, "", None),
            Err(ErrorCode::UnknownMemberId),
            "simple commits are refused while the group has members"
        );

        // During PreparingRebalance commits of the old generation are still accepted...
        let rejoin = spawn_join(&c, join_request("g", &a.member_id, "a"));
        settle().await;
        assert_eq!(c.describe("g").state, GroupState::PreparingRebalance);
        assert_eq!(c.validate_offset_commit("g", 1, &a.member_id, None), Ok(()));
        // ...and during CompletingRebalance they get REBALANCE_IN_PROGRESS.
        let rejoined = rejoin.await.unwrap();
        assert_eq!(c.describe("g").state, GroupState::CompletingRebalance);
        assert_eq!(
            c.validate_offset_commit("g", rejoined.generation_id, &a.member_id, None),
            Err(ErrorCode::RebalanceInProgress)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_leader_that_never_syncs_is_dropped_and_followers_told_to_rejoin() {
        let c = coordinator();
        let a = spawn_join(&c, join_request("g", "", "a"));
        settle().await;
        let b = spawn_join(&c, join_request("g", "", "b"));
        let (a, b) = (a.await.unwrap(), b.await.unwrap());
        // The leader keeps heartbeating (so only the sync deadline can remove it).
        let started = Instant::now();
        let follower = {
            let c = c.clone();
            let request = sync_request("g", &b, vec![]);
            tokio::spawn(async move { (c.sync(request).await, started.elapsed()) })
        };
        let mut leader_errors = Vec::new();
        for _ in 0..120 {
            if follower.is_finished() {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            leader_errors.push(c.heartbeat("g", 1, &a.member_id, None));
        }
        assert!(follower.is_finished(), "never completed");
        let (synced, took) = follower.await.unwrap();
        assert_eq!(synced.error, ErrorCode::RebalanceInProgress);
        assert_eq!(took, Duration::from_millis(REBALANCE_MS as u64));
        assert_eq!(
            leader_errors[0],
            ErrorCode::None,
            "heartbeats are fine while awaiting sync"
        );
        assert_eq!(
            c.heartbeat("g", 1, &a.member_id, None),
            ErrorCode::UnknownMemberId
        );
        let rejoined = c.join(join_request("g", &b.member_id, "b")).await;
        assert_eq!(rejoined.generation_id, 2);
        assert_eq!(rejoined.leader, b.member_id);
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_leader_expires_while_a_follower_waits_in_sync() {
        let c = coordinator();
        let a = spawn_join(&c, join_request("g", "", "a"));
        settle().await;
        let b = spawn_join(&c, join_request("g", "", "b"));
        let (a, b) = (a.await.unwrap(), b.await.unwrap());
        let started = Instant::now();
        let synced = c.sync(sync_request("g", &b, vec![])).await;
        assert_eq!(synced.error, ErrorCode::RebalanceInProgress);
        // The follower waiting in sync is kept alive; the silent leader's session ran out.
        assert_eq!(started.elapsed(), Duration::from_millis(SESSION_MS as u64));
        assert_eq!(
            c.heartbeat("g", 1, &a.member_id, None),
            ErrorCode::UnknownMemberId
        );
        assert_eq!(
            c.heartbeat("g", 1, &b.member_id, None),
            ErrorCode::RebalanceInProgress
        );
    }

    #[tokio::test(start_paused = true)]
    async fn members_joining_during_the_initial_delay_share_the_first_generation() {
        let mut config = config();
        config.initial_rebalance_delay = Duration::from_secs(3);
        let c = GroupCoordinator::new(config);
        let started = Instant::now();
        let a = spawn_join(&c, join_request("g", "", "a"));
        tokio::time::sleep(Duration::from_secs(2)).await;
        let b = spawn_join(&c, join_request("g", "", "b"));
        let (a, b) = (a.await.unwrap(), b.await.unwrap());
        assert_eq!((a.generation_id, b.generation_id), (1, 1));
        assert_eq!(a.members.len(), 2);
        // b arrived during the delay, so the delay was extended once.
        assert_eq!(started.elapsed(), Duration::from_secs(6));
    }

    #[tokio::test(start_paused = true)]
    async fn stable_follower_rejoin_is_answered_at_once_and_leader_rejoin_rebalances() {
        let c = coordinator();
        let (a, b) = stable_pair(&c, "g").await;
        let follower = c.join(join_request("g", &b.member_id, "b")).await;
        assert_eq!(follower.error, ErrorCode::None);
        assert_eq!(follower.generation_id, 1);
        assert_eq!(c.describe("g").state, GroupState::Stable);
        let leader = spawn_join(&c, join_request("g", &a.member_id, "a"));
        settle().await;
        assert_eq!(c.describe("g").state, GroupState::PreparingRebalance);
        let b2 = c.join(join_request("g", &b.member_id, "b")).await;
        assert_eq!(b2.generation_id, 2);
        assert_eq!(leader.await.unwrap().generation_id, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn max_group_size_refuses_extra_members() {
        let mut config = config();
        config.max_group_size = Some(1);
        let c = GroupCoordinator::new(config);
        let _a = stable_single(&c, "g", "a").await;
        let refused = c.join(join_request("g", "", "b")).await;
        assert_eq!(refused.error, ErrorCode::GroupMaxSizeReached);
        assert_eq!(c.describe("g").members.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_fails_pending_waiters() {
        let c = coordinator();
        // A follower parked in sync (the leader never syncs).
        let a = spawn_join(&c, join_request("g2", "", "a"));
        settle().await;
        let b = spawn_join(&c, join_request("g2", "", "b"));
        let (_a, b) = (a.await.unwrap(), b.await.unwrap());
        let pending_sync = spawn_sync(&c, sync_request("g2", &b, vec![]));
        // A join parked in the initial delay of another group.
        let joiner = spawn_join(&c, join_request("g3", "", "z"));
        settle().await;
        assert!(!pending_sync.is_finished());
        assert!(!joiner.is_finished());
        let before = Instant::now();
        c.shutdown();
        assert_eq!(
            joiner.await.unwrap().error,
            ErrorCode::CoordinatorNotAvailable
        );
        assert_eq!(
            pending_sync.await.unwrap().error,
            ErrorCode::CoordinatorNotAvailable
        );
        assert_eq!(
            c.heartbeat("g2", 1, &b.member_id, None),
            ErrorCode::CoordinatorNotAvailable
        );
        assert_eq!(
            c.join(join_request("g1", "", "a")).await.error,
            ErrorCode::CoordinatorNotAvailable
        );
        assert_eq!(
            c.validate_offset_commit("g2", -1, "", None),
            Err(ErrorCode::CoordinatorNotAvailable)
        );
        assert!(c.list().is_empty());
        assert_eq!(
            before.elapsed(),
            Duration::ZERO,
            "answered at once, not by a timer"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_leader_leaving_mid_sync_hands_over_and_followers_rejoin() {
        let c = coordinator();
        let a = spawn_join(&c, join_request("g", "", "a"));
        settle().await;
        let b = spawn_join(&c, join_request("g", "", "b"));
        let (a, b) = (a.await.unwrap(), b.await.unwrap());
        let follower = spawn_sync(&c, sync_request("g", &b, vec![]));
        settle().await;
        let left = c.leave(
            "g",
            vec![LeavingMember {
                member_id: a.member_id.clone(),
                group_instance_id: None,
            }],
        );
        assert_eq!(left.members[0].error, ErrorCode::None);
        assert_eq!(
            follower.await.unwrap().error,
            ErrorCode::RebalanceInProgress
        );
        let rejoined = c.join(join_request("g", &b.member_id, "b")).await;
        assert_eq!(rejoined.leader, b.member_id);
        assert_eq!(rejoined.generation_id, 2);
    }
}
