//! [`Authorizer`]: Kafka's ACL decisions over the durable bindings.

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex, RwLock};

use staunch_log::SegmentIo;

use super::index::AclIndex;
use super::store;
use super::types::{AclBinding, AclBindingFilter, AclOperation, ResourceType};
use crate::principal::Principal;

/// The name of the one CLUSTER resource, as in Kafka.
pub const CLUSTER_NAME: &str = "kafka-cluster";

/// Why an ACL change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AclError {
    /// The authorizer is off (`authorizer_enabled = false`): there are no ACLs to change or
    /// list (Kafka's SECURITY_DISABLED).
    #[error("the authorizer is not enabled on this broker (authorizer_enabled = false)")]
    SecurityDisabled,
    /// The binding or filter is not valid (Kafka's INVALID_REQUEST).
    #[error("{0}")]
    Invalid(String),
    /// The change could not be made durable; nothing was changed (Kafka's
    /// UNKNOWN_SERVER_ERROR).
    #[error("storing the ACLs in {0}")]
    Storage(String),
}

/// Decides whether a principal may do an operation on a resource, by Kafka's rules: super
/// users may do everything; otherwise a DENY that applies wins over every ALLOW; an ALLOW of
/// ALL, of the operation, or of one implying it (READ, WRITE, DELETE, ALTER imply DESCRIBE;
/// ALTER_CONFIGS implies DESCRIBE_CONFIGS) allows; a resource no ALLOW applies to is denied
/// (`allow.everyone.if.no.acl.found=false`). When disabled, everything is allowed and there
/// are no ACLs.
#[derive(Debug)]
pub struct Authorizer {
    enabled: bool,
    super_users: HashSet<Principal>,
    index: RwLock<Arc<AclIndex>>,
    /// Where the bindings are stored (`None` when disabled), and the lock that orders changes.
    store: Option<(Mutex<()>, Arc<dyn SegmentIo>, String)>,
}

impl Authorizer {
    /// An authorizer that allows everything and holds no ACLs.
    pub fn disabled() -> Self {
        Authorizer {
            enabled: false,
            super_users: HashSet::new(),
            index: RwLock::new(Arc::new(AclIndex::default())),
            store: None,
        }
    }

    /// The enabled authorizer with the bindings stored in `dir` (none if it holds no ACL
    /// file) and `super_users` (`User:name` each). `where_` names the file in messages. A
    /// damaged file or a malformed super user is an error naming it: never an empty ACL set.
    pub fn open(
        dir: Arc<dyn SegmentIo>,
        where_: String,
        super_users: &[String],
    ) -> Result<Self, String> {
        let super_users = super_users
            .iter()
            .map(|s| {
                Principal::parse(s).ok_or_else(|| {
                    format!("super user {s:?} is not of the form Type:name (User:admin)")
                })
            })
            .collect::<Result<HashSet<_>, _>>()?;
        let bindings = store::load(&*dir).map_err(|e| format!("{where_}: {e}"))?;
        Ok(Authorizer {
            enabled: true,
            super_users,
            index: RwLock::new(Arc::new(AclIndex::new(bindings))),
            store: Some((Mutex::new(()), dir, where_)),
        })
    }

    /// Whether checks apply (`authorizer_enabled`).
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Whether `principal` is a super user (allowed everything).
    pub fn is_super_user(&self, principal: &Principal) -> bool {
        self.super_users.contains(principal)
    }

    fn index(&self) -> Arc<AclIndex> {
        self.index.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether `principal`, connected from `host` (its IP address as text), may do
    /// `operation` on the resource `name` of `resource_type`. Always `true` when disabled.
    pub fn authorize(
        &self,
        principal: &Principal,
        host: &str,
        operation: AclOperation,
        resource_type: ResourceType,
        name: &str,
    ) -> bool {
        if !self.enabled || self.is_super_user(principal) {
            return true;
        }
        self.index
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .authorize(principal, host, operation, resource_type, name)
    }

    /// Whether `principal` may do `operation` on at least one resource of `resource_type`
    /// (Kafka's `authorizeByResourceType`). Always `true` when disabled.
    pub fn authorize_any(
        &self,
        principal: &Principal,
        host: &str,
        operation: AclOperation,
        resource_type: ResourceType,
    ) -> bool {
        if !self.enabled || self.is_super_user(principal) {
            return true;
        }
        self.index()
            .authorize_any(principal, host, operation, resource_type)
    }

    /// Every binding `filter` matches, in a stable order.
    pub fn describe(&self, filter: &AclBindingFilter) -> Result<Vec<AclBinding>, AclError> {
        if !self.enabled {
            return Err(AclError::SecurityDisabled);
        }
        Ok(self
            .index()
            .bindings()
            .iter()
            .filter(|b| filter.matches(b))
            .cloned()
            .collect())
    }

    /// Adds `bindings` (one that exists already is kept once): one answer per binding, in
    /// order. Valid ones are durable when this returns `Ok` for them; if storing fails, all
    /// of them fail and nothing changes. Blocks on the disk.
    pub fn create(&self, bindings: Vec<AclBinding>) -> Vec<Result<(), AclError>> {
        let Some((lock, dir, where_)) = &self.store else {
            return bindings
                .iter()
                .map(|_| Err(AclError::SecurityDisabled))
                .collect();
        };
        let _order = lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut all: BTreeSet<AclBinding> = self.index().bindings().clone();
        let mut answers: Vec<Result<(), AclError>> = bindings
            .into_iter()
            .map(|b| {
                b.validate().map_err(AclError::Invalid)?;
                all.insert(b);
                Ok(())
            })
            .collect();
        if answers.iter().any(Result::is_ok)
            && let Err(e) = self.replace(dir, where_, all)
        {
            for answer in answers.iter_mut().filter(|a| a.is_ok()) {
                *answer = Err(e.clone());
            }
        }
        answers
    }

    /// Removes every binding any of `filters` matches: per filter, the bindings it matched
    /// and removed (durably, when this returns), or why nothing was removed. Blocks on the
    /// disk.
    pub fn delete(&self, filters: &[AclBindingFilter]) -> Vec<Result<Vec<AclBinding>, AclError>> {
        let Some((lock, dir, where_)) = &self.store else {
            return filters
                .iter()
                .map(|_| Err(AclError::SecurityDisabled))
                .collect();
        };
        let _order = lock.lock().unwrap_or_else(|e| e.into_inner());
        let before = self.index();
        let mut answers: Vec<Result<Vec<AclBinding>, AclError>> = filters
            .iter()
            .map(|f| {
                Ok(before
                    .bindings()
                    .iter()
                    .filter(|b| f.matches(b))
                    .cloned()
                    .collect())
            })
            .collect();
        let removed: HashSet<&AclBinding> =
            answers.iter().flat_map(|a| a.iter().flatten()).collect();
        if removed.is_empty() {
            return answers;
        }
        let kept: BTreeSet<AclBinding> = before
            .bindings()
            .iter()
            .filter(|b| !removed.contains(b))
            .cloned()
            .collect();
        if let Err(e) = self.replace(dir, where_, kept) {
            answers = filters.iter().map(|_| Err(e.clone())).collect();
        }
        answers
    }

    /// Stores `bindings` durably, then makes them the ones checks use.
    fn replace(
        &self,
        dir: &Arc<dyn SegmentIo>,
        where_: &str,
        bindings: BTreeSet<AclBinding>,
    ) -> Result<(), AclError> {
        if bindings == *self.index().bindings() {
            return Ok(());
        }
        store::save(&**dir, &bindings).map_err(|e| AclError::Storage(format!("{where_}: {e}")))?;
        *self.index.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(AclIndex::new(bindings));
        Ok(())
    }
}
