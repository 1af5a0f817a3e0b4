//! The live agent fleet: enrollment, heartbeats, health evaluation, polls, deletion.
//!
//! The fleet lives in memory so that heartbeats and the Agents page never wait on SQLite: a heartbeat
//! updates one entry under a short lock and marks it dirty; a flusher writes all dirty agents and pending
//! transitions in one transaction every [`FLUSH_INTERVAL`] (group commit). Enrollment and deletion are
//! written to the database first, in a transaction with their audit entry, and only then applied in
//! memory, so a failed write leaves nothing half-done.

pub mod batch;
pub mod call;
pub mod health;
pub mod metrics;
pub mod poll;

use crate::auth::tokens::{self, ConsoleKey};
use crate::db::{self, agents::AgentRow, agents::NewAgentEvent, audit::NewAuditEntry};
use crate::protocol::{
    EnrollRequest, EnrollResponse, Environment, Extension, HealthCheck, Heartbeat,
    HeartbeatResponse, WhoAmI,
};
use health::{Health, Observed, Status, Thresholds};
use serde_json::json;
use sqlx::SqlitePool;
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Most domains one agent may report (a bound on what an agent can make the console hold).
const MAX_DOMAINS: usize = 64;
/// How often dirty heartbeat state reaches the database.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(250);
/// How often every agent's status and health are re-evaluated.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// The `serve` flags the fleet obeys.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    pub environment: Environment,
    pub thresholds: Thresholds,
    pub hide_inactive_after: Duration,
    pub poll_interval: Duration,
    pub poll_timeout: Duration,
    pub poll_concurrency: usize,
}

/// One agent as the console knows it.
#[derive(Debug, Clone)]
pub struct Agent {
    pub id: String,
    credential_hash: Vec<u8>,
    console_token_generation: i64,
    pub machine_name: String,
    pub external_ip: String,
    pub listen_addr: Option<String>,
    pub version: String,
    pub extension: Extension,
    pub environment: Environment,
    pub registered_at: i64,
    enrollment_token_id: Option<i64>,
    pub last_heartbeat_at: Option<i64>,
    pub last_contact_at: i64,
    pub heartbeat_interval_seconds: i64,
    pub uptime_seconds: Option<i64>,
    pub status: Status,
    pub status_since: i64,
    pub health: Health,
    /// Static for the usual reasons, so 100,000 agents do not hold 100,000 copies of them.
    pub health_reason: Cow<'static, str>,
    pub health_since: i64,
    /// Shared between agents reporting the same checks (see [`CheckSets`]).
    pub checks: Arc<[HealthCheck]>,
    pub last_poll_at: Option<i64>,
    pub last_poll_error: Option<String>,
    /// Domains the agent serves; filled by directory sync.
    pub domains: Vec<String>,
    /// SHA-256 of the certificate the agent serves its API with, pinned at enrollment (None for
    /// agents enrolled before pinning: the console does not call those).
    pub tls_cert_sha256: Option<call::Pin>,
    /// This agent's place in the name-ordered index (valid while the index is fresh).
    name_pos: usize,
}

impl Agent {
    /// A freshly enrolled agent: active, degraded until its first heartbeat.
    #[allow(clippy::too_many_arguments)]
    fn new_enrolled(
        credential: &str,
        machine_name: String,
        external_ip: String,
        version: &str,
        extension: Extension,
        environment: Environment,
        enrollment_token_id: i64,
        tls_cert_sha256: Option<call::Pin>,
        now: i64,
    ) -> Self {
        Agent {
            id: uuid::Uuid::new_v4().to_string(),
            credential_hash: tokens::digest(credential),
            console_token_generation: 1,
            machine_name,
            external_ip,
            listen_addr: None,
            version: version.to_string(),
            extension,
            environment,
            registered_at: now,
            enrollment_token_id: Some(enrollment_token_id),
            last_heartbeat_at: None,
            last_contact_at: now,
            heartbeat_interval_seconds: 30,
            uptime_seconds: None,
            status: Status::Active,
            status_since: now,
            health: Health::Degraded,
            health_reason: Cow::Borrowed(health::ENROLLED),
            health_since: now,
            checks: Arc::from([]),
            last_poll_at: None,
            last_poll_error: None,
            domains: Vec::new(),
            tls_cert_sha256,
            name_pos: usize::MAX,
        }
    }

    fn from_row(row: AgentRow, check_sets: &mut CheckSets) -> Self {
        Agent {
            checks: check_sets.intern(serde_json::from_str(&row.checks_json).unwrap_or_default()),
            extension: row.extension.parse().unwrap_or_default(),
            environment: row.environment.parse().unwrap_or_default(),
            status: Status::parse(&row.status).unwrap_or(Status::Active),
            health: Health::parse(&row.health).unwrap_or(Health::Degraded),
            id: row.agent_id,
            credential_hash: row.credential_hash,
            console_token_generation: row.console_token_generation,
            machine_name: row.machine_name,
            external_ip: row.external_ip,
            listen_addr: row.listen_addr,
            version: row.version,
            registered_at: row.registered_at,
            enrollment_token_id: row.enrollment_token_id,
            last_heartbeat_at: row.last_heartbeat_at,
            last_contact_at: row.last_contact_at,
            heartbeat_interval_seconds: row.heartbeat_interval_seconds,
            uptime_seconds: row.uptime_seconds,
            status_since: row.status_since,
            health_reason: health::static_reason(row.health_reason),
            health_since: row.health_since,
            last_poll_at: row.last_poll_at,
            last_poll_error: row.last_poll_error,
            domains: serde_json::from_str(&row.domains_json).unwrap_or_default(),
            tls_cert_sha256: row.tls_cert_sha256.as_deref().and_then(call::parse_pin),
            name_pos: usize::MAX,
        }
    }

    fn to_row(&self) -> AgentRow {
        AgentRow {
            agent_id: self.id.clone(),
            credential_hash: self.credential_hash.clone(),
            console_token_generation: self.console_token_generation,
            machine_name: self.machine_name.clone(),
            external_ip: self.external_ip.clone(),
            listen_addr: self.listen_addr.clone(),
            version: self.version.clone(),
            extension: self.extension.as_str().into(),
            environment: self.environment.as_str().into(),
            registered_at: self.registered_at,
            enrollment_token_id: self.enrollment_token_id,
            last_heartbeat_at: self.last_heartbeat_at,
            last_contact_at: self.last_contact_at,
            heartbeat_interval_seconds: self.heartbeat_interval_seconds,
            uptime_seconds: self.uptime_seconds,
            status: self.status.as_str().into(),
            status_since: self.status_since,
            health: self.health.as_str().into(),
            health_reason: self.health_reason.to_string(),
            health_since: self.health_since,
            checks_json: serde_json::to_string(&*self.checks).unwrap_or_else(|_| "[]".into()),
            last_poll_at: self.last_poll_at,
            last_poll_error: self.last_poll_error.clone(),
            domains_json: serde_json::to_string(&self.domains).unwrap_or_else(|_| "[]".into()),
            tls_cert_sha256: self.tls_cert_sha256.as_ref().map(|pin| call::hex(pin)),
        }
    }

    fn observed(&self) -> Observed<'_> {
        Observed {
            registered_at: self.registered_at,
            last_heartbeat_at: self.last_heartbeat_at,
            last_contact_at: self.last_contact_at,
            heartbeat_interval_seconds: self.heartbeat_interval_seconds,
            last_poll_error: self.last_poll_error.as_deref(),
            checks: &self.checks,
        }
    }

    /// What the audit log keeps about an agent (no credential material).
    pub fn audit_json(&self) -> serde_json::Value {
        json!({
            "machine_name": self.machine_name,
            "external_ip": self.external_ip,
            "version": self.version,
            "extension": self.extension.as_str(),
            "environment": self.environment.as_str(),
            "status": self.status.as_str(),
            "health": self.health.as_str(),
            "last_heartbeat_at": self.last_heartbeat_at,
        })
    }

    /// Where the console reaches the agent's API, if the agent told us.
    pub fn api_addr(&self) -> Option<std::net::SocketAddr> {
        let addr: std::net::SocketAddr = self.listen_addr.as_deref()?.parse().ok()?;
        let ip = if addr.ip().is_unspecified() {
            self.external_ip.parse().ok()?
        } else {
            addr.ip()
        };
        Some(std::net::SocketAddr::new(ip, addr.port()))
    }

    /// The agent's API as people see it (`https://ADDRESS`). Calls go through
    /// [`Fleet::agent_request`], which adds the certificate pin.
    pub fn api_base_url(&self) -> Option<String> {
        self.api_addr().map(|addr| format!("https://{addr}"))
    }
}

/// Why an enrollment was refused; `code` is the API error code.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error("The enrollment token is not valid. Copy the whole token from Cloud sync > Agents > Download on-premises agent, or create a new one.")]
    Invalid,
    #[error("The enrollment token expired {0}. Create a new one in Cloud sync > Agents > Download on-premises agent.")]
    Expired(String),
    #[error("The enrollment token was revoked by {0}. Create a new one in Cloud sync > Agents > Download on-premises agent.")]
    Revoked(String),
    #[error("The enrollment token has been used {0} of {0} times. Create a new one, or one with more uses (--max-uses).")]
    UsedUp(i64),
    #[error("This console serves the {console} environment, but the agent was installed for {agent}. Install the agent with --environment {console}, or enroll it with a console started with --environment {agent}.")]
    EnvironmentMismatch {
        console: Environment,
        agent: Environment,
    },
    #[error("The machine name must be 1 to 255 characters without control characters.")]
    BadMachineName,
    #[error("A batch enrolls 1 to {0} agents.")]
    BadBatch(usize),
    #[error("The enrollment token has {left} uses left; the batch needs {asked}. Create a token with more uses (--max-uses).")]
    NotEnoughUses { asked: i64, left: i64 },
    #[error(
        "tls_cert_sha256 must be the SHA-256 of the agent's DER certificate as 64 hex digits."
    )]
    BadCertificatePin,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl EnrollError {
    pub fn code(&self) -> &'static str {
        match self {
            EnrollError::Invalid => "enrollment_token_invalid",
            EnrollError::Expired(_) => "enrollment_token_expired",
            EnrollError::Revoked(_) => "enrollment_token_revoked",
            EnrollError::UsedUp(_) => "enrollment_token_used_up",
            EnrollError::EnvironmentMismatch { .. } => "environment_mismatch",
            EnrollError::BadMachineName => "invalid_machine_name",
            EnrollError::BadBatch(_) => "invalid_batch",
            EnrollError::NotEnoughUses { .. } => "enrollment_token_used_up",
            EnrollError::BadCertificatePin => "invalid_tls_cert_sha256",
            EnrollError::Database(_) => "internal",
        }
    }
}

/// Why an agent could not be deleted.
#[derive(Debug, thiserror::Error)]
pub enum DeleteError {
    #[error("No agent with id {0}.")]
    NotFound(String),
    #[error("Agent {0} is active (last contact {1} ago). Stop or uninstall it first and wait until it shows inactive, or delete with force to revoke a running agent.")]
    Active(String, String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Filters of the Agents list.
#[derive(Debug, Clone, Default)]
pub struct AgentFilter {
    /// None: active agents plus inactive ones not older than `hide_inactive_after`.
    pub status: Option<StatusFilter>,
    pub health: Option<Health>,
    pub search: Option<String>,
    pub sort: SortKey,
    pub descending: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFilter {
    Only(Status),
    All,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortKey {
    #[default]
    MachineName,
    LastHeartbeat,
    Health,
    Status,
    Version,
}

impl SortKey {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "machine_name" => SortKey::MachineName,
            "last_heartbeat" => SortKey::LastHeartbeat,
            "health" => SortKey::Health,
            "status" => SortKey::Status,
            "version" => SortKey::Version,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            SortKey::MachineName => "machine_name",
            SortKey::LastHeartbeat => "last_heartbeat",
            SortKey::Health => "health",
            SortKey::Status => "status",
            SortKey::Version => "version",
        }
    }
}

/// Counts for Home.
#[derive(Debug, Clone, Default)]
pub struct FleetSummary {
    pub total: usize,
    pub active: usize,
    pub inactive: usize,
    pub healthy: usize,
    pub degraded: usize,
    pub unhealthy: usize,
    pub versions: Vec<(String, usize)>,
}

/// Agents counted by (status, health) and by version.
#[derive(Debug, Default)]
pub struct FleetCounts {
    pub by_status_health: HashMap<(Status, Health), usize>,
    pub by_version: std::collections::BTreeMap<String, usize>,
}

/// One agent in the name-ordered index: what the Agents page filters on, kept contiguous so a page
/// at fleet scale is one sequential scan; only the agents shown are then looked up.
struct NameEntry {
    id: String,
    status: Status,
    health: Health,
    status_since: i64,
    health_since: i64,
}

impl NameEntry {
    /// Takes over the agent's status and health after a transition.
    fn copy_state(&mut self, agent: &Agent) {
        self.status = agent.status;
        self.health = agent.health;
        self.status_since = agent.status_since;
        self.health_since = agent.health_since;
    }

    fn of(agent: &Agent) -> Self {
        NameEntry {
            id: agent.id.clone(),
            status: agent.status,
            health: agent.health,
            status_since: agent.status_since,
            health_since: agent.health_since,
        }
    }
}

#[derive(Default)]
struct Inner {
    agents: HashMap<String, Agent>,
    by_credential: HashMap<Vec<u8>, String>,
    /// Agents whose state changed beyond heartbeat timestamps: written as whole rows.
    dirty: HashSet<String>,
    /// Agents that only heartbeated: written as timestamps, many rows per statement.
    beating: HashSet<String>,
    events: Vec<NewAgentEvent>,
    /// Agent ids sorted by (lower-case machine name, id): the Agents page's default order, kept so
    /// a page at 100,000 agents is a filtered walk instead of a sort. Rebuilt lazily when stale.
    by_name: Vec<NameEntry>,
    by_name_fresh: bool,
    /// Agents per reported version, kept as versions change (for Home and `/metrics`).
    versions: HashMap<String, usize>,
    check_sets: CheckSets,
}

/// The distinct sets of health checks agents report, each held once: a fleet reports a handful of
/// distinct sets, and a copy per agent would be most of the fleet's memory. Sets no agent holds
/// any more are dropped by [`CheckSets::prune`].
#[derive(Default)]
pub(crate) struct CheckSets {
    sets: HashSet<Arc<[HealthCheck]>>,
}

impl CheckSets {
    pub(crate) fn intern(&mut self, checks: Vec<HealthCheck>) -> Arc<[HealthCheck]> {
        if let Some(set) = self.sets.get(checks.as_slice()) {
            return set.clone();
        }
        let set: Arc<[HealthCheck]> = Arc::from(checks);
        self.sets.insert(set.clone());
        set
    }

    /// Forgets sets only this table holds (an agent whose messages vary would otherwise grow it).
    fn prune(&mut self) {
        self.sets.retain(|set| Arc::strong_count(set) > 1);
    }
}

impl Inner {
    fn count_version(&mut self, version: &str, delta: isize) {
        let n = self.versions.entry(version.to_string()).or_default();
        *n = n.saturating_add_signed(delta);
    }

    /// Re-evaluates one agent and queues an event for each transition.
    fn reevaluate(&mut self, id: &str, t: &Thresholds, now: i64, contact_reason: Option<&str>) {
        let Inner {
            agents,
            dirty,
            events,
            by_name,
            by_name_fresh,
            ..
        } = self;
        if let Some(agent) = agents.get_mut(id) {
            if reevaluate(agent, dirty, events, t, now, contact_reason) && *by_name_fresh {
                update_name_entry(by_name, agent);
            }
        }
    }
}

/// Mirrors a status or health change into the name-ordered index.
fn update_name_entry(by_name: &mut [NameEntry], agent: &Agent) {
    if let Some(entry) = by_name.get_mut(agent.name_pos).filter(|e| e.id == agent.id) {
        entry.copy_state(agent);
    }
}

/// Re-evaluates `agent`; on any change marks it dirty, and queues an event per transition.
/// Allocates nothing when nothing changed: the sweeper runs this for every agent every second.
/// Returns whether the status or the health changed.
fn reevaluate(
    agent: &mut Agent,
    dirty: &mut HashSet<String>,
    events: &mut Vec<NewAgentEvent>,
    t: &Thresholds,
    now: i64,
    contact_reason: Option<&str>,
) -> bool {
    let status = health::evaluate_status(&agent.observed(), t, now);
    let (health, reason) = health::evaluate_health(&agent.observed(), t, now);
    let status_changed = status != agent.status;
    let health_changed = health != agent.health;
    let mut changed = false;
    if status_changed {
        let why = match status {
            Status::Active => contact_reason.unwrap_or("contact resumed").to_string(),
            Status::Inactive => format!(
                "no contact for {}",
                health::human(now - agent.last_contact_at)
            ),
        };
        events.push(NewAgentEvent {
            agent_id: agent.id.clone(),
            at: now,
            kind: "status",
            from_value: Some(agent.status.as_str().into()),
            to_value: status.as_str().into(),
            reason: why,
        });
        agent.status = status;
        agent.status_since = now;
        changed = true;
    }
    if health_changed {
        events.push(NewAgentEvent {
            agent_id: agent.id.clone(),
            at: now,
            kind: "health",
            from_value: Some(agent.health.as_str().into()),
            to_value: health.as_str().into(),
            reason: reason.to_string(),
        });
        agent.health = health;
        agent.health_since = now;
        changed = true;
    }
    if *reason != *agent.health_reason {
        agent.health_reason = reason;
        changed = true;
    }
    let transition = status_changed || health_changed;
    if changed && !dirty.contains(&agent.id) {
        dirty.insert(agent.id.clone());
    }
    transition
}

/// The live fleet. Cheap to share: hold it in an `Arc`.
pub struct Fleet {
    /// Shared with the agent client's resolver and certificate verifier (see `call`).
    inner: Arc<RwLock<Inner>>,
    db: SqlitePool,
    key: ConsoleKey,
    config: FleetConfig,
    http: reqwest::Client,
    pub metrics: metrics::FleetMetrics,
}

impl Fleet {
    /// Loads every agent from the database.
    pub async fn load(
        db: SqlitePool,
        key: ConsoleKey,
        config: FleetConfig,
    ) -> anyhow::Result<Self> {
        let rows = db::agents::load_all_packed(&db).await?;
        let mut inner = Inner::default();
        inner.agents.reserve(rows.len());
        inner.by_credential.reserve(rows.len());
        for row in rows {
            let agent = Agent::from_row(row, &mut inner.check_sets);
            inner
                .by_credential
                .insert(agent.credential_hash.clone(), agent.id.clone());
            inner.count_version(&agent.version, 1);
            inner.agents.insert(agent.id.clone(), agent);
        }
        let inner = Arc::new(RwLock::new(inner));
        let http = call::client(&inner, config.poll_timeout)?;
        Ok(Fleet {
            inner,
            metrics: metrics::FleetMetrics::default(),
            db,
            key,
            config,
            http,
        })
    }

    pub(crate) fn check_environment(&self, agent: Environment) -> Result<(), EnrollError> {
        if agent == self.config.environment {
            Ok(())
        } else {
            Err(EnrollError::EnvironmentMismatch {
                console: self.config.environment,
                agent,
            })
        }
    }

    pub fn config(&self) -> &FleetConfig {
        &self.config
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers an agent (or re-registers the same one) with an enrollment token.
    pub async fn enroll(
        &self,
        req: EnrollRequest,
        external_ip: String,
    ) -> Result<EnrollResponse, EnrollError> {
        let now = db::now_ms();
        let machine_name = valid_machine_name(&req.machine_name)?;
        self.check_environment(req.environment)?;
        let pin = certificate_pin(req.tls_cert_sha256.as_deref())?;
        let mut tx = self.db.begin().await?;
        let token = usable_token(&mut tx, &req.enrollment_token, now).await?;
        if !db::enrollment_tokens::consume(&mut tx, token.enrollment_token_id, 1, now).await? {
            return Err(EnrollError::UsedUp(token.max_uses));
        }

        // Re-install: the data dir proves it is an agent we know, so it keeps its id and history.
        let mut previous = None;
        if let Some(existing) = &req.existing {
            if let Some(row) = db::agents::get(&mut tx, &existing.agent_id).await? {
                if tokens::equal(
                    &row.credential_hash,
                    &tokens::digest(&existing.agent_credential),
                ) {
                    previous = Some(Agent::from_row(row, &mut self.write().check_sets));
                }
            }
        }
        let credential = tokens::generate(tokens::AGENT_CREDENTIAL_PREFIX);
        let reinstalled = previous.is_some();
        let agent = match previous {
            Some(mut agent) => {
                agent.credential_hash = tokens::digest(&credential);
                agent.console_token_generation += 1;
                agent.machine_name = machine_name;
                agent.external_ip = external_ip;
                agent.version = req.version.clone();
                agent.extension = req.extension;
                agent.environment = req.environment;
                agent.enrollment_token_id = Some(token.enrollment_token_id);
                agent.last_contact_at = now;
                agent.last_poll_error = None;
                // A re-install generated a new certificate: this rotates the pin.
                agent.tls_cert_sha256 = pin;
                agent
            }
            None => Agent::new_enrolled(
                &credential,
                machine_name,
                external_ip,
                &req.version,
                req.extension,
                req.environment,
                token.enrollment_token_id,
                pin,
                now,
            ),
        };
        db::agents::upsert(&mut tx, &agent.to_row()).await?;
        let (action, what) = if reinstalled {
            ("agent.reinstall", "re-installed")
        } else {
            ("agent.enroll", "enrolled")
        };
        let event = NewAgentEvent {
            agent_id: agent.id.clone(),
            at: now,
            kind: "lifecycle",
            from_value: None,
            to_value: what.into(),
            reason: format!(
                "{what} from {} with enrollment token #{}{}",
                agent.external_ip,
                token.enrollment_token_id,
                pinned_note(pin.as_ref())
            ),
        };
        db::agents::insert_event(&mut tx, &event).await?;
        let actor = token.actor();
        db::audit::insert(
            &mut tx,
            &NewAuditEntry {
                at: now,
                actor: &actor,
                action,
                target_type: "agent",
                target_id: &agent.id,
                before: None,
                after: Some(agent.audit_json()),
            },
        )
        .await?;
        tx.commit().await?;

        let response = EnrollResponse {
            agent_id: agent.id.clone(),
            agent_credential: credential,
            console_token: self
                .key
                .console_token(&agent.id, agent.console_token_generation),
            reinstalled,
            environment: agent.environment,
        };
        let mut inner = self.write();
        if let Some(old) = inner.agents.get(&agent.id) {
            let (old_hash, old_version) = (old.credential_hash.clone(), old.version.clone());
            inner.by_credential.remove(&old_hash);
            inner.count_version(&old_version, -1);
        }
        inner.count_version(&agent.version, 1);
        inner
            .by_credential
            .insert(agent.credential_hash.clone(), agent.id.clone());
        inner.agents.insert(agent.id.clone(), agent);
        inner.by_name_fresh = false;
        Ok(response)
    }

    /// The agent a bearer credential belongs to.
    pub fn authenticate(&self, credential: &str) -> Option<String> {
        self.read()
            .by_credential
            .get(&tokens::digest(credential))
            .cloned()
    }

    /// Applies a heartbeat. The state reaches the database with the next flush.
    pub fn heartbeat(
        &self,
        agent_id: &str,
        hb: Heartbeat,
        external_ip: String,
    ) -> Option<HeartbeatResponse> {
        let now = db::now_ms();
        self.metrics
            .heartbeats_received
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut inner = self.write();
        let checks: Vec<HealthCheck> = hb.checks.into_iter().take(32).collect();
        let same_checks = *inner.agents.get(agent_id)?.checks == *checks;
        let checks = if same_checks {
            None
        } else {
            Some(inner.check_sets.intern(checks))
        };
        let agent = inner.agents.get_mut(agent_id)?;
        let listen_addr = hb.listen_addr.map(|a| truncate(a, 64));
        if listen_addr != agent.listen_addr
            && agent.last_poll_error.as_deref() != Some(call::PIN_MISMATCH)
        {
            // The agent restarted on another address: an old poll failure says nothing about the
            // new one. A certificate that did not match stays: it is the same agent's certificate,
            // and only a poll that verifies (or a re-install) clears it.
            agent.last_poll_error = None;
        }
        let version = truncate(hb.version, 64);
        let name = truncate(hb.machine_name, 255);
        let renamed = agent.machine_name != name;
        let domains: Vec<String> = hb
            .domains
            .into_iter()
            .take(MAX_DOMAINS)
            .map(|d| truncate(d.domain, 255))
            .collect();
        let interval = i64::try_from(hb.heartbeat_interval_seconds.clamp(1, 86_400)).unwrap_or(30);
        // Most heartbeats only move timestamps; those take the cheap write path.
        let changed = renamed
            || agent.version != version
            || agent.listen_addr != listen_addr
            || checks.is_some()
            || agent.domains != domains
            || agent.external_ip != external_ip
            || agent.heartbeat_interval_seconds != interval
            || agent.last_heartbeat_at.is_none();
        let upgraded = (agent.version != version).then(|| agent.version.clone());
        if changed {
            agent.version = version;
            agent.machine_name = name;
            agent.listen_addr = listen_addr;
            if let Some(checks) = checks {
                agent.checks = checks;
            }
            agent.domains = domains;
            agent.external_ip = external_ip;
            agent.heartbeat_interval_seconds = interval;
        }
        agent.uptime_seconds = i64::try_from(hb.uptime_seconds).ok();
        agent.last_heartbeat_at = Some(now);
        agent.last_contact_at = now;
        if changed {
            inner.dirty.insert(agent_id.to_string());
        } else if !inner.beating.contains(agent_id) {
            inner.beating.insert(agent_id.to_string());
        }
        if renamed {
            inner.by_name_fresh = false;
        }
        if let Some(old) = upgraded {
            let new = inner.agents.get(agent_id).map(|a| a.version.clone())?;
            inner.count_version(&old, -1);
            inner.count_version(&new, 1);
        }
        inner.reevaluate(
            agent_id,
            &self.config.thresholds,
            now,
            Some("heartbeat received"),
        );
        let agent = inner.agents.get(agent_id)?;
        Some(HeartbeatResponse {
            agent_id: agent.id.clone(),
            status: agent.status.as_str().into(),
            health: agent.health.as_str().into(),
        })
    }

    /// Replaces the domains an agent serves (its full list, from `agent add-directory` or a
    /// heartbeat). Kept in memory only: a running agent re-sends the list in every heartbeat.
    pub fn set_domains(&self, agent_id: &str, domains: Vec<String>) -> Option<Vec<String>> {
        let mut inner = self.write();
        let agent = inner.agents.get_mut(agent_id)?;
        agent.domains = domains
            .into_iter()
            .take(MAX_DOMAINS)
            .map(|d| truncate(d, 255))
            .collect();
        let domains = agent.domains.clone();
        inner.dirty.insert(agent_id.to_string());
        Some(domains)
    }

    pub fn whoami(&self, agent_id: &str) -> Option<WhoAmI> {
        let inner = self.read();
        let agent = inner.agents.get(agent_id)?;
        Some(WhoAmI {
            agent_id: agent.id.clone(),
            machine_name: agent.machine_name.clone(),
            status: agent.status.as_str().into(),
            health: agent.health.as_str().into(),
            environment: agent.environment,
        })
    }

    pub fn get(&self, agent_id: &str) -> Option<Agent> {
        self.read().agents.get(agent_id).cloned()
    }

    /// Rebuilds the name order if an enrollment, deletion or rename made it stale.
    fn refresh_name_order(&self) {
        if self.read().by_name_fresh {
            return;
        }
        let mut inner = self.write();
        let mut keys: Vec<(String, String)> = inner
            .agents
            .values()
            .map(|a| (a.machine_name.to_lowercase(), a.id.clone()))
            .collect();
        keys.sort_unstable();
        let Inner {
            agents,
            by_name,
            by_name_fresh,
            ..
        } = &mut *inner;
        by_name.clear();
        for (pos, (_, id)) in keys.into_iter().enumerate() {
            if let Some(agent) = agents.get_mut(&id) {
                agent.name_pos = pos;
                by_name.push(NameEntry::of(agent));
            }
        }
        *by_name_fresh = true;
    }

    /// One page of agents matching `filter`, and how many match in all.
    pub fn list(&self, filter: &AgentFilter, limit: usize, offset: usize) -> (Vec<Agent>, usize) {
        let now = db::now_ms();
        let hide_ms =
            i64::try_from(self.config.hide_inactive_after.as_millis()).unwrap_or(i64::MAX);
        let needle = filter
            .search
            .as_deref()
            .map(str::to_lowercase)
            .filter(|s| !s.is_empty());
        let matches = |a: &Agent| {
            (match filter.status {
                Some(StatusFilter::All) => true,
                Some(StatusFilter::Only(s)) => a.status == s,
                None => a.status == Status::Active || now - a.status_since <= hide_ms,
            }) && filter.health.is_none_or(|h| a.health == h)
                && needle.as_deref().is_none_or(|n| {
                    a.machine_name.to_lowercase().contains(n)
                        || a.external_ip.contains(n)
                        || a.version.contains(n)
                        || a.id.starts_with(n)
                })
        };
        if filter.sort == SortKey::MachineName && needle.is_none() {
            self.refresh_name_order();
            let inner = self.read();
            // Filter on the compact index; look up only the agents on the page.
            let keep = |e: &&NameEntry| {
                (match filter.status {
                    Some(StatusFilter::All) => true,
                    Some(StatusFilter::Only(s)) => e.status == s,
                    None => e.status == Status::Active || now - e.status_since <= hide_ms,
                }) && filter.health.is_none_or(|h| e.health == h)
            };
            let ordered: Box<dyn Iterator<Item = &NameEntry>> = if filter.descending {
                Box::new(inner.by_name.iter().rev())
            } else {
                Box::new(inner.by_name.iter())
            };
            let mut total = 0;
            let mut page = Vec::with_capacity(limit.min(500));
            for entry in ordered.filter(keep) {
                if total >= offset && page.len() < limit {
                    if let Some(agent) = inner.agents.get(&entry.id) {
                        page.push(agent.clone());
                    }
                }
                total += 1;
            }
            return (page, total);
        }
        self.refresh_name_order();
        let inner = self.read();
        // Walk in name order and sort stably by the key: ties stay in name order, and no
        // per-agent string is built for the comparison.
        let mut matching: Vec<&Agent> = inner
            .by_name
            .iter()
            .filter_map(|e| inner.agents.get(&e.id))
            .filter(|a| matches(a))
            .collect();
        let total = matching.len();
        match filter.sort {
            SortKey::MachineName => {} // already in name order (a search took this path)
            SortKey::LastHeartbeat => matching.sort_by_key(|a| a.last_heartbeat_at),
            SortKey::Health => matching.sort_by_key(|a| std::cmp::Reverse(a.health)),
            SortKey::Status => matching.sort_by_key(|a| a.status.as_str()),
            SortKey::Version => matching.sort_by(|a, b| a.version.cmp(&b.version)),
        }
        if filter.descending {
            matching.reverse();
        }
        let page = matching
            .into_iter()
            .skip(offset)
            .take(limit)
            .cloned()
            .collect();
        (page, total)
    }

    pub fn summary(&self) -> FleetSummary {
        self.refresh_name_order();
        let inner = self.read();
        let mut s = FleetSummary {
            total: inner.by_name.len(),
            ..Default::default()
        };
        for e in &inner.by_name {
            match e.status {
                Status::Active => s.active += 1,
                Status::Inactive => s.inactive += 1,
            }
            match e.health {
                Health::Healthy => s.healthy += 1,
                Health::Degraded => s.degraded += 1,
                Health::Unhealthy => s.unhealthy += 1,
            }
        }
        s.versions = inner
            .versions
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(v, n)| (v.clone(), *n))
            .collect();
        s.versions
            .sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        s
    }

    /// Counts for `/metrics`.
    pub fn counts_by_status_health_version(&self) -> FleetCounts {
        let inner = self.read();
        let mut counts = FleetCounts::default();
        for a in inner.agents.values() {
            *counts
                .by_status_health
                .entry((a.status, a.health))
                .or_default() += 1;
            *counts.by_version.entry(a.version.clone()).or_default() += 1;
        }
        counts
    }

    /// Agents that need attention: active and not healthy, worst first, then longest-standing.
    pub fn needing_attention(&self, limit: usize) -> Vec<Agent> {
        self.refresh_name_order();
        let inner = self.read();
        let mut list: Vec<&NameEntry> = inner
            .by_name
            .iter()
            .filter(|e| e.status == Status::Active && e.health != Health::Healthy)
            .collect();
        let key = |e: &&NameEntry| (std::cmp::Reverse(e.health), e.health_since);
        // Only the first `limit` need ordering: select them, then sort just those.
        if list.len() > limit && limit > 0 {
            list.select_nth_unstable_by_key(limit - 1, key);
            list.truncate(limit);
        }
        list.sort_by_key(key);
        list.into_iter()
            .take(limit)
            .filter_map(|e| inner.agents.get(&e.id).cloned())
            .collect()
    }

    /// Deletes an agent: its record, credential and timeline. Active agents only with `force`.
    pub async fn delete(
        &self,
        agent_id: &str,
        actor: &str,
        force: bool,
    ) -> Result<Agent, DeleteError> {
        let agent = self
            .get(agent_id)
            .ok_or_else(|| DeleteError::NotFound(agent_id.into()))?;
        let now = db::now_ms();
        if agent.status == Status::Active && !force {
            return Err(DeleteError::Active(
                agent.machine_name.clone(),
                health::human(now - agent.last_contact_at),
            ));
        }
        let mut tx = self.db.begin().await?;
        if !db::agents::delete(&mut tx, agent_id).await? {
            return Err(DeleteError::NotFound(agent_id.into()));
        }
        db::audit::insert(
            &mut tx,
            &NewAuditEntry {
                at: now,
                actor,
                action: if force {
                    "agent.delete.forced"
                } else {
                    "agent.delete"
                },
                target_type: "agent",
                target_id: agent_id,
                before: Some(agent.audit_json()),
                after: None,
            },
        )
        .await?;
        tx.commit().await?;
        let mut inner = self.write();
        inner.by_name_fresh = false;
        if let Some(removed) = inner.agents.remove(agent_id) {
            inner.by_credential.remove(&removed.credential_hash);
            inner.count_version(&removed.version, -1);
        }
        inner.dirty.remove(agent_id);
        inner.beating.remove(agent_id);
        Ok(agent)
    }

    /// Re-evaluates every agent against the clock (heartbeats that stopped, agents gone quiet).
    pub async fn sweep(&self) {
        /// Agents evaluated per hold of the lock, so heartbeats and pages wait at most one chunk
        /// (well under a millisecond; the whole sweep of 100,000 agents takes tens of them, mostly
        /// cache misses). Between chunks the task yields, so requests queued on this worker thread
        /// run instead of waiting for the whole sweep.
        const CHUNK: usize = 1024;
        let now = db::now_ms();
        let mut start = 0;
        loop {
            self.refresh_name_order();
            let end = {
                let mut inner = self.write();
                let Inner {
                    agents,
                    dirty,
                    events,
                    by_name,
                    check_sets,
                    ..
                } = &mut *inner;
                if start == 0 {
                    check_sets.prune();
                }
                let end = (start + CHUNK).min(by_name.len());
                for entry in &mut by_name[start..end] {
                    let Some(agent) = agents.get_mut(&entry.id) else {
                        continue;
                    };
                    if reevaluate(agent, dirty, events, &self.config.thresholds, now, None) {
                        entry.copy_state(agent);
                    }
                }
                if end >= by_name.len() {
                    return;
                }
                end
            };
            start = end;
            tokio::task::yield_now().await;
        }
    }

    /// Writes changed agents, heartbeat timestamps and pending events in one transaction (group
    /// commit). On failure everything stays queued for the next attempt.
    pub async fn flush(&self) -> anyhow::Result<usize> {
        let (rows, beats, events) = {
            let mut inner = self.write();
            if inner.dirty.is_empty() && inner.beating.is_empty() && inner.events.is_empty() {
                return Ok(0);
            }
            let dirty = std::mem::take(&mut inner.dirty);
            let beating = std::mem::take(&mut inner.beating);
            let rows: Vec<AgentRow> = dirty
                .iter()
                .filter_map(|id| inner.agents.get(id))
                .map(Agent::to_row)
                .collect();
            let beats: Vec<db::agents::HeartbeatStamp> = beating
                .into_iter()
                .filter(|id| !dirty.contains(id))
                .filter_map(|id| {
                    let a = inner.agents.get(&id)?;
                    Some(db::agents::HeartbeatStamp {
                        last_heartbeat_at: a.last_heartbeat_at,
                        last_contact_at: a.last_contact_at,
                        uptime_seconds: a.uptime_seconds,
                        last_poll_at: a.last_poll_at,
                        agent_id: id,
                    })
                })
                .collect();
            (rows, beats, std::mem::take(&mut inner.events))
        };
        let written = rows.len() + beats.len();
        let started = std::time::Instant::now();
        let result = async {
            let mut tx = self.db.begin().await?;
            // A bounded number of statements whatever the fleet size: rows travel as JSON.
            for chunk in rows.chunks(5_000) {
                db::agents::update_live_states(&mut tx, chunk).await?;
            }
            for chunk in beats.chunks(20_000) {
                db::agents::update_heartbeats(&mut tx, chunk).await?;
            }
            for chunk in events.chunks(5_000) {
                db::agents::insert_events(&mut tx, chunk).await?;
            }
            tx.commit().await
        }
        .await;
        if let Err(e) = result {
            let mut inner = self.write();
            inner.dirty.extend(rows.into_iter().map(|r| r.agent_id));
            inner.beating.extend(beats.into_iter().map(|b| b.agent_id));
            let newer = std::mem::replace(&mut inner.events, events);
            inner.events.extend(newer);
            return Err(e.into());
        }
        self.metrics
            .flushes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.metrics
            .flushed_agents
            .fetch_add(written as u64, std::sync::atomic::Ordering::Relaxed);
        self.metrics.flush_duration.observe(started.elapsed());
        Ok(written)
    }

    /// The token the console presents when calling this agent.
    fn console_token_for(&self, agent: &Agent) -> String {
        self.key
            .console_token(&agent.id, agent.console_token_generation)
    }

    /// Runs the flusher, the sweeper and the poller until `shutdown` fires, then flushes a last time.
    pub async fn run_background(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut flush = tokio::time::interval(FLUSH_INTERVAL);
        let mut sweep = tokio::time::interval(SWEEP_INTERVAL);
        let mut poll = tokio::time::interval(self.config.poll_interval);
        for timer in [&mut flush, &mut sweep, &mut poll] {
            timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        let mut polling: Option<tokio::task::JoinHandle<()>> = None;
        loop {
            tokio::select! {
                _ = flush.tick() => {
                    if let Err(e) = self.flush().await {
                        tracing::error!(error = %e, "cannot write agent state; will retry");
                    }
                }
                _ = sweep.tick() => self.sweep().await,
                _ = poll.tick() => {
                    // A slow round is not doubled up: the next one starts after it ends.
                    if polling.as_ref().is_none_or(|h| h.is_finished()) {
                        let fleet = self.clone();
                        polling = Some(tokio::spawn(async move { fleet.poll_all().await }));
                    }
                }
                _ = shutdown.changed() => break,
            }
        }
        if let Some(handle) = polling {
            handle.abort();
        }
        match self.flush().await {
            Ok(n) => tracing::info!(agents = n, "agent state written at shutdown"),
            Err(e) => tracing::error!(error = %e, "cannot write agent state at shutdown"),
        }
    }
}

/// The certificate pin an enrollment carries, if any; malformed ones are refused.
pub(crate) fn certificate_pin(hex: Option<&str>) -> Result<Option<call::Pin>, EnrollError> {
    hex.map(|hex| call::parse_pin(hex.trim()).ok_or(EnrollError::BadCertificatePin))
        .transpose()
}

/// How a lifecycle event mentions the pinned certificate.
pub(crate) fn pinned_note(pin: Option<&call::Pin>) -> String {
    match pin {
        Some(pin) => format!("; certificate SHA-256 {}… pinned", call::hex(&pin[..8])),
        None => "; no certificate pinned (the console will not call this agent)".into(),
    }
}

/// A trimmed machine name of 1 to 255 characters without control characters.
pub(crate) fn valid_machine_name(name: &str) -> Result<String, EnrollError> {
    let name = name.trim();
    if name.is_empty() || name.len() > 255 || name.chars().any(char::is_control) {
        return Err(EnrollError::BadMachineName);
    }
    Ok(name.to_string())
}

/// The enrollment token row, if it exists, is not revoked and has not expired (uses are counted
/// separately, atomically, by `consume`).
pub(crate) async fn usable_token(
    conn: &mut sqlx::SqliteConnection,
    token: &str,
    now: i64,
) -> Result<db::enrollment_tokens::EnrollmentTokenRow, EnrollError> {
    let token = db::enrollment_tokens::get_by_hash(conn, &tokens::digest(token))
        .await?
        .ok_or(EnrollError::Invalid)?;
    if let Some(by) = &token.revoked_by {
        return Err(EnrollError::Revoked(by.clone()));
    }
    if token.expires_at <= now {
        return Err(EnrollError::Expired(format!(
            "{} ago",
            health::human(now - token.expires_at)
        )));
    }
    Ok(token)
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

#[cfg(test)]
mod check_set_tests {
    use super::*;
    use crate::protocol::CheckStatus;

    fn check(message: &str) -> HealthCheck {
        HealthCheck {
            name: "ldap".into(),
            status: CheckStatus::Pass,
            message: message.into(),
        }
    }

    #[test]
    fn equal_check_sets_are_held_once_and_unused_ones_dropped() {
        let mut sets = CheckSets::default();
        let a = sets.intern(vec![check("ok")]);
        let b = sets.intern(vec![check("ok")]);
        assert!(Arc::ptr_eq(&a, &b));
        let other = sets.intern(vec![check("slow")]);
        assert!(!Arc::ptr_eq(&a, &other));
        assert_eq!(sets.sets.len(), 2);
        drop(other);
        sets.prune();
        assert_eq!(sets.sets.len(), 1, "the set nobody holds is gone");
        assert!(Arc::ptr_eq(&sets.intern(vec![check("ok")]), &a));
    }
}
