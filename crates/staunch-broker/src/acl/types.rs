//! The vocabulary of ACLs, with Kafka's wire codes and names.

use std::fmt;

use crate::principal::Principal;

/// Declares a Kafka ACL enum: its variants, wire codes and upper-case names.
macro_rules! kafka_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $code:literal, $text:literal;)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)*
        }

        impl $name {
            /// Every value, in wire-code order.
            pub const ALL_VALUES: &'static [$name] = &[$($name::$variant,)*];

            /// Kafka's wire code.
            pub fn code(self) -> i8 {
                match self {
                    $($name::$variant => $code,)*
                }
            }

            /// The value with wire code `code`, or `None` for UNKNOWN and codes Staunch does
            /// not know.
            pub fn from_code(code: i8) -> Option<Self> {
                match code {
                    $($code => Some($name::$variant),)*
                    _ => None,
                }
            }

            /// Kafka's upper-case name (`IDEMPOTENT_WRITE`).
            pub fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)*
                }
            }

            /// Parses Kafka's name in any case, with `_`, `-` or nothing between words
            /// (`IDEMPOTENT_WRITE`, `IdempotentWrite`, `idempotent-write`).
            pub fn parse(text: &str) -> Option<Self> {
                let wanted: String = text
                    .chars()
                    .filter(|c| *c != '_' && *c != '-')
                    .map(|c| c.to_ascii_uppercase())
                    .collect();
                Self::ALL_VALUES
                    .iter()
                    .copied()
                    .find(|v| v.name().replace('_', "") == wanted)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

kafka_enum! {
    /// The kind of thing an ACL protects. `Any` is for filters only.
    ResourceType {
        /// Filters: every resource type.
        Any = 1, "ANY";
        /// A topic.
        Topic = 2, "TOPIC";
        /// A consumer group.
        Group = 3, "GROUP";
        /// The cluster (one resource, named `kafka-cluster`).
        Cluster = 4, "CLUSTER";
        /// A transactional id.
        TransactionalId = 5, "TRANSACTIONAL_ID";
    }
}

kafka_enum! {
    /// How an ACL's resource name matches. `Any` and `Match` are for filters only.
    PatternType {
        /// Filters: every pattern type, names compared exactly.
        Any = 1, "ANY";
        /// Filters: every binding that would apply to the named resource (literal equal,
        /// literal `*`, or a prefix of it).
        Match = 2, "MATCH";
        /// The name is the resource's name, or `*` for every resource of the type.
        Literal = 3, "LITERAL";
        /// The name is a prefix of the resources' names.
        Prefixed = 4, "PREFIXED";
    }
}

kafka_enum! {
    /// What a principal does to a resource. `Any` is for filters only.
    AclOperation {
        /// Filters: every operation.
        Any = 1, "ANY";
        /// Every operation.
        All = 2, "ALL";
        /// Fetch from a topic; join, commit for a group.
        Read = 3, "READ";
        /// Produce to a topic.
        Write = 4, "WRITE";
        /// Create topics.
        Create = 5, "CREATE";
        /// Delete topics or groups.
        Delete = 6, "DELETE";
        /// Add partitions; change ACLs (cluster).
        Alter = 7, "ALTER";
        /// See a topic, group or the cluster.
        Describe = 8, "DESCRIBE";
        /// Broker-to-broker requests.
        ClusterAction = 9, "CLUSTER_ACTION";
        /// Read configs.
        DescribeConfigs = 10, "DESCRIBE_CONFIGS";
        /// Change configs.
        AlterConfigs = 11, "ALTER_CONFIGS";
        /// Use an idempotent producer (cluster).
        IdempotentWrite = 12, "IDEMPOTENT_WRITE";
    }
}

kafka_enum! {
    /// Whether an ACL grants or refuses. `Any` is for filters only.
    AclPermission {
        /// Filters: both.
        Any = 1, "ANY";
        /// Refuses; wins over every ALLOW.
        Deny = 2, "DENY";
        /// Grants.
        Allow = 3, "ALLOW";
    }
}

/// A resource type, a name and how the name matches: what one ACL protects.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourcePattern {
    /// TOPIC, GROUP, CLUSTER or TRANSACTIONAL_ID (never ANY).
    pub resource_type: ResourceType,
    /// The name, prefix, or `*` (LITERAL: every resource of the type).
    pub name: String,
    /// LITERAL or PREFIXED (never ANY or MATCH).
    pub pattern_type: PatternType,
}

/// Who, from where, may or may not do what: the part of an ACL besides its resource.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccessControlEntry {
    /// `User:alice`, or `User:*` for every user.
    pub principal: String,
    /// The client's IP address as the broker sees it, or `*` for every host.
    pub host: String,
    /// The operation (never ANY).
    pub operation: AclOperation,
    /// ALLOW or DENY (never ANY).
    pub permission: AclPermission,
}

/// One ACL: a resource pattern and an entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AclBinding {
    /// What it protects.
    pub pattern: ResourcePattern,
    /// Who may or may not do what.
    pub entry: AccessControlEntry,
}

impl AclBinding {
    /// Why this binding cannot be stored (Kafka answers INVALID_REQUEST), or `Ok`: no filter
    /// values (ANY, MATCH), a principal of the `Type:name` form, a non-empty resource name and
    /// host, the cluster named `kafka-cluster`.
    pub fn validate(&self) -> Result<(), String> {
        let p = &self.pattern;
        if p.resource_type == ResourceType::Any {
            return Err("resource type ANY is only for filters".to_owned());
        }
        if !matches!(p.pattern_type, PatternType::Literal | PatternType::Prefixed) {
            return Err(format!(
                "pattern type {} is only for filters; use LITERAL or PREFIXED",
                p.pattern_type
            ));
        }
        if p.name.is_empty() {
            return Err("the resource name is empty".to_owned());
        }
        if p.resource_type == ResourceType::Cluster
            && !(p.name == super::CLUSTER_NAME && p.pattern_type == PatternType::Literal)
        {
            return Err(format!(
                "the cluster resource is named {} (LITERAL), not {:?} ({})",
                super::CLUSTER_NAME,
                p.name,
                p.pattern_type
            ));
        }
        let e = &self.entry;
        if e.operation == AclOperation::Any {
            return Err("operation ANY is only for filters".to_owned());
        }
        if e.permission == AclPermission::Any {
            return Err("permission type ANY is only for filters".to_owned());
        }
        if Principal::parse(&e.principal).is_none() {
            return Err(format!(
                "principal {:?} is not of the form Type:name (User:alice, User:*)",
                e.principal
            ));
        }
        if e.host.is_empty() {
            return Err("the host is empty (use * for every host)".to_owned());
        }
        Ok(())
    }
}

impl fmt::Display for AclBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} on {}:{}:{} from host {}",
            self.entry.principal,
            self.entry.permission,
            self.entry.operation,
            self.pattern.resource_type,
            self.pattern.pattern_type,
            self.pattern.name,
            self.entry.host
        )
    }
}

/// Which bindings a DescribeAcls or DeleteAcls means. `None` fields match everything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclBindingFilter {
    /// A resource type, or ANY.
    pub resource_type: ResourceType,
    /// A resource name, or `None` for every name.
    pub name: Option<String>,
    /// LITERAL, PREFIXED (that pattern type, name equal), ANY (any pattern type, name
    /// equal) or MATCH (every binding that applies to the resource `name`).
    pub pattern_type: PatternType,
    /// A principal, or `None` for every principal.
    pub principal: Option<String>,
    /// A host, or `None` for every host.
    pub host: Option<String>,
    /// An operation, or ANY.
    pub operation: AclOperation,
    /// ALLOW, DENY, or ANY.
    pub permission: AclPermission,
}

impl AclBindingFilter {
    /// The filter matching every binding.
    pub fn any() -> Self {
        AclBindingFilter {
            resource_type: ResourceType::Any,
            name: None,
            pattern_type: PatternType::Any,
            principal: None,
            host: None,
            operation: AclOperation::Any,
            permission: AclPermission::Any,
        }
    }

    /// Whether this filter matches every binding there could be (a DeleteAcls with it would
    /// remove them all).
    pub fn matches_everything(&self) -> bool {
        self.resource_type == ResourceType::Any
            && self.name.is_none()
            && matches!(self.pattern_type, PatternType::Any | PatternType::Match)
            && self.principal.is_none()
            && self.host.is_none()
            && self.operation == AclOperation::Any
            && self.permission == AclPermission::Any
    }

    /// Whether `binding` is one this filter means, with Kafka's rules for each field.
    pub fn matches(&self, binding: &AclBinding) -> bool {
        let p = &binding.pattern;
        let e = &binding.entry;
        if self.resource_type != ResourceType::Any && self.resource_type != p.resource_type {
            return false;
        }
        let name_ok = match (&self.name, self.pattern_type) {
            (None, PatternType::Any | PatternType::Match) => true,
            (None, wanted) => wanted == p.pattern_type,
            (Some(name), PatternType::Any) => *name == p.name,
            (Some(name), PatternType::Match) => match p.pattern_type {
                PatternType::Literal => *name == p.name || p.name == "*",
                PatternType::Prefixed => name.starts_with(&p.name),
                _ => false,
            },
            (Some(name), wanted) => wanted == p.pattern_type && *name == p.name,
        };
        name_ok
            && self.principal.as_ref().is_none_or(|x| *x == e.principal)
            && self.host.as_ref().is_none_or(|x| *x == e.host)
            && (self.operation == AclOperation::Any || self.operation == e.operation)
            && (self.permission == AclPermission::Any || self.permission == e.permission)
    }
}
