//! The live agent fleet: enrollment, heartbeats, health evaluation, polls, deletion.
//!
//! The fleet lives in memory so that heartbeats and the Agents page never wait on SQLite: a heartbeat
//! updates one entry under a short lock and marks it dirty; a flusher writes all dirty agents and pending
//! transitions in one transaction every [`FLUSH_INTERVAL`] (group commit). Enrollment and deletion are
//! written to the database first, in a transaction with their audit entry, and only then applied in
//! memory, so a failed write leaves nothing half-done. The records themselves are compact (see
//! [`store`]); [`Agent`] is the full view the rest of the console reads.

pub mod batch;
pub mod call;
pub mod health;
pub mod metrics;
pub mod poll;
mod snapshot;
mod store;

use crate::auth::tokens::{self, ConsoleKey};
use crate::db::agents::{AgentEventRef, AgentRow, NewAgentEvent};
use crate::db::{self, audit::NewAuditEntry};
use crate::protocol::{
    EnrollRequest, EnrollResponse, Environment, Extension, HealthCheck, Heartbeat,
    HeartbeatResponse, WhoAmI,
};
use anyhow::Context;
use health::{Health, Status, Thresholds};
use serde_json::json;
use sqlx::SqlitePool;
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use store::{Idx, Pools, Slot, Slots};

/// Most domains one agent may report (a bound on what an agent can make the console hold).
const MAX_DOMAINS: usize = 64;
/// How often dirty heartbeat state reaches the database.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(250);
/// Agent rows per statement of a group commit (each row is built just before its statement).
const ROWS_PER_STATEMENT: usize = 2_000;
/// How often free memory inside the heap goes back to the system (see `crate::malloc`).
const TRIM_INTERVAL: Duration = Duration::from_secs(30);
/// How often timeline events older than the retention are deleted.
const PRUNE_INTERVAL: Duration = Duration::from_secs(3600);
/// Events deleted per statement when pruning, so a backlog never holds the writer for long.
const PRUNE_CHUNK: i64 = 5_000;
/// How often every agent's status and health are re-evaluated.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// The `serve` flags the fleet obeys.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    pub environment: Environment,
    pub thresholds: Thresholds,
    pub hide_inactive_after: Duration,
    /// How long agents' timeline events are kept (see [`Fleet::prune_events`]).
    pub event_retention: Duration,
    pub poll_interval: Duration,
    pub poll_timeout: Duration,
    pub poll_concurrency: usize,
    /// Agents per round whose poll connection stays open for the next round (see [`poll`]).
    pub poll_keepalive: usize,
    /// Where the fleet snapshot is kept between a clean shutdown and the next start (None: no
    /// snapshot, the table is always read).
    pub snapshot_file: Option<std::path::PathBuf>,
}

/// File name of the fleet snapshot in the data dir (see [`snapshot`]).
pub const SNAPSHOT_FILE: &str = "fleet.snapshot";

/// One agent as the console knows it: an owned copy, taken under the fleet's lock.
#[derive(Debug, Clone)]
pub struct Agent {
    pub id: String,
    credential_hash: [u8; 32],
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
    pub checks: Vec<HealthCheck>,
    pub last_poll_at: Option<i64>,
    pub last_poll_error: Option<String>,
    /// Domains the agent serves; filled by directory sync.
    pub domains: Vec<String>,
    /// SHA-256 of the certificate the agent serves its API with, pinned at enrollment (None for
    /// agents enrolled before pinning: the console does not call those).
    pub tls_cert_sha256: Option<call::Pin>,
    /// The key of the agent's `agent_liveness` row, which its timestamps are written by (0 until
    /// the row is written at enrollment).
    liveness_id: u32,
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
            credential_hash: tokens::digest_array(credential),
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
            checks: Vec::new(),
            last_poll_at: None,
            last_poll_error: None,
            domains: Vec::new(),
            tls_cert_sha256,
            liveness_id: 0,
        }
    }

    fn from_row(row: AgentRow) -> Self {
        Agent {
            checks: serde_json::from_str(&row.checks_json).unwrap_or_default(),
            extension: row.extension.parse().unwrap_or_default(),
            environment: row.environment.parse().unwrap_or_default(),
            status: Status::parse(&row.status).unwrap_or(Status::Active),
            health: Health::parse(&row.health).unwrap_or(Health::Degraded),
            id: row.agent_id,
            credential_hash: row.credential_hash.try_into().unwrap_or([0; 32]),
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
            health_reason: store::reason(&row.health_reason),
            health_since: row.health_since,
            last_poll_at: row.last_poll_at,
            last_poll_error: row.last_poll_error,
            domains: serde_json::from_str(&row.domains_json).unwrap_or_default(),
            tls_cert_sha256: row.tls_cert_sha256.as_deref().and_then(call::parse_pin),
            liveness_id: u32::try_from(row.liveness_id).unwrap_or(0),
        }
    }

    fn to_row(&self) -> AgentRow {
        AgentRow {
            agent_id: self.id.clone(),
            credential_hash: self.credential_hash.to_vec(),
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
            liveness_id: i64::from(self.liveness_id),
        }
    }

    /// Its liveness row's values, borrowed (what [`Self::to_row`] would copy into the row).
    fn liveness(&self) -> db::agents::LivenessValues<'_> {
        db::agents::LivenessValues {
            agent_id: &self.id,
            last_heartbeat_at: self.last_heartbeat_at,
            last_contact_at: self.last_contact_at,
            uptime_seconds: self.uptime_seconds,
            last_poll_at: self.last_poll_at,
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
        store::api_addr(self.listen_addr.as_deref(), &self.external_ip)
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

/// Agents alive when the console stopped that have not checked in since it started, while they
/// still have time to (see [`Fleet::sweep`]). Times are Unix milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartGrace {
    pub started_at: i64,
    pub until: i64,
    pub waiting: usize,
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
    idx: Idx,
    status: Status,
    health: Health,
    status_since: i64,
    health_since: i64,
}

impl NameEntry {
    /// Takes over the agent's status and health after a transition.
    fn copy_state(&mut self, slot: &Slot) {
        self.status = slot.status;
        self.health = slot.health;
        self.status_since = slot.status_since;
        self.health_since = slot.health_since;
    }

    fn of(idx: Idx, slot: &Slot) -> Self {
        NameEntry {
            idx,
            status: slot.status,
            health: slot.health,
            status_since: slot.status_since,
            health_since: slot.health_since,
        }
    }
}

/// A status, health or lifecycle change waiting for the next group commit. 40 bytes with the
/// reason shared (interned), because one sweep can queue one per agent: 200,000 when a fleet-wide
/// condition changes both status and health.
#[derive(Debug)]
struct QueuedEvent {
    agent_id: uuid::Uuid,
    at: i64,
    reason: store::Shared<String>,
    change: Change,
}

const _: () = assert!(std::mem::size_of::<QueuedEvent>() == 40);

#[derive(Debug, Clone, Copy)]
enum Change {
    Status {
        from: Status,
        to: Status,
    },
    Health {
        from: Health,
        to: Health,
    },
    /// The agent's API presented another certificate than the one pinned at enrollment.
    CertificateRefused,
}

impl QueuedEvent {
    fn as_row(&self) -> AgentEventRef<'_> {
        let (kind, from_value, to_value) = match self.change {
            Change::Status { from, to } => ("status", Some(from.as_str()), to.as_str()),
            Change::Health { from, to } => ("health", Some(from.as_str()), to.as_str()),
            Change::CertificateRefused => ("lifecycle", None, "certificate refused"),
        };
        AgentEventRef {
            agent_id: self.agent_id,
            at: self.at,
            kind,
            from_value,
            to_value,
            reason: &self.reason,
        }
    }
}

/// The write queues: places of agents to write at the next flush. Each agent is queued once (its
/// `dirty` / `beating` flag says whether it is); a place freed and reused meanwhile is skipped by
/// the flag, as a new agent is written when it enrolls.
#[derive(Default)]
struct Queues {
    /// Agents whose state changed beyond heartbeat timestamps: written as whole rows.
    dirty: Vec<Idx>,
    /// Agents that only heartbeated: written as timestamps, many rows per statement.
    beating: Vec<Idx>,
    events: Vec<QueuedEvent>,
}

impl Queues {
    fn mark_dirty(&mut self, idx: Idx, slot: &mut Slot) {
        if !slot.dirty {
            slot.dirty = true;
            self.dirty.push(idx);
        }
    }

    fn mark_beating(&mut self, idx: Idx, slot: &mut Slot) {
        if !slot.dirty && !slot.beating {
            slot.beating = true;
            self.beating.push(idx);
        }
    }
}

#[derive(Default)]
struct Inner {
    slots: Slots,
    queues: Queues,
    /// Places sorted by (ASCII-folded machine name, id): the Agents page's default order, kept so
    /// a page at 100,000 agents is a filtered walk instead of a sort. Rebuilt lazily when stale.
    by_name: Vec<NameEntry>,
    by_name_fresh: bool,
    /// Agents per reported version, kept as versions change (for Home and `/metrics`).
    versions: hashbrown::HashMap<store::Shared<String>, usize>,
    pools: Pools,
}

fn count_version(
    versions: &mut hashbrown::HashMap<store::Shared<String>, usize>,
    version: &store::Shared<String>,
    delta: isize,
) {
    let n = versions.entry(version.clone()).or_default();
    *n = n.saturating_add_signed(delta);
    if *n == 0 {
        versions.remove(version);
    }
}

impl Inner {
    /// Adds (or, for a re-install, replaces) an agent.
    fn insert(&mut self, agent: &Agent) {
        let Some(slot) = Slot::from_agent(agent, &mut self.pools) else {
            tracing::error!(agent_id = %agent.id, "agent id is not a UUID; not kept in memory");
            return;
        };
        if let Some(old) = self.slots.find(&slot.id).and_then(|i| self.slots.get(i)) {
            let version = old.version.clone();
            count_version(&mut self.versions, &version, -1);
        }
        count_version(&mut self.versions, &slot.version, 1);
        self.slots.upsert(slot);
        self.by_name_fresh = false;
    }

    /// Re-evaluates one agent and queues an event for each transition.
    fn reevaluate(&mut self, idx: Idx, t: &Thresholds, now: i64, contact_reason: Option<&str>) {
        let Inner {
            slots,
            queues,
            by_name,
            by_name_fresh,
            pools,
            ..
        } = self;
        if let Some(slot) = slots.get_mut(idx) {
            if reevaluate(idx, slot, queues, &mut pools.texts, t, now, contact_reason)
                && *by_name_fresh
            {
                if let Some(entry) = by_name
                    .get_mut(slot.name_pos as usize)
                    .filter(|e| e.idx == idx)
                {
                    entry.copy_state(slot);
                }
            }
        }
    }

    /// Builds the name order (after an enrollment, deletion or rename made it stale).
    fn rebuild_name_order(&mut self) {
        let Inner {
            slots,
            by_name,
            by_name_fresh,
            ..
        } = self;
        let mut keys: Vec<(u128, Idx)> = slots.iter().map(|(i, s)| (s.name_prefix(), i)).collect();
        let slot = |i: Idx| slots.get(i).expect("listed");
        keys.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| slot(a.1).name_cmp(slot(b.1))));
        by_name.clear();
        by_name.reserve_exact(keys.len().saturating_sub(by_name.capacity()));
        for (pos, (_, idx)) in keys.into_iter().enumerate() {
            if let Some(slot) = slots.get_mut(idx) {
                slot.name_pos = Idx::try_from(pos).unwrap_or(Idx::MAX);
                by_name.push(NameEntry::of(idx, slot));
            }
        }
        *by_name_fresh = true;
    }
}

/// Re-evaluates `slot`; on any change queues it for writing, and an event per transition.
/// Allocates nothing when nothing changed: the sweeper runs this for every agent every second.
/// Returns whether the status or the health changed.
fn reevaluate(
    idx: Idx,
    slot: &mut Slot,
    queues: &mut Queues,
    texts: &mut store::Interned<String>,
    t: &Thresholds,
    now: i64,
    contact_reason: Option<&str>,
) -> bool {
    let status = health::evaluate_status(&slot.observed(), t, now);
    let (health, reason) = health::evaluate_health(&slot.observed(), t, now);
    let status_changed = status != slot.status;
    let health_changed = health != slot.health;
    // Formatted only when it is news: the usual sweep of an unchanged agent allocates nothing.
    // Interned, so the agent and its event share it with every agent in the same state.
    let reason = (health_changed || !reason.is(&slot.health_reason))
        .then(|| texts.intern(&reason.to_string()));
    let mut changed = false;
    if status_changed {
        let why = match status {
            Status::Active => texts.intern(contact_reason.unwrap_or("contact resumed")),
            Status::Inactive => texts.intern(&format!(
                "no contact for {}",
                health::human(now - slot.last_contact_at)
            )),
        };
        queues.events.push(QueuedEvent {
            agent_id: slot.id,
            at: now,
            reason: why,
            change: Change::Status {
                from: slot.status,
                to: status,
            },
        });
        slot.status = status;
        slot.status_since = now;
        changed = true;
    }
    if health_changed {
        queues.events.push(QueuedEvent {
            agent_id: slot.id,
            at: now,
            reason: reason.clone().unwrap_or_else(|| slot.health_reason.clone()),
            change: Change::Health {
                from: slot.health,
                to: health,
            },
        });
        slot.health = health;
        slot.health_since = now;
        changed = true;
    }
    if let Some(reason) = reason.filter(|r| **r != *slot.health_reason) {
        slot.health_reason = reason;
        changed = true;
    }
    if changed {
        queues.mark_dirty(idx, slot);
    }
    status_changed || health_changed
}

/// Case-insensitive `contains` for a search box: no allocation for ASCII text.
fn contains_folded(hay: &str, needle_lower: &str) -> bool {
    if hay.is_ascii() && needle_lower.is_ascii() {
        let (h, n) = (hay.as_bytes(), needle_lower.as_bytes());
        n.is_empty() || h.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n))
    } else {
        hay.to_lowercase().contains(needle_lower)
    }
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
    /// When this console started listening for agents (Unix ms): silence from before it is not
    /// held against an agent until the agent has had `unhealthy_after` to check in (see [`Fleet::sweep`]).
    listening_since: i64,
    /// The last contacts that earn that grace (Unix ms): those within `unhealthy_after` of the last
    /// contact the console recorded before it stopped, from agents that were alive then.
    spared_contacts: std::ops::Range<i64>,
}

impl Fleet {
    /// Loads every agent: from the snapshot of the last clean shutdown when there is a valid one,
    /// else from the table. Builds the name order, so the first page does not pay for it.
    pub async fn load(
        db: SqlitePool,
        key: ConsoleKey,
        config: FleetConfig,
    ) -> anyhow::Result<Self> {
        let started = std::time::Instant::now();
        let from_snapshot = match &config.snapshot_file {
            Some(file) => Self::read_snapshot(&db, file).await?,
            None => None,
        };
        let source = if from_snapshot.is_some() {
            "snapshot"
        } else {
            "table"
        };
        let inner = match from_snapshot {
            Some(inner) => inner,
            None => Self::read_table(&db).await?,
        };
        let load_duration = started.elapsed();
        // When the console stopped, as near as the fleet tells: its last contact with any agent.
        let last_heard = inner.slots.iter().map(|(_, s)| s.last_contact_at).max();
        let listening_since = db::now_ms();
        let unhealthy_ms = health::millis(config.thresholds.unhealthy_after);
        let spared_contacts = match last_heard {
            Some(last) => last.saturating_sub(unhealthy_ms)..listening_since,
            None => 0..0,
        };
        tracing::info!(
            agents = inner.slots.len(),
            source,
            elapsed_ms = load_duration.as_millis() as u64,
            "fleet loaded"
        );
        let inner = Arc::new(RwLock::new(inner));
        let http = call::client(&inner, config.poll_timeout)?;
        Ok(Fleet {
            inner,
            metrics: metrics::FleetMetrics {
                loaded_from: source,
                load_duration,
                ..Default::default()
            },
            db,
            key,
            config,
            http,
            listening_since,
            spared_contacts,
        })
    }

    /// The store from the snapshot file, if the database says it is current.
    async fn read_snapshot(
        db: &SqlitePool,
        file: &std::path::Path,
    ) -> anyhow::Result<Option<Inner>> {
        let Some((format, generation)) = db::fleet_snapshot::read(db).await? else {
            return Ok(None);
        };
        if format != snapshot::FORMAT {
            tracing::info!(
                format,
                "fleet snapshot from another version; reading the agent table instead"
            );
            return Ok(None);
        }
        let opened = std::fs::File::open(file).and_then(|f| Ok((f.metadata()?.len(), f)));
        let (len, source) = match opened {
            Ok(opened) => opened,
            Err(e) => {
                tracing::warn!(file = %file.display(), error = %e, "cannot read the fleet snapshot; reading the agent table instead");
                return Ok(None);
            }
        };
        match snapshot::decode(source, len, &generation) {
            Ok(inner) => Ok(Some(inner)),
            Err(e) => {
                tracing::warn!(file = %file.display(), error = %e, "the fleet snapshot cannot be used; reading the agent table instead");
                Ok(None)
            }
        }
    }

    /// Reads every agent row straight into the store (no intermediate rows).
    async fn read_table(db: &SqlitePool) -> anyhow::Result<Inner> {
        let mut inner = Inner::default();
        let count = db::agents::count(db).await?;
        inner.slots = Slots::with_capacity(count);
        // Most agents report one of a few check lists: parse each distinct text once.
        let mut checks_by_text: hashbrown::HashMap<String, store::Shared<Vec<HealthCheck>>> =
            hashbrown::HashMap::new();
        let mut skipped = 0usize;
        db::agents::for_each(db, |row| {
            let Ok(id) = uuid::Uuid::parse_str(row.agent_id) else {
                skipped += 1;
                tracing::error!(agent_id = row.agent_id, "agent id is not a UUID; skipped");
                return;
            };
            let checks = match checks_by_text.get(row.checks_json) {
                Some(checks) => checks.clone(),
                None => {
                    let parsed: Vec<HealthCheck> =
                        serde_json::from_str(row.checks_json).unwrap_or_default();
                    let checks = inner.pools.checks.intern(&parsed);
                    checks_by_text.insert(row.checks_json.to_string(), checks.clone());
                    checks
                }
            };
            let domains = if row.domains_json == "[]" {
                inner.pools.domains.intern(&[])
            } else {
                let parsed: Vec<Box<str>> =
                    serde_json::from_str(row.domains_json).unwrap_or_default();
                inner.pools.domains.intern(&parsed)
            };
            let slot = Slot {
                id,
                credential_hash: row.credential_hash.try_into().unwrap_or([0; 32]),
                tls_pin: row.tls_cert_sha256.and_then(call::parse_pin),
                machine_name: row.machine_name.into(),
                listen_addr: row.listen_addr.map(|a| inner.pools.texts.intern(a)),
                last_poll_error: row.last_poll_error.map(|e| inner.pools.texts.intern(e)),
                domains,
                version: inner.pools.texts.intern(row.version),
                external_ip: inner.pools.texts.intern(row.external_ip),
                health_reason: inner.pools.texts.intern(row.health_reason),
                checks,
                registered_at: row.registered_at,
                // The liveness row, read next, fills these; without one the agent reads as not
                // heard from since it registered.
                liveness_id: 0,
                last_contact_at: row.registered_at,
                status_since: row.status_since,
                health_since: row.health_since,
                last_heartbeat_at: None.into(),
                last_poll_at: None.into(),
                uptime_seconds: None.into(),
                enrollment_token_id: row.enrollment_token_id.into(),
                console_token_generation: u32::try_from(row.console_token_generation)
                    .unwrap_or(u32::MAX),
                heartbeat_interval_seconds: u32::try_from(row.heartbeat_interval_seconds)
                    .unwrap_or(30),
                name_pos: Idx::MAX,
                extension: row.extension.parse().unwrap_or_default(),
                environment: row.environment.parse().unwrap_or_default(),
                status: Status::parse(row.status).unwrap_or(Status::Active),
                health: Health::parse(row.health).unwrap_or(Health::Degraded),
                dirty: false,
                beating: false,
            };
            count_version(&mut inner.versions, &slot.version, 1);
            inner.slots.push_loaded(slot);
        })
        .await?;
        db::agents::for_each_liveness(db, |row| {
            let Some(idx) = uuid::Uuid::parse_str(row.agent_id)
                .ok()
                .and_then(|id| inner.slots.find(&id))
            else {
                return; // an agent skipped above
            };
            let Some(slot) = inner.slots.get_mut(idx) else {
                return;
            };
            slot.liveness_id = u32::try_from(row.liveness_id).unwrap_or(0);
            slot.last_heartbeat_at = row.last_heartbeat_at.into();
            slot.last_contact_at = row.last_contact_at;
            slot.uptime_seconds = row.uptime_seconds.into();
            slot.last_poll_at = row.last_poll_at.into();
        })
        .await?;
        if skipped > 0 {
            tracing::error!(
                skipped,
                "agents with ids that are not UUIDs were not loaded; delete them from the agent table"
            );
        }
        inner.rebuild_name_order();
        Ok(inner)
    }

    /// Writes the snapshot the next start reads (see [`snapshot`]). Only after a successful final
    /// flush: the snapshot must be exactly what the table holds.
    async fn save_snapshot(&self) -> anyhow::Result<u64> {
        let Some(file) = &self.config.snapshot_file else {
            return Ok(0);
        };
        self.refresh_name_order();
        let generation: [u8; 16] = *uuid::Uuid::new_v4().as_bytes();
        // The file first, whole and synced, then the row that makes it count: a crash in between
        // leaves a file nobody reads. Written while the fleet is held, as it is encoded.
        let partial = file.with_extension("snapshot.partial");
        let (out, written, agents) = {
            let inner = self.read();
            if !inner.queues.dirty.is_empty()
                || !inner.queues.beating.is_empty()
                || !inner.queues.events.is_empty()
            {
                anyhow::bail!("agent state is still queued for writing");
            }
            let write = || -> std::io::Result<(std::fs::File, u64)> {
                let mut out = std::fs::File::create(&partial)?;
                let written = snapshot::write(&inner, &generation, &mut out)?;
                Ok((out, written))
            };
            let (out, written) =
                write().with_context(|| format!("cannot write {}", partial.display()))?;
            (out, written, inner.slots.len())
        };
        out.sync_all()
            .and_then(|()| std::fs::rename(&partial, file))
            .with_context(|| format!("cannot write {}", file.display()))?;
        db::fleet_snapshot::save(
            &self.db,
            snapshot::FORMAT,
            agents,
            db::now_ms(),
            &generation,
        )
        .await?;
        Ok(written)
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
                    previous = Some(Agent::from_row(row));
                }
            }
        }
        let credential = tokens::generate(tokens::AGENT_CREDENTIAL_PREFIX);
        let reinstalled = previous.is_some();
        let mut agent = match previous {
            Some(mut agent) => {
                agent.credential_hash = tokens::digest_array(&credential);
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
        agent.liveness_id = db::agents::upsert(&mut tx, &agent.to_row()).await?;
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
        self.write().insert(&agent);
        Ok(response)
    }

    /// The agent a bearer credential belongs to.
    pub fn authenticate(&self, credential: &str) -> Option<String> {
        let hash = tokens::digest_array(credential);
        let inner = self.read();
        let idx = inner.slots.find_credential(&hash)?;
        Some(inner.slots.get(idx)?.id.to_string())
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
        let id = uuid::Uuid::parse_str(agent_id).ok()?;
        // Everything that allocates happens before the lock.
        let checks: Vec<HealthCheck> = hb.checks.into_iter().take(32).collect();
        let listen_addr = hb.listen_addr.map(|a| truncate(a, 64));
        let version = truncate(hb.version, 64);
        let name = truncate(hb.machine_name, 255);
        let domains: Vec<String> = hb
            .domains
            .into_iter()
            .take(MAX_DOMAINS)
            .map(|d| truncate(d.domain, 255))
            .collect();
        let interval = u32::try_from(hb.heartbeat_interval_seconds.clamp(1, 86_400)).unwrap_or(30);
        let uptime = i64::try_from(hb.uptime_seconds).ok();

        let mut guard = self.write();
        let inner = &mut *guard;
        let idx = inner.slots.find(&id)?;
        let Inner {
            slots,
            queues,
            by_name_fresh,
            versions,
            pools,
            ..
        } = inner;
        let slot = slots.get_mut(idx)?;
        if listen_addr.as_deref() != slot.listen_addr.as_deref()
            && slot.last_poll_error.as_deref() != Some(call::PIN_MISMATCH)
        {
            // The agent restarted on another address: an old poll failure says nothing about the
            // new one. A certificate that did not match stays: it is the same agent's certificate,
            // and only a poll that verifies (or a re-install) clears it.
            slot.last_poll_error = None;
        }
        let renamed = *slot.machine_name != *name;
        let same_domains = slot.domains.len() == domains.len()
            && slot.domains.iter().zip(&domains).all(|(a, b)| **a == **b);
        // Most heartbeats only move timestamps; those take the cheap write path.
        let changed = renamed
            || *slot.version != *version
            || slot.listen_addr.as_deref() != listen_addr.as_deref()
            || *slot.checks != *checks
            || !same_domains
            || *slot.external_ip != *external_ip
            || slot.heartbeat_interval_seconds != interval
            || slot.last_heartbeat_at.is_none();
        if changed {
            if *slot.version != *version {
                let new = pools.texts.intern(&version);
                count_version(versions, &slot.version, -1);
                count_version(versions, &new, 1);
                slot.version = new;
            }
            if renamed {
                slot.machine_name = name.into();
                *by_name_fresh = false;
            }
            slot.listen_addr = listen_addr.map(|a| pools.texts.intern(&a));
            if *slot.checks != *checks {
                slot.checks = pools.checks.intern(&checks);
            }
            if !same_domains {
                let domains: Vec<Box<str>> = domains.into_iter().map(Into::into).collect();
                slot.domains = pools.domains.intern(&domains);
            }
            if *slot.external_ip != *external_ip {
                slot.external_ip = pools.texts.intern(&external_ip);
            }
            slot.heartbeat_interval_seconds = interval;
        }
        slot.uptime_seconds = uptime.into();
        slot.last_heartbeat_at = now.into();
        slot.last_contact_at = now;
        if changed {
            queues.mark_dirty(idx, slot);
        } else {
            queues.mark_beating(idx, slot);
        }
        inner.reevaluate(
            idx,
            &self.config.thresholds,
            now,
            Some("heartbeat received"),
        );
        let slot = inner.slots.get(idx)?;
        Some(HeartbeatResponse {
            agent_id: agent_id.to_string(),
            status: slot.status.as_str().into(),
            health: slot.health.as_str().into(),
        })
    }

    /// Replaces the domains an agent serves (its full list, from `agent add-directory` or a
    /// heartbeat). Kept in memory only: a running agent re-sends the list in every heartbeat.
    pub fn set_domains(&self, agent_id: &str, domains: Vec<String>) -> Option<Vec<String>> {
        let domains: Vec<String> = domains
            .into_iter()
            .take(MAX_DOMAINS)
            .map(|d| truncate(d, 255))
            .collect();
        let mut guard = self.write();
        let inner = &mut *guard;
        let idx = inner.slots.find_str(agent_id)?;
        let slot = inner.slots.get_mut(idx)?;
        let list: Vec<Box<str>> = domains.iter().map(|d| d.as_str().into()).collect();
        slot.domains = inner.pools.domains.intern(&list);
        inner.queues.mark_dirty(idx, slot);
        Some(domains)
    }

    pub fn whoami(&self, agent_id: &str) -> Option<WhoAmI> {
        let inner = self.read();
        let slot = inner.slots.get(inner.slots.find_str(agent_id)?)?;
        Some(WhoAmI {
            agent_id: slot.id.to_string(),
            machine_name: slot.machine_name.to_string(),
            status: slot.status.as_str().into(),
            health: slot.health.as_str().into(),
            environment: slot.environment,
        })
    }

    pub fn get(&self, agent_id: &str) -> Option<Agent> {
        let inner = self.read();
        Some(inner.slots.get(inner.slots.find_str(agent_id)?)?.to_agent())
    }

    /// Active agents that report `domain` (any case), in name order.
    pub fn serving(&self, domain: &str, status: Option<Status>) -> Vec<Agent> {
        self.refresh_name_order();
        let inner = self.read();
        inner
            .by_name
            .iter()
            .filter(|e| status.is_none_or(|s| e.status == s))
            .filter_map(|e| inner.slots.get(e.idx))
            .filter(|s| s.serves(domain))
            .map(Slot::to_agent)
            .collect()
    }

    /// Rebuilds the name order if an enrollment, deletion or rename made it stale.
    fn refresh_name_order(&self) {
        if self.read().by_name_fresh {
            return;
        }
        let mut inner = self.write();
        if !inner.by_name_fresh {
            inner.rebuild_name_order();
        }
    }

    /// One page of agents matching `filter`, and how many match in all.
    ///
    /// Every sort walks the compact name index once: the default order is that walk; another key
    /// is reduced to a number per matching agent (its name position breaking ties), and only the
    /// page is selected and sorted, so no page costs a sort of the whole fleet.
    pub fn list(&self, filter: &AgentFilter, limit: usize, offset: usize) -> (Vec<Agent>, usize) {
        let now = db::now_ms();
        let hide_ms =
            i64::try_from(self.config.hide_inactive_after.as_millis()).unwrap_or(i64::MAX);
        let needle = filter
            .search
            .as_deref()
            .map(str::to_lowercase)
            .filter(|s| !s.is_empty());
        self.refresh_name_order();
        let inner = self.read();
        let keep = |e: &NameEntry| {
            (match filter.status {
                Some(StatusFilter::All) => true,
                Some(StatusFilter::Only(s)) => e.status == s,
                None => e.status == Status::Active || now - e.status_since <= hide_ms,
            }) && filter.health.is_none_or(|h| e.health == h)
        };
        let found = |slot: &Slot| {
            needle.as_deref().is_none_or(|n| {
                let mut id = uuid::Uuid::encode_buffer();
                contains_folded(&slot.machine_name, n)
                    || slot.external_ip.contains(n)
                    || slot.version.contains(n)
                    || slot.id.hyphenated().encode_lower(&mut id).starts_with(n)
            })
        };
        let page_of = |idxs: &[Idx]| -> Vec<Agent> {
            idxs.iter()
                .filter_map(|&i| inner.slots.get(i))
                .map(Slot::to_agent)
                .collect()
        };
        if filter.sort == SortKey::MachineName {
            let ordered: Box<dyn Iterator<Item = &NameEntry>> = if filter.descending {
                Box::new(inner.by_name.iter().rev())
            } else {
                Box::new(inner.by_name.iter())
            };
            let mut total = 0;
            let mut page = Vec::with_capacity(limit.min(500));
            for entry in ordered.filter(|e| keep(e)) {
                if needle.is_some() && !inner.slots.get(entry.idx).is_some_and(&found) {
                    continue;
                }
                if total >= offset && page.len() < limit {
                    page.push(entry.idx);
                }
                total += 1;
            }
            return (page_of(&page), total);
        }
        // Versions sort as text: rank the few distinct ones once.
        let mut version_rank: HashMap<&str, u64> = HashMap::new();
        if filter.sort == SortKey::Version {
            let mut distinct: Vec<&str> = inner.versions.keys().map(|v| &**v).collect();
            distinct.sort_unstable();
            version_rank.extend(distinct.into_iter().zip(0..));
        }
        // The first `offset + limit` keys only, in a max-heap: the usual first page keeps 50
        // entries instead of one per agent (1.6 MB at 100,000 agents, allocated per request).
        let want = offset.saturating_add(limit);
        let mut keyed: std::collections::BinaryHeap<(u64, Idx)> =
            std::collections::BinaryHeap::with_capacity(want.min(inner.by_name.len()));
        let mut total = 0;
        for (pos, entry) in inner.by_name.iter().enumerate() {
            if !keep(entry) {
                continue;
            }
            let slot = || inner.slots.get(entry.idx);
            if needle.is_some() && !slot().is_some_and(&found) {
                continue;
            }
            let key = match filter.sort {
                SortKey::Health => match entry.health {
                    Health::Unhealthy => 0,
                    Health::Degraded => 1,
                    Health::Healthy => 2,
                },
                SortKey::Status => match entry.status {
                    Status::Active => 0,
                    Status::Inactive => 1,
                },
                // None first, as `Option`'s order has it; the sign bit flipped keeps i64 order.
                SortKey::LastHeartbeat => slot()
                    .and_then(|s| s.last_heartbeat_at.get())
                    .map_or(0, |t| (t as u64) ^ (1 << 63)),
                SortKey::Version => slot()
                    .and_then(|s| version_rank.get(&*s.version).copied())
                    .unwrap_or(u64::MAX),
                SortKey::MachineName => 0,
            };
            // Ties stay in name order: the position is the low part of the key.
            let pos = Idx::try_from(pos).unwrap_or(Idx::MAX);
            let item = if filter.descending {
                (u64::MAX - key, Idx::MAX - pos)
            } else {
                (key, pos)
            };
            total += 1;
            if keyed.len() < want {
                keyed.push(item);
            } else if keyed.peek().is_some_and(|largest| item < *largest) {
                keyed.pop();
                keyed.push(item);
            }
        }
        let keyed = keyed.into_sorted_vec();
        let places: Vec<Idx> = keyed
            .into_iter()
            .skip(offset)
            .map(|(_, pos)| {
                let pos = if filter.descending {
                    Idx::MAX - pos
                } else {
                    pos
                };
                inner.by_name[pos as usize].idx
            })
            .collect();
        (page_of(&places), total)
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
            .map(|(v, n)| (v.to_string(), *n))
            .collect();
        s.versions
            .sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        s
    }

    /// Counts for `/metrics`.
    pub fn counts_by_status_health_version(&self) -> FleetCounts {
        self.refresh_name_order();
        let inner = self.read();
        let mut counts = FleetCounts::default();
        for e in &inner.by_name {
            *counts
                .by_status_health
                .entry((e.status, e.health))
                .or_default() += 1;
        }
        counts.by_version = inner
            .versions
            .iter()
            .map(|(v, n)| (v.to_string(), *n))
            .collect();
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
            .filter_map(|e| inner.slots.get(e.idx).map(Slot::to_agent))
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
        if !db::agents::delete(&mut tx, &agent.id).await? {
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
                target_id: &agent.id,
                before: Some(agent.audit_json()),
                after: None,
            },
        )
        .await?;
        tx.commit().await?;
        let mut guard = self.write();
        let inner = &mut *guard;
        inner.by_name_fresh = false;
        if let Some(idx) = inner.slots.find_str(&agent.id) {
            if let Some(removed) = inner.slots.remove(idx) {
                count_version(&mut inner.versions, &removed.version, -1);
            }
        }
        Ok(agent)
    }

    /// Re-evaluates every agent against the clock (heartbeats that stopped, agents gone quiet).
    ///
    /// While the console was stopped no agent could reach it, so that silence says nothing about the
    /// agents. An agent last heard from before this start keeps the state it had until it has had
    /// `unhealthy_after` to check in, the time any agent gets between heartbeats; only then is its
    /// silence judged, counted from its last real contact. Without this a restart after a downtime
    /// longer than that turned every agent unhealthy (and inactive), then healthy again at its next
    /// heartbeat: two false transitions per agent, 400,000 events at 100,000 agents.
    ///
    /// Only agents that were alive when the console stopped are spared (heard from within
    /// `unhealthy_after` of its last contact with any agent). One already silent before is judged at
    /// once, so a console restarting again and again cannot keep a dead agent healthy.
    pub async fn sweep(&self) {
        /// Agents evaluated per hold of the lock, so heartbeats and pages wait at most one chunk
        /// (well under a millisecond). Between chunks the task yields, so requests queued on this
        /// worker thread run instead of waiting for the whole sweep.
        const CHUNK: usize = 1024;
        let now = db::now_ms();
        let spared = if now - self.listening_since
            < health::millis(self.config.thresholds.unhealthy_after)
        {
            self.spared_contacts.clone()
        } else {
            0..0
        };
        let mut start = 0;
        loop {
            self.refresh_name_order();
            let end = {
                let mut inner = self.write();
                let Inner {
                    slots,
                    queues,
                    by_name,
                    pools,
                    ..
                } = &mut *inner;
                if start == 0 {
                    pools.prune();
                }
                let end = (start + CHUNK).min(by_name.len());
                for entry in &mut by_name[start.min(end)..end] {
                    let Some(slot) = slots
                        .get_mut(entry.idx)
                        .filter(|s| !spared.contains(&s.last_contact_at))
                    else {
                        continue;
                    };
                    if reevaluate(
                        entry.idx,
                        slot,
                        queues,
                        &mut pools.texts,
                        &self.config.thresholds,
                        now,
                        None,
                    ) {
                        entry.copy_state(slot);
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

    /// The agents still spared after a restart, if any (one walk over the fleet, and only in the
    /// first `unhealthy_after` after a start).
    pub fn restart_grace(&self) -> Option<RestartGrace> {
        let until = self
            .listening_since
            .saturating_add(health::millis(self.config.thresholds.unhealthy_after));
        if db::now_ms() >= until || self.spared_contacts.is_empty() {
            return None;
        }
        let waiting = self
            .read()
            .slots
            .iter()
            .filter(|(_, s)| self.spared_contacts.contains(&s.last_contact_at))
            .count();
        (waiting > 0).then_some(RestartGrace {
            started_at: self.listening_since,
            until,
            waiting,
        })
    }

    /// Writes changed agents, heartbeat timestamps and pending events in one transaction (group
    /// commit). On failure everything stays queued for the next attempt.
    pub async fn flush(&self) -> anyhow::Result<usize> {
        let (rows, beats, beat_ids, mut events) = {
            let mut guard = self.write();
            let Inner { slots, queues, .. } = &mut *guard;
            if queues.dirty.is_empty() && queues.beating.is_empty() && queues.events.is_empty() {
                return Ok(0);
            }
            let mut beats = Vec::with_capacity(queues.beating.len());
            // Whose stamps they are, to queue them again if the commit fails.
            let mut beat_ids = Vec::with_capacity(queues.beating.len());
            for idx in std::mem::take(&mut queues.beating) {
                let Some(slot) = slots.get_mut(idx).filter(|s| s.beating) else {
                    continue;
                };
                slot.beating = false;
                if slot.dirty {
                    continue; // its whole row is written below
                }
                beat_ids.push(slot.id);
                beats.push(db::agents::HeartbeatStamp {
                    liveness_id: i64::from(slot.liveness_id),
                    last_heartbeat_at: slot.last_heartbeat_at.get(),
                    last_contact_at: slot.last_contact_at,
                    uptime_seconds: slot.uptime_seconds.get(),
                    last_poll_at: slot.last_poll_at.get(),
                });
            }
            let mut rows = Vec::with_capacity(queues.dirty.len());
            for idx in std::mem::take(&mut queues.dirty) {
                let Some(slot) = slots.get_mut(idx).filter(|s| s.dirty) else {
                    continue;
                };
                slot.dirty = false;
                rows.push(idx);
            }
            (rows, beats, beat_ids, std::mem::take(&mut queues.events))
        };
        // In agent id order, the order of the events' index (see `insert_events`). Stable, so
        // each agent's events keep the order they happened in.
        events.sort_by_key(|e| e.agent_id);
        let written = rows.len() + beats.len();
        let started = std::time::Instant::now();
        let result = async {
            let mut tx = self.db.begin().await?;
            // A bounded number of statements whatever the fleet size: rows travel as JSON. Rows
            // are built a chunk at a time, so a fleet-wide change (every agent's first heartbeat
            // after a restart) never holds every row in memory at once.
            for chunk in rows.chunks(ROWS_PER_STATEMENT) {
                let built: Vec<AgentRow> = {
                    let inner = self.read();
                    chunk
                        .iter()
                        .filter_map(|&idx| inner.slots.get(idx))
                        .map(|slot| slot.to_agent().to_row())
                        .collect()
                };
                db::agents::update_live_states(&mut tx, &built).await?;
            }
            for chunk in beats.chunks(20_000) {
                db::agents::update_heartbeats(&mut tx, chunk).await?;
            }
            for chunk in events.chunks(5_000) {
                db::agents::insert_events(&mut tx, chunk.iter().map(QueuedEvent::as_row)).await?;
            }
            tx.commit().await
        }
        .await;
        if let Err(e) = result {
            let mut guard = self.write();
            let Inner { slots, queues, .. } = &mut *guard;
            for &idx in &rows {
                if let Some(slot) = slots.get_mut(idx) {
                    queues.mark_dirty(idx, slot);
                }
            }
            for id in &beat_ids {
                if let Some(idx) = slots.find(id) {
                    if let Some(slot) = slots.get_mut(idx) {
                        queues.mark_beating(idx, slot);
                    }
                }
            }
            let newer = std::mem::replace(&mut queues.events, events);
            queues.events.extend(newer);
            return Err(e.into());
        }
        self.metrics
            .flushes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.metrics
            .flushed_agents
            .fetch_add(written as u64, std::sync::atomic::Ordering::Relaxed);
        self.metrics.flush_duration.observe(started.elapsed());
        tracing::debug!(
            rows = rows.len(),
            stamps = beats.len(),
            events = events.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "agent state flushed"
        );
        Ok(written)
    }

    /// Deletes timeline events older than the retention, a chunk per transaction so heartbeats'
    /// group commits go on in between. Returns how many.
    pub async fn prune_events(&self) -> anyhow::Result<u64> {
        let before = db::now_ms().saturating_sub(health::millis(self.config.event_retention));
        let first_kept = db::agents::first_kept_event_id(&self.db, before).await?;
        let mut deleted = 0;
        loop {
            let n = db::agents::delete_events_before(&self.db, first_kept, PRUNE_CHUNK).await?;
            deleted += n;
            if n < PRUNE_CHUNK as u64 {
                return Ok(deleted);
            }
        }
    }

    /// The token the console presents when calling this agent.
    fn console_token_for(&self, slot: &Slot) -> String {
        self.key.console_token(
            &slot.id.to_string(),
            i64::from(slot.console_token_generation),
        )
    }

    /// Runs the flusher, the sweeper and the poller until `shutdown` fires, then flushes a last time.
    pub async fn run_background(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut flush = tokio::time::interval(FLUSH_INTERVAL);
        let mut sweep = tokio::time::interval(SWEEP_INTERVAL);
        // The first round runs one interval after start, not at once: a restarted console would
        // otherwise call every agent while it starts answering pages and the agents' first
        // heartbeats (which re-establish their liveness anyway). At 100,000 agents that burst
        // measured 72 MiB resident against 44 MiB without it.
        let mut poll = tokio::time::interval_at(
            tokio::time::Instant::now() + self.config.poll_interval,
            self.config.poll_interval,
        );
        for timer in [&mut flush, &mut sweep, &mut poll] {
            timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        let mut polling: Option<tokio::task::JoinHandle<(std::time::Instant, std::time::Instant)>> =
            None;
        let mut pace = poll::PollPace::new(self.config.poll_interval);
        let mut trim = tokio::time::interval(TRIM_INTERVAL);
        trim.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // At once and then hourly: a console stopped for a while may have events to delete. With
        // none, the round is one lookup.
        let mut prune = tokio::time::interval(PRUNE_INTERVAL);
        prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut pruning: Option<tokio::task::JoinHandle<()>> = None;
        loop {
            tokio::select! {
                _ = flush.tick() => {
                    if let Err(e) = self.flush().await {
                        tracing::error!(error = %e, "cannot write agent state; will retry");
                    }
                }
                _ = sweep.tick() => self.sweep().await,
                _ = trim.tick() => {
                    // Off the runtime's workers: it holds the allocator's lock for a few ms.
                    let started = std::time::Instant::now();
                    let _ = tokio::task::spawn_blocking(crate::malloc::trim).await;
                    tracing::debug!(elapsed_us = started.elapsed().as_micros() as u64, "heap trimmed");
                }
                _ = prune.tick() => {
                    // In its own task, so a large backlog does not hold up flushes and sweeps.
                    if pruning.as_ref().is_none_or(|h| h.is_finished()) {
                        let fleet = self.clone();
                        pruning = Some(tokio::spawn(async move {
                            let started = std::time::Instant::now();
                            match fleet.prune_events().await {
                                Ok(0) => {}
                                Ok(n) => tracing::info!(
                                    events = n,
                                    elapsed_ms = started.elapsed().as_millis() as u64,
                                    "agent events older than the retention deleted"
                                ),
                                Err(e) => tracing::error!(error = %e, "cannot delete old agent events; will retry"),
                            }
                        }));
                    }
                }
                _ = poll.tick(), if polling.is_none() => {
                    let fleet = self.clone();
                    polling = Some(tokio::spawn(async move {
                        let started = std::time::Instant::now();
                        fleet.poll_all().await;
                        (started, std::time::Instant::now())
                    }));
                }
                // A round is never doubled up: the next one starts `--poll-interval` after this
                // one's start, or after a rest in proportion to it when it was long (`PollPace`).
                // (The block is only polled while its guard holds, so the round is there.)
                ended = async { polling.as_mut().expect("guarded").await }, if polling.is_some() => {
                    polling = None;
                    if let Ok((started, ended)) = ended {
                        let next = pace.round_ended(started, ended);
                        if let Some(advice) = next.advice {
                            tracing::warn!("{advice}");
                        }
                        if next.held {
                            self.metrics
                                .poll_rounds_held
                                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        poll.reset_at(next.at.into());
                    }
                }
                _ = shutdown.changed() => break,
            }
        }
        if let Some(handle) = pruning {
            // Each chunk is its own transaction: stopping between two loses nothing.
            handle.abort();
            let _ = handle.await;
        }
        if let Some(handle) = polling {
            // Wait for the round to stop, so no poll result lands after the final flush.
            handle.abort();
            let _ = handle.await;
        }
        match self.flush().await {
            Ok(n) => tracing::info!(agents = n, "agent state written at shutdown"),
            Err(e) => {
                tracing::error!(error = %e, "cannot write agent state at shutdown");
                return;
            }
        }
        let started = std::time::Instant::now();
        match self.save_snapshot().await {
            Ok(bytes) => tracing::info!(
                bytes,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "fleet snapshot written for the next start"
            ),
            // Not fatal: the next start reads the table instead.
            Err(e) => tracing::warn!(error = %e, "cannot write the fleet snapshot"),
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
