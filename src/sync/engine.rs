//! Applying what an agent imported to the cloud directory: per object Import, Determine if in
//! scope, Match (by source anchor) and Perform action, each recorded as a step of the provisioning
//! log. A batch is applied in the caller's transaction, so it lands whole or not at all; a preview
//! runs the same decisions and writes nothing but its plan.

use super::mapping::{self, Mapping, ObjectMappings, Target};
use super::scope::{Candidate, Scope};
use crate::db::sync::{self as store, NewLog, ObjectRow};
use crate::protocol::sync::{ObjectKind, SourceObject};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::SqliteConnection;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

/// Preview plans keep this many items; counts are always complete.
pub const PLAN_ITEMS: usize = 500;

/// What a batch (or a cycle's end) is applied for.
pub struct Context {
    pub configuration_id: String,
    pub domain: String,
    pub mappings: ObjectMappings,
    pub scope: Scope,
    pub password_hash_sync: bool,
    pub cycle_id: Option<String>,
    /// "cycle", "on demand by alice", …
    pub initiated_by: String,
    pub dry_run: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Step {
    pub name: String,
    /// "success", "skipped", "failure".
    pub status: String,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Change {
    pub name: String,
    pub old: Option<String>,
    pub new: Option<String>,
}

/// The decision about one object: what was, or in a preview would be, done.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Outcome {
    pub kind: ObjectKind,
    pub dn: String,
    pub anchor: String,
    /// create, update, delete, stagedDelete, skip, or "none" (nothing changed).
    pub action: String,
    /// success, warning, failure, skipped.
    pub status: String,
    pub target_id: Option<String>,
    pub target_name: Option<String>,
    pub changes: Vec<Change>,
    pub steps: Vec<Step>,
    pub error: Option<String>,
    pub recommendation: Option<String>,
}

impl Outcome {
    fn logged(&self) -> bool {
        self.action != "none"
    }
}

/// Counts of one batch or cycle.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Counts {
    pub imported: u64,
    pub created: u64,
    pub updated: u64,
    pub deleted: u64,
    pub staged: u64,
    pub skipped: u64,
    pub failed: u64,
}

impl Counts {
    fn count(&mut self, o: &Outcome) {
        match (o.action.as_str(), o.status.as_str()) {
            (_, "failure") => self.failed += 1,
            ("create", _) => self.created += 1,
            ("update", _) => self.updated += 1,
            ("delete", _) => self.deleted += 1,
            ("stagedDelete", _) => self.staged += 1,
            ("skip", _) => self.skipped += 1,
            _ => {}
        }
    }
}

/// The result of applying a batch.
#[derive(Debug, Default)]
pub struct Applied {
    pub counts: Counts,
    pub outcomes: Vec<Outcome>,
}

/// A hash of everything imported about an object: an unchanged object costs no write and no log.
fn source_hash(o: &SourceObject) -> String {
    let mut h = Sha256::new();
    h.update(o.kind.as_str());
    h.update([0]);
    h.update(o.dn.as_bytes());
    h.update([0]);
    for (name, values) in &o.attributes {
        h.update(name.as_bytes());
        for v in values {
            h.update([1]);
            h.update(v.as_bytes());
        }
        h.update([0]);
    }
    if let Some(p) = &o.password_hash {
        h.update([2]);
        h.update(p.as_bytes());
    }
    format!("{:x}", h.finalize())
}

fn critical(o: &SourceObject) -> bool {
    o.attributes
        .get("iscriticalsystemobject")
        .and_then(|v| v.first())
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

fn mappings_for(ctx: &Context, kind: ObjectKind) -> &[Mapping] {
    match kind {
        ObjectKind::User => &ctx.mappings.users,
        ObjectKind::Group => &ctx.mappings.groups,
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Target attributes for `source`: on create all mappings; on update the Always mappings replace
/// their targets and "Only during creation" targets keep what they had.
fn compute_target(
    ctx: &Context,
    kind: ObjectKind,
    source: &SourceObject,
    existing: Option<&Target>,
) -> Result<Target, mapping::MappingError> {
    let mappings = mappings_for(ctx, kind);
    let creating = existing.is_none();
    let mut attrs = source.attributes.clone();
    attrs.insert("distinguishedname".into(), vec![source.dn.clone()]);
    let mut target = mapping::apply(mappings, &attrs, creating)?;
    if let Some(existing) = existing {
        for m in mappings {
            if m.apply == mapping::Apply::OnCreate {
                if let Some(v) = existing.get(&m.target) {
                    target.insert(m.target.clone(), v.clone());
                }
            }
        }
    }
    // Memberships live in group_members, resolved to objects; the DN list is not an attribute.
    target.remove("members");
    target.insert(
        "onPremisesDistinguishedName".into(),
        Value::String(source.dn.clone()),
    );
    target.insert(
        "onPremisesDomainName".into(),
        Value::String(ctx.domain.clone()),
    );
    Ok(target)
}

fn diff(old: Option<&Target>, new: &Target) -> Vec<Change> {
    let empty = Target::new();
    let old = old.unwrap_or(&empty);
    let mut names: Vec<&String> = old.keys().chain(new.keys()).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .filter_map(|name| {
            let (a, b) = (old.get(name), new.get(name));
            (a != b).then(|| Change {
                name: name.clone(),
                old: a.map(text),
                new: b.map(text),
            })
        })
        .collect()
}

fn parse_target(json: Option<&str>) -> Option<Target> {
    json.and_then(|j| serde_json::from_str(j).ok())
}

fn step(name: &str, status: &str, detail: impl Into<String>) -> Step {
    Step {
        name: name.to_owned(),
        status: status.to_owned(),
        detail: detail.into(),
    }
}

fn kind_of(row: &ObjectRow) -> ObjectKind {
    if row.kind == "group" {
        ObjectKind::Group
    } else {
        ObjectKind::User
    }
}

fn source_of(row: &ObjectRow) -> SourceObject {
    SourceObject {
        kind: kind_of(row),
        dn: row.dn.clone(),
        anchor: row.anchor.clone(),
        attributes: serde_json::from_str(&row.source_json).unwrap_or_default(),
        password_hash: row.password_hash.clone(),
        password_note: None,
    }
}

/// Applies one batch of imported objects (users before groups).
pub async fn apply_batch(
    conn: &mut SqliteConnection,
    ctx: &Context,
    objects: &[SourceObject],
    now: i64,
) -> sqlx::Result<Applied> {
    let anchors: Vec<&str> = objects.iter().map(|o| o.anchor.as_str()).collect();
    let mut existing: HashMap<String, ObjectRow> =
        store::objects_by_anchor(conn, &ctx.domain, &anchors)
            .await?
            .into_iter()
            .map(|r| (r.anchor.clone(), r))
            .collect();
    let selected_members: HashSet<String> = {
        let groups = ctx.scope.group_anchors();
        if groups.is_empty() {
            HashSet::new()
        } else {
            store::members_of_groups(conn, &ctx.domain, &groups)
                .await?
                .into_iter()
                .collect()
        }
    };
    let mut applied = Applied::default();
    let mut unchanged: Vec<String> = Vec::new();
    let mut new_rows: Vec<ObjectRow> = Vec::new();
    let mut logs = Vec::new();
    if ctx.dry_run {
        if let Some(cycle) = &ctx.cycle_id {
            store::preview_seen(conn, cycle, &anchors).await?;
        }
    }
    for object in objects {
        let started = Instant::now();
        applied.counts.imported += 1;
        let row = existing.remove(&object.anchor);
        let hash = source_hash(object);
        if let Some(row) = &row {
            let member = selected_members.contains(&row.object_id);
            let in_scope = in_scope(ctx, object, member).is_ok();
            if row.source_hash == hash && !row.gone && row.in_scope == in_scope {
                unchanged.push(row.object_id.clone());
                continue;
            }
        }
        // Groups resolve members against the rows written so far.
        if object.kind == ObjectKind::Group && !new_rows.is_empty() {
            store::insert_objects(conn, &std::mem::take(&mut new_rows)).await?;
        }
        let outcome = import(
            conn,
            ctx,
            object,
            row,
            &hash,
            &selected_members,
            now,
            Some(&mut new_rows),
        )
        .await?;
        applied.counts.count(&outcome);
        if outcome.logged() && !ctx.dry_run {
            logs.push(log_of(
                ctx,
                &outcome,
                now,
                started.elapsed().as_millis() as i64,
            ));
        }
        applied.outcomes.push(outcome);
    }
    if !ctx.dry_run {
        store::insert_objects(conn, &new_rows).await?;
        if let Some(cycle) = &ctx.cycle_id {
            let ids: Vec<&str> = unchanged.iter().map(String::as_str).collect();
            store::mark_seen(conn, &ids, cycle).await?;
        }
        store::insert_logs(conn, &logs).await?;
    }
    Ok(applied)
}

fn in_scope(
    ctx: &Context,
    o: &SourceObject,
    member_of_selected: bool,
) -> Result<&'static str, String> {
    ctx.scope.decide(&Candidate {
        kind: o.kind,
        dn: &o.dn,
        anchor: &o.anchor,
        critical: critical(o),
        member_of_selected,
    })
}

/// Imports one object and decides (and unless dry-run, performs) its action.
pub async fn import_one(
    conn: &mut SqliteConnection,
    ctx: &Context,
    object: &SourceObject,
    row: Option<ObjectRow>,
    hash: &str,
    selected_members: &HashSet<String>,
    now: i64,
) -> sqlx::Result<Outcome> {
    import(conn, ctx, object, row, hash, selected_members, now, None).await
}

/// [`import_one`]; with `defer_new`, a new user's row is handed back for a bulk insert instead of
/// being written (groups are always written at once: their memberships reference them).
#[allow(clippy::too_many_arguments)]
async fn import(
    conn: &mut SqliteConnection,
    ctx: &Context,
    object: &SourceObject,
    row: Option<ObjectRow>,
    hash: &str,
    selected_members: &HashSet<String>,
    now: i64,
    defer_new: Option<&mut Vec<ObjectRow>>,
) -> sqlx::Result<Outcome> {
    let mut steps = vec![step(
        "Import",
        "success",
        format!(
            "Imported {} {} (anchor {}) with {} attributes from {}.",
            object.kind.as_str(),
            object.dn,
            object.anchor,
            object.attributes.len(),
            ctx.domain
        ),
    )];
    let member = row
        .as_ref()
        .is_some_and(|r| selected_members.contains(&r.object_id));
    let scope = in_scope(ctx, object, member);
    let mut outcome = Outcome {
        kind: object.kind,
        dn: object.dn.clone(),
        anchor: object.anchor.clone(),
        action: "none".into(),
        status: "success".into(),
        target_id: row
            .as_ref()
            .filter(|r| r.provisioned)
            .map(|r| r.object_id.clone()),
        target_name: row.as_ref().and_then(|r| r.display_name.clone()),
        changes: Vec::new(),
        steps: Vec::new(),
        error: None,
        recommendation: None,
    };
    match &scope {
        Ok(why) => steps.push(step(
            "Determine if in scope",
            "success",
            format!("In scope: {why}."),
        )),
        Err(why) => steps.push(step(
            "Determine if in scope",
            "skipped",
            format!("Out of scope: {why}."),
        )),
    }
    let provisioned = row.as_ref().filter(|r| r.provisioned);
    match provisioned {
        Some(r) => steps.push(step(
            "Match",
            "success",
            format!(
                "Matched the cloud {} {} by source anchor {}.",
                r.kind, r.object_id, r.anchor
            ),
        )),
        None => steps.push(step(
            "Match",
            "success",
            format!(
                "No cloud {} has source anchor {}.",
                object.kind.as_str(),
                object.anchor
            ),
        )),
    }
    let object_id = row
        .as_ref()
        .map(|r| r.object_id.clone())
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let old_target = provisioned.and_then(|r| parse_target(r.attributes_json.as_deref()));
    let in_scope_now = scope.is_ok();

    // The new row, before the action decides what the cloud side holds.
    let mut new_row = ObjectRow {
        object_id: object_id.clone(),
        domain: ctx.domain.clone(),
        kind: object.kind.as_str().to_owned(),
        anchor: object.anchor.clone(),
        dn: object.dn.clone(),
        source_hash: hash.to_owned(),
        source_json: serde_json::to_string(&object.attributes).unwrap_or_else(|_| "{}".into()),
        in_scope: in_scope_now,
        gone: false,
        provisioned: provisioned.is_some(),
        attributes_json: provisioned.and_then(|r| r.attributes_json.clone()),
        display_name: row.as_ref().and_then(|r| r.display_name.clone()),
        user_principal_name: row.as_ref().and_then(|r| r.user_principal_name.clone()),
        password_hash: row.as_ref().and_then(|r| r.password_hash.clone()),
        password_synced_at: row.as_ref().and_then(|r| r.password_synced_at),
        last_seen_cycle: ctx
            .cycle_id
            .clone()
            .or_else(|| row.as_ref().and_then(|r| r.last_seen_cycle.clone())),
        created_at: row.as_ref().map_or(now, |r| r.created_at),
        updated_at: now,
        provisioned_at: provisioned.and_then(|r| r.provisioned_at),
    };

    if in_scope_now {
        match compute_target(ctx, object.kind, object, old_target.as_ref()) {
            Err(e) => {
                outcome.action = if provisioned.is_some() {
                    "update"
                } else {
                    "create"
                }
                .into();
                outcome.status = "failure".into();
                outcome.error = Some(e.to_string());
                outcome.recommendation = Some(
                    "Fix the attribute mapping in the configuration (Attribute mapping, Test expression), or the value in the on-premises directory; the next cycle retries.".into(),
                );
                steps.push(step("Perform action", "failure", e.to_string()));
                // The source is recorded without its hash, so the next cycle tries again.
                new_row.source_hash = String::new();
            }
            Ok(target) => {
                let mut changes = diff(old_target.as_ref(), &target);
                if ctx.password_hash_sync && object.kind == ObjectKind::User {
                    password_change(object, &mut new_row, &mut changes, &mut outcome, now);
                }
                new_row.display_name = target
                    .get("displayName")
                    .map(text)
                    .or_else(|| Some(object.dn.clone()));
                new_row.user_principal_name = target.get("userPrincipalName").map(text);
                new_row.attributes_json = serde_json::to_string(&target).ok();
                outcome.target_name = new_row.display_name.clone();
                outcome.target_id = Some(object_id.clone());
                if provisioned.is_none() {
                    outcome.action = "create".into();
                    new_row.provisioned = true;
                    new_row.provisioned_at = Some(now);
                    steps.push(step(
                        "Perform action",
                        "success",
                        format!(
                            "Created cloud {} {} with {} attributes.",
                            object.kind.as_str(),
                            object_id,
                            target.len()
                        ),
                    ));
                } else if changes.is_empty() {
                    steps.push(step(
                        "Perform action",
                        "skipped",
                        "No mapped attribute changed; nothing to do.",
                    ));
                } else {
                    outcome.action = "update".into();
                    steps.push(step(
                        "Perform action",
                        "success",
                        format!(
                            "Updated {} properties of cloud {} {}.",
                            changes.len(),
                            object.kind.as_str(),
                            object_id
                        ),
                    ));
                }
                outcome.changes = changes;
            }
        }
    } else if provisioned.is_some() {
        // Leaving the scope deletes the cloud object, but only when the cycle ends: deletions are
        // counted together against the accidental-deletion threshold.
        steps.push(step(
            "Perform action",
            "skipped",
            "The object left the scope; its cloud object is deleted when the cycle ends (subject to the accidental-deletion threshold).",
        ));
        outcome.action = "skip".into();
        outcome.status = "skipped".into();
    } else {
        steps.push(step(
            "Perform action",
            "skipped",
            "Out of scope: not provisioned.",
        ));
        outcome.action = "skip".into();
        outcome.status = "skipped".into();
        outcome.target_id = None;
    }
    if !ctx.dry_run {
        match (&row, defer_new) {
            (Some(_), _) => store::save_object(conn, &new_row).await?,
            (None, Some(deferred)) if object.kind == ObjectKind::User => {
                deferred.push(new_row.clone())
            }
            (None, _) => store::insert_object(conn, &new_row).await?,
        }
    }
    // Memberships once the group's row exists (they reference it). Every imported group keeps its
    // members, provisioned or not: group scoping follows them.
    if object.kind == ObjectKind::Group {
        let mut member_steps = Vec::new();
        let change = resolve_members(conn, ctx, object, &object_id, &mut member_steps).await?;
        let last = steps.len().saturating_sub(1);
        steps.splice(last..last, member_steps);
        if let Some(change) = change.filter(|_| new_row.provisioned && outcome.status != "failure")
        {
            if outcome.action == "none" {
                outcome.action = "update".into();
                if let Some(perform) = steps.last_mut() {
                    *perform = step(
                        "Perform action",
                        "success",
                        format!("Updated the members of cloud group {object_id}."),
                    );
                }
            }
            outcome.changes.push(change);
        }
    }
    outcome.steps = steps;
    Ok(outcome)
}

/// Password hash sync for one user: stores the directory's hash, never logs it.
fn password_change(
    object: &SourceObject,
    row: &mut ObjectRow,
    changes: &mut Vec<Change>,
    outcome: &mut Outcome,
    now: i64,
) {
    if let Some(note) = &object.password_note {
        outcome.status = "warning".into();
        outcome.error = Some(note.clone());
        outcome.recommendation = Some(
            "Store the password with a FIPS-approved scheme such as {SSHA256} or {SSHA512} (reset it on-premises), or run the agent with --enforce-fips-policy false.".into(),
        );
    }
    if object.password_hash != row.password_hash {
        let scheme = |h: &Option<String>| {
            h.as_deref().map(|h| {
                let scheme = h.split('}').next().unwrap_or("").trim_start_matches('{');
                format!("{{{scheme}}} hash")
            })
        };
        changes.push(Change {
            name: "passwordHash".into(),
            old: scheme(&row.password_hash),
            new: scheme(&object.password_hash),
        });
        row.password_hash = object.password_hash.clone();
        row.password_synced_at = object.password_hash.as_ref().map(|_| now);
    }
}

/// Replaces a group's memberships with the members its `member` values name. The DNs resolve to
/// objects imported so far (users travel before groups); DNs of objects not synced are left out.
async fn resolve_members(
    conn: &mut SqliteConnection,
    ctx: &Context,
    group: &SourceObject,
    group_id: &str,
    steps: &mut Vec<Step>,
) -> sqlx::Result<Option<Change>> {
    let dns: Vec<String> = group.attributes.get("member").cloned().unwrap_or_default();
    let found = if dns.is_empty() {
        Vec::new()
    } else {
        store::ids_by_dn(conn, &ctx.domain, &dns).await?
    };
    let mut ids: Vec<String> = found.into_iter().map(|(id, _)| id).collect();
    ids.sort();
    ids.dedup();
    let mut old = store::member_ids(conn, group_id).await?;
    old.sort();
    if dns.len() > ids.len() {
        steps.push(step(
            "Import",
            "success",
            format!(
                "{} of {} member DNs are objects this configuration does not import (computers, contacts, other domains); they are left out.",
                dns.len() - ids.len(),
                dns.len()
            ),
        ));
    }
    if old == ids {
        return Ok(None);
    }
    if !ctx.dry_run {
        store::replace_members(conn, group_id, &ids).await?;
    }
    Ok(Some(Change {
        name: "members".into(),
        old: Some(format!("{} members", old.len())),
        new: Some(format!("{} members", ids.len())),
    }))
}

pub fn log_of(ctx: &Context, o: &Outcome, at: i64, duration_ms: i64) -> NewLog {
    NewLog {
        at,
        cycle_id: ctx.cycle_id.clone(),
        configuration_id: Some(ctx.configuration_id.clone()),
        domain: ctx.domain.clone(),
        object_kind: o.kind.as_str().to_owned(),
        source_dn: o.dn.clone(),
        source_anchor: o.anchor.clone(),
        target_id: o.target_id.clone(),
        target_name: o.target_name.clone(),
        action: match o.action.as_str() {
            "create" => "create",
            "update" => "update",
            "delete" => "delete",
            "stagedDelete" => "stagedDelete",
            _ => "skip",
        },
        status: match o.status.as_str() {
            "success" => "success",
            "warning" => "warning",
            "failure" => "failure",
            _ => "skipped",
        },
        initiated_by: ctx.initiated_by.clone(),
        modified_json: serde_json::to_string(&o.changes).unwrap_or_else(|_| "[]".into()),
        steps_json: serde_json::to_string(&o.steps).unwrap_or_else(|_| "[]".into()),
        error: o.error.clone(),
        recommendation: o.recommendation.clone(),
        duration_ms,
    }
}

/// Group scoping follows memberships, which change with groups imported after their members:
/// re-decides every object of the domain and provisions those that came into scope. Objects that
/// left it become deletion candidates.
pub async fn reconcile_group_scope(
    conn: &mut SqliteConnection,
    ctx: &Context,
    now: i64,
) -> sqlx::Result<Applied> {
    let mut applied = Applied::default();
    let groups = ctx.scope.group_anchors();
    let members: HashSet<String> = store::members_of_groups(conn, &ctx.domain, &groups)
        .await?
        .into_iter()
        .collect();
    let mut logs = Vec::new();
    for kind in ["user", "group"] {
        for row in store::objects_of_domain(conn, &ctx.domain, kind).await? {
            let source = source_of(&row);
            let now_in = in_scope(ctx, &source, members.contains(&row.object_id)).is_ok();
            if now_in == row.in_scope && (row.provisioned || !now_in) {
                continue;
            }
            if now_in && !row.provisioned {
                let hash = row.source_hash.clone();
                let outcome =
                    import_one(conn, ctx, &source, Some(row), &hash, &members, now).await?;
                applied.counts.count(&outcome);
                if outcome.logged() && !ctx.dry_run {
                    logs.push(log_of(ctx, &outcome, now, 0));
                }
                applied.outcomes.push(outcome);
            } else if !ctx.dry_run {
                let mut row = row;
                row.in_scope = now_in;
                store::save_object(conn, &row).await?;
            }
        }
    }
    if !ctx.dry_run {
        store::insert_logs(conn, &logs).await?;
    }
    Ok(applied)
}

/// A cloud object that must go, as the log records it.
pub fn deletion_outcome(row: &ObjectRow, staged: bool, reason: &str) -> Outcome {
    let old = parse_target(row.attributes_json.as_deref());
    let changes = old
        .map(|t| {
            t.iter()
                .map(|(k, v)| Change {
                    name: k.clone(),
                    old: Some(text(v)),
                    new: None,
                })
                .collect()
        })
        .unwrap_or_default();
    let (action, detail) = if staged {
        (
            "stagedDelete",
            "Staged: this cycle's deletions reach the accidental-deletion threshold. Review them and choose Allow deletes, or fix the source and Restart sync.",
        )
    } else {
        ("delete", "Deleted the cloud object.")
    };
    Outcome {
        kind: kind_of(row),
        dn: row.dn.clone(),
        anchor: row.anchor.clone(),
        action: action.into(),
        status: if staged { "skipped" } else { "success" }.into(),
        target_id: Some(row.object_id.clone()),
        target_name: row.display_name.clone(),
        changes,
        steps: vec![
            step("Determine if in scope", "skipped", reason.to_owned()),
            step("Match", "success", format!("Matched cloud {} {} by source anchor {}.", row.kind, row.object_id, row.anchor)),
            step("Perform action", if staged { "skipped" } else { "success" }, detail),
        ],
        error: None,
        recommendation: staged.then(|| "Review the staged deletions on the configuration's page: Allow deletes applies them; Restart sync after fixing the source discards them.".to_owned()),
    }
}

/// Why a candidate goes.
pub fn deletion_reason(row: &ObjectRow) -> &'static str {
    if row.gone {
        "The object was deleted from the on-premises directory (or moved out of the agent's base DN)."
    } else {
        "The object left the configuration's scope."
    }
}

/// Removes a cloud object: an object whose source is gone disappears entirely; one that left the
/// scope stays imported, not provisioned.
pub async fn delete_cloud_object(
    conn: &mut SqliteConnection,
    row: &ObjectRow,
    now: i64,
) -> sqlx::Result<()> {
    if row.gone {
        store::delete_object(conn, &row.object_id).await
    } else {
        let mut row = row.clone();
        row.provisioned = false;
        row.attributes_json = None;
        row.provisioned_at = None;
        row.updated_at = now;
        store::save_object(conn, &row).await
    }
}

/// The target attributes as shown on pages.
pub fn target_attributes(row: &ObjectRow) -> BTreeMap<String, String> {
    parse_target(row.attributes_json.as_deref())
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, text(&v)))
        .collect()
}
