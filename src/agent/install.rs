//! `hybridsync agent install`: enrolls this machine with a console and writes the agent's files.
//! Without `--enrollment-token`, an administrator approves the machine in the console first (sign-in
//! by device code), which gives the installer a one-use enrollment token.

use super::config::{save_tls, sha256_hex, Agent, AgentConfig, Credential};
use super::console::{normalize_url, read_ca, Console, CONSOLE_CA_FILE};
use crate::cli::AgentInstallArgs;
use crate::console::tls::SelfSigned;
use crate::protocol::{EnrollRequest, ExistingAgent, VERSION};
use anyhow::{anyhow, bail, Context, Result};

/// The name in an agent's self-signed certificate. The console trusts the certificate by its pin
/// alone, so the name is for people who look at it.
const AGENT_CERT_NAME: &str = "agent.hybridsync.invalid";

pub async fn install(args: AgentInstallArgs) -> Result<()> {
    let console_url = normalize_url(&args.console)?;
    let machine_name = match args.machine_name {
        Some(name) => name.trim().to_owned(),
        None => host_name()?,
    };
    if machine_name.is_empty() {
        bail!("--machine-name must not be empty");
    }
    // Presenting the previous credential lets the console keep the agent's id and history.
    let existing = Agent::load_existing(&args.data_dir)?.map(|agent| ExistingAgent {
        agent_id: agent.config.agent_id,
        agent_credential: agent.credential.agent_credential,
    });
    let previous_id = existing.as_ref().map(|e| e.agent_id.clone());
    // A private CA given now, or saved by an earlier install into this data dir.
    let ca = match &args.console_ca_cert {
        Some(path) => Some(read_ca(path)?),
        None => None,
    };
    let console = match ca {
        Some(ca) => Console::with_ca(&console_url, Some(ca))?,
        None => Console::for_data_dir(&console_url, &args.data_dir)?,
    };
    let enrollment_token = match args.enrollment_token {
        Some(token) => token,
        None => {
            console
                .device_sign_in(&machine_name, |url, code| {
                    // Printed, not logged: this is the prompt for the person installing.
                    println!(
                        "To approve this agent, a Global Administrator or Hybrid Identity Administrator opens {url} and enters the code {code}"
                    );
                    println!("Waiting for approval…");
                })
                .await?
        }
    };
    // A new key pair at every install: the console pins this certificate, so a re-install rotates
    // it. Written only once the console has accepted it.
    let tls = SelfSigned::generate(AGENT_CERT_NAME)?;
    let request = EnrollRequest {
        enrollment_token,
        machine_name: machine_name.clone(),
        extension: args.extension,
        environment: args.environment,
        version: VERSION.to_owned(),
        existing,
        tls_cert_sha256: Some(tls.sha256_hex()),
    };

    let enrolled = console
        .enroll(&request)
        .await
        .map_err(|e| anyhow!("enrollment failed: {e}"))?;

    let agent = Agent {
        config: AgentConfig {
            console_url: console_url.clone(),
            agent_id: enrolled.agent_id,
            machine_name,
            listen: args.listen,
            extension: args.extension,
            environment: enrolled.environment,
        },
        credential: Credential {
            agent_credential: enrolled.agent_credential,
            console_token_sha256: sha256_hex(&enrolled.console_token),
        },
    };
    agent.save(&args.data_dir)?;
    save_tls(&args.data_dir, &tls)?;
    if let Some(path) = &args.console_ca_cert {
        // `agent run` and `agent status` trust the same CA from here on.
        std::fs::copy(path, args.data_dir.join(CONSOLE_CA_FILE)).with_context(|| {
            format!(
                "cannot copy {} into {}",
                path.display(),
                args.data_dir.display()
            )
        })?;
    }

    let agent_id = &agent.config.agent_id;
    let note = if enrolled.reinstalled {
        " (re-install: kept the same agent id; new credential and TLS certificate, so restart the agent if it runs)".to_owned()
    } else if let Some(previous) = previous_id {
        format!(
            " (the console did not recognise the previous agent {previous}: this is a new agent)"
        )
    } else {
        String::new()
    };
    println!("Agent {agent_id} registered with {console_url}{note}");
    println!(
        "Start it with: hybridsync agent run --data-dir {}",
        args.data_dir.display()
    );
    // The wizard's Connect Active Directory step, when its flags were given.
    if let Some(directory) = args.directory.into_directory() {
        super::directory::add(&args.data_dir, directory)
            .await
            .context("the agent is installed, but connecting the directory failed; fix the cause and run `hybridsync agent add-directory`")?;
    }
    Ok(())
}

/// The name the console shows when `--machine-name` is not given.
fn host_name() -> Result<String> {
    let non_empty = |name: String| Some(name.trim().to_owned()).filter(|n| !n.is_empty());
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .and_then(non_empty)
        .or_else(|| std::env::var("HOSTNAME").ok().and_then(non_empty))
        .context("cannot tell this machine's host name (no /etc/hostname, no HOSTNAME): pass --machine-name")
}
