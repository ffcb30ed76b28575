//! `staunch`: run a broker (`staunch serve`) and talk to one.

mod serve;

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
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("staunch: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}
