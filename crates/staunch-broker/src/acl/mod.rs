//! Access control lists in Kafka's model: who (a principal, from a host) may or may not do
//! what (an operation) to which resources (a type and a literal or prefixed name pattern).
//!
//! [`Authorizer`] decides; its bindings live durably in the data directory (`acls.toml`).
//! The wire codes of every enum are Kafka's, so requests and answers map one to one.

mod authorizer;
mod index;
mod store;
#[cfg(test)]
mod tests;
mod types;

/// The file holding the ACLs, in the data directory.
pub const ACL_FILE: &str = store::FILE;

pub use authorizer::{AclError, Authorizer, CLUSTER_NAME};
pub use types::{
    AccessControlEntry, AclBinding, AclBindingFilter, AclOperation, AclPermission, PatternType,
    ResourcePattern, ResourceType,
};
