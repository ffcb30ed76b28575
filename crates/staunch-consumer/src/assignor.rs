//! Partition assignors the group leader runs: `range` (Kafka's default), `sticky` and
//! `cooperative-sticky`.
//!
//! All are pure functions from the members' subscriptions and the topics' partition counts to
//! each member's partitions, deterministic for equal input (members sorted by id), so every
//! leader computes the same answer.
//!
//! `range` and `sticky` are *eager*: every member gives up all its partitions before it
//! rejoins. `cooperative-sticky` is Kafka's incremental protocol (KIP-429): members keep their
//! partitions through a rebalance, and a partition that must move is first only taken away —
//! the leader leaves it out of everyone's assignment while its owner still holds it. The owner
//! sees it missing, commits and revokes it, and rejoins at once; in that second rebalance
//! nobody owns it and it goes to its new member. Partitions that do not move are never
//! revoked, so their positions, retry state and parked keys stay where they are.

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
    /// Kafka's `cooperative-sticky`: the `sticky` assignment reached in incremental steps, so
    /// only partitions that move are ever revoked (see the module docs).
    CooperativeSticky,
}

impl Assignor {
    /// The protocol name sent in JoinGroup.
    pub fn protocol_name(self) -> &'static str {
        match self {
            Assignor::Range => "range",
            Assignor::Sticky => "sticky",
            Assignor::CooperativeSticky => "cooperative-sticky",
        }
    }

    /// Whether members keep their partitions through a rebalance (the incremental protocol).
    pub fn is_cooperative(self) -> bool {
        matches!(self, Assignor::CooperativeSticky)
    }

    /// Assigns partitions. `members` maps member id to (subscribed topics, owned partitions);
    /// `partitions` maps topic to partition count (topics missing there are skipped). Every
    /// member appears in the answer, possibly with nothing. A partition claimed by two members
    /// must have been given to one of them first (see [`resolve_owned`]).
    pub fn assign(
        self,
        members: &BTreeMap<String, (Vec<String>, Vec<TopicPartition>)>,
        partitions: &BTreeMap<String, i32>,
    ) -> BTreeMap<String, Vec<TopicPartition>> {
        match self {
            Assignor::Range => range(members, partitions),
            Assignor::Sticky => sticky(members, partitions),
            Assignor::CooperativeSticky => cooperative(members, partitions),
        }
    }
}

/// Settles conflicting claims before assigning: `claims` maps member id to (subscribed
/// topics, owned partitions, the generation the member owned them in). A partition claimed by
/// several members stays with the one from the newest generation; with a tie, nobody keeps it
/// (as Kafka's assignors treat stale claims after a missed rebalance).
pub fn resolve_owned(
    claims: BTreeMap<String, (Vec<String>, Vec<TopicPartition>, i32)>,
) -> BTreeMap<String, (Vec<String>, Vec<TopicPartition>)> {
    let mut newest: BTreeMap<&TopicPartition, (i32, usize)> = BTreeMap::new();
    for (_, owned, generation) in claims.values() {
        for tp in owned {
            let entry = newest.entry(tp).or_insert((*generation, 0));
            if *generation > entry.0 {
                *entry = (*generation, 1);
            } else if *generation == entry.0 {
                entry.1 += 1;
            }
        }
    }
    let keep: BTreeMap<TopicPartition, i32> = newest
        .into_iter()
        .filter(|(_, (_, claimants))| *claimants == 1)
        .map(|(tp, (generation, _))| (tp.clone(), generation))
        .collect();
    claims
        .into_iter()
        .map(|(member, (topics, owned, generation))| {
            let owned = owned
                .into_iter()
                .filter(|tp| keep.get(tp) == Some(&generation))
                .collect();
            (member, (topics, owned))
        })
        .collect()
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

/// Kafka's constrained sticky assignment: balanced (partition counts differ by at most one:
/// `total % members` members get one more than the rest), keeping as many owned partitions as
/// that balance allows.
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
    let min_quota = all.len() / n;
    // How many members may hold one partition more than `min_quota`.
    let mut over_min = all.len() % n;
    let mut taken = BTreeSet::new();
    // Keep what each member owns (still existing, still subscribed, not claimed twice), up to
    // the quota: `min_quota + 1` while members may still have that many, else `min_quota`.
    for (member, (topics, owned)) in members {
        let valid: Vec<&TopicPartition> = owned
            .iter()
            .filter(|tp| all.contains(*tp) && topics.contains(&tp.topic) && !taken.contains(*tp))
            .collect();
        let keep = if valid.len() > min_quota && over_min > 0 {
            over_min -= 1;
            min_quota + 1
        } else {
            min_quota
        };
        let list = out.get_mut(member).expect("every member has a list");
        for tp in valid.into_iter().take(keep) {
            if taken.insert(tp.clone()) {
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

/// The sticky target, minus every partition that another member still owns: those are
/// revoked by their owner in this round and assigned in the next.
fn cooperative(
    members: &BTreeMap<String, (Vec<String>, Vec<TopicPartition>)>,
    partitions: &BTreeMap<String, i32>,
) -> BTreeMap<String, Vec<TopicPartition>> {
    let owner: BTreeMap<&TopicPartition, &String> = members
        .iter()
        .flat_map(|(m, (_, owned))| owned.iter().map(move |tp| (tp, m)))
        .collect();
    let mut out = sticky(members, partitions);
    for (member, assigned) in &mut out {
        assigned.retain(|tp| owner.get(tp).is_none_or(|o| *o == member));
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

    #[test]
    fn cooperative_moves_partitions_in_two_steps() {
        let parts = BTreeMap::from([("t".to_string(), 4)]);
        let tp = |p| TopicPartition::new("t", p);
        // b joins while a owns everything: a keeps half, the other half is only revoked.
        let first = Assignor::CooperativeSticky.assign(
            &members(&[("a", vec![tp(0), tp(1), tp(2), tp(3)]), ("b", vec![])]),
            &parts,
        );
        assert_eq!(first["a"], vec![tp(0), tp(1)]);
        assert!(first["b"].is_empty(), "{first:?}");
        // a rejoins without them: now they go to b, and a keeps what it had.
        let second = Assignor::CooperativeSticky.assign(
            &members(&[("a", first["a"].clone()), ("b", vec![])]),
            &parts,
        );
        assert_eq!(second["a"], vec![tp(0), tp(1)]);
        assert_eq!(second["b"], vec![tp(2), tp(3)]);
        // Nobody moves: the same assignment again, nothing withheld.
        let third = Assignor::CooperativeSticky.assign(
            &members(&[("a", second["a"].clone()), ("b", second["b"].clone())]),
            &parts,
        );
        assert_eq!(third, second);
    }

    /// Four partitions over three members, two of which own two each: Kafka's sticky gives
    /// 2 + 1 + 1, moving one partition, never 2 + 2 + 0.
    #[test]
    fn sticky_balances_a_newcomer_against_full_members() {
        let parts = BTreeMap::from([("t".to_string(), 4)]);
        let tp = |p| TopicPartition::new("t", p);
        let before = members(&[
            ("a", vec![tp(0), tp(1)]),
            ("b", vec![tp(2), tp(3)]),
            ("c", vec![]),
        ]);
        let out = Assignor::Sticky.assign(&before, &parts);
        assert_eq!(out["a"], vec![tp(0), tp(1)]);
        assert_eq!(out["b"], vec![tp(2)]);
        assert_eq!(out["c"], vec![tp(3)]);
        // Cooperative: t-3 is first only taken from b, then given to c.
        let first = Assignor::CooperativeSticky.assign(&before, &parts);
        assert_eq!(first["b"], vec![tp(2)]);
        assert!(first["c"].is_empty(), "{first:?}");
        let second = Assignor::CooperativeSticky.assign(
            &members(&[
                ("a", first["a"].clone()),
                ("b", first["b"].clone()),
                ("c", vec![]),
            ]),
            &parts,
        );
        assert_eq!(second, out);
    }

    /// For every member and partition count up to 8 and every way of owning partitions
    /// round-robin from a previous, smaller group: each partition once, counts differ by at
    /// most one, and a member keeps min(owned, its share) of what it owned.
    #[test]
    fn sticky_is_balanced_and_keeps_what_balance_allows() {
        for total in 0..=8 {
            for n in 1..=8usize {
                for previous in 1..=n {
                    let parts = BTreeMap::from([("t".to_string(), total)]);
                    let owners: Vec<(String, Vec<TopicPartition>)> = (0..n)
                        .map(|m| {
                            let owned = (0..total)
                                .filter(|p| m < previous && *p as usize % previous == m)
                                .map(|p| TopicPartition::new("t", p))
                                .collect();
                            (format!("m{m}"), owned)
                        })
                        .collect();
                    let input: BTreeMap<String, (Vec<String>, Vec<TopicPartition>)> = owners
                        .iter()
                        .map(|(m, o)| (m.clone(), (vec!["t".to_string()], o.clone())))
                        .collect();
                    let out = Assignor::Sticky.assign(&input, &parts);
                    let all: Vec<&TopicPartition> = out.values().flatten().collect();
                    let distinct: BTreeSet<&&TopicPartition> = all.iter().collect();
                    assert_eq!(all.len(), total as usize, "{total}/{n}/{previous}: {out:?}");
                    assert_eq!(distinct.len(), total as usize, "{out:?}");
                    let sizes: Vec<usize> = out.values().map(Vec::len).collect();
                    let (min, max) = (sizes.iter().min(), sizes.iter().max());
                    assert!(
                        max.unwrap() - min.unwrap() <= 1,
                        "{total}/{n}/{previous}: {out:?}"
                    );
                    for (m, owned) in &owners {
                        let kept = out[m].iter().filter(|tp| owned.contains(tp)).count();
                        assert_eq!(
                            kept,
                            owned.len().min(out[m].len()),
                            "{total}/{n}/{previous}: {m} {out:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn conflicting_claims_go_to_the_newest_generation() {
        let tp = |p| TopicPartition::new("t", p);
        let t = || vec!["t".to_string()];
        let claims = BTreeMap::from([
            ("a".to_string(), (t(), vec![tp(0), tp(1)], 5)),
            ("b".to_string(), (t(), vec![tp(0), tp(2)], 6)),
            ("c".to_string(), (t(), vec![tp(2)], 6)),
        ]);
        let owned = resolve_owned(claims);
        // tp0: b's newer claim wins; tp2: a tie in generation 6, so nobody keeps it.
        assert_eq!(owned["a"].1, vec![tp(1)]);
        assert_eq!(owned["b"].1, vec![tp(0)]);
        assert!(owned["c"].1.is_empty(), "{owned:?}");
    }
}
