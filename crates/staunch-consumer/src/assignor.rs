//! Partition assignors the group leader runs: `range` (Kafka's default) and `sticky`.
//!
//! Both are pure functions from the members' subscriptions and the topics' partition counts to
//! each member's partitions, deterministic for equal input (members sorted by id), so every
//! leader computes the same answer.
//!
//! **Not done:** Kafka's *cooperative* (incremental) rebalancing. `sticky` keeps each member's
//! owned partitions where the balance allows — what `cooperative-sticky` computes — but the
//! consumer still rebalances eagerly: it commits and revokes everything before rejoining.

use std::collections::{BTreeMap, BTreeSet};

use staunch_core::TopicPartition;

/// Which assignor a consumer proposes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Assignor {
    /// Kafka's `range`: per topic, consecutive partitions to members in id order.
    #[default]
    Range,
    /// Kafka's (eager) `sticky`: balanced, keeping owned partitions where possible.
    Sticky,
}

impl Assignor {
    /// The protocol name sent in JoinGroup.
    pub fn protocol_name(self) -> &'static str {
        match self {
            Assignor::Range => "range",
            Assignor::Sticky => "sticky",
        }
    }

    /// Assigns partitions. `members` maps member id to (subscribed topics, owned partitions);
    /// `partitions` maps topic to partition count (topics missing there are skipped). Every
    /// member appears in the answer, possibly with nothing.
    pub fn assign(
        self,
        members: &BTreeMap<String, (Vec<String>, Vec<TopicPartition>)>,
        partitions: &BTreeMap<String, i32>,
    ) -> BTreeMap<String, Vec<TopicPartition>> {
        match self {
            Assignor::Range => range(members, partitions),
            Assignor::Sticky => sticky(members, partitions),
        }
    }
}

fn range(
    members: &BTreeMap<String, (Vec<String>, Vec<TopicPartition>)>,
    partitions: &BTreeMap<String, i32>,
) -> BTreeMap<String, Vec<TopicPartition>> {
    let mut out: BTreeMap<String, Vec<TopicPartition>> =
        members.keys().map(|m| (m.clone(), Vec::new())).collect();
    for (topic, &count) in partitions {
        let subscribers: Vec<&String> = members
            .iter()
            .filter(|(_, (topics, _))| topics.contains(topic))
            .map(|(m, _)| m)
            .collect();
        if subscribers.is_empty() || count <= 0 {
            continue;
        }
        let n = subscribers.len() as i32;
        let (per, extra) = (count / n, count % n);
        let mut next = 0;
        for (i, member) in subscribers.into_iter().enumerate() {
            let take = per + i32::from((i as i32) < extra);
            let list = out.entry(member.clone()).or_default();
            for p in next..next + take {
                list.push(TopicPartition::new(topic.clone(), p));
            }
            next += take;
        }
    }
    out
}

fn sticky(
    members: &BTreeMap<String, (Vec<String>, Vec<TopicPartition>)>,
    partitions: &BTreeMap<String, i32>,
) -> BTreeMap<String, Vec<TopicPartition>> {
    let all: BTreeSet<TopicPartition> = partitions
        .iter()
        .filter(|(t, _)| members.values().any(|(topics, _)| topics.contains(t)))
        .flat_map(|(t, &n)| (0..n.max(0)).map(move |p| TopicPartition::new(t.clone(), p)))
        .collect();
    let mut out: BTreeMap<String, Vec<TopicPartition>> =
        members.keys().map(|m| (m.clone(), Vec::new())).collect();
    if members.is_empty() {
        return out;
    }
    let n = members.len();
    let quota = all.len().div_ceil(n);
    let mut taken = BTreeSet::new();
    // Keep what each member owns, up to the quota.
    for (member, (topics, owned)) in members {
        for tp in owned {
            let list = out.get_mut(member).expect("every member has a list");
            if list.len() < quota
                && all.contains(tp)
                && topics.contains(&tp.topic)
                && taken.insert(tp.clone())
            {
                list.push(tp.clone());
            }
        }
    }
    // Hand out the rest to the least loaded subscriber.
    for tp in all.iter().filter(|tp| !taken.contains(*tp)) {
        let target = members
            .iter()
            .filter(|(_, (topics, _))| topics.contains(&tp.topic))
            .map(|(m, _)| m)
            .min_by_key(|m| out[*m].len());
        if let Some(m) = target {
            out.get_mut(m)
                .expect("every member has a list")
                .push(tp.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(
        owned: &[(&str, Vec<TopicPartition>)],
    ) -> BTreeMap<String, (Vec<String>, Vec<TopicPartition>)> {
        owned
            .iter()
            .map(|(m, o)| (m.to_string(), (vec!["t".to_string()], o.clone())))
            .collect()
    }

    #[test]
    fn range_splits_consecutive_partitions() {
        let parts = BTreeMap::from([("t".to_string(), 5)]);
        let out = Assignor::Range.assign(&members(&[("a", vec![]), ("b", vec![])]), &parts);
        let idx = |m: &str| out[m].iter().map(|tp| tp.partition).collect::<Vec<_>>();
        assert_eq!(idx("a"), vec![0, 1, 2]);
        assert_eq!(idx("b"), vec![3, 4]);
    }

    #[test]
    fn sticky_keeps_owned_partitions_and_balances() {
        let parts = BTreeMap::from([("t".to_string(), 4)]);
        let tp = |p| TopicPartition::new("t", p);
        let before = members(&[("a", vec![tp(0), tp(1), tp(2), tp(3)]), ("b", vec![])]);
        let out = Assignor::Sticky.assign(&before, &parts);
        assert_eq!(out["a"], vec![tp(0), tp(1)]);
        assert_eq!(out["b"], vec![tp(2), tp(3)]);
        let total: usize = out.values().map(Vec::len).sum();
        assert_eq!(total, 4);
    }
}
