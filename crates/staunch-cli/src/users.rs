//! `staunch users add|list|delete`: SCRAM users, online through AlterUserScramCredentials /
//! DescribeUserScramCredentials (the password is salted and hashed here, as Kafka's
//! `kafka-configs` does; it never travels), or offline in a stopped broker's data directory
//! (`--data-dir`), which is how the first user of a SASL-only broker is made.

use std::io::BufRead;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::json;
use staunch_broker::{CredentialChange, CredentialStore, Storage, StoredCredential};
use staunch_client::Connection;
use staunch_client::kafka_protocol::messages::alter_user_scram_credentials_request::{
    ScramCredentialDeletion, ScramCredentialUpsertion,
};
use staunch_client::kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, DescribeUserScramCredentialsRequest,
};
use staunch_protocol::sasl::{
    DEFAULT_ITERATIONS, ScramCredential, ScramMechanism, check_iterations, random_bytes,
};

use crate::client::{self, ClientArgs, call, error_text, text};
use crate::output::{Table, print_json};

/// `staunch users`.
#[derive(Debug, Args)]
pub(crate) struct UsersArgs {
    #[command(subcommand)]
    command: UsersCommand,
}

#[derive(Debug, Subcommand)]
enum UsersCommand {
    /// Add a user, or change its password. The password comes from STAUNCH_USER_PASSWORD
    /// or, with --password-stdin, the first line of standard input.
    Add(AddArgs),
    /// List users and their SCRAM mechanisms.
    List(Target),
    /// Delete a user's credentials (all its mechanisms unless --mechanism says which).
    Delete(DeleteArgs),
}

/// Where the users are: a running broker, or a stopped broker's data directory.
#[derive(Debug, Args)]
struct Target {
    /// Change the data directory of a stopped broker instead of asking a running one
    /// (refused while a broker uses it).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, Args)]
struct AddArgs {
    /// The user name.
    name: String,
    /// SCRAM mechanism: SCRAM-SHA-256, SCRAM-SHA-512 or all (repeatable). Default
    /// SCRAM-SHA-512. PLAIN logins are checked against either.
    #[arg(long = "mechanism", short = 'm', value_name = "MECHANISM")]
    mechanisms: Vec<String>,
    /// PBKDF2 iterations (4096 to 16384).
    #[arg(long, default_value_t = DEFAULT_ITERATIONS)]
    iterations: i32,
    /// Read the password from the first line of standard input.
    #[arg(long)]
    password_stdin: bool,
    #[command(flatten)]
    target: Target,
}

#[derive(Debug, Args)]
struct DeleteArgs {
    /// The user name.
    name: String,
    /// Only these SCRAM mechanisms (repeatable, or all).
    #[arg(long = "mechanism", short = 'm', value_name = "MECHANISM")]
    mechanisms: Vec<String>,
    #[command(flatten)]
    target: Target,
}

/// Runs `staunch users`.
pub(crate) fn run(args: UsersArgs) -> Result<(), String> {
    client::block_on(async move {
        match args.command {
            UsersCommand::Add(a) => add(a).await,
            UsersCommand::List(t) => list(t).await,
            UsersCommand::Delete(d) => delete(d).await,
        }
    })?
}

fn mechanisms(names: &[String], default: &[ScramMechanism]) -> Result<Vec<ScramMechanism>, String> {
    if names.is_empty() {
        return Ok(default.to_vec());
    }
    let mut out = Vec::new();
    for name in names.iter().flat_map(|n| n.split(',')) {
        if name.trim().eq_ignore_ascii_case("all") {
            out.extend(ScramMechanism::ALL);
            continue;
        }
        let m = name
            .parse()
            .map_err(|e: String| format!("--mechanism: {e}"))?;
        let m = ScramMechanism::of(m).ok_or_else(|| {
            "--mechanism: PLAIN has no credentials of its own; PLAIN logins are checked against the SCRAM ones".to_owned()
        })?;
        out.push(m);
    }
    out.sort();
    out.dedup();
    Ok(out)
}

fn password(from_stdin: bool) -> Result<String, String> {
    let password = if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| format!("reading the password from standard input: {e}"))?;
        line.trim_end_matches(['\n', '\r']).to_owned()
    } else {
        std::env::var("STAUNCH_USER_PASSWORD").map_err(|_| {
            "no password: set STAUNCH_USER_PASSWORD or pass --password-stdin".to_owned()
        })?
    };
    if password.is_empty() {
        return Err("the password is empty".to_owned());
    }
    Ok(password)
}

/// Opens a stopped broker's credential store (the data directory lock refuses a running one).
fn offline(dir: &PathBuf) -> Result<CredentialStore, String> {
    let storage = Storage::fs_locked(dir, 16).map_err(|e| {
        format!(
            "opening {}: {e} (is a broker using it? then leave out --data-dir)",
            dir.display()
        )
    })?;
    storage
        .io()
        .create_dir_all("")
        .map_err(|e| format!("creating {}: {e}", dir.display()))?;
    CredentialStore::open(&storage)
}

async fn alter(target: &Target, request: AlterUserScramCredentialsRequest) -> Result<(), String> {
    let mut connection = client::connect(&target.client).await?;
    let response = call(&mut connection, request).await?;
    let failures: Vec<String> = response
        .results
        .iter()
        .filter(|r| r.error_code != 0)
        .map(|r| {
            format!(
                "user {:?}: {}",
                r.user.as_str(),
                error_text(r.error_code, r.error_message.as_ref())
            )
        })
        .collect();
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("; "))
    }
}

async fn add(args: AddArgs) -> Result<(), String> {
    let mechanisms = mechanisms(&args.mechanisms, &[ScramMechanism::Sha512])?;
    check_iterations(args.iterations).map_err(|e| format!("--iterations: {e}"))?;
    if args.name.is_empty() {
        return Err("the user name is empty".to_owned());
    }
    let password = password(args.password_stdin)?;
    let mut upsertions = Vec::new();
    let mut changes = Vec::new();
    for m in &mechanisms {
        let salt = random_bytes(32);
        let salted = m.salted_password(password.as_bytes(), &salt, args.iterations as u32);
        let c = ScramCredential::from_salted_password(*m, salt.clone(), args.iterations, &salted);
        changes.push(CredentialChange::Upsert {
            user: args.name.clone(),
            mechanism: m.sasl(),
            credential: StoredCredential {
                salt: c.salt,
                iterations: c.iterations,
                stored_key: c.stored_key,
                server_key: c.server_key,
            },
        });
        upsertions.push(
            ScramCredentialUpsertion::default()
                .with_name(text(&args.name))
                .with_mechanism(m.kafka_type())
                .with_iterations(args.iterations)
                .with_salt(salt.into())
                .with_salted_password(salted.into()),
        );
    }
    match &args.target.data_dir {
        Some(dir) => offline(dir)?.alter(changes).map_err(|e| e.to_string())?,
        None => {
            alter(
                &args.target,
                AlterUserScramCredentialsRequest::default().with_upsertions(upsertions),
            )
            .await?
        }
    }
    let names: Vec<&str> = mechanisms.iter().map(|m| m.sasl().name()).collect();
    if args.target.client.json {
        print_json(&json!({"user": args.name, "mechanisms": names}));
    } else {
        println!("user {} saved ({})", args.name, names.join(", "));
    }
    Ok(())
}

/// Every user with its mechanisms and iterations.
async fn users(target: &Target) -> Result<Vec<(String, Vec<(ScramMechanism, i32)>)>, String> {
    if let Some(dir) = &target.data_dir {
        return Ok(offline(dir)?
            .list()
            .into_iter()
            .map(|(user, ms)| {
                let ms = ms
                    .into_iter()
                    .filter_map(|(m, i)| Some((ScramMechanism::of(m)?, i)))
                    .collect();
                (user, ms)
            })
            .collect());
    }
    let mut connection: Connection = client::connect(&target.client).await?;
    let response = call(
        &mut connection,
        DescribeUserScramCredentialsRequest::default(),
    )
    .await?;
    if response.error_code != 0 {
        return Err(error_text(
            response.error_code,
            response.error_message.as_ref(),
        ));
    }
    Ok(response
        .results
        .into_iter()
        .map(|r| {
            let ms = r
                .credential_infos
                .iter()
                .filter_map(|c| Some((ScramMechanism::from_kafka_type(c.mechanism)?, c.iterations)))
                .collect();
            (r.user.to_string(), ms)
        })
        .collect())
}

async fn list(target: Target) -> Result<(), String> {
    let users = users(&target).await?;
    if target.client.json {
        let list: Vec<_> = users
            .iter()
            .map(|(user, ms)| {
                json!({
                    "user": user,
                    "credentials": ms.iter().map(|(m, i)| json!({"mechanism": m.sasl().name(), "iterations": i})).collect::<Vec<_>>(),
                })
            })
            .collect();
        print_json(&json!(list));
        return Ok(());
    }
    let mut table = Table::new(["USER", "MECHANISMS"]);
    for (user, ms) in &users {
        let ms: Vec<String> = ms
            .iter()
            .map(|(m, i)| format!("{}({i})", m.sasl().name()))
            .collect();
        table.row([user.clone(), ms.join(", ")]);
    }
    table.print();
    Ok(())
}

async fn delete(args: DeleteArgs) -> Result<(), String> {
    let mechanisms = if args.mechanisms.is_empty() {
        let users = users(&args.target).await?;
        let found = users
            .into_iter()
            .find(|(user, _)| *user == args.name)
            .ok_or_else(|| format!("no user {:?}", args.name))?;
        found.1.into_iter().map(|(m, _)| m).collect()
    } else {
        mechanisms(&args.mechanisms, &[])?
    };
    match &args.target.data_dir {
        Some(dir) => {
            let store = offline(dir)?;
            if let Some(m) = mechanisms
                .iter()
                .find(|m| store.get(&args.name, m.sasl()).is_none())
            {
                return Err(format!("user {:?} has no {m} credential", args.name));
            }
            store
                .alter(
                    mechanisms
                        .iter()
                        .map(|m| CredentialChange::Delete {
                            user: args.name.clone(),
                            mechanism: m.sasl(),
                        })
                        .collect(),
                )
                .map_err(|e| e.to_string())?;
        }
        None => {
            let deletions = mechanisms
                .iter()
                .map(|m| {
                    ScramCredentialDeletion::default()
                        .with_name(text(&args.name))
                        .with_mechanism(m.kafka_type())
                })
                .collect();
            alter(
                &args.target,
                AlterUserScramCredentialsRequest::default().with_deletions(deletions),
            )
            .await?;
        }
    }
    if !args.target.client.json {
        println!("user {} deleted", args.name);
    } else {
        print_json(&json!({"user": args.name, "deleted": true}));
    }
    Ok(())
}
