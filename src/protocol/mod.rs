//! Wire types shared by the console and the provisioning agent.
//!
//! Both halves of the binary speak JSON over HTTP to each other:
//! - the agent calls the console under [`CONSOLE_AGENT_API`] (enroll, heartbeat, whoami), authenticating
//!   with its agent credential as a bearer token;
//! - the console calls the agent under [`AGENT_API`] (health), authenticating with the per-agent console
//!   token the agent received at enrollment.
//!
//! This module knows neither axum nor reqwest: it is plain serde so each side stays testable.

pub mod sync;
pub mod writeback;

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Prefix of the console routes that agents call.
pub const CONSOLE_AGENT_API: &str = "/agent-api/v1";
/// Prefix of the routes an agent serves for the console.
pub const AGENT_API: &str = "/v1";
/// The version every agent and console built from this tree reports.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The two extensions of the install wizard's Select Extension screen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Extension {
    #[default]
    CloudSync,
    OnPremisesAppProvisioning,
}

impl Extension {
    pub fn as_str(self) -> &'static str {
        match self {
            Extension::CloudSync => "cloud-sync",
            Extension::OnPremisesAppProvisioning => "on-premises-app-provisioning",
        }
    }
    /// The wording of the install wizard.
    pub fn label(self) -> &'static str {
        match self {
            Extension::CloudSync => "Cloud sync",
            Extension::OnPremisesAppProvisioning => "On-premises application provisioning",
        }
    }
}

impl fmt::Display for Extension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Extension {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "cloud-sync" => Ok(Extension::CloudSync),
            "on-premises-app-provisioning" => Ok(Extension::OnPremisesAppProvisioning),
            other => Err(format!(
                "unknown extension {other:?}: use cloud-sync or on-premises-app-provisioning"
            )),
        }
    }
}

/// Cloud environment, after the installer's `ENVIRONMENTNAME=AzureUSGovernment`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Environment {
    #[default]
    Public,
    UsGovernment,
}

impl Environment {
    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Public => "public",
            Environment::UsGovernment => "us-government",
        }
    }
}

impl fmt::Display for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Environment {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "public" => Ok(Environment::Public),
            "us-government" => Ok(Environment::UsGovernment),
            other => Err(format!(
                "unknown environment {other:?}: use public or us-government"
            )),
        }
    }
}

/// `POST /agent-api/v1/enroll`: an agent registers with an enrollment token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnrollRequest {
    pub enrollment_token: String,
    pub machine_name: String,
    #[serde(default)]
    pub extension: Extension,
    #[serde(default)]
    pub environment: Environment,
    pub version: String,
    /// Set when the data dir already holds a credential: the console then keeps the same agent id.
    #[serde(default)]
    pub existing: Option<ExistingAgent>,
    /// Lowercase hex SHA-256 of the DER certificate the agent serves its API with. The console
    /// pins it and refuses any other certificate when it calls the agent; every install (re-install
    /// included) generates a new certificate, so it also rotates the pin.
    #[serde(default)]
    pub tls_cert_sha256: Option<String>,
}

/// Proof that the installing machine already is a known agent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExistingAgent {
    pub agent_id: String,
    pub agent_credential: String,
}

/// The console's answer to a successful enrollment.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnrollResponse {
    pub agent_id: String,
    /// Bearer token the agent presents to the console. Shown once, stored hashed by the console.
    pub agent_credential: String,
    /// Bearer token the console presents to the agent. The agent keeps only its SHA-256.
    pub console_token: String,
    /// True when `existing` matched and the agent kept its id.
    pub reinstalled: bool,
    pub environment: Environment,
}

/// Result of one self-check the agent runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    Pass,
    Warn,
    Fail,
}

impl CheckStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckStatus::Pass => "pass",
            CheckStatus::Warn => "warn",
            CheckStatus::Fail => "fail",
        }
    }
}

/// One named health check with a human message.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HealthCheck {
    pub name: String,
    pub status: CheckStatus,
    #[serde(default)]
    pub message: String,
}

/// `POST /agent-api/v1/heartbeat`, sent by the agent every heartbeat interval.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Heartbeat {
    pub version: String,
    pub machine_name: String,
    pub uptime_seconds: u64,
    pub heartbeat_interval_seconds: u64,
    /// The address the agent's HTTP API is bound to (an unspecified IP means "the address you see me at").
    #[serde(default)]
    pub listen_addr: Option<String>,
    #[serde(default)]
    pub checks: Vec<HealthCheck>,
    /// The directories the agent is connected to (`agent add-directory`); absent from older agents.
    #[serde(default)]
    pub domains: Vec<AgentDomain>,
}

/// The console's answer to a heartbeat.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeartbeatResponse {
    pub agent_id: String,
    pub status: String,
    pub health: String,
}

/// `GET /agent-api/v1/whoami`: what the console knows about the calling agent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WhoAmI {
    pub agent_id: String,
    pub machine_name: String,
    pub status: String,
    pub health: String,
    pub environment: Environment,
}

/// `GET /v1/health` on the agent, called by the console.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentHealth {
    pub agent_id: String,
    pub version: String,
    pub uptime_seconds: u64,
    pub checks: Vec<HealthCheck>,
}

/// Error body used by every JSON endpoint of console and agent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
}

/// `POST /agent-api/v1/enroll-batch`: enrolls many agents with one token in one transaction (the fleet
/// simulator's path; each agent counts as one use of the token).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BatchEnrollRequest {
    pub enrollment_token: String,
    pub machine_names: Vec<String>,
    #[serde(default)]
    pub extension: Extension,
    #[serde(default)]
    pub environment: Environment,
    pub version: String,
    /// As in [`EnrollRequest`], pinned for every agent of the batch (the simulator's agents share
    /// one certificate).
    #[serde(default)]
    pub tls_cert_sha256: Option<String>,
}

/// One enrolled agent of a batch, in request order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BatchEnrolled {
    pub agent_id: String,
    pub agent_credential: String,
    pub console_token: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BatchEnrollResponse {
    pub agents: Vec<BatchEnrolled>,
}

/// One directory (domain) an agent is connected to, as it reports it to the console.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentDomain {
    /// DNS name of the domain, e.g. `corp.example.test`.
    pub domain: String,
    /// `active-directory` or `openldap`.
    pub dialect: String,
    pub base_dn: String,
    pub ldap_url: String,
    /// The service account's name (never its password).
    pub service_account: String,
}

/// `POST /agent-api/v1/domains`: the full list of an agent's domains, sent by `agent
/// add-directory` / `remove-directory` so the console shows a change even when the agent is not
/// running. A running agent also reports the list in every heartbeat.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DomainsReport {
    pub domains: Vec<AgentDomain>,
}

/// The console's answer to a [`DomainsReport`]: the domain names it now shows for the agent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DomainsAccepted {
    pub agent_id: String,
    pub domains: Vec<String>,
}
