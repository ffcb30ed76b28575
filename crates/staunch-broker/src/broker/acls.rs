//! ACL changes off the async threads (they write and fsync the ACL file).

use super::{Broker, blocking};
use crate::acl::{AclBinding, AclBindingFilter, AclError};

impl Broker {
    /// Adds `bindings`; one answer per binding, in order; durable when answered `Ok`. See
    /// [`crate::Authorizer::create`].
    pub async fn create_acls(&self, bindings: Vec<AclBinding>) -> Vec<Result<(), AclError>> {
        let broker = self.clone();
        let count = bindings.len();
        blocking(move || broker.inner.authorizer.create(bindings))
            .await
            .unwrap_or_else(|_| {
                (0..count)
                    .map(|_| Err(AclError::Storage("a failed blocking task".to_owned())))
                    .collect()
            })
    }

    /// Removes the bindings `filters` match; per filter, the removed bindings; durable when
    /// answered. See [`crate::Authorizer::delete`].
    pub async fn delete_acls(
        &self,
        filters: Vec<AclBindingFilter>,
    ) -> Vec<Result<Vec<AclBinding>, AclError>> {
        let broker = self.clone();
        let count = filters.len();
        blocking(move || broker.inner.authorizer.delete(&filters))
            .await
            .unwrap_or_else(|_| {
                (0..count)
                    .map(|_| Err(AclError::Storage("a failed blocking task".to_owned())))
                    .collect()
            })
    }
}
