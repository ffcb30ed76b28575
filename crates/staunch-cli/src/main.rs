//! `staunch`: run a broker (`staunch serve`) and talk to one: administer topics, produce,
//! consume, inspect consumer groups, and list, show and redrive dead letters; and check and
//! repair a stopped broker's logs (`staunch log`).

mod acls;
mod bench;
mod client;
mod client_security;
mod consume;
mod dlq;
mod groups;
mod log;
mod metrics_http;
mod output;
mod produce;
mod serve;
mod topics;
mod users;

use clap::{Parser, Subcommand};

/// Staunch: a Kafka-compatible broker that never loses an acknowledged message.
#[derive(Debug, Parser)]
#[command(name = "staunch", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a single-node broker (default: 127.0.0.1:9092, data in ./staunch-data, flush always).
    Serve(serve::ServeArgs),
    /// List, describe, create, delete and alter topics.
    Topics(topics::TopicsArgs),
    /// Send lines from standard input (or --value) to a topic.
    Produce(produce::ProduceArgs),
    /// Print a topic's records; with --group, as a consumer-group member that commits each
    /// record's offset once it was printed.
    Consume(consume::ConsumeArgs),
    /// List and describe consumer groups: members, assignments, committed offsets and lag.
    Groups(groups::GroupsArgs),
    /// Dead-letter topics: list them, show their records, redrive them to the source topic.
    Dlq(dlq::DlqArgs),
    /// Access control lists (with `authorizer_enabled`): add, list and remove who may do
    /// what, as Kafka's kafka-acls.sh.
    Acls(acls::AclsArgs),
    /// Load generator: produce or consume as fast as the broker allows and report the numbers.
    Bench(bench::BenchArgs),
    /// Check a stopped broker's partition logs for damage, and repair them by moving the
    /// damaged part aside.
    Log(log::LogArgs),
    /// SCRAM users: add (or change a password), list, delete; online, or offline in a
    /// stopped broker's data directory (--data-dir).
    Users(users::UsersArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Topics(args) => topics::run(args),
        Command::Produce(args) => produce::run(args),
        Command::Consume(args) => consume::run(args),
        Command::Groups(args) => groups::run(args),
        Command::Dlq(args) => dlq::run(args),
        Command::Acls(args) => acls::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Log(args) => log::run(args),
        Command::Users(args) => users::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("staunch: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}
