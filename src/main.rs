//! The `hybridsync` binary: parse the command line, set up logging, hand over.

use clap::Parser;
use hybridsync::cli::{AgentCommand, Cli, Command};
use std::process::ExitCode;

fn main() -> ExitCode {
    hybridsync::malloc::tune();
    run()
}

#[tokio::main]
async fn run() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=warn,tower_http=warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = match cli.command {
        Command::Serve(args) => hybridsync::console::serve(args).await,
        Command::Admin(cmd) => hybridsync::console::admin(cmd).await,
        Command::Simulate(args) => hybridsync::simulate::run(args).await,
        Command::Writeback(command) => hybridsync::writeback::cli::run(command).await,
        Command::BenchBaseline { listen } => hybridsync::simulate::baseline(listen).await,
        Command::Agent(AgentCommand::Install(args)) => hybridsync::agent::install(args).await,
        Command::Agent(AgentCommand::Run(args)) => hybridsync::agent::run(args).await,
        Command::Agent(AgentCommand::AddDirectory(args)) => {
            hybridsync::agent::add_directory(args).await
        }
        Command::Agent(AgentCommand::RemoveDirectory(args)) => {
            hybridsync::agent::remove_directory(args).await
        }
        Command::Agent(AgentCommand::Status(args)) => match hybridsync::agent::status(args).await {
            Ok(true) => Ok(()),
            Ok(false) => return ExitCode::FAILURE,
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
