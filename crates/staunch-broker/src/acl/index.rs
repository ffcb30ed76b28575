//! The bindings, indexed by resource so a check costs a few hash lookups however many ACLs
//! and topics there are.

use std::collections::{BTreeSet, HashMap};

use super::types::{
    AccessControlEntry, AclBinding, AclOperation, AclPermission, PatternType, ResourceType,
};
use crate::principal::Principal;

/// Kafka's wildcard principal: every principal.
const WILDCARD_PRINCIPAL: &str = "User:*";
/// Kafka's wildcard host and literal resource name.
const WILDCARD: &str = "*";

/// One entry as a check needs it: the principal already parsed.
#[derive(Debug, Clone)]
struct Entry {
    /// `None` for `User:*`.
    principal: Option<Principal>,
    host: String,
    operation: AclOperation,
    permission: AclPermission,
}

impl Entry {
    fn new(e: &AccessControlEntry) -> Self {
        Entry {
            principal: if e.principal == WILDCARD_PRINCIPAL {
                None
            } else {
                Principal::parse(&e.principal)
            },
            host: e.host.clone(),
            operation: e.operation,
            permission: e.permission,
        }
    }

    fn applies_to(&self, principal: &Principal, host: &str) -> bool {
        self.principal.as_ref().is_none_or(|p| p == principal)
            && (self.host == WILDCARD || self.host == host)
    }
}

/// Every binding, plus lookups by resource type and name.
#[derive(Debug, Clone, Default)]
pub(crate) struct AclIndex {
    bindings: BTreeSet<AclBinding>,
    literal: HashMap<ResourceType, HashMap<String, Vec<Entry>>>,
    prefixed: HashMap<ResourceType, HashMap<String, Vec<Entry>>>,
    /// The lengths (in bytes, ascending, each once) of the PREFIXED bindings' names by
    /// resource type: only prefixes of a name of these lengths need a lookup.
    prefix_lengths: HashMap<ResourceType, Vec<usize>>,
}

/// Operations whose ALLOW also allows `op` (Kafka: READ, WRITE, DELETE and ALTER imply
/// DESCRIBE; ALTER_CONFIGS implies DESCRIBE_CONFIGS).
fn implied_by(op: AclOperation) -> &'static [AclOperation] {
    use AclOperation::*;
    match op {
        Describe => &[Describe, Read, Write, Delete, Alter],
        DescribeConfigs => &[DescribeConfigs, AlterConfigs],
        Read => &[Read],
        Write => &[Write],
        Create => &[Create],
        Delete => &[Delete],
        Alter => &[Alter],
        ClusterAction => &[ClusterAction],
        AlterConfigs => &[AlterConfigs],
        IdempotentWrite => &[IdempotentWrite],
        All => &[All],
        Any => &[],
    }
}

impl AclIndex {
    /// The index of `bindings` (assumed valid).
    pub(crate) fn new(bindings: BTreeSet<AclBinding>) -> Self {
        let mut index = AclIndex::default();
        for b in &bindings {
            let map = match b.pattern.pattern_type {
                PatternType::Prefixed => {
                    let lengths = index
                        .prefix_lengths
                        .entry(b.pattern.resource_type)
                        .or_default();
                    if let Err(at) = lengths.binary_search(&b.pattern.name.len()) {
                        lengths.insert(at, b.pattern.name.len());
                    }
                    &mut index.prefixed
                }
                _ => &mut index.literal,
            };
            map.entry(b.pattern.resource_type)
                .or_default()
                .entry(b.pattern.name.clone())
                .or_default()
                .push(Entry::new(&b.entry));
        }
        index.bindings = bindings;
        index
    }

    /// Every binding, in a stable order.
    pub(crate) fn bindings(&self) -> &BTreeSet<AclBinding> {
        &self.bindings
    }

    /// The entries of every binding on the resource `name` of `resource_type`: literal
    /// equal, literal `*`, and every prefixed binding whose prefix starts `name`.
    fn entries<'a>(
        &'a self,
        resource_type: ResourceType,
        name: &'a str,
    ) -> impl Iterator<Item = &'a Entry> + 'a {
        let literal = self.literal.get(&resource_type);
        let exact = literal.and_then(|m| m.get(name)).into_iter().flatten();
        let wildcard = literal
            .filter(|_| name != WILDCARD)
            .and_then(|m| m.get(WILDCARD))
            .into_iter()
            .flatten();
        let prefixed = self.prefixed.get(&resource_type);
        let lengths = self
            .prefix_lengths
            .get(&resource_type)
            .map_or(&[][..], Vec::as_slice);
        let prefixes = prefixed
            .into_iter()
            .flat_map(move |m| {
                lengths
                    .iter()
                    .take_while(move |&&end| end <= name.len())
                    .filter(move |&&end| name.is_char_boundary(end))
                    .filter_map(move |&end| m.get(&name[..end]))
            })
            .flatten();
        exact.chain(wildcard).chain(prefixes)
    }

    /// Kafka's decision for a non-super user: no DENY of `operation` (or ALL) applies, and an
    /// ALLOW of it, of ALL, or of an operation implying it does. No binding: denied.
    pub(crate) fn authorize(
        &self,
        principal: &Principal,
        host: &str,
        operation: AclOperation,
        resource_type: ResourceType,
        name: &str,
    ) -> bool {
        let implied = implied_by(operation);
        let mut allowed = false;
        for e in self.entries(resource_type, name) {
            if !e.applies_to(principal, host) {
                continue;
            }
            match e.permission {
                AclPermission::Deny
                    if e.operation == operation || e.operation == AclOperation::All =>
                {
                    return false;
                }
                AclPermission::Allow
                    if e.operation == AclOperation::All || implied.contains(&e.operation) =>
                {
                    allowed = true;
                }
                _ => {}
            }
        }
        allowed
    }

    /// Kafka's `authorizeByResourceType` for a non-super user: whether some resource of
    /// `resource_type` may get `operation` (the 3.x rule letting a producer that may WRITE
    /// any topic be idempotent). An ALLOW counts unless a DENY covers it: a literal `*` DENY
    /// covers everything, a literal DENY its own name, a prefixed DENY every name it starts.
    pub(crate) fn authorize_any(
        &self,
        principal: &Principal,
        host: &str,
        operation: AclOperation,
        resource_type: ResourceType,
    ) -> bool {
        let mut deny_literal = Vec::new();
        let mut deny_prefix = Vec::new();
        let mut allow_literal = Vec::new();
        let mut allow_prefix = Vec::new();
        for b in &self.bindings {
            if b.pattern.resource_type != resource_type {
                continue;
            }
            let e = Entry::new(&b.entry);
            if !e.applies_to(principal, host)
                || !(e.operation == operation || e.operation == AclOperation::All)
            {
                continue;
            }
            let name = b.pattern.name.as_str();
            match (b.entry.permission, b.pattern.pattern_type) {
                (AclPermission::Deny, PatternType::Literal) => deny_literal.push(name),
                (AclPermission::Deny, PatternType::Prefixed) => deny_prefix.push(name),
                (AclPermission::Allow, PatternType::Literal) => allow_literal.push(name),
                (AclPermission::Allow, PatternType::Prefixed) => allow_prefix.push(name),
                _ => {}
            }
        }
        if deny_literal.contains(&WILDCARD) {
            return false;
        }
        let denied_by_prefix = |name: &str| deny_prefix.iter().any(|p| name.starts_with(p));
        allow_literal.iter().any(|name| {
            *name == WILDCARD || (!deny_literal.contains(name) && !denied_by_prefix(name))
        }) || allow_prefix.iter().any(|name| !denied_by_prefix(name))
    }
}
