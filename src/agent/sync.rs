//! The agent's side of synchronization: asks the console for each connected domain's lease, runs
//! the cycles it is told to (full, delta, preview), and reads single objects for the console
//! (Provision on demand, scoping DN checks).
//!
//! A cycle streams the directory with paged searches and hands batches of 1,000 objects to a
//! sender task, so reading the directory and the console applying the previous batch overlap.
//!
//! Deltas: Active Directory by `uSNChanged` above the `highestCommittedUSN` read when the previous
//! cycle began; OpenLDAP with the syncprov overlay by RFC 4533 content sync from the cookie taken
//! at the start of the previous cycle, which also names the deletions (from syncprov's session
//! log); OpenLDAP without it by `modifyTimestamp` at or after the newest one seen. Otherwise
//! deletions are found by listing anchors (a cheap search of one attribute) and comparing with the
//! anchors of the previous cycle, kept in `sync/<domain>.state.json`. A watermark names that state file's id, so
//! an agent taking over a domain (or one that lost its state) runs a full cycle instead of a delta
//! it cannot compute.

use super::config::write_atomic;
use super::console::Console;
use super::directory::{load_all, DirectoryConfig};
use crate::directory::conn::{bytes_of, Connection};
use crate::directory::content_sync::{cookie_unusable, uuid_text, SyncItem};
use crate::directory::{Dialect, DirectoryError};
use crate::protocol::sync::{
    Batch, CycleKind, CycleOrder, Finish, LeaseDomain, LeaseRequest, ObjectKind, ReadRequest,
    ReadResponse, SourceObject, BATCH_SIZE,
};
use anyhow::{anyhow, Context, Result};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Notify};
use tracing::{debug, info, warn};

const STATE_DIR: &str = "sync";

/// What the agent's API and the sync loop share.
pub(crate) struct SyncShared {
    pub data_dir: PathBuf,
    /// `--enforce-fips-policy`: MD5-based password hashes are not synced.
    pub enforce_fips: bool,
    /// Woken by the console (Sync now, Preview) to ask for the lease at once.
    pub wake: Notify,
    /// Anchors read on demand per domain since the last saved state: the console has them, so the
    /// next delta must notice if they are deleted.
    pub on_demand: std::sync::Mutex<std::collections::HashMap<String, HashSet<String>>>,
}

impl SyncShared {
    pub fn new(data_dir: PathBuf, enforce_fips: bool) -> Self {
        SyncShared {
            data_dir,
            enforce_fips,
            wake: Notify::new(),
            on_demand: Default::default(),
        }
    }

    fn take_on_demand(&self, domain: &str) -> HashSet<String> {
        self.on_demand
            .lock()
            .map(|mut m| m.remove(domain).unwrap_or_default())
            .unwrap_or_default()
    }

    fn peek_on_demand(&self, domain: &str) -> HashSet<String> {
        self.on_demand
            .lock()
            .map(|m| m.get(domain).cloned().unwrap_or_default())
            .unwrap_or_default()
    }
}

pub(crate) struct Syncer {
    pub console: Console,
    pub agent_credential: String,
    pub poll: Duration,
    pub shared: Arc<SyncShared>,
}

/// Where a directory's objects are found, per dialect.
struct Dialectics {
    users: &'static str,
    groups: &'static str,
    anchor: &'static str,
    changed: &'static str,
}

fn dialectics(d: Dialect) -> Dialectics {
    match d {
        Dialect::ActiveDirectory => Dialectics {
            users: "(&(objectCategory=person)(objectClass=user))",
            groups: "(objectClass=group)",
            anchor: "objectguid",
            changed: "usnchanged",
        },
        Dialect::OpenLdap => Dialectics {
            users: "(|(objectClass=inetOrgPerson)(objectClass=posixAccount))",
            groups: "(|(objectClass=groupOfNames)(objectClass=groupOfUniqueNames))",
            anchor: "entryuuid",
            changed: "modifytimestamp",
        },
    }
}

/// `sync/<domain>.state.json`: the anchors the last applied cycle saw.
#[derive(Serialize, Deserialize, Default)]
struct LocalState {
    state_id: String,
    anchors: Vec<String>,
    /// When the anchors were last read from the directory itself (a full cycle or a listing),
    /// in Unix milliseconds; content-sync deltas only carry them forward.
    #[serde(default)]
    listed_at_ms: i64,
}

/// How long content-sync deltas go without listing anchors. A session log records deletions, but
/// an entry moved out from under a base DN that is not the suffix may not show as one; an hourly
/// listing (a few seconds at 150,000 objects) bounds how long such an object can linger.
const RELIST_AFTER_MS: i64 = 3_600_000;

#[derive(Serialize, Deserialize)]
struct Watermark {
    state: String,
    mark: String,
    /// OpenLDAP with syncprov: the content-sync cookie (base64) the next delta starts from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cookie: Option<String>,
}

/// What the content-sync searches of a delta said beyond the changed entries.
#[derive(Default)]
struct ContentSync {
    /// Anchors the directory reported deleted (or no longer matching) since the cookie.
    deleted: HashSet<String>,
    /// A present phase happened: deletions must be found by listing anchors.
    present_phase: bool,
    /// The cookie of the first search: the next delta starts there (changes seen by the later
    /// search travel again, which is harmless; none can be skipped).
    cookie: Option<Vec<u8>>,
}

impl Syncer {
    pub async fn run(self) {
        let mut failures_logged = false;
        loop {
            let directories: Vec<DirectoryConfig> = load_all(&self.shared.data_dir)
                .into_iter()
                .filter_map(Result::ok)
                .collect();
            if !directories.is_empty() {
                match self.poll_once(&directories).await {
                    Ok(true) => continue,
                    Ok(false) => failures_logged = false,
                    Err(e) => {
                        if !failures_logged {
                            warn!("cannot ask the console for sync leases: {e:#}");
                            failures_logged = true;
                        } else {
                            debug!("cannot ask the console for sync leases: {e:#}");
                        }
                    }
                }
            }
            tokio::select! {
                () = tokio::time::sleep(self.poll) => {}
                () = self.shared.wake.notified() => debug!("woken by the console"),
            }
        }
    }

    /// One lease round; true when a cycle ran (ask again at once: another may be due).
    async fn poll_once(&self, directories: &[DirectoryConfig]) -> Result<bool> {
        let request = LeaseRequest {
            domains: directories
                .iter()
                .map(|d| LeaseDomain {
                    domain: d.domain.clone(),
                    dialect: d.dialect.as_str().to_owned(),
                    base_dn: d.base_dn.clone(),
                })
                .collect(),
            poll_interval_ms: u64::try_from(self.poll.as_millis()).unwrap_or(u64::MAX),
        };
        let answer = self
            .console
            .sync_lease(&self.agent_credential, &request)
            .await?;
        let mut ran = false;
        for assignment in answer.assignments {
            let Some(order) = assignment.cycle else {
                continue;
            };
            let Some(dir) = directories.iter().find(|d| d.domain == assignment.domain) else {
                continue;
            };
            self.run_cycle(dir, order).await;
            ran = true;
        }
        Ok(ran)
    }

    async fn run_cycle(&self, dir: &DirectoryConfig, order: CycleOrder) {
        let started = std::time::Instant::now();
        info!(domain = %dir.domain, kind = order.kind.as_str(), cycle = %order.cycle_id, "sync cycle starting");
        let (finish, new_state) = match self.cycle(dir, &order).await {
            Ok(done) => done,
            Err(e) => {
                warn!(domain = %dir.domain, "sync cycle failed: {e:#}");
                (
                    Finish {
                        complete: false,
                        deleted: Vec::new(),
                        watermark: None,
                        error: Some(format!("{e:#}")),
                        present: None,
                    },
                    None,
                )
            }
        };
        match self
            .console
            .sync_finish(&self.agent_credential, &order.cycle_id, &finish)
            .await
        {
            Ok(accepted) => {
                info!(domain = %dir.domain, state = %accepted.state, deleted = accepted.deleted, staged = accepted.staged, elapsed_ms = started.elapsed().as_millis() as u64, "sync cycle finished");
                if let Some(mut state) = new_state {
                    let extra = self.shared.take_on_demand(&dir.domain);
                    let known: HashSet<String> = state.anchors.iter().cloned().collect();
                    state
                        .anchors
                        .extend(extra.into_iter().filter(|a| !known.contains(a)));
                    if let Err(e) = save_state(&self.shared.data_dir, &dir.domain, &state) {
                        warn!(
                            "cannot save the sync state (the next cycle will be a full one): {e:#}"
                        );
                    }
                }
            }
            Err(e) => {
                warn!(domain = %dir.domain, "the console did not accept the end of the cycle: {e}")
            }
        }
    }

    /// Runs one cycle; returns its end and, unless a preview, the state to keep once accepted.
    async fn cycle(
        &self,
        dir: &DirectoryConfig,
        order: &CycleOrder,
    ) -> Result<(Finish, Option<LocalState>)> {
        let d = dialectics(dir.dialect);
        let mut conn = bind(&self.shared.data_dir, dir).await?;
        let previous = load_state(&self.shared.data_dir, &dir.domain);
        let watermark: Option<Watermark> = order
            .watermark
            .as_deref()
            .and_then(|w| serde_json::from_str(w).ok());
        // A delta needs this agent's own record of the previous cycle.
        let delta_from = match (&watermark, &previous) {
            (Some(w), Some(p)) if order.kind != CycleKind::Full && w.state == p.state_id => {
                Some(w.mark.clone())
            }
            _ => None,
        };
        let mark_at_start = match dir.dialect {
            Dialect::ActiveDirectory => Some(highest_usn(&mut conn).await?),
            Dialect::OpenLdap => None,
        };
        // OpenLDAP with syncprov: a delta starts from the saved cookie and learns deletions from
        // the server's session log; any other cycle takes a cookie before reading, so whatever
        // changes during the read travels again next time rather than never.
        let cookie_from: Option<Vec<u8>> = match (&delta_from, &watermark) {
            (Some(_), Some(w)) if dir.dialect == Dialect::OpenLdap => w
                .cookie
                .as_deref()
                .and_then(|c| base64::engine::general_purpose::STANDARD.decode(c).ok()),
            _ => None,
        };
        let cookie_at_start = match (dir.dialect, &cookie_from) {
            (Dialect::OpenLdap, None) => conn.sync_cookie(&dir.base_dn).await,
            _ => None,
        };
        let mut attrs: Vec<String> = order.attributes.clone();
        attrs.extend([
            d.anchor.to_owned(),
            d.changed.to_owned(),
            "objectclass".into(),
        ]);
        if order.password_hash_sync && dir.dialect == Dialect::OpenLdap {
            attrs.push("userpassword".into());
        }
        attrs.sort();
        attrs.dedup();

        let change_filter = |base: &str| match (&delta_from, dir.dialect) {
            (None, _) => base.to_owned(),
            (Some(mark), Dialect::ActiveDirectory) => {
                let next = mark.parse::<u64>().unwrap_or(0) + 1;
                format!("(&{base}(uSNChanged>={next}))")
            }
            (Some(mark), Dialect::OpenLdap) => format!(
                "(&{base}(modifyTimestamp>={}))",
                crate::directory::escape::filter_value(mark)
            ),
        };

        let (tx, mut rx) = mpsc::channel::<Vec<SourceObject>>(2);
        let sender = {
            let console = self.console.clone();
            let credential = self.agent_credential.clone();
            let cycle_id = order.cycle_id.clone();
            let poll_interval_ms = u64::try_from(self.poll.as_millis()).unwrap_or(u64::MAX);
            tokio::spawn(async move {
                while let Some(objects) = rx.recv().await {
                    let batch = Batch {
                        objects,
                        poll_interval_ms,
                    };
                    console
                        .sync_batch(&credential, &cycle_id, &batch)
                        .await
                        .map_err(|e| anyhow!("the console refused a batch: {e}"))?;
                }
                Ok::<(), anyhow::Error>(())
            })
        };
        let converter = Converter {
            dialect: dir.dialect,
            anchor: d.anchor,
            password_hash_sync: order.password_hash_sync,
            enforce_fips: self.shared.enforce_fips,
        };
        let mut seen: Vec<String> = Vec::new();
        let mut newest_change = delta_from.clone().unwrap_or_default();
        let mut content_sync = ContentSync::default();
        let read = async {
            for (kind, filter) in [(ObjectKind::User, d.users), (ObjectKind::Group, d.groups)] {
                let mut batch = Batcher {
                    tx: &tx,
                    objects: Vec::with_capacity(BATCH_SIZE),
                };
                let mut take = |entry: ldap3::SearchEntry| {
                    let object = converter.convert(kind, entry)?;
                    if dir.dialect == Dialect::OpenLdap {
                        if let Some(ts) = object.attributes.get(d.changed).and_then(|v| v.first()) {
                            if *ts > newest_change {
                                newest_change = ts.clone();
                            }
                        }
                    }
                    seen.push(object.anchor.clone());
                    Some(object)
                };
                if let Some(cookie) = &cookie_from {
                    let mut stream = conn
                        .sync_stream(
                            &dir.base_dn,
                            filter,
                            attrs.clone(),
                            Some(cookie.clone()),
                            "read the directory's changes",
                        )
                        .await?;
                    while let Some(item) = stream.next().await? {
                        match item {
                            SyncItem::Changed(entry) => {
                                if let Some(object) = take(entry) {
                                    if !batch.push(object).await {
                                        return Ok(());
                                    }
                                }
                            }
                            SyncItem::Deleted(uuids) => content_sync
                                .deleted
                                .extend(uuids.iter().filter_map(|u| uuid_text(u))),
                            SyncItem::Present(_) => {}
                        }
                    }
                    let end = stream.end();
                    content_sync.present_phase |= end.saw_present || !end.refresh_deletes;
                    if content_sync.cookie.is_none() {
                        content_sync.cookie = end.cookie;
                    }
                } else {
                    let mut stream = conn
                        .paged_stream(
                            &dir.base_dn,
                            &change_filter(filter),
                            attrs.clone(),
                            "read the directory",
                        )
                        .await?;
                    while let Some(entry) = stream.next().await? {
                        if let Some(object) = take(entry) {
                            if !batch.push(object).await {
                                return Ok(());
                            }
                        }
                    }
                }
                if !batch.flush().await {
                    return Ok(());
                }
            }
            Ok::<(), DirectoryError>(())
        };
        let read_result = read.await;
        drop(tx);
        let send_result = sender
            .await
            .map_err(|e| anyhow!("the batch sender stopped: {e}"))?;
        send_result?;
        read_result.map_err(|e| match e.rc() {
            // The saved cookie is no use any more (syncprov removed, or its log too short and no
            // present phase offered): forget the state so the next cycle reads everything.
            _ if cookie_from.is_some() && cookie_unusable(&e) => {
                forget_state(&self.shared.data_dir, &dir.domain);
                anyhow!("the directory no longer answers content-sync requests from the saved cookie ({e}); the next cycle reads everything")
            }
            Some(4) => anyhow!(
                "the directory stopped the search at its size limit (LDAP result 4): give the agents' service account group no size limit (OpenLDAP: olcLimits … size=unlimited, see the README)"
            ),
            _ => anyhow!(e),
        })?;

        // Deletions: a full cycle sent everything (the console deletes what did not come); a delta
        // compares the anchors present now with the previous cycle's.
        let now_ms = crate::db::now_ms();
        let (complete, anchors, deleted, listed_at_ms) = match (&delta_from, previous) {
            // The server's session log named the deletions: no listing needed.
            (Some(_), Some(previous))
                if cookie_from.is_some()
                    && !content_sync.present_phase
                    && now_ms.saturating_sub(previous.listed_at_ms) < RELIST_AFTER_MS =>
            {
                let listed_at_ms = previous.listed_at_ms;
                let mut known: HashSet<String> = previous.anchors.into_iter().collect();
                known.extend(self.shared.peek_on_demand(&dir.domain));
                let changed: HashSet<&str> = seen.iter().map(String::as_str).collect();
                let deleted: Vec<String> = content_sync
                    .deleted
                    .into_iter()
                    .filter(|a| known.contains(a) && !changed.contains(a.as_str()))
                    .collect();
                for anchor in &deleted {
                    known.remove(anchor);
                }
                known.extend(seen);
                (false, known.into_iter().collect(), deleted, listed_at_ms)
            }
            (Some(_), Some(previous)) => {
                let present = list_anchors(&mut conn, dir, &d).await?;
                let now: HashSet<&str> = present.iter().map(String::as_str).collect();
                let mut known: HashSet<String> = previous.anchors.into_iter().collect();
                known.extend(self.shared.peek_on_demand(&dir.domain));
                let deleted: Vec<String> = known
                    .into_iter()
                    .filter(|a| !now.contains(a.as_str()))
                    .collect();
                (false, present, deleted, now_ms)
            }
            _ => (true, seen, Vec::new(), now_ms),
        };
        let present = (!complete).then_some(anchors.len() as u64);
        conn.close().await;
        let mark = match mark_at_start {
            Some(usn) => usn.to_string(),
            None => newest_change,
        };
        let state = LocalState {
            state_id: uuid::Uuid::new_v4().to_string(),
            anchors,
            listed_at_ms,
        };
        let finish = Finish {
            complete,
            deleted,
            watermark: Some(
                serde_json::to_string(&Watermark {
                    state: state.state_id.clone(),
                    mark,
                    cookie: content_sync
                        .cookie
                        .or(cookie_at_start)
                        .map(|c| base64::engine::general_purpose::STANDARD.encode(c)),
                })
                .context("cannot encode the watermark")?,
            ),
            error: None,
            present,
        };
        let keep = (order.kind != CycleKind::Preview).then_some(state);
        Ok((finish, keep))
    }
}

/// Collects converted objects and hands them to the sender task 1,000 at a time.
struct Batcher<'a> {
    tx: &'a mpsc::Sender<Vec<SourceObject>>,
    objects: Vec<SourceObject>,
}

impl Batcher<'_> {
    /// False when the sender stopped (it failed; its error ends the cycle).
    async fn push(&mut self, object: SourceObject) -> bool {
        self.objects.push(object);
        if self.objects.len() < BATCH_SIZE {
            return true;
        }
        self.flush().await
    }

    async fn flush(&mut self) -> bool {
        if self.objects.is_empty() {
            return true;
        }
        let full = std::mem::replace(&mut self.objects, Vec::with_capacity(BATCH_SIZE));
        self.tx.send(full).await.is_ok()
    }
}

async fn bind(data_dir: &Path, dir: &DirectoryConfig) -> Result<Connection> {
    let target = dir.target(data_dir)?;
    let password = dir.password(data_dir)?;
    Connection::bind_new(&target, &dir.service_account.bind_dn, &password)
        .await
        .map_err(|e| anyhow!(e))
}

async fn highest_usn(conn: &mut Connection) -> Result<u64> {
    let entry = conn
        .read_with("", &["highestCommittedUSN"], "read the rootDSE", Vec::new())
        .await
        .map_err(|e| anyhow!(e))?
        .ok_or_else(|| anyhow!("the domain controller returned no rootDSE"))?;
    crate::directory::conn::text_of(&entry, "highestCommittedUSN")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow!("the rootDSE has no highestCommittedUSN"))
}

async fn list_anchors(
    conn: &mut Connection,
    dir: &DirectoryConfig,
    d: &Dialectics,
) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for filter in [d.users, d.groups] {
        let mut stream = conn
            .paged_stream(
                &dir.base_dn,
                filter,
                vec![d.anchor.to_owned()],
                "list the directory's objects",
            )
            .await
            .map_err(|e| anyhow!(e))?;
        while let Some(entry) = stream.next().await.map_err(|e| anyhow!(e))? {
            if let Some(anchor) = anchor_of(&entry, d.anchor) {
                out.push(anchor);
            }
        }
    }
    Ok(out)
}

/// objectGUID in its usual text form; entryUUID as it is.
fn anchor_of(entry: &ldap3::SearchEntry, anchor: &str) -> Option<String> {
    let raw = bytes_of(entry, anchor).into_iter().next()?;
    if anchor == "objectguid" {
        guid_text(&raw)
    } else {
        String::from_utf8(raw).ok()
    }
}

/// AD's objectGUID bytes (little-endian first three fields) as 8-4-4-4-12 hex.
pub(crate) fn guid_text(b: &[u8]) -> Option<String> {
    if b.len() != 16 {
        return None;
    }
    Some(format!(
        "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]
    ))
}

struct Converter {
    dialect: Dialect,
    anchor: &'static str,
    password_hash_sync: bool,
    enforce_fips: bool,
}

impl Converter {
    /// An LDAP entry as a source object: lowercase names, binary values as text. None for an entry
    /// without an anchor (not a real object, e.g. a malformed entry).
    fn convert(&self, kind: ObjectKind, entry: ldap3::SearchEntry) -> Option<SourceObject> {
        let anchor = anchor_of(&entry, self.anchor)?;
        // AD computers are users too (objectClass=user); they are not synced.
        if kind == ObjectKind::User && self.dialect == Dialect::ActiveDirectory {
            let classes = bytes_of(&entry, "objectclass");
            if classes.iter().any(|c| c.eq_ignore_ascii_case(b"computer")) {
                return None;
            }
        }
        let mut attributes: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, values) in &entry.attrs {
            let name = name.to_ascii_lowercase();
            if name == "userpassword" {
                continue;
            }
            attributes.insert(name, values.clone());
        }
        for (name, values) in &entry.bin_attrs {
            let name = name.to_ascii_lowercase();
            if name == "userpassword" {
                continue;
            }
            let text: Vec<String> = match name.as_str() {
                "objectguid" => values.iter().filter_map(|v| guid_text(v)).collect(),
                "objectsid" => values
                    .iter()
                    .map(|v| crate::directory::sd::sid_text(v))
                    .collect(),
                _ => values
                    .iter()
                    .map(|v| base64::engine::general_purpose::STANDARD.encode(v))
                    .collect(),
            };
            attributes.insert(name, text);
        }
        if self.anchor == "objectguid" {
            attributes.insert("objectguid".into(), vec![anchor.clone()]);
        }
        let (password_hash, password_note) = if self.password_hash_sync && kind == ObjectKind::User
        {
            self.password(&entry)
        } else {
            (None, None)
        };
        Some(SourceObject {
            kind,
            dn: entry.dn,
            anchor,
            attributes,
            password_hash,
            password_note,
        })
    }

    /// The stored hash with its scheme, or why none is sent.
    fn password(&self, entry: &ldap3::SearchEntry) -> (Option<String>, Option<String>) {
        let Some(raw) = bytes_of(entry, "userpassword").into_iter().next() else {
            return (None, None);
        };
        let Ok(value) = String::from_utf8(raw) else {
            return (
                None,
                Some("userPassword is not text; no hash was synced.".into()),
            );
        };
        let Some(scheme) = value
            .strip_prefix('{')
            .and_then(|rest| rest.split_once('}'))
            .map(|(scheme, _)| scheme.to_ascii_uppercase())
        else {
            return (
                None,
                Some("userPassword holds a clear-text password, not a hash; it is never synced. Set the password again so the directory stores a hash.".into()),
            );
        };
        if self.enforce_fips && (scheme == "MD5" || scheme == "SMD5") {
            return (
                None,
                Some(format!(
                    "The {{{scheme}}} password hash was not synced: MD5-based schemes are not FIPS-approved and this agent runs with --enforce-fips-policy true."
                )),
            );
        }
        (Some(value), None)
    }
}

fn state_file(domain: &str) -> String {
    format!("{domain}.state.json")
}

fn load_state(data_dir: &Path, domain: &str) -> Option<LocalState> {
    let bytes = std::fs::read(data_dir.join(STATE_DIR).join(state_file(domain))).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn save_state(data_dir: &Path, domain: &str, state: &LocalState) -> Result<()> {
    let dir = data_dir.join(STATE_DIR);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let bytes = serde_json::to_vec(state).context("cannot encode the sync state")?;
    write_atomic(&dir, &state_file(domain), &bytes, 0o600)
}

/// An object read on demand may be provisioned by the console: the next delta must see it go.
/// Kept in memory until the next cycle's state is saved, and appended to the saved state now so a
/// restart does not lose it.
fn remember_on_demand(shared: &SyncShared, domain: &str, anchor: &str) {
    if let Ok(mut m) = shared.on_demand.lock() {
        m.entry(domain.to_owned())
            .or_default()
            .insert(anchor.to_owned());
    }
    if let Some(mut state) = load_state(&shared.data_dir, domain) {
        if !state.anchors.iter().any(|a| a == anchor) {
            state.anchors.push(anchor.to_owned());
            if let Err(e) = save_state(&shared.data_dir, domain, &state) {
                warn!("cannot record an on-demand read in the sync state: {e:#}");
            }
        }
    }
}

/// Forgets a domain's sync state (`remove-directory`).
pub(crate) fn forget_state(data_dir: &Path, domain: &str) {
    let _ = std::fs::remove_file(data_dir.join(STATE_DIR).join(state_file(domain)));
}

/// `POST /v1/sync/read`: one object, now.
pub(crate) async fn read_one(
    shared: &SyncShared,
    req: &ReadRequest,
) -> Result<ReadResponse, ReadError> {
    let dir = load_all(&shared.data_dir)
        .into_iter()
        .filter_map(Result::ok)
        .find(|d| d.domain.eq_ignore_ascii_case(&req.domain))
        .ok_or_else(|| ReadError::NotServed(req.domain.clone()))?;
    let d = dialectics(dir.dialect);
    let mut conn = bind(&shared.data_dir, &dir)
        .await
        .map_err(|e| ReadError::Directory(format!("{e:#}")))?;
    let mut attrs: Vec<String> = req.attributes.clone();
    attrs.extend([
        d.anchor.to_owned(),
        d.changed.to_owned(),
        "objectclass".into(),
    ]);
    if req.password_hash_sync && dir.dialect == Dialect::OpenLdap {
        attrs.push("userpassword".into());
    }
    let attr_refs: Vec<&str> = attrs.iter().map(String::as_str).collect();
    let entry = conn
        .read_with(&req.dn, &attr_refs, "read an object", Vec::new())
        .await;
    conn.close().await;
    let entry = match entry {
        Ok(Some(e)) => e,
        Ok(None) => {
            return Ok(ReadResponse {
                object: None,
                other_classes: Vec::new(),
            })
        }
        Err(e) if e.rc() == Some(32) => {
            return Ok(ReadResponse {
                object: None,
                other_classes: Vec::new(),
            })
        }
        Err(e) if e.rc() == Some(34) => {
            return Err(ReadError::BadDn(format!(
                "{} is not a valid distinguished name: {e}",
                req.dn
            )))
        }
        Err(e) => return Err(ReadError::Directory(e.to_string())),
    };
    let classes: Vec<String> = bytes_of(&entry, "objectclass")
        .into_iter()
        .filter_map(|c| String::from_utf8(c).ok())
        .collect();
    let has = |names: &[&str]| {
        classes
            .iter()
            .any(|c| names.iter().any(|n| c.eq_ignore_ascii_case(n)))
    };
    let kind = if has(&["computer"]) {
        None
    } else if has(&["group", "groupOfNames", "groupOfUniqueNames"]) {
        Some(ObjectKind::Group)
    } else if has(&["user", "inetOrgPerson", "posixAccount"]) {
        Some(ObjectKind::User)
    } else {
        None
    };
    let Some(kind) = kind else {
        return Ok(ReadResponse {
            object: None,
            other_classes: classes,
        });
    };
    let converter = Converter {
        dialect: dir.dialect,
        anchor: d.anchor,
        password_hash_sync: req.password_hash_sync,
        enforce_fips: shared.enforce_fips,
    };
    let object = converter.convert(kind, entry);
    if let Some(o) = &object {
        remember_on_demand(shared, &dir.domain, &o.anchor);
    }
    Ok(ReadResponse {
        object,
        other_classes: Vec::new(),
    })
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    #[error("this agent does not serve {0}")]
    NotServed(String),
    #[error("{0}")]
    BadDn(String),
    #[error("{0}")]
    Directory(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guid_text_swaps_the_first_three_fields() {
        let bytes = [
            0x33, 0x22, 0x11, 0x00, 0x55, 0x44, 0x77, 0x66, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd,
            0xee, 0xff,
        ];
        assert_eq!(
            guid_text(&bytes).unwrap(),
            "00112233-4455-6677-8899-aabbccddeeff"
        );
        assert_eq!(guid_text(&bytes[..15]), None);
    }

    fn entry(attrs: &[(&str, &[&str])]) -> ldap3::SearchEntry {
        ldap3::SearchEntry {
            dn: "uid=ann,ou=people,dc=corp".into(),
            attrs: attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
                .collect(),
            bin_attrs: Default::default(),
        }
    }

    fn converter(fips: bool) -> Converter {
        Converter {
            dialect: Dialect::OpenLdap,
            anchor: "entryuuid",
            password_hash_sync: true,
            enforce_fips: fips,
        }
    }

    #[test]
    fn password_hashes_follow_the_fips_policy() {
        let md5 = entry(&[("entryUUID", &["u1"]), ("userPassword", &["{MD5}abc=="])]);
        let (hash, note) = converter(true).password(&md5);
        assert_eq!(hash, None);
        assert!(note.unwrap().contains("FIPS"));
        let (hash, note) = converter(false).password(&md5);
        assert_eq!(hash.as_deref(), Some("{MD5}abc=="));
        assert_eq!(note, None);
        let ssha = entry(&[("userPassword", &["{SSHA}xyz"])]);
        assert_eq!(
            converter(true).password(&ssha).0.as_deref(),
            Some("{SSHA}xyz")
        );
        let clear = entry(&[("userPassword", &["secret"])]);
        let (hash, note) = converter(false).password(&clear);
        assert_eq!(hash, None);
        assert!(note.unwrap().contains("clear-text"));
    }

    #[test]
    fn converted_objects_never_carry_the_password_attribute() {
        let e = entry(&[
            ("entryUUID", &["u1"]),
            ("CN", &["Ann"]),
            ("userPassword", &["{SSHA}xyz"]),
        ]);
        let o = converter(false).convert(ObjectKind::User, e).unwrap();
        assert_eq!(o.anchor, "u1");
        assert_eq!(o.attributes.get("cn").unwrap(), &vec!["Ann".to_string()]);
        assert!(!o.attributes.contains_key("userpassword"));
        assert_eq!(o.password_hash.as_deref(), Some("{SSHA}xyz"));
    }
}
