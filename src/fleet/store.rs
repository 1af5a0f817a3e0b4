//! The fleet's in-memory store: one compact record per agent in a slab, found by id or by
//! credential through tables of slab indexes.
//!
//! At 100,000 agents the store is most of the console's memory, so a record holds what a page, a
//! heartbeat or a poll needs in as few bytes and allocations as it can: ids and hashes as fixed
//! arrays, the values many agents share (version, address, health checks) once in an
//! [`Interned`] set, timestamps inline. The lookup tables hold only 4-byte slab indexes; the keys
//! are read from the records themselves. [`Agent`] is the owned, full view handed out of the fleet.

use super::call::Pin;
use super::health::{self, Health, Observed, Status};
use super::Agent;
use crate::protocol::{Environment, Extension, HealthCheck};
use hashbrown::HashTable;
use std::borrow::{Borrow, Cow};
use std::hash::Hash;
use std::ops::Deref;
use std::sync::Arc;
use uuid::Uuid;

/// An agent's place in the slab; stable for the agent's life (freed places are reused).
pub(super) type Idx = u32;

/// A value held once and shared, behind an 8-byte pointer (an `Arc<str>` is 16): agents hold
/// several of these each. Hashes and compares as the text or slice it holds.
#[derive(Debug)]
pub(crate) struct Shared<T>(Arc<T>);

impl<T> Shared<T> {
    /// Where the shared value lives: the same for every holder of one interned value, as long as
    /// any holds it.
    pub(crate) fn addr(&self) -> usize {
        Arc::as_ptr(&self.0) as usize
    }
}

impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        Shared(self.0.clone())
    }
}

impl<T: Deref> Deref for Shared<T> {
    type Target = T::Target;
    fn deref(&self) -> &T::Target {
        &self.0
    }
}

impl Borrow<str> for Shared<String> {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl<T> Borrow<[T]> for Shared<Vec<T>> {
    fn borrow(&self) -> &[T] {
        &self.0
    }
}

impl<T: Deref<Target: Hash>> Hash for Shared<T> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (**self).hash(state)
    }
}

impl<T: Deref<Target: PartialEq>> PartialEq for Shared<T> {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl<T: Deref<Target: Eq>> Eq for Shared<T> {}

/// Values many agents share, each held once. Values no agent holds any more are dropped by
/// [`Interned::prune`] (an agent whose reports vary would otherwise grow the set).
pub(crate) struct Interned<T> {
    /// foldhash (hashbrown's default): several lookups per agent at load, and randomly seeded.
    values: hashbrown::HashSet<Shared<T>>,
}

impl<T> Default for Interned<T> {
    fn default() -> Self {
        Interned {
            values: hashbrown::HashSet::new(),
        }
    }
}

impl<T> Interned<T>
where
    T: Deref<Target: Hash + Eq> + for<'a> From<&'a T::Target>,
    Shared<T>: Borrow<T::Target>,
{
    pub(crate) fn intern(&mut self, value: &T::Target) -> Shared<T> {
        if let Some(shared) = self.values.get(value) {
            return shared.clone();
        }
        let shared = Shared(Arc::new(T::from(value)));
        self.values.insert(shared.clone());
        shared
    }

    /// Forgets values only this set holds.
    pub(crate) fn prune(&mut self) {
        self.values.retain(|value| Arc::strong_count(&value.0) > 1);
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.values.len()
    }
}

/// The shared values of a fleet.
#[derive(Default)]
pub(super) struct Pools {
    pub checks: Interned<Vec<HealthCheck>>,
    pub texts: Interned<String>,
    pub domains: Interned<Vec<Box<str>>>,
}

impl Pools {
    pub fn prune(&mut self) {
        self.checks.prune();
        self.texts.prune();
        self.domains.prune();
    }
}

/// One agent as stored.
pub(super) struct Slot {
    pub id: Uuid,
    pub credential_hash: [u8; 32],
    pub tls_pin: Option<Pin>,
    pub machine_name: Box<str>,
    /// Interned: agents configured alike listen alike (`0.0.0.0:PORT`).
    pub listen_addr: Option<Shared<String>>,
    /// Interned: a network problem fails many polls with the same words.
    pub last_poll_error: Option<Shared<String>>,
    /// Interned: the agents of a domain report the same list.
    pub domains: Shared<Vec<Box<str>>>,
    /// Interned: a fleet runs a handful of versions.
    pub version: Shared<String>,
    /// Interned: agents behind one NAT share it.
    pub external_ip: Shared<String>,
    /// Interned: most agents are healthy for the same reason.
    pub health_reason: Shared<String>,
    /// Interned: a fleet reports a handful of distinct sets.
    pub checks: Shared<Vec<HealthCheck>>,
    pub registered_at: i64,
    /// The key of the agent's `agent_liveness` row, which its timestamps are written by. 32 bits
    /// fit in the record's padding (enrollment refuses keys beyond them: see `db::agents::upsert`).
    pub liveness_id: u32,
    pub last_contact_at: i64,
    pub status_since: i64,
    pub health_since: i64,
    pub last_heartbeat_at: OptI64,
    pub last_poll_at: OptI64,
    pub uptime_seconds: OptI64,
    pub enrollment_token_id: OptI64,
    pub console_token_generation: u32,
    pub heartbeat_interval_seconds: u32,
    /// This agent's place in the name-ordered index (valid while the index is fresh).
    pub name_pos: Idx,
    pub extension: Extension,
    pub environment: Environment,
    pub status: Status,
    pub health: Health,
    /// Queued to be written as a whole row.
    pub dirty: bool,
    /// Queued to be written as timestamps only.
    pub beating: bool,
}

impl Slot {
    pub fn from_agent(agent: &Agent, pools: &mut Pools) -> Option<Slot> {
        Some(Slot {
            id: Uuid::parse_str(&agent.id).ok()?,
            credential_hash: agent.credential_hash,
            tls_pin: agent.tls_cert_sha256,
            machine_name: agent.machine_name.as_str().into(),
            listen_addr: agent.listen_addr.as_deref().map(|a| pools.texts.intern(a)),
            last_poll_error: agent
                .last_poll_error
                .as_deref()
                .map(|e| pools.texts.intern(e)),
            domains: pools.domains.intern(
                &agent
                    .domains
                    .iter()
                    .map(|d| d.as_str().into())
                    .collect::<Vec<Box<str>>>(),
            ),
            version: pools.texts.intern(&agent.version),
            external_ip: pools.texts.intern(&agent.external_ip),
            health_reason: pools.texts.intern(&agent.health_reason),
            checks: pools.checks.intern(&agent.checks),
            registered_at: agent.registered_at,
            liveness_id: agent.liveness_id,
            last_contact_at: agent.last_contact_at,
            status_since: agent.status_since,
            health_since: agent.health_since,
            last_heartbeat_at: agent.last_heartbeat_at.into(),
            last_poll_at: agent.last_poll_at.into(),
            uptime_seconds: agent.uptime_seconds.into(),
            enrollment_token_id: agent.enrollment_token_id.into(),
            console_token_generation: u32::try_from(agent.console_token_generation)
                .unwrap_or(u32::MAX),
            heartbeat_interval_seconds: u32::try_from(agent.heartbeat_interval_seconds)
                .unwrap_or(30),
            name_pos: Idx::MAX,
            extension: agent.extension,
            environment: agent.environment,
            status: agent.status,
            health: agent.health,
            dirty: false,
            beating: false,
        })
    }

    pub fn to_agent(&self) -> Agent {
        Agent {
            id: self.id.to_string(),
            credential_hash: self.credential_hash,
            console_token_generation: i64::from(self.console_token_generation),
            machine_name: self.machine_name.to_string(),
            external_ip: self.external_ip.to_string(),
            listen_addr: self.listen_addr.as_deref().map(str::to_string),
            version: self.version.to_string(),
            extension: self.extension,
            environment: self.environment,
            registered_at: self.registered_at,
            enrollment_token_id: self.enrollment_token_id.get(),
            last_heartbeat_at: self.last_heartbeat_at.get(),
            last_contact_at: self.last_contact_at,
            heartbeat_interval_seconds: i64::from(self.heartbeat_interval_seconds),
            uptime_seconds: self.uptime_seconds.get(),
            status: self.status,
            status_since: self.status_since,
            health: self.health,
            health_reason: reason(&self.health_reason),
            health_since: self.health_since,
            checks: self.checks.to_vec(),
            last_poll_at: self.last_poll_at.get(),
            last_poll_error: self.last_poll_error.as_deref().map(str::to_string),
            domains: self.domains.iter().map(|d| d.to_string()).collect(),
            tls_cert_sha256: self.tls_pin,
            liveness_id: self.liveness_id,
        }
    }

    pub fn observed(&self) -> Observed<'_> {
        Observed {
            registered_at: self.registered_at,
            last_heartbeat_at: self.last_heartbeat_at.get(),
            last_contact_at: self.last_contact_at,
            heartbeat_interval_seconds: i64::from(self.heartbeat_interval_seconds),
            last_poll_error: self.last_poll_error.as_deref(),
            checks: &self.checks,
        }
    }

    pub fn api_addr(&self) -> Option<std::net::SocketAddr> {
        api_addr(self.listen_addr.as_deref(), &self.external_ip)
    }

    pub fn serves(&self, domain: &str) -> bool {
        self.domains.iter().any(|d| d.eq_ignore_ascii_case(domain))
    }

    /// The ASCII case-insensitive order of the Agents page, ties broken by id.
    pub fn name_cmp(&self, other: &Slot) -> std::cmp::Ordering {
        let (a, b) = (self.machine_name.as_bytes(), other.machine_name.as_bytes());
        let folded = a
            .iter()
            .map(u8::to_ascii_lowercase)
            .cmp(b.iter().map(u8::to_ascii_lowercase));
        folded.then_with(|| self.id.cmp(&other.id))
    }

    /// The first 16 bytes of the case-folded name as a number, so most comparisons of a sort are
    /// one integer comparison (fleets name machines alike: `dc01-site-0001`, …).
    pub fn name_prefix(&self) -> u128 {
        let mut key = [0u8; 16];
        for (k, b) in key.iter_mut().zip(self.machine_name.bytes()) {
            *k = b.to_ascii_lowercase();
        }
        u128::from_be_bytes(key)
    }
}

/// Where the console reaches an agent that listens on `listen` (an unspecified IP means the
/// address the agent connected from).
pub(crate) fn api_addr(listen: Option<&str>, external_ip: &str) -> Option<std::net::SocketAddr> {
    let addr: std::net::SocketAddr = listen?.parse().ok()?;
    let ip = if addr.ip().is_unspecified() {
        external_ip.parse().ok()?
    } else {
        addr.ip()
    };
    Some(std::net::SocketAddr::new(ip, addr.port()))
}

/// An optional number in 8 bytes instead of 16: `i64::MIN`, which no timestamp, count or row id
/// reaches, stands for none. Four per agent add up at fleet scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct OptI64(i64);

impl OptI64 {
    pub const NONE: OptI64 = OptI64(i64::MIN);

    pub fn get(self) -> Option<i64> {
        (self != Self::NONE).then_some(self.0)
    }

    pub fn is_none(self) -> bool {
        self == Self::NONE
    }
}

impl From<Option<i64>> for OptI64 {
    fn from(value: Option<i64>) -> Self {
        // A real i64::MIN would read back as none; nothing stores one.
        OptI64(value.unwrap_or(i64::MIN))
    }
}

impl From<i64> for OptI64 {
    fn from(value: i64) -> Self {
        Some(value).into()
    }
}

/// The health reason as an agent view carries it: static text for the usual ones.
pub(super) fn reason(text: &str) -> Cow<'static, str> {
    match text {
        health::ENROLLED => Cow::Borrowed(health::ENROLLED),
        health::HEALTHY => Cow::Borrowed(health::HEALTHY),
        _ => Cow::Owned(text.to_string()),
    }
}

/// Ids and credential hashes are uniformly random (a v4 UUID, a SHA-256), so their first bytes are
/// already a good hash; lookups with other keys only probe.
fn id_hash(id: &Uuid) -> u64 {
    let b = id.as_bytes();
    u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[8], b[9]])
}

fn credential_hash(hash: &[u8; 32]) -> u64 {
    u64::from_le_bytes([
        hash[0], hash[1], hash[2], hash[3], hash[4], hash[5], hash[6], hash[7],
    ])
}

/// The slab and its lookup tables.
#[derive(Default)]
pub(super) struct Slots {
    slots: Vec<Option<Slot>>,
    free: Vec<Idx>,
    by_id: HashTable<Idx>,
    by_credential: HashTable<Idx>,
    len: usize,
}

impl Slots {
    pub fn with_capacity(n: usize) -> Self {
        Slots {
            slots: Vec::with_capacity(n),
            free: Vec::new(),
            by_id: HashTable::with_capacity(n),
            by_credential: HashTable::with_capacity(n),
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn find(&self, id: &Uuid) -> Option<Idx> {
        let slots = &self.slots;
        self.by_id
            .find(id_hash(id), |&i| {
                slots[i as usize].as_ref().is_some_and(|s| s.id == *id)
            })
            .copied()
    }

    /// The agent with this id, given as text (None for text that is not an id).
    pub fn find_str(&self, id: &str) -> Option<Idx> {
        self.find(&Uuid::parse_str(id).ok()?)
    }

    pub fn find_credential(&self, hash: &[u8; 32]) -> Option<Idx> {
        let slots = &self.slots;
        self.by_credential
            .find(credential_hash(hash), |&i| {
                slots[i as usize]
                    .as_ref()
                    .is_some_and(|s| crate::auth::tokens::equal(&s.credential_hash, hash))
            })
            .copied()
    }

    pub fn get(&self, idx: Idx) -> Option<&Slot> {
        self.slots.get(idx as usize)?.as_ref()
    }

    pub fn get_mut(&mut self, idx: Idx) -> Option<&mut Slot> {
        self.slots.get_mut(idx as usize)?.as_mut()
    }

    pub fn iter(&self) -> impl Iterator<Item = (Idx, &Slot)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| Some((i as Idx, s.as_ref()?)))
    }

    /// Adds an agent read from the database at start-up: ids are unique there (the primary key),
    /// so no lookup first.
    pub fn push_loaded(&mut self, slot: Slot) {
        let idx = Idx::try_from(self.slots.len()).expect("fewer than 2^32 agents");
        self.slots.push(Some(slot));
        self.index_new(idx);
    }

    /// Enters the agent just put at `idx` into both lookup tables.
    fn index_new(&mut self, idx: Idx) {
        let slots = &self.slots;
        let live = |i: &Idx| slots[*i as usize].as_ref().expect("live");
        let slot = live(&idx);
        let (id_key, cred_key) = (id_hash(&slot.id), credential_hash(&slot.credential_hash));
        self.by_id
            .insert_unique(id_key, idx, |i| id_hash(&live(i).id));
        self.by_credential
            .insert_unique(cred_key, idx, |i| credential_hash(&live(i).credential_hash));
        self.len += 1;
    }

    /// Adds an agent, or replaces the one with the same id (a re-install). Returns its place.
    pub fn upsert(&mut self, slot: Slot) -> Idx {
        if let Some(idx) = self.find(&slot.id) {
            self.remove_credential(idx);
            let hash = credential_hash(&slot.credential_hash);
            self.slots[idx as usize] = Some(slot);
            let slots = &self.slots;
            self.by_credential.insert_unique(hash, idx, |&i| {
                credential_hash(&slots[i as usize].as_ref().expect("live").credential_hash)
            });
            return idx;
        }
        let idx = match self.free.pop() {
            Some(idx) => {
                self.slots[idx as usize] = Some(slot);
                idx
            }
            None => {
                self.slots.push(Some(slot));
                Idx::try_from(self.slots.len() - 1).expect("fewer than 2^32 agents")
            }
        };
        self.index_new(idx);
        idx
    }

    fn remove_credential(&mut self, idx: Idx) {
        let Some(slot) = self.slots[idx as usize].as_ref() else {
            return;
        };
        if let Ok(entry) = self
            .by_credential
            .find_entry(credential_hash(&slot.credential_hash), |&i| i == idx)
        {
            entry.remove();
        }
    }

    pub fn remove(&mut self, idx: Idx) -> Option<Slot> {
        let id = self.get(idx)?.id;
        self.remove_credential(idx);
        if let Ok(entry) = self.by_id.find_entry(id_hash(&id), |&i| i == idx) {
            entry.remove();
        }
        let slot = self.slots[idx as usize].take();
        self.free.push(idx);
        self.len -= 1;
        slot
    }
}

#[cfg(test)]
mod tests {
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
    fn equal_values_are_held_once_and_unused_ones_dropped() {
        let mut sets = Interned::<Vec<HealthCheck>>::default();
        let a = sets.intern(&[check("ok")][..]);
        let b = sets.intern(&[check("ok")][..]);
        assert!(Arc::ptr_eq(&a.0, &b.0));
        let other = sets.intern(&[check("slow")][..]);
        assert!(!Arc::ptr_eq(&a.0, &other.0));
        assert_eq!(sets.len(), 2);
        drop(other);
        sets.prune();
        assert_eq!(sets.len(), 1, "the set nobody holds is gone");
        assert!(Arc::ptr_eq(&sets.intern(&[check("ok")][..]).0, &a.0));
    }

    fn slot(name: &str, credential: u8) -> Slot {
        let mut shared = Pools::default();
        let agent = Agent::new_enrolled(
            &format!("credential-{credential}"),
            name.into(),
            "127.0.0.1".into(),
            "1.0",
            Extension::default(),
            Environment::default(),
            1,
            None,
            0,
        );
        Slot::from_agent(&agent, &mut shared).unwrap()
    }

    #[test]
    fn agents_are_found_by_id_and_credential_and_places_are_reused() {
        let mut slots = Slots::default();
        let a = slot("a", 1);
        let (a_id, a_cred) = (a.id, a.credential_hash);
        let ia = slots.upsert(a);
        let b = slot("b", 2);
        let (b_id, b_cred) = (b.id, b.credential_hash);
        let ib = slots.upsert(b);
        assert_eq!(slots.len(), 2);
        assert_eq!(slots.find(&a_id), Some(ia));
        assert_eq!(slots.find_str(&b_id.to_string()), Some(ib));
        assert_eq!(slots.find_str("not an id"), None);
        assert_eq!(slots.find_credential(&a_cred), Some(ia));
        assert_eq!(slots.find_credential(&[0; 32]), None);

        // A re-install keeps the place and swaps the credential.
        let mut again = slot("a", 3);
        again.id = a_id;
        let new_cred = again.credential_hash;
        assert_eq!(slots.upsert(again), ia);
        assert_eq!(slots.find_credential(&a_cred), None);
        assert_eq!(slots.find_credential(&new_cred), Some(ia));
        assert_eq!(slots.len(), 2);

        assert!(slots.remove(ib).is_some());
        assert_eq!(slots.find(&b_id), None);
        assert_eq!(slots.find_credential(&b_cred), None);
        assert_eq!(slots.len(), 1);
        let c = slot("c", 4);
        assert_eq!(slots.upsert(c), ib, "the freed place is reused");
        assert_eq!(slots.iter().count(), 2);
    }

    #[test]
    fn name_order_folds_ascii_case_and_breaks_ties_by_id() {
        let (a, b) = (slot("Alpha", 1), slot("alpha", 2));
        assert_eq!(a.name_cmp(&b), a.id.cmp(&b.id));
        assert!(slot("alpha", 3).name_cmp(&slot("BETA", 4)).is_lt());
        assert!(
            slot("alphabet-soup-01-a", 5).name_prefix()
                == slot("ALPHABET-SOUP-01-b", 6).name_prefix()
        );
        assert!(slot("dc-0001", 7).name_prefix() < slot("DC-0002", 8).name_prefix());
    }
}

#[cfg(test)]
mod size {
    /// The record is most of the console's memory at fleet scale (100,000 agents × this); a field
    /// added carelessly shows here first.
    #[test]
    fn an_agent_record_stays_within_240_bytes() {
        assert!(std::mem::size_of::<Option<super::Slot>>() <= 240);
    }
}
