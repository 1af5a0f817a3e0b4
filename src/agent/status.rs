//! `hybridsync agent status`: shows the local agent's identity and whether its console is reachable
//! and still knows it.

use super::config::Agent;
use super::console::{Console, ConsoleError};
use crate::cli::AgentStatusArgs;
use crate::protocol::VERSION;
use anyhow::Result;
use reqwest::StatusCode;

/// `Ok(true)` only when the console answered and knows this agent.
pub async fn status(args: AgentStatusArgs) -> Result<bool> {
    let Agent { config, credential } = Agent::load(&args.data_dir)?;
    println!("version: {VERSION}");
    println!("agent id: {}", config.agent_id);
    println!("machine name: {}", config.machine_name);
    println!("console: {}", config.console_url);
    println!("data dir: {}", args.data_dir.display());

    let console = Console::for_data_dir(&config.console_url, &args.data_dir)?;
    match console.whoami(&credential.agent_credential).await {
        Ok(me) => {
            println!("console reachable: yes");
            println!("known to console: yes");
            println!("status: {}", me.status);
            println!("health: {}", me.health);
            Ok(true)
        }
        Err(ConsoleError::Unreachable { cause, .. }) => {
            println!("console reachable: no ({cause})");
            println!("known to console: unknown");
            println!("Check the console URL and that `hybridsync serve` is running.");
            Ok(false)
        }
        Err(e) if e.status() == Some(StatusCode::UNAUTHORIZED) => {
            println!("console reachable: yes");
            println!("known to console: no");
            println!(
                "The console does not know this agent (deleted, or its credential was revoked): \
                 re-install it with `hybridsync agent install`."
            );
            Ok(false)
        }
        Err(e) => {
            println!("console reachable: yes");
            println!("known to console: unknown ({e})");
            Ok(false)
        }
    }
}
