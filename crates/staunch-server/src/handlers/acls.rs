//! CreateAcls, DescribeAcls and DeleteAcls: the ACLs themselves, managed by principals with
//! ALTER (create, delete) or DESCRIBE (describe) on the cluster.

use staunch_broker::Broker;
use staunch_broker::acl::{
    AccessControlEntry, AclBinding, AclBindingFilter, AclError, AclOperation, AclPermission,
    PatternType, ResourcePattern, ResourceType,
};
use staunch_core::ErrorCode;
use staunch_protocol::kafka_protocol::messages::create_acls_response::AclCreationResult;
use staunch_protocol::kafka_protocol::messages::delete_acls_response::{
    DeleteAclsFilterResult, DeleteAclsMatchingAcl,
};
use staunch_protocol::kafka_protocol::messages::describe_acls_response::{
    AclDescription, DescribeAclsResource,
};
use staunch_protocol::kafka_protocol::messages::{
    CreateAclsRequest, CreateAclsResponse, DeleteAclsRequest, DeleteAclsResponse,
    DescribeAclsRequest, DescribeAclsResponse,
};
use staunch_protocol::kafka_protocol::protocol::StrBytes;

use super::auth::Access;
use super::{ClientContext, text};

/// The error code and message answering an [`AclError`].
fn error_of(e: &AclError) -> (i16, Option<StrBytes>) {
    let code = match e {
        AclError::SecurityDisabled => ErrorCode::SecurityDisabled,
        AclError::Invalid(_) => ErrorCode::InvalidRequest,
        AclError::Storage(_) => ErrorCode::UnknownServerError,
    };
    if let AclError::Storage(why) = e {
        tracing::error!("an ACL change failed: {why}");
    }
    (code.code(), Some(text(e.to_string())))
}

/// The value of wire code `code`, or INVALID_REQUEST naming the field.
fn decode<T>(code: i8, from: fn(i8) -> Option<T>, field: &str) -> Result<T, AclError> {
    from(code).ok_or_else(|| AclError::Invalid(format!("unknown {field} code {code}")))
}

/// The error code and message refusing the whole request, if the authorizer is off or the
/// cluster does not allow `operation` to the principal.
fn refused(
    access: &Access<'_>,
    broker: &Broker,
    operation: AclOperation,
) -> Option<(i16, Option<StrBytes>)> {
    if !broker.authorizer().enabled() {
        return Some(error_of(&AclError::SecurityDisabled));
    }
    if !access.allows_cluster(operation) {
        return Some((
            ErrorCode::ClusterAuthorizationFailed.code(),
            Some(text(format!("{operation} on the cluster is not allowed"))),
        ));
    }
    None
}

fn filter(
    resource_type: i8,
    name: Option<&StrBytes>,
    pattern_type: i8,
    principal: Option<&StrBytes>,
    host: Option<&StrBytes>,
    operation: i8,
    permission: i8,
) -> Result<AclBindingFilter, AclError> {
    Ok(AclBindingFilter {
        resource_type: decode(resource_type, ResourceType::from_code, "resource type")?,
        name: name.map(|n| n.as_str().to_owned()),
        pattern_type: decode(pattern_type, PatternType::from_code, "pattern type")?,
        principal: principal.map(|p| p.as_str().to_owned()),
        host: host.map(|h| h.as_str().to_owned()),
        operation: decode(operation, AclOperation::from_code, "operation")?,
        permission: decode(permission, AclPermission::from_code, "permission type")?,
    })
}

/// CreateAcls: one result per creation, in order; INVALID_REQUEST for a bad binding.
pub(super) async fn create_acls(
    broker: &Broker,
    request: CreateAclsRequest,
    context: &ClientContext,
) -> CreateAclsResponse {
    let access = Access::new(broker, context, "CreateAcls");
    if let Some((code, message)) = refused(&access, broker, AclOperation::Alter) {
        let results = request
            .creations
            .iter()
            .map(|_| {
                AclCreationResult::default()
                    .with_error_code(code)
                    .with_error_message(message.clone())
            })
            .collect();
        return CreateAclsResponse::default().with_results(results);
    }
    let parsed: Vec<Result<AclBinding, AclError>> = request
        .creations
        .iter()
        .map(|c| {
            Ok(AclBinding {
                pattern: ResourcePattern {
                    resource_type: decode(
                        c.resource_type,
                        ResourceType::from_code,
                        "resource type",
                    )?,
                    name: c.resource_name.as_str().to_owned(),
                    pattern_type: decode(
                        c.resource_pattern_type,
                        PatternType::from_code,
                        "pattern type",
                    )?,
                },
                entry: AccessControlEntry {
                    principal: c.principal.as_str().to_owned(),
                    host: c.host.as_str().to_owned(),
                    operation: decode(c.operation, AclOperation::from_code, "operation")?,
                    permission: decode(
                        c.permission_type,
                        AclPermission::from_code,
                        "permission type",
                    )?,
                },
            })
        })
        .collect();
    let valid: Vec<AclBinding> = parsed.iter().filter_map(|p| p.clone().ok()).collect();
    for b in &valid {
        tracing::info!(principal = %context.principal, "creating ACL: {b}");
    }
    let mut created = broker.create_acls(valid).await.into_iter();
    let results = parsed
        .into_iter()
        .map(|p| {
            let outcome = match p {
                Ok(_) => created
                    .next()
                    .unwrap_or(Err(AclError::Storage("no answer".to_owned()))),
                Err(e) => Err(e),
            };
            match outcome {
                Ok(()) => AclCreationResult::default(),
                Err(e) => {
                    let (code, message) = error_of(&e);
                    AclCreationResult::default()
                        .with_error_code(code)
                        .with_error_message(message)
                }
            }
        })
        .collect();
    CreateAclsResponse::default().with_results(results)
}

/// DescribeAcls: every binding the filter matches, grouped by resource pattern.
pub(super) fn describe_acls(
    broker: &Broker,
    request: DescribeAclsRequest,
    context: &ClientContext,
) -> DescribeAclsResponse {
    let access = Access::new(broker, context, "DescribeAcls");
    if let Some((code, message)) = refused(&access, broker, AclOperation::Describe) {
        return DescribeAclsResponse::default()
            .with_error_code(code)
            .with_error_message(message);
    }
    let found = filter(
        request.resource_type_filter,
        request.resource_name_filter.as_ref(),
        request.pattern_type_filter,
        request.principal_filter.as_ref(),
        request.host_filter.as_ref(),
        request.operation,
        request.permission_type,
    )
    .and_then(|f| broker.authorizer().describe(&f));
    let bindings = match found {
        Ok(bindings) => bindings,
        Err(e) => {
            let (code, message) = error_of(&e);
            return DescribeAclsResponse::default()
                .with_error_code(code)
                .with_error_message(message);
        }
    };
    // Bindings come sorted by pattern first, so each pattern's entries are adjacent.
    let mut resources: Vec<(ResourcePattern, Vec<AclDescription>)> = Vec::new();
    for b in bindings {
        let description = AclDescription::default()
            .with_principal(text(b.entry.principal))
            .with_host(text(b.entry.host))
            .with_operation(b.entry.operation.code())
            .with_permission_type(b.entry.permission.code());
        match resources.last_mut() {
            Some((pattern, acls)) if *pattern == b.pattern => acls.push(description),
            _ => resources.push((b.pattern, vec![description])),
        }
    }
    DescribeAclsResponse::default().with_resources(
        resources
            .into_iter()
            .map(|(pattern, acls)| {
                DescribeAclsResource::default()
                    .with_resource_type(pattern.resource_type.code())
                    .with_resource_name(text(pattern.name))
                    .with_pattern_type(pattern.pattern_type.code())
                    .with_acls(acls)
            })
            .collect(),
    )
}

/// DeleteAcls: per filter, the bindings it matched and removed.
pub(super) async fn delete_acls(
    broker: &Broker,
    request: DeleteAclsRequest,
    context: &ClientContext,
) -> DeleteAclsResponse {
    let access = Access::new(broker, context, "DeleteAcls");
    if let Some((code, message)) = refused(&access, broker, AclOperation::Alter) {
        let results = request
            .filters
            .iter()
            .map(|_| {
                DeleteAclsFilterResult::default()
                    .with_error_code(code)
                    .with_error_message(message.clone())
            })
            .collect();
        return DeleteAclsResponse::default().with_filter_results(results);
    }
    let parsed: Vec<Result<AclBindingFilter, AclError>> = request
        .filters
        .iter()
        .map(|f| {
            filter(
                f.resource_type_filter,
                f.resource_name_filter.as_ref(),
                f.pattern_type_filter,
                f.principal_filter.as_ref(),
                f.host_filter.as_ref(),
                f.operation,
                f.permission_type,
            )
        })
        .collect();
    let valid: Vec<AclBindingFilter> = parsed.iter().filter_map(|p| p.clone().ok()).collect();
    let mut deleted = broker.delete_acls(valid).await.into_iter();
    let results = parsed
        .into_iter()
        .map(|p| {
            let outcome = match p {
                Ok(_) => deleted
                    .next()
                    .unwrap_or(Err(AclError::Storage("no answer".to_owned()))),
                Err(e) => Err(e),
            };
            match outcome {
                Ok(removed) => {
                    for b in &removed {
                        tracing::info!(principal = %context.principal, "deleted ACL: {b}");
                    }
                    DeleteAclsFilterResult::default().with_matching_acls(
                        removed
                            .into_iter()
                            .map(|b| {
                                DeleteAclsMatchingAcl::default()
                                    .with_resource_type(b.pattern.resource_type.code())
                                    .with_resource_name(text(b.pattern.name))
                                    .with_pattern_type(b.pattern.pattern_type.code())
                                    .with_principal(text(b.entry.principal))
                                    .with_host(text(b.entry.host))
                                    .with_operation(b.entry.operation.code())
                                    .with_permission_type(b.entry.permission.code())
                            })
                            .collect(),
                    )
                }
                Err(e) => {
                    let (code, message) = error_of(&e);
                    DeleteAclsFilterResult::default()
                        .with_error_code(code)
                        .with_error_message(message)
                }
            }
        })
        .collect();
    DeleteAclsResponse::default().with_filter_results(results)
}
