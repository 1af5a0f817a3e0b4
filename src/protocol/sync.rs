//! Wire types of synchronization, between agents and the console.
//!
//! Agent → console (`/agent-api/v1/sync/...`): `lease` asks, per connected domain, whether this
//! agent runs the domain's cycles and whether a cycle is due; `cycles/{id}/batch` carries imported
//! objects; `cycles/{id}/finish` ends a cycle (with the next watermark, or an error).
//!
//! Console → agent (`/v1/sync/...`): `read` imports one object now (provision on demand, and DN
//! validation of scoping filters); `wake` cuts the wait before the next lease poll (Sync now).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Imported objects per batch: small enough to keep a batch's transaction short, large enough to
/// keep the number of round trips of a 150,000-object sync low.
pub const BATCH_SIZE: usize = 1000;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LeaseRequest {
    pub domains: Vec<LeaseDomain>,
    /// How often the agent asks; a lease lasts two of these.
    pub poll_interval_ms: u64,
}

/// A directory the agent is connected to.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LeaseDomain {
    pub domain: String,
    /// `active-directory` or `openldap`.
    pub dialect: String,
    pub base_dn: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LeaseResponse {
    pub assignments: Vec<Assignment>,
    /// How long until the agent should ask again, unless woken.
    pub poll_seconds: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Assignment {
    pub domain: String,
    pub role: Role,
    /// Why this agent is not the leader (no configuration, disabled, another agent holds it).
    pub reason: Option<String>,
    /// Set when this agent is the leader and a cycle is due.
    pub cycle: Option<CycleOrder>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// No enabled configuration for this domain.
    None,
    /// Another agent runs the cycles; this one takes over when that agent's lease lapses.
    Standby,
    Leader,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CycleKind {
    /// Every object in the directory travels; what did not is deleted.
    Full,
    /// Only what changed since the watermark travels, and the anchors of deleted objects.
    Delta,
    /// A delta (or full) cycle that the console evaluates but does not apply.
    Preview,
}

impl CycleKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CycleKind::Full => "full",
            CycleKind::Delta => "delta",
            CycleKind::Preview => "preview",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CycleOrder {
    pub cycle_id: String,
    pub configuration_id: String,
    pub kind: CycleKind,
    /// The watermark the previous cycle finished with; absent means "full".
    pub watermark: Option<String>,
    /// Source attributes to read (lowercase), besides the DN.
    pub attributes: Vec<String>,
    pub password_hash_sync: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectKind {
    User,
    Group,
}

impl ObjectKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::User => "user",
            ObjectKind::Group => "group",
        }
    }
}

/// One imported directory object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceObject {
    pub kind: ObjectKind,
    pub dn: String,
    /// objectGUID (as a GUID string) or entryUUID.
    pub anchor: String,
    /// Lowercase attribute names; binary values already in text form.
    pub attributes: BTreeMap<String, Vec<String>>,
    /// Password hash sync: the stored hash, "{SCHEME}value".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_hash: Option<String>,
    /// Why a hash was not sent (e.g. FIPS policy), for the provisioning log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_note: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Batch {
    /// Users before groups within a cycle, so group members resolve.
    pub objects: Vec<SourceObject>,
    /// Renews the leader's lease for two of these.
    pub poll_interval_ms: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BatchAccepted {
    pub imported: u64,
    pub created: u64,
    pub updated: u64,
    pub skipped: u64,
    pub failed: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Finish {
    /// True when every object in the directory was sent (a full enumeration): the console deletes
    /// what it did not receive.
    pub complete: bool,
    /// Delta cycles: anchors of objects deleted since the watermark.
    #[serde(default)]
    pub deleted: Vec<String>,
    /// The watermark to start the next delta cycle from.
    pub watermark: Option<String>,
    /// The cycle failed (cannot bind, server down…): what went wrong, for the administrator.
    pub error: Option<String>,
    /// Delta cycles: how many objects the directory holds now. When the console's count differs,
    /// its next cycle is a full one (a self-check that no deletion went unnoticed).
    #[serde(default)]
    pub present: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FinishAccepted {
    pub state: String,
    pub deleted: u64,
    pub staged: u64,
}

/// `POST /v1/sync/read` on an agent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReadRequest {
    pub domain: String,
    pub dn: String,
    pub attributes: Vec<String>,
    pub password_hash_sync: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReadResponse {
    /// None: no object at that DN.
    pub object: Option<SourceObject>,
    /// The object exists but is neither a user nor a group; its object classes.
    #[serde(default)]
    pub other_classes: Vec<String>,
}

/// `POST /v1/sync/wake` on an agent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WakeRequest {
    pub domain: String,
}
