//! Authorization of one request: the principal and host of its connection, asked of the
//! broker's [`staunch_broker::Authorizer`]. A denial that refuses part of a request is logged
//! at debug (a client retrying a denied request in a loop must not flood the log) and counted
//! in `staunch_authorization_denied_total`; one that only hides a resource from a listing
//! (Metadata of every topic, ListGroups) is neither, as in Kafka.

use staunch_broker::acl::{AclOperation, CLUSTER_NAME, ResourceType};
use staunch_broker::{Authorizer, Broker, Principal};

use super::ClientContext;

/// Asks whether the connection's principal may do an operation on a resource.
pub(super) struct Access<'a> {
    authorizer: &'a Authorizer,
    principal: &'a Principal,
    host: String,
    /// The request's name, for the debug log of denials.
    api: &'static str,
}

impl<'a> Access<'a> {
    /// The checks of request `api` from `context`.
    pub(super) fn new(broker: &'a Broker, context: &'a ClientContext, api: &'static str) -> Self {
        let authorizer = broker.authorizer();
        Access {
            authorizer,
            principal: &context.principal,
            // Only checks need it: no formatting per request while the authorizer is off.
            host: if authorizer.enabled() {
                context.peer.ip().to_string()
            } else {
                String::new()
            },
            api,
        }
    }

    /// Whether `operation` on `name` of `resource_type` is allowed; a denial is logged and
    /// counted.
    pub(super) fn allows(
        &self,
        operation: AclOperation,
        resource_type: ResourceType,
        name: &str,
    ) -> bool {
        let allowed = self.allows_quietly(operation, resource_type, name);
        if !allowed {
            self.denied(operation, resource_type, name);
        }
        allowed
    }

    /// [`Access::allows`] without logging or counting a denial: for filtering listings.
    pub(super) fn allows_quietly(
        &self,
        operation: AclOperation,
        resource_type: ResourceType,
        name: &str,
    ) -> bool {
        self.authorizer
            .authorize(self.principal, &self.host, operation, resource_type, name)
    }

    /// Whether `operation` on the cluster is allowed; a denial is logged and counted.
    pub(super) fn allows_cluster(&self, operation: AclOperation) -> bool {
        self.allows(operation, ResourceType::Cluster, CLUSTER_NAME)
    }

    /// Whether the topic `name` may be created: CREATE on the cluster or on the topic, as in
    /// Kafka. A denial is logged and counted.
    pub(super) fn allows_create_topic(&self, name: &str) -> bool {
        if self.allows_quietly(AclOperation::Create, ResourceType::Cluster, CLUSTER_NAME) {
            return true;
        }
        self.allows(AclOperation::Create, ResourceType::Topic, name)
    }

    /// Whether some resource of `resource_type` allows `operation` (Kafka's
    /// `authorizeByResourceType`). A denial is logged and counted.
    pub(super) fn allows_any(&self, operation: AclOperation, resource_type: ResourceType) -> bool {
        let allowed =
            self.authorizer
                .authorize_any(self.principal, &self.host, operation, resource_type);
        if !allowed {
            self.denied(operation, resource_type, "(any)");
        }
        allowed
    }

    /// Kafka's authorized-operations bit field: bit `code` set for each of `operations`
    /// allowed on the resource.
    pub(super) fn authorized_operations(&self, resource_type: ResourceType, name: &str) -> i32 {
        let operations: &[AclOperation] = {
            use AclOperation::*;
            match resource_type {
                ResourceType::Topic => &[
                    Read,
                    Write,
                    Create,
                    Delete,
                    Alter,
                    Describe,
                    DescribeConfigs,
                    AlterConfigs,
                ],
                ResourceType::Group => &[Read, Describe, Delete],
                ResourceType::Cluster => &[
                    Create,
                    ClusterAction,
                    DescribeConfigs,
                    AlterConfigs,
                    IdempotentWrite,
                    Alter,
                    Describe,
                ],
                ResourceType::TransactionalId => &[Describe, Write],
                ResourceType::Any => &[],
            }
        };
        operations
            .iter()
            .filter(|op| self.allows_quietly(**op, resource_type, name))
            .fold(0, |bits, op| bits | 1 << op.code())
    }

    fn denied(&self, operation: AclOperation, resource_type: ResourceType, name: &str) {
        tracing::debug!(
            principal = %self.principal,
            host = %self.host,
            request = self.api,
            "denied {operation} on {resource_type} {name:?}"
        );
        metrics::counter!(
            "staunch_authorization_denied_total",
            "operation" => operation.name(),
            "resource_type" => resource_type.name()
        )
        .increment(1);
    }
}
