//! `staunch acls add|list|remove`: ACLs through CreateAcls, DescribeAcls and DeleteAcls, with
//! the flags of Kafka's `kafka-acls.sh`.

use clap::{Args, Subcommand, ValueEnum};
use serde_json::json;
use staunch_broker::acl::{
    AccessControlEntry, AclBinding, AclBindingFilter, AclOperation, AclPermission, CLUSTER_NAME,
    PatternType, ResourcePattern, ResourceType,
};
use staunch_client::kafka_protocol::messages::create_acls_request::AclCreation;
use staunch_client::kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;
use staunch_client::kafka_protocol::messages::{
    CreateAclsRequest, DeleteAclsRequest, DescribeAclsRequest,
};
use staunch_client::kafka_protocol::protocol::StrBytes;

use crate::client::{self, ClientArgs, call, error_text, text};
use crate::output::{Table, cell, print_json};

/// `staunch acls`.
#[derive(Debug, Args)]
pub(crate) struct AclsArgs {
    #[command(subcommand)]
    command: AclsCommand,
}

#[derive(Debug, Subcommand)]
enum AclsCommand {
    /// Add ACLs: each ALLOW (or DENY) principal, from each host, gets each operation on each
    /// resource named.
    Add(AddArgs),
    /// List the ACLs matching the resources and principal given (all ACLs without them).
    List(FilterArgs),
    /// Remove the ACLs matching the resources, principal and operations given.
    Remove(RemoveArgs),
}

/// A pattern type as given on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum PatternArg {
    /// The name is the resource's name (or `*` for every resource of the type).
    Literal,
    /// The name is a prefix of the resources' names.
    Prefixed,
    /// (list / remove) Every ACL that applies to the named resource: literal, `*` and
    /// prefixes of it.
    Match,
    /// (list / remove) ACLs of either pattern type with exactly this name.
    Any,
}

impl PatternArg {
    fn pattern_type(self) -> PatternType {
        match self {
            PatternArg::Literal => PatternType::Literal,
            PatternArg::Prefixed => PatternType::Prefixed,
            PatternArg::Match => PatternType::Match,
            PatternArg::Any => PatternType::Any,
        }
    }
}

/// The resources an ACL command names.
#[derive(Debug, Clone, Args)]
struct ResourceArgs {
    /// A topic (repeatable; `*` for every topic).
    #[arg(long = "topic", value_name = "NAME")]
    topics: Vec<String>,
    /// A consumer group (repeatable; `*` for every group).
    #[arg(long = "group", value_name = "NAME")]
    groups: Vec<String>,
    /// The cluster (resource `kafka-cluster`).
    #[arg(long)]
    cluster: bool,
    /// A transactional id (repeatable; `*` for every one).
    #[arg(long = "transactional-id", value_name = "ID")]
    transactional_ids: Vec<String>,
}

impl ResourceArgs {
    /// Each resource named: its type and name.
    fn resources(&self) -> Vec<(ResourceType, String)> {
        let mut resources: Vec<(ResourceType, String)> = Vec::new();
        resources.extend(self.topics.iter().map(|t| (ResourceType::Topic, t.clone())));
        resources.extend(self.groups.iter().map(|g| (ResourceType::Group, g.clone())));
        if self.cluster {
            resources.push((ResourceType::Cluster, CLUSTER_NAME.to_owned()));
        }
        resources.extend(
            self.transactional_ids
                .iter()
                .map(|t| (ResourceType::TransactionalId, t.clone())),
        );
        resources
    }
}

#[derive(Debug, Args)]
struct AddArgs {
    #[command(flatten)]
    resources: ResourceArgs,
    /// How the resource names match.
    #[arg(long, value_enum, default_value = "literal")]
    resource_pattern_type: PatternArg,
    /// A principal the ACLs allow, e.g. User:alice, or User:* for everyone (repeatable).
    #[arg(long = "allow-principal", value_name = "PRINCIPAL")]
    allow_principals: Vec<String>,
    /// A principal the ACLs deny (repeatable). A DENY wins over every ALLOW.
    #[arg(long = "deny-principal", value_name = "PRINCIPAL")]
    deny_principals: Vec<String>,
    /// A host (IP address) the ALLOW ACLs apply to (repeatable; default `*`, every host).
    #[arg(long = "allow-host", value_name = "HOST")]
    allow_hosts: Vec<String>,
    /// A host (IP address) the DENY ACLs apply to (repeatable; default `*`, every host).
    #[arg(long = "deny-host", value_name = "HOST")]
    deny_hosts: Vec<String>,
    /// An operation: All, Read, Write, Create, Delete, Alter, Describe, ClusterAction,
    /// DescribeConfigs, AlterConfigs, IdempotentWrite (repeatable).
    #[arg(long = "operation", value_name = "OPERATION", value_parser = parse_operation, required = true)]
    operations: Vec<AclOperation>,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, Args)]
struct FilterArgs {
    #[command(flatten)]
    resources: ResourceArgs,
    /// Which ACLs of the named resources: `any` (default: either pattern type, this exact
    /// name), `literal`, `prefixed`, or `match` (every ACL that applies to the resource).
    #[arg(long, value_enum, default_value = "any")]
    resource_pattern_type: PatternArg,
    /// Only the ACLs of this principal, e.g. User:alice.
    #[arg(long, value_name = "PRINCIPAL")]
    principal: Option<String>,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, Args)]
struct RemoveArgs {
    #[command(flatten)]
    filter: FilterArgs,
    /// Only ACLs of this operation (repeatable; default every operation).
    #[arg(long = "operation", value_name = "OPERATION", value_parser = parse_operation)]
    operations: Vec<AclOperation>,
    /// Only ACLs applying to this host.
    #[arg(long, value_name = "HOST")]
    host: Option<String>,
    /// Remove even when the filter names no resource, principal, operation or host, i.e.
    /// every ACL.
    #[arg(long)]
    force: bool,
}

fn parse_operation(text: &str) -> Result<AclOperation, String> {
    AclOperation::parse(text)
        .filter(|op| *op != AclOperation::Any)
        .ok_or_else(|| {
            format!(
                "unknown operation '{text}'; one of All, Read, Write, Create, Delete, Alter, \
                 Describe, ClusterAction, DescribeConfigs, AlterConfigs, IdempotentWrite"
            )
        })
}

/// Runs a `staunch acls` subcommand.
pub(crate) fn run(args: AclsArgs) -> Result<(), String> {
    client::block_on(async move {
        match args.command {
            AclsCommand::Add(a) => add(a).await,
            AclsCommand::List(a) => list(a).await,
            AclsCommand::Remove(a) => remove(a).await,
        }
    })?
}

/// The bindings `add` creates: every resource × principal × host × operation.
fn bindings_to_add(args: &AddArgs) -> Result<Vec<AclBinding>, String> {
    let resources = args.resources.resources();
    if resources.is_empty() {
        return Err(
            "name a resource: --topic NAME, --group NAME, --cluster or --transactional-id ID"
                .to_owned(),
        );
    }
    if args.allow_principals.is_empty() && args.deny_principals.is_empty() {
        return Err(
            "name a principal: --allow-principal User:NAME or --deny-principal User:NAME"
                .to_owned(),
        );
    }
    let pattern_type = args.resource_pattern_type.pattern_type();
    let star = vec!["*".to_owned()];
    let hosts = |given: &Vec<String>| {
        if given.is_empty() {
            star.clone()
        } else {
            given.clone()
        }
    };
    let sides = [
        (
            AclPermission::Allow,
            &args.allow_principals,
            hosts(&args.allow_hosts),
        ),
        (
            AclPermission::Deny,
            &args.deny_principals,
            hosts(&args.deny_hosts),
        ),
    ];
    let mut bindings = Vec::new();
    for (resource_type, name) in &resources {
        for (permission, principals, hosts) in &sides {
            for principal in principals.iter() {
                for host in hosts {
                    for &operation in &args.operations {
                        let binding = AclBinding {
                            pattern: ResourcePattern {
                                resource_type: *resource_type,
                                name: name.clone(),
                                pattern_type,
                            },
                            entry: AccessControlEntry {
                                principal: principal.clone(),
                                host: host.clone(),
                                operation,
                                permission: *permission,
                            },
                        };
                        binding
                            .validate()
                            .map_err(|why| format!("{binding}: {why}"))?;
                        bindings.push(binding);
                    }
                }
            }
        }
    }
    Ok(bindings)
}

fn binding_json(b: &AclBinding) -> serde_json::Value {
    json!({
        "resource_type": b.pattern.resource_type.name(),
        "name": b.pattern.name,
        "pattern_type": b.pattern.pattern_type.name(),
        "principal": b.entry.principal,
        "host": b.entry.host,
        "operation": b.entry.operation.name(),
        "permission": b.entry.permission.name(),
    })
}

fn print_bindings(bindings: &[AclBinding], empty: &str) {
    let mut table = Table::new([
        "RESOURCE TYPE",
        "NAME",
        "PATTERN",
        "PRINCIPAL",
        "HOST",
        "OPERATION",
        "PERMISSION",
    ]);
    for b in bindings {
        table.row([
            b.pattern.resource_type.name().to_owned(),
            cell(&b.pattern.name),
            b.pattern.pattern_type.name().to_owned(),
            cell(&b.entry.principal),
            cell(&b.entry.host),
            b.entry.operation.name().to_owned(),
            b.entry.permission.name().to_owned(),
        ]);
    }
    if table.is_empty() {
        if !empty.is_empty() {
            println!("{empty}");
        }
    } else {
        table.print();
    }
}

async fn add(args: AddArgs) -> Result<(), String> {
    let bindings = bindings_to_add(&args)?;
    let mut connection = client::connect(&args.client).await?;
    let creations = bindings
        .iter()
        .map(|b| {
            AclCreation::default()
                .with_resource_type(b.pattern.resource_type.code())
                .with_resource_name(text(&b.pattern.name))
                .with_resource_pattern_type(b.pattern.pattern_type.code())
                .with_principal(text(&b.entry.principal))
                .with_host(text(&b.entry.host))
                .with_operation(b.entry.operation.code())
                .with_permission_type(b.entry.permission.code())
        })
        .collect();
    let response = call(
        &mut connection,
        CreateAclsRequest::default().with_creations(creations),
    )
    .await?;
    if response.results.len() != bindings.len() {
        return Err(format!(
            "the broker answered {} of {} ACL creations",
            response.results.len(),
            bindings.len()
        ));
    }
    let failures: Vec<String> = bindings
        .iter()
        .zip(&response.results)
        .filter(|(_, r)| r.error_code != 0)
        .map(|(b, r)| {
            format!(
                "{b}: {}",
                error_text(r.error_code, r.error_message.as_ref())
            )
        })
        .collect();
    if !failures.is_empty() {
        return Err(format!("cannot add ACLs: {}", failures.join("; ")));
    }
    if args.client.json {
        let list: Vec<_> = bindings.iter().map(binding_json).collect();
        print_json(&json!({ "added": list }));
    } else {
        println!("Added {} ACL(s):", bindings.len());
        print_bindings(&bindings, "");
    }
    Ok(())
}

/// The filters of a list or remove: one per resource named, or one for every resource.
fn filters(args: &FilterArgs) -> Vec<AclBindingFilter> {
    let base = AclBindingFilter {
        principal: args.principal.clone(),
        ..AclBindingFilter::any()
    };
    let resources = args.resources.resources();
    if resources.is_empty() {
        return vec![base];
    }
    resources
        .into_iter()
        .map(|(resource_type, name)| AclBindingFilter {
            resource_type,
            name: Some(name),
            pattern_type: args.resource_pattern_type.pattern_type(),
            ..base.clone()
        })
        .collect()
}

fn optional(value: &Option<String>) -> Option<StrBytes> {
    value.as_deref().map(text)
}

/// One binding from the codes of an answer, or why they are not ones Staunch knows.
#[allow(clippy::too_many_arguments)]
fn binding_from(
    resource_type: i8,
    name: &StrBytes,
    pattern_type: i8,
    principal: &StrBytes,
    host: &StrBytes,
    operation: i8,
    permission: i8,
) -> Result<AclBinding, String> {
    let unknown =
        |what: &str, code: i8| format!("the broker answered an unknown {what} code {code}");
    Ok(AclBinding {
        pattern: ResourcePattern {
            resource_type: ResourceType::from_code(resource_type)
                .ok_or_else(|| unknown("resource type", resource_type))?,
            name: name.as_str().to_owned(),
            pattern_type: PatternType::from_code(pattern_type)
                .ok_or_else(|| unknown("pattern type", pattern_type))?,
        },
        entry: AccessControlEntry {
            principal: principal.as_str().to_owned(),
            host: host.as_str().to_owned(),
            operation: AclOperation::from_code(operation)
                .ok_or_else(|| unknown("operation", operation))?,
            permission: AclPermission::from_code(permission)
                .ok_or_else(|| unknown("permission", permission))?,
        },
    })
}

async fn list(args: FilterArgs) -> Result<(), String> {
    let mut connection = client::connect(&args.client).await?;
    let mut found: Vec<AclBinding> = Vec::new();
    for f in filters(&args) {
        let request = DescribeAclsRequest::default()
            .with_resource_type_filter(f.resource_type.code())
            .with_resource_name_filter(optional(&f.name))
            .with_pattern_type_filter(f.pattern_type.code())
            .with_principal_filter(optional(&f.principal))
            .with_host_filter(None)
            .with_operation(AclOperation::Any.code())
            .with_permission_type(AclPermission::Any.code());
        let response = call(&mut connection, request).await?;
        if response.error_code != 0 {
            return Err(format!(
                "cannot list ACLs: {}",
                error_text(response.error_code, response.error_message.as_ref())
            ));
        }
        for resource in &response.resources {
            for acl in &resource.acls {
                found.push(binding_from(
                    resource.resource_type,
                    &resource.resource_name,
                    resource.pattern_type,
                    &acl.principal,
                    &acl.host,
                    acl.operation,
                    acl.permission_type,
                )?);
            }
        }
    }
    found.sort();
    found.dedup();
    if args.client.json {
        let list: Vec<_> = found.iter().map(binding_json).collect();
        print_json(&json!({ "acls": list }));
    } else {
        print_bindings(&found, "No ACLs.");
    }
    Ok(())
}

async fn remove(args: RemoveArgs) -> Result<(), String> {
    let operations = if args.operations.is_empty() {
        vec![AclOperation::Any]
    } else {
        args.operations.clone()
    };
    let host = &args.host;
    let filters: Vec<AclBindingFilter> = filters(&args.filter)
        .into_iter()
        .flat_map(|f| {
            operations.iter().map(move |&operation| AclBindingFilter {
                operation,
                host: host.clone(),
                ..f.clone()
            })
        })
        .collect();
    if !args.force && filters.iter().any(AclBindingFilter::matches_everything) {
        return Err(
            "this would remove every ACL: name a resource, --principal, --operation or --host, \
             or give --force"
                .to_owned(),
        );
    }
    let mut connection = client::connect(&args.filter.client).await?;
    let request = DeleteAclsRequest::default().with_filters(
        filters
            .iter()
            .map(|f| {
                DeleteAclsFilter::default()
                    .with_resource_type_filter(f.resource_type.code())
                    .with_resource_name_filter(optional(&f.name))
                    .with_pattern_type_filter(f.pattern_type.code())
                    .with_principal_filter(optional(&f.principal))
                    .with_host_filter(optional(&f.host))
                    .with_operation(f.operation.code())
                    .with_permission_type(AclPermission::Any.code())
            })
            .collect(),
    );
    let response = call(&mut connection, request).await?;
    let mut removed = Vec::new();
    for result in &response.filter_results {
        if result.error_code != 0 {
            return Err(format!(
                "cannot remove ACLs: {}",
                error_text(result.error_code, result.error_message.as_ref())
            ));
        }
        for acl in &result.matching_acls {
            removed.push(binding_from(
                acl.resource_type,
                &acl.resource_name,
                acl.pattern_type,
                &acl.principal,
                &acl.host,
                acl.operation,
                acl.permission_type,
            )?);
        }
    }
    removed.sort();
    removed.dedup();
    if args.filter.client.json {
        let list: Vec<_> = removed.iter().map(binding_json).collect();
        print_json(&json!({ "removed": list }));
    } else {
        println!("Removed {} ACL(s).", removed.len());
        print_bindings(&removed, "");
    }
    Ok(())
}
