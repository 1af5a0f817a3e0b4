//! `hybridsync agent add-directory` and `remove-directory`, and the per-domain files they keep in
//! the agent's data dir:
//!
//! - `directories/<domain>.json`: where the directory is, its dialect and base DN, which service
//!   account the agent binds as (nothing secret);
//! - `directories/<domain>.secret` (0600): the service account's password, and nothing else;
//! - `directories/<domain>.ca.pem`: a copy of `--ca-cert`, so the agent does not depend on a file
//!   outside its data dir.
//!
//! The administrator's credentials are used for the one connect and never written anywhere.
//! `agent run` rescans `directories/` (see `run`), so adding or removing a directory needs no
//! restart.

use super::config::{write_atomic, Agent};
use super::console::Console;
use crate::cli::{
    AgentAddDirectoryArgs, AgentRemoveDirectoryArgs, DirectoryArgs, ServiceAccountMode,
};
use crate::directory::account::{self, AccountChoice, ConnectRequest, Known, ServiceAccount};
use crate::directory::{Dialect, Target};
use crate::protocol::{AgentDomain, CheckStatus, DomainsReport, HealthCheck};
use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::fs::{self, DirBuilder};
use std::io::{ErrorKind, Read};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

const DIRECTORIES: &str = "directories";
/// A health check that takes longer than this fails: a hung server must not stall heartbeats.
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// `directories/<domain>.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct DirectoryConfig {
    pub domain: String,
    pub ldap_url: String,
    /// File name of the CA copy in `directories/`, if `--ca-cert` was given.
    pub ca_cert: Option<String>,
    pub base_dn: String,
    /// StartTLS on an ldap:// URL (absent in files written before the flag existed).
    #[serde(default)]
    pub starttls: bool,
    pub dialect: Dialect,
    pub service_account: ServiceAccount,
    /// RFC 3339 time of the last add-directory.
    pub added_at: String,
}

impl DirectoryConfig {
    pub(crate) fn target(&self, data_dir: &Path) -> Result<Target> {
        let ca = self
            .ca_cert
            .as_ref()
            .map(|name| data_dir.join(DIRECTORIES).join(name));
        Target::new(&self.ldap_url, ca.as_deref())
            .and_then(|t| t.with_starttls(self.starttls))
            .map_err(|e| anyhow!(e))
    }

    fn secret_path(&self, data_dir: &Path) -> PathBuf {
        data_dir.join(DIRECTORIES).join(secret_name(&self.domain))
    }

    pub(crate) fn password(&self, data_dir: &Path) -> Result<String> {
        let path = self.secret_path(data_dir);
        fs::read_to_string(&path).with_context(|| {
            format!(
                "cannot read the service account password {}; run `hybridsync agent add-directory` again",
                path.display()
            )
        })
    }

    pub fn report(&self) -> AgentDomain {
        AgentDomain {
            domain: self.domain.clone(),
            dialect: self.dialect.as_str().to_owned(),
            base_dn: self.base_dn.clone(),
            ldap_url: self.ldap_url.clone(),
            service_account: self.service_account.name.clone(),
        }
    }
}

fn config_name(domain: &str) -> String {
    format!("{domain}.json")
}
fn secret_name(domain: &str) -> String {
    format!("{domain}.secret")
}
fn ca_name(domain: &str) -> String {
    format!("{domain}.ca.pem")
}

/// Lower-cases and checks a DNS domain name; it also names files, so nothing else gets through.
pub(crate) fn normalize_domain(raw: &str) -> Result<String> {
    let domain = raw.trim().trim_end_matches('.').to_ascii_lowercase();
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if domain.len() > 253 || !domain.contains('.') || !domain.split('.').all(label_ok) {
        bail!("invalid --domain {raw:?}: expected a DNS domain name such as corp.example.test");
    }
    Ok(domain)
}

/// Every configured directory, sorted by domain; an unreadable file is reported, not skipped.
pub(crate) fn load_all(data_dir: &Path) -> Vec<Result<DirectoryConfig, (String, String)>> {
    let dir = data_dir.join(DIRECTORIES);
    let mut names: Vec<String> = match fs::read_dir(&dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.ends_with(".json") && !n.starts_with('.'))
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let domain = name.trim_end_matches(".json").to_owned();
            let path = dir.join(&name);
            fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| {
                    serde_json::from_slice::<DirectoryConfig>(&b).map_err(|e| e.to_string())
                })
                .map_err(|e| (domain, format!("{} is unreadable: {e}", path.display())))
        })
        .collect()
}

/// Changes whenever a directory is added, changed or removed: the running agent compares it
/// every second to report a change at once.
pub(crate) fn fingerprint(data_dir: &Path) -> Vec<(String, Option<SystemTime>, u64)> {
    let mut out: Vec<_> = fs::read_dir(data_dir.join(DIRECTORIES))
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
                .map(|e| {
                    let meta = e.metadata().ok();
                    (
                        e.file_name().to_string_lossy().into_owned(),
                        meta.as_ref().and_then(|m| m.modified().ok()),
                        meta.map_or(0, |m| m.len()),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// The domains as reported to the console (unreadable files left out: the checks report them).
pub(crate) fn reported(data_dir: &Path) -> Vec<AgentDomain> {
    load_all(data_dir)
        .into_iter()
        .filter_map(Result::ok)
        .map(|c| c.report())
        .collect()
}

/// One `directory:<domain>` check per directory: the service account can bind and read the
/// base DN.
pub(crate) async fn checks(data_dir: &Path) -> Vec<HealthCheck> {
    let checks = load_all(data_dir).into_iter().map(|loaded| async move {
        let (domain, outcome) = match loaded {
            Err((domain, error)) => (domain, Err(error)),
            Ok(config) => {
                let outcome = tokio::time::timeout(CHECK_TIMEOUT, check_one(data_dir, &config))
                    .await
                    .unwrap_or_else(|_| {
                        Err(format!(
                            "no answer from {} within {CHECK_TIMEOUT:?}",
                            config.ldap_url
                        ))
                    });
                (config.domain, outcome)
            }
        };
        let (status, message) = match outcome {
            Ok(message) => (CheckStatus::Pass, message),
            Err(message) => (CheckStatus::Fail, message),
        };
        HealthCheck {
            name: format!("directory:{domain}"),
            status,
            message,
        }
    });
    futures::future::join_all(checks).await
}

async fn check_one(data_dir: &Path, config: &DirectoryConfig) -> Result<String, String> {
    let target = config.target(data_dir).map_err(|e| format!("{e:#}"))?;
    let password = config.password(data_dir).map_err(|e| format!("{e:#}"))?;
    let who = &config.service_account.bind_dn;
    account::check_account(&target, who, &password, &config.base_dn)
        .await
        .map_err(|e| e.to_string())?;
    Ok(format!(
        "{} at {}: {who} binds and reads {}",
        config.dialect.label(),
        config.ldap_url,
        config.base_dn
    ))
}

/// Reads a password from a file, or from standard input for `-`. One trailing newline (what
/// `echo` and editors add) is not part of the password.
fn read_password(path: &Path, what: &str) -> Result<String> {
    let mut text = String::new();
    if path.as_os_str() == "-" {
        std::io::stdin()
            .read_to_string(&mut text)
            .with_context(|| format!("cannot read the {what} from standard input"))?;
    } else {
        text = fs::read_to_string(path)
            .with_context(|| format!("cannot read the {what} file {}", path.display()))?;
    }
    let text = text
        .strip_suffix('\n')
        .map(|t| t.strip_suffix('\r').unwrap_or(t))
        .unwrap_or(&text)
        .to_owned();
    if text.is_empty() {
        bail!("the {what} in {} is empty", path.display());
    }
    Ok(text)
}

pub async fn add_directory(args: AgentAddDirectoryArgs) -> Result<()> {
    add(&args.data_dir, args.directory).await
}

/// The add itself, shared with `agent install --domain …`.
pub(crate) async fn add(data_dir: &Path, args: DirectoryArgs) -> Result<()> {
    let agent = Agent::load(data_dir)?;
    let domain = normalize_domain(&args.domain)?;
    let target = Target::new(&args.ldap_url, args.ca_cert.as_deref())
        .and_then(|t| t.with_starttls(args.starttls))
        .map_err(|e| anyhow!(e))?;
    if args.admin.trim().is_empty() {
        bail!("--admin must not be empty");
    }
    let stdin_twice = args.admin_password_file.as_os_str() == "-"
        && args
            .service_account_password_file
            .as_deref()
            .is_some_and(|p| p.as_os_str() == "-");
    if stdin_twice {
        bail!("only one of --admin-password-file and --service-account-password-file can be `-` (standard input)");
    }
    let choice = match args.service_account {
        ServiceAccountMode::Create => {
            if args.service_account_password_file.is_some() {
                bail!("--service-account-password-file is for --service-account custom; `create` makes its own random password");
            }
            AccountChoice::Create {
                name: args.service_account_name.clone(),
            }
        }
        ServiceAccountMode::Custom => {
            let name = args
                .service_account_name
                .clone()
                .filter(|n| !n.trim().is_empty())
                .context("--service-account custom needs --service-account-name (its bind DN, or user@domain on AD)")?;
            let file = args
                .service_account_password_file
                .as_deref()
                .context("--service-account custom needs --service-account-password-file")?;
            AccountChoice::Custom {
                name,
                password: read_password(file, "service account password")?,
            }
        }
    };
    let admin_password = read_password(&args.admin_password_file, "administrator password")?;

    // A re-run keeps the account this agent created before, if its password still works.
    let previous = load_all(data_dir)
        .into_iter()
        .filter_map(Result::ok)
        .find(|c| c.domain == domain);
    let known = previous
        .as_ref()
        .filter(|c| c.service_account.mode == account::AccountMode::Create)
        .and_then(|c| {
            Some(Known {
                bind_dn: c.service_account.bind_dn.clone(),
                password: c.password(data_dir).ok()?,
            })
        });

    let connected = account::connect(ConnectRequest {
        domain: &domain,
        target: &target,
        base_dn: args.base_dn.as_deref(),
        admin: &args.admin,
        admin_password: &admin_password,
        choice,
        agent_id: &agent.config.agent_id,
        machine_name: &agent.config.machine_name,
        known,
    })
    .await
    .with_context(|| format!("cannot connect the directory {domain}"))?;
    drop(admin_password);

    let dir = data_dir.join(DIRECTORIES);
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    // The secret and the CA first, the config last: a config file means a complete directory.
    write_atomic(
        &dir,
        &secret_name(&domain),
        connected.password.as_bytes(),
        0o600,
    )?;
    let ca_cert = match &target.ca_pem {
        Some(pem) => {
            write_atomic(&dir, &ca_name(&domain), pem, 0o644)?;
            Some(ca_name(&domain))
        }
        None => {
            remove_if_present(&dir.join(ca_name(&domain)))?;
            None
        }
    };
    let config = DirectoryConfig {
        domain: domain.clone(),
        ldap_url: target.url.clone(),
        ca_cert,
        base_dn: connected.base_dn.clone(),
        starttls: target.starttls,
        dialect: connected.dialect,
        service_account: connected.account.clone(),
        added_at: time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
    };
    let mut json = serde_json::to_vec_pretty(&config).context("cannot serialize the directory")?;
    json.push(b'\n');
    write_atomic(&dir, &config_name(&domain), &json, 0o644)?;

    for note in &connected.notes {
        println!("  {note}");
    }
    println!(
        "Directory {domain} ({}, base DN {}) added to agent {}; service account {} ({})",
        connected.dialect.label(),
        connected.base_dn,
        agent.config.agent_id,
        connected.account.bind_dn,
        match connected.account.mode {
            account::AccountMode::Create =>
                "created by the agent; its password is in the data dir only",
            account::AccountMode::Custom => "custom",
        }
    );
    tell_console(&agent, data_dir).await;
    Ok(())
}

pub async fn remove_directory(args: AgentRemoveDirectoryArgs) -> Result<()> {
    let agent = Agent::load(&args.data_dir)?;
    let domain = normalize_domain(&args.domain)?;
    let dir = args.data_dir.join(DIRECTORIES);
    let config_path = dir.join(config_name(&domain));
    let config: Option<DirectoryConfig> = fs::read(&config_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    if !config_path.exists() {
        let known: Vec<String> = load_all(&args.data_dir)
            .into_iter()
            .map(|c| c.map_or_else(|(d, _)| d, |c| c.domain))
            .collect();
        bail!(
            "agent {} has no directory {domain} (it has: {})",
            agent.config.agent_id,
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        );
    }
    // With an administrator, first delete the account this agent created: if that fails, nothing
    // is removed and the command can simply be run again.
    let mut deleted = None;
    if let (Some(admin), Some(file)) = (&args.admin, &args.admin_password_file) {
        let admin_password = read_password(file, "administrator password")?;
        match config.as_ref() {
            Some(c) if c.service_account.mode == account::AccountMode::Create => {
                let target = c.target(&args.data_dir)?;
                account::delete_account(
                    &target,
                    admin,
                    &admin_password,
                    c.dialect,
                    &c.base_dn,
                    &c.service_account.bind_dn,
                )
                .await
                .with_context(|| format!("cannot delete the service account of {domain}"))?;
                deleted = Some(c.service_account.bind_dn.clone());
            }
            Some(c) => println!(
                "  the custom service account {} is the administrator's: left as it is",
                c.service_account.bind_dn
            ),
            None => bail!(
                "{} is unreadable: cannot tell which service account to delete",
                config_path.display()
            ),
        }
    }
    // Config first: from here on the running agent no longer sees the directory.
    remove_if_present(&config_path)?;
    remove_if_present(&dir.join(secret_name(&domain)))?;
    remove_if_present(&dir.join(ca_name(&domain)))?;
    super::sync::forget_state(&args.data_dir, &domain);
    println!(
        "Directory {domain} removed from agent {}",
        agent.config.agent_id
    );
    if let Some(dn) = deleted {
        println!("  deleted the service account {dn}");
    } else if let Some(config) =
        config.filter(|c| c.service_account.mode == account::AccountMode::Create)
    {
        println!(
            "  the service account {} stays in the directory; pass --admin and --admin-password-file to delete it",
            config.service_account.bind_dn
        );
    }
    tell_console(&agent, &args.data_dir).await;
    Ok(())
}

fn remove_if_present(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != ErrorKind::NotFound => {
            Err(e).with_context(|| format!("cannot remove {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// Sends the agent's domain list to the console now, so it shows the change even when the agent
/// is not running. Not fatal: a running agent reports the list in its next heartbeat anyway.
async fn tell_console(agent: &Agent, data_dir: &Path) {
    let report = DomainsReport {
        domains: reported(data_dir),
    };
    let sent = match Console::new(&agent.config.console_url) {
        Ok(console) => console
            .report_domains(&agent.credential.agent_credential, &report)
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(format!("{e:#}")),
    };
    match sent {
        Ok(accepted) => println!(
            "The console shows agent {} with domains: {}",
            accepted.agent_id,
            if accepted.domains.is_empty() { "none".to_owned() } else { accepted.domains.join(", ") }
        ),
        Err(e) => eprintln!(
            "warning: could not tell the console ({e}); the agent reports its domains with its next heartbeat"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_are_normalised_and_safe_as_file_names() {
        assert_eq!(
            normalize_domain(" Corp.Example.TEST. ").unwrap(),
            "corp.example.test"
        );
        for bad in [
            "", "corp", "../etc.x", "a..b", "-a.b", "a_b.test", "a/b.test", "a b.test",
        ] {
            assert!(normalize_domain(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn passwords_lose_one_trailing_newline_only() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        fs::write(&file, "s3cret \n").unwrap();
        assert_eq!(read_password(&file, "x").unwrap(), "s3cret ");
        fs::write(&file, "s3cret\r\n").unwrap();
        assert_eq!(read_password(&file, "x").unwrap(), "s3cret");
        fs::write(&file, "\n").unwrap();
        assert!(read_password(&file, "x")
            .unwrap_err()
            .to_string()
            .contains("empty"));
        let missing =
            read_password(&dir.path().join("nope"), "administrator password").unwrap_err();
        assert!(format!("{missing:#}").contains("administrator password file"));
    }

    #[test]
    fn broken_config_files_are_reported_not_skipped() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join(DIRECTORIES)).unwrap();
        fs::write(dir.path().join(DIRECTORIES).join("bad.test.json"), "{").unwrap();
        let all = load_all(dir.path());
        assert_eq!(all.len(), 1);
        let (domain, error) = all[0].as_ref().unwrap_err();
        assert_eq!(domain, "bad.test");
        assert!(error.contains("unreadable"), "{error}");
        assert!(reported(dir.path()).is_empty());
    }
}
