//! DescribeUserScramCredentials and AlterUserScramCredentials (KIP-554): the users' SCRAM
//! credentials, as Kafka's `kafka-configs --entity-type users` and admin clients manage them.

use std::collections::{BTreeMap, BTreeSet};

use staunch_broker::{Broker, CredentialChange, StoredCredential};
use staunch_core::ErrorCode;
use staunch_protocol::kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use staunch_protocol::kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use staunch_protocol::kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse,
    DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse,
};
use staunch_protocol::sasl::{ScramCredential, ScramMechanism, check_iterations};

use staunch_broker::acl::AclOperation;

use super::auth::Access;
use super::{ClientContext, text};

/// Lists the mechanisms and iteration counts of the users asked for (every user when none
/// is named); never any key or salt.
///
/// Needs DESCRIBE on the cluster (as Kafka); otherwise the answer is
/// CLUSTER_AUTHORIZATION_FAILED at the top and lists nobody.
pub(crate) fn describe(
    broker: &Broker,
    request: DescribeUserScramCredentialsRequest,
    context: &ClientContext,
) -> DescribeUserScramCredentialsResponse {
    if !Access::new(broker, context, "DescribeUserScramCredentials")
        .allows_cluster(AclOperation::Describe)
    {
        return DescribeUserScramCredentialsResponse::default()
            .with_error_code(ErrorCode::ClusterAuthorizationFailed.code())
            .with_error_message(Some(text("describing users needs DESCRIBE on the cluster")));
    }
    let all = broker.credentials().list();
    let info = |mechanisms: &[(staunch_core::SaslMechanism, i32)]| -> Vec<CredentialInfo> {
        mechanisms
            .iter()
            .filter_map(|(m, iterations)| {
                Some(
                    CredentialInfo::default()
                        .with_mechanism(ScramMechanism::of(*m)?.kafka_type())
                        .with_iterations(*iterations),
                )
            })
            .collect()
    };
    let results = match request.users.filter(|users| !users.is_empty()) {
        None => all
            .iter()
            .map(|(user, mechanisms)| {
                DescribeUserScramCredentialsResult::default()
                    .with_user(text(user.clone()))
                    .with_credential_infos(info(mechanisms))
            })
            .collect(),
        Some(users) => {
            let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
            for u in &users {
                *counts.entry(u.name.as_str()).or_default() += 1;
            }
            let mut seen = BTreeSet::new();
            users
                .iter()
                .filter(|u| seen.insert(u.name.as_str()))
                .map(|u| {
                    let name = u.name.as_str();
                    let result =
                        DescribeUserScramCredentialsResult::default().with_user(text(name));
                    if counts[name] > 1 {
                        return result
                            .with_error_code(ErrorCode::DuplicateResource.code())
                            .with_error_message(Some(text(format!(
                                "user {name:?} is named more than once"
                            ))));
                    }
                    match all.iter().find(|(user, _)| user == name) {
                        Some((_, mechanisms)) => result.with_credential_infos(info(mechanisms)),
                        None => result
                            .with_error_code(ErrorCode::ResourceNotFound.code())
                            .with_error_message(Some(text(format!(
                                "attempt to describe nonexistent user {name:?}"
                            )))),
                    }
                })
                .collect()
        }
    };
    DescribeUserScramCredentialsResponse::default().with_results(results)
}

/// Applies the deletions and upsertions, each user's all or none; answers once every applied
/// change is durable. Upsertions carry the client-computed salted password (KIP-554); only
/// the stored and server keys derived from it are kept.
pub(crate) async fn alter(
    broker: &Broker,
    request: AlterUserScramCredentialsRequest,
    context: &ClientContext,
) -> AlterUserScramCredentialsResponse {
    if !Access::new(broker, context, "AlterUserScramCredentials")
        .allows_cluster(AclOperation::Alter)
    {
        // As Kafka: every user named gets CLUSTER_AUTHORIZATION_FAILED, nothing changes.
        let named: BTreeSet<String> = request
            .deletions
            .iter()
            .map(|d| d.name.to_string())
            .chain(request.upsertions.iter().map(|u| u.name.to_string()))
            .collect();
        return AlterUserScramCredentialsResponse::default().with_results(
            named
                .into_iter()
                .map(|user| {
                    AlterUserScramCredentialsResult::default()
                        .with_user(text(user))
                        .with_error_code(ErrorCode::ClusterAuthorizationFailed.code())
                        .with_error_message(Some(text("changing users needs ALTER on the cluster")))
                })
                .collect(),
        );
    }
    // Per user: the first error, or the changes.
    let mut users: BTreeMap<String, Result<Vec<CredentialChange>, (ErrorCode, String)>> =
        BTreeMap::new();
    let mut named: BTreeMap<(String, i8), usize> = BTreeMap::new();
    for d in &request.deletions {
        *named.entry((d.name.to_string(), d.mechanism)).or_default() += 1;
    }
    for u in &request.upsertions {
        *named.entry((u.name.to_string(), u.mechanism)).or_default() += 1;
    }
    let mut add = |user: &str, change: Result<CredentialChange, (ErrorCode, String)>| {
        let entry = users.entry(user.to_owned()).or_insert(Ok(Vec::new()));
        match (entry.as_mut(), change) {
            (Ok(changes), Ok(change)) => changes.push(change),
            (Ok(_), Err(e)) => *entry = Err(e),
            (Err(_), _) => {}
        }
    };
    let check_name = |user: &str, mechanism: i8| -> Result<ScramMechanism, (ErrorCode, String)> {
        if user.is_empty() {
            return Err((
                ErrorCode::UnacceptableCredential,
                "user name must not be empty".to_owned(),
            ));
        }
        let m = ScramMechanism::from_kafka_type(mechanism).ok_or_else(|| {
            (
                ErrorCode::UnsupportedSaslMechanism,
                format!("unknown SCRAM mechanism {mechanism}"),
            )
        })?;
        if named[&(user.to_owned(), mechanism)] > 1 {
            return Err((
                ErrorCode::DuplicateResource,
                format!("{m} credential of user {user:?} is changed more than once"),
            ));
        }
        Ok(m)
    };
    for d in &request.deletions {
        let user = d.name.as_str();
        let change = check_name(user, d.mechanism).and_then(|m| {
            if broker.credentials().get(user, m.sasl()).is_none() {
                return Err((
                    ErrorCode::ResourceNotFound,
                    format!(
                        "attempt to delete a user credential that does not exist: {m} of {user:?}"
                    ),
                ));
            }
            Ok(CredentialChange::Delete {
                user: user.to_owned(),
                mechanism: m.sasl(),
            })
        });
        add(user, change);
    }
    for u in &request.upsertions {
        let user = u.name.as_str();
        let change = check_name(user, u.mechanism).and_then(|m| {
            let unacceptable = |e: String| (ErrorCode::UnacceptableCredential, e);
            check_iterations(u.iterations).map_err(|e| unacceptable(e.to_string()))?;
            if u.salt.is_empty() {
                return Err(unacceptable("empty salt".to_owned()));
            }
            if u.salted_password.len() != m.hash_len() {
                return Err(unacceptable(format!(
                    "a {m} salted password is {} bytes",
                    m.hash_len()
                )));
            }
            let c = ScramCredential::from_salted_password(
                m,
                u.salt.to_vec(),
                u.iterations,
                &u.salted_password,
            );
            Ok(CredentialChange::Upsert {
                user: user.to_owned(),
                mechanism: m.sasl(),
                credential: StoredCredential {
                    salt: c.salt,
                    iterations: c.iterations,
                    stored_key: c.stored_key,
                    server_key: c.server_key,
                },
            })
        });
        add(user, change);
    }
    let changes: Vec<CredentialChange> = users
        .values()
        .filter_map(|r| r.as_ref().ok())
        .flatten()
        .cloned()
        .collect();
    let written = if changes.is_empty() {
        Ok(())
    } else {
        let store = broker.credentials().clone();
        tokio::task::spawn_blocking(move || store.alter(changes))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())))
    };
    if let Err(e) = &written {
        tracing::error!(error = %e, "SCRAM credentials not changed");
    }
    let results = users
        .into_iter()
        .map(|(user, outcome)| {
            let result = AlterUserScramCredentialsResult::default().with_user(text(user.clone()));
            match (outcome, &written) {
                (Err((code, message)), _) => result
                    .with_error_code(code.code())
                    .with_error_message(Some(text(message))),
                (Ok(_), Err(e)) => result
                    .with_error_code(ErrorCode::UnknownServerError.code())
                    .with_error_message(Some(text(format!("credentials not saved: {e}")))),
                (Ok(changes), Ok(())) => {
                    tracing::info!(
                        %user,
                        changes = changes.len(),
                        by = %context.principal,
                        peer = %context.peer,
                        "SCRAM credentials changed"
                    );
                    result
                }
            }
        })
        .collect();
    AlterUserScramCredentialsResponse::default().with_results(results)
}
