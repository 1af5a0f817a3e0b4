//! Batch enrollment: many agents with one token in one transaction, for the fleet simulator and for
//! scripted roll-outs. Each agent counts as one use of the token; either all enroll or none does.

use super::{
    certificate_pin, pinned_note, usable_token, valid_machine_name, Agent, EnrollError, Fleet,
};
use crate::auth::tokens;
use crate::db::{self, agents::AgentEventRef, audit::NewAuditEntry};
use crate::protocol::{BatchEnrollRequest, BatchEnrollResponse, BatchEnrolled};
use serde_json::json;

/// Most agents one batch may enroll (keeps one transaction and one response bounded).
pub const MAX_BATCH: usize = 10_000;

/// Agents of a batch enrollment whose liveness rows and events go in one statement.
const ROWS_PER_CHUNK: usize = 1_000;

impl Fleet {
    pub async fn enroll_batch(
        &self,
        req: BatchEnrollRequest,
        external_ip: String,
    ) -> Result<BatchEnrollResponse, EnrollError> {
        if req.machine_names.is_empty() || req.machine_names.len() > MAX_BATCH {
            return Err(EnrollError::BadBatch(MAX_BATCH));
        }
        let names = req
            .machine_names
            .iter()
            .map(|n| valid_machine_name(n))
            .collect::<Result<Vec<_>, _>>()?;
        self.check_environment(req.environment)?;
        let pin = certificate_pin(req.tls_cert_sha256.as_deref())?;
        let pinned = pinned_note(pin.as_ref());
        let now = db::now_ms();
        let count = i64::try_from(names.len()).unwrap_or(i64::MAX);
        let mut tx = self.db.begin().await?;
        let token = usable_token(&mut tx, &req.enrollment_token, now).await?;
        if !db::enrollment_tokens::consume(&mut tx, token.enrollment_token_id, count, now).await? {
            return Err(EnrollError::NotEnoughUses {
                asked: count,
                left: token.uses_left(),
            });
        }
        let mut agents = Vec::with_capacity(names.len());
        let mut answer = Vec::with_capacity(names.len());
        for name in names {
            let credential = tokens::generate(tokens::AGENT_CREDENTIAL_PREFIX);
            let agent = Agent::new_enrolled(
                &credential,
                name,
                external_ip.clone(),
                &req.version,
                req.extension,
                req.environment,
                token.enrollment_token_id,
                pin,
                now,
            );
            answer.push(BatchEnrolled {
                agent_id: agent.id.clone(),
                agent_credential: credential,
                console_token: self.key.console_token(&agent.id, 1),
            });
            agents.push(agent);
        }
        // The agent rows one by one (each built and dropped in turn), then their liveness rows
        // and events a statement per chunk. For 100,000 enrollments: a statement per agent took
        // 24 s; per batch of 10,000, 13 s but a peak of 63–65 MiB (each statement's JSON and
        // returned keys); per 1,000, 17 s and 57–60 MiB, as with a statement per agent.
        let reason = format!(
            "enrolled from {external_ip} in a batch with enrollment token #{}{}",
            token.enrollment_token_id, pinned
        );
        for chunk in agents.chunks_mut(ROWS_PER_CHUNK) {
            for agent in chunk.iter() {
                db::agents::upsert_agent_row(&mut tx, &agent.to_row()).await?;
            }
            let liveness: Vec<_> = chunk.iter().map(Agent::liveness).collect();
            let keys = db::agents::upsert_liveness(&mut tx, &liveness).await?;
            drop(liveness);
            for (agent, key) in chunk.iter_mut().zip(keys) {
                agent.liveness_id = key;
            }
            // In id order, the order of the events' index (see `insert_events`).
            let mut ids: Vec<uuid::Uuid> = chunk
                .iter()
                .map(|a| uuid::Uuid::parse_str(&a.id).expect("a new agent's id is a UUID"))
                .collect();
            ids.sort_unstable();
            db::agents::insert_events(
                &mut tx,
                ids.iter().map(|&agent_id| AgentEventRef {
                    agent_id,
                    at: now,
                    kind: "lifecycle",
                    from_value: None,
                    to_value: "enrolled",
                    reason: &reason,
                }),
            )
            .await?;
        }
        // One audit entry for the batch: the token's creator is accountable for all of it.
        let actor = token.actor();
        db::audit::insert(
            &mut tx,
            &NewAuditEntry {
                at: now,
                actor: &actor,
                action: "agent.enroll_batch",
                target_type: "enrollment_token",
                target_id: &token.enrollment_token_id.to_string(),
                before: None,
                after: Some(json!({ "agents": count, "external_ip": external_ip })),
            },
        )
        .await?;
        tx.commit().await?;
        let mut inner = self.write();
        for agent in &agents {
            inner.insert(agent);
        }
        Ok(BatchEnrollResponse { agents: answer })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::tokens::ConsoleKey;
    use crate::fleet::health::{Health, Status, Thresholds};
    use crate::fleet::{AgentFilter, FleetConfig, SortKey, StatusFilter};
    use crate::protocol::{CheckStatus, Environment, Extension, HealthCheck, Heartbeat};
    use std::time::Duration;

    async fn fleet(dir: &std::path::Path) -> Fleet {
        let db = db::open(dir).await.unwrap();
        let config = FleetConfig {
            environment: Environment::Public,
            thresholds: Thresholds {
                unhealthy_after: Duration::from_secs(90),
                inactive_after: Duration::from_secs(3600),
            },
            hide_inactive_after: Duration::from_secs(864_000),
            event_retention: Duration::from_secs(30 * 86_400),
            poll_interval: Duration::from_secs(60),
            poll_timeout: Duration::from_secs(1),
            poll_concurrency: 4,
            poll_keepalive: 4,
            snapshot_file: None,
        };
        Fleet::load(db, ConsoleKey::from_bytes([7; 32]), config)
            .await
            .unwrap()
    }

    fn names(page: &[Agent]) -> Vec<&str> {
        page.iter().map(|a| a.machine_name.as_str()).collect()
    }

    /// A batch enrollment of one agent per name.
    fn request(token: &str, names: &[&str]) -> BatchEnrollRequest {
        BatchEnrollRequest {
            enrollment_token: token.to_string(),
            machine_names: names.iter().map(|n| n.to_string()).collect(),
            extension: Extension::CloudSync,
            environment: Environment::Public,
            version: "1".into(),
            tls_cert_sha256: None,
        }
    }

    /// Enrolls one agent per name with a token of exactly that many uses: `(id, name)` pairs.
    async fn enroll(fleet: &Fleet, names: &[&str]) -> Vec<(String, String)> {
        let uses = u32::try_from(names.len()).unwrap();
        let token =
            crate::console::enrollment::create(&fleet.db, "t", Duration::from_secs(3600), uses)
                .await
                .unwrap();
        let enrolled = fleet
            .enroll_batch(request(&token.token, names), "127.0.0.1".into())
            .await
            .unwrap();
        enrolled
            .agents
            .into_iter()
            .map(|a| a.agent_id)
            .zip(names.iter().map(|n| n.to_string()))
            .collect()
    }

    /// A heartbeat of the agent called `name`, reporting `checks`.
    fn heartbeat(name: &str, checks: Vec<HealthCheck>) -> Heartbeat {
        Heartbeat {
            version: "1".into(),
            machine_name: name.into(),
            uptime_seconds: 1,
            heartbeat_interval_seconds: 30,
            listen_addr: None,
            checks,
            domains: vec![],
        }
    }

    #[tokio::test]
    async fn batch_enrolls_and_the_name_order_follows_enrollments_and_renames() {
        let dir = tempfile::tempdir().unwrap();
        let fleet = fleet(dir.path()).await;
        let token =
            crate::console::enrollment::create(&fleet.db, "t", Duration::from_secs(3600), 4)
                .await
                .unwrap();
        let request = |names: &[&str]| request(&token.token, names);
        let enrolled = fleet
            .enroll_batch(request(&["b", "A", "c"]), "127.0.0.1".into())
            .await
            .unwrap();
        assert_eq!(enrolled.agents.len(), 3);
        let by_name = AgentFilter {
            status: Some(StatusFilter::All),
            ..Default::default()
        };
        let (page, total) = fleet.list(&by_name, 10, 0);
        assert_eq!((names(&page), total), (vec!["A", "b", "c"], 3));
        let desc = AgentFilter {
            descending: true,
            ..by_name.clone()
        };
        assert_eq!(names(&fleet.list(&desc, 2, 0).0), vec!["c", "b"]);
        assert_eq!(names(&fleet.list(&by_name, 2, 2).0), vec!["c"]);

        // A rename through a heartbeat moves the agent; a new enrollment joins in order.
        let renamed = &enrolled.agents[2].agent_id; // "c"
        fleet
            .heartbeat(renamed, heartbeat("0-first", vec![]), "127.0.0.1".into())
            .unwrap();
        fleet
            .enroll_batch(request(&["B2"]), "127.0.0.1".into())
            .await
            .unwrap();
        assert_eq!(
            names(&fleet.list(&by_name, 10, 0).0),
            vec!["0-first", "A", "b", "B2"]
        );

        // The token had 4 uses: a fifth agent is refused and nothing is added.
        let err = fleet
            .enroll_batch(request(&["x"]), "127.0.0.1".into())
            .await
            .unwrap_err();
        assert_eq!(err.code(), "enrollment_token_used_up");
        assert_eq!(fleet.list(&by_name, 10, 0).1, 4);
        // A transition while the name index is fresh shows in health-filtered pages at once.
        let healthy = AgentFilter {
            health: Some(crate::fleet::health::Health::Healthy),
            ..by_name.clone()
        };
        assert_eq!(names(&fleet.list(&healthy, 10, 0).0), vec!["0-first"]);
        let a = &enrolled.agents[1].agent_id; // "A"
        let beat = Heartbeat {
            version: "1".into(),
            machine_name: "A".into(),
            uptime_seconds: 1,
            heartbeat_interval_seconds: 30,
            listen_addr: None,
            checks: vec![],
            domains: vec![],
        };
        fleet.heartbeat(a, beat, "127.0.0.1".into()).unwrap();
        assert_eq!(names(&fleet.list(&healthy, 10, 0).0), vec!["0-first", "A"]);
        let summary = fleet.summary();
        assert_eq!(
            (summary.total, summary.healthy, summary.degraded),
            (4, 2, 2)
        );
        assert_eq!(summary.versions, vec![("1".to_string(), 4)]);
        let attention = fleet.needing_attention(10);
        let mut waiting = names(&attention);
        waiting.sort_unstable();
        assert_eq!(waiting, vec!["B2", "b"]);
        assert_eq!(fleet.needing_attention(1).len(), 1);
        let by_health = AgentFilter {
            sort: SortKey::Health,
            ..by_name
        };
        assert_eq!(fleet.list(&by_health, 10, 0).1, 4);
        // Degraded before healthy, ties in name order; a page keeps only what it shows.
        assert_eq!(
            names(&fleet.list(&by_health, 10, 0).0),
            vec!["b", "B2", "0-first", "A"]
        );
        let (page, total) = fleet.list(&by_health, 2, 1);
        assert_eq!((names(&page), total), (vec!["B2", "0-first"], 4));
        let by_health_desc = AgentFilter {
            descending: true,
            ..by_health.clone()
        };
        assert_eq!(
            names(&fleet.list(&by_health_desc, 10, 0).0),
            vec!["A", "0-first", "B2", "b"]
        );
        assert_eq!(names(&fleet.list(&by_health_desc, 5, 3).0), vec!["b"]);
        let (page, total) = fleet.list(&by_health, 0, 0);
        assert_eq!((page.len(), total), (0, 4));
    }

    #[tokio::test]
    async fn a_flush_writes_each_agents_row_and_its_events_in_the_order_they_happened() {
        let dir = tempfile::tempdir().unwrap();
        let fleet = fleet(dir.path()).await;
        let names: Vec<String> = (0..20).map(|i| format!("agent-{i:02}")).collect();
        let agents = enroll(
            &fleet,
            &names.iter().map(String::as_str).collect::<Vec<_>>(),
        )
        .await;
        let disk = |status| {
            vec![HealthCheck {
                name: "disk".into(),
                status,
                message: "m".into(),
            }]
        };
        // Interleaved across agents (whose ids are random, so the queue is not in id order):
        // each goes degraded -> unhealthy -> healthy before the flush.
        for check in [CheckStatus::Fail, CheckStatus::Pass] {
            for (id, name) in &agents {
                fleet
                    .heartbeat(id, heartbeat(name, disk(check)), "127.0.0.1".into())
                    .unwrap();
            }
        }
        fleet.flush().await.unwrap();
        // Every agent's row changed (health, reason, checks): the table holds what memory holds.
        let mut conn = fleet.db.acquire().await.unwrap();
        for (id, _) in &agents {
            let stored = db::agents::get(&mut conn, id)
                .await
                .unwrap()
                .expect("a row");
            let live = fleet.get(id).unwrap().to_row();
            assert_eq!(format!("{stored:?}"), format!("{live:?}"));
        }
        drop(conn);
        for (id, _) in &agents {
            let timeline: Vec<(String, String)> = db::agents::list_events(&fleet.db, id, 10)
                .await
                .unwrap()
                .into_iter()
                .filter(|e| e.kind == "health")
                .map(|e| (e.from_value.unwrap_or_default(), e.to_value))
                .collect();
            let pair = |from: &str, to: &str| (from.to_string(), to.to_string());
            assert_eq!(
                timeline,
                vec![pair("unhealthy", "healthy"), pair("degraded", "unhealthy")],
                "newest first"
            );
        }
    }

    #[tokio::test]
    async fn pruning_deletes_the_events_older_than_the_retention_a_chunk_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let fleet = fleet(dir.path()).await;
        let agents = enroll(&fleet, &["a", "b"]).await;
        // The two enrollment events and 12,000 more (over two chunks) were recorded 31 days ago.
        let old = db::now_ms() - 31 * 86_400_000;
        sqlx::query("UPDATE agent_event SET at = ?")
            .bind(old)
            .execute(&fleet.db)
            .await
            .unwrap();
        sqlx::query(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 12000) \
             INSERT INTO agent_event (agent_id, at, kind, from_value, to_value, reason) \
             SELECT ?, ?, 'status', 'active', 'inactive', 'old' FROM n",
        )
        .bind(&agents[0].0)
        .bind(old)
        .execute(&fleet.db)
        .await
        .unwrap();
        // Today each agent turns healthy with its first heartbeat.
        for (id, name) in &agents {
            fleet
                .heartbeat(id, heartbeat(name, vec![]), "127.0.0.1".into())
                .unwrap();
        }
        fleet.flush().await.unwrap();
        let kinds = || async {
            sqlx::query_scalar::<_, String>(
                "SELECT kind || ':' || to_value FROM agent_event ORDER BY agent_event_id",
            )
            .fetch_all(&fleet.db)
            .await
            .unwrap()
        };
        assert_eq!(kinds().await.len(), 12_004);

        assert_eq!(fleet.prune_events().await.unwrap(), 12_002);
        assert_eq!(kinds().await, ["health:healthy", "health:healthy"]);
        assert_eq!(
            fleet.prune_events().await.unwrap(),
            0,
            "nothing left to delete"
        );

        // When every event is older than the retention, all go.
        sqlx::query("UPDATE agent_event SET at = ?")
            .bind(old)
            .execute(&fleet.db)
            .await
            .unwrap();
        assert_eq!(fleet.prune_events().await.unwrap(), 2);
        assert!(kinds().await.is_empty());
        assert_eq!(fleet.prune_events().await.unwrap(), 0, "an empty table");
    }

    #[tokio::test]
    async fn a_batch_larger_than_a_chunk_gets_every_agent_its_own_liveness_row_and_event() {
        let dir = tempfile::tempdir().unwrap();
        let fleet = fleet(dir.path()).await;
        let names: Vec<String> = (0..2_500).map(|i| format!("bulk-{i:04}")).collect();
        let agents = enroll(
            &fleet,
            &names.iter().map(String::as_str).collect::<Vec<_>>(),
        )
        .await;
        let mut conn = fleet.db.acquire().await.unwrap();
        let mut keys = std::collections::HashSet::new();
        for (id, _) in &agents {
            let stored = db::agents::get(&mut conn, id).await.unwrap().unwrap();
            assert_eq!(
                stored.liveness_id,
                fleet.get(id).unwrap().to_row().liveness_id,
                "the key in memory is the row's"
            );
            keys.insert(stored.liveness_id);
        }
        assert_eq!(keys.len(), 2_500, "one row each");
        let events: i64 = sqlx::query_scalar(
            "SELECT count(DISTINCT agent_id) FROM agent_event WHERE to_value = 'enrolled'",
        )
        .fetch_one(&mut *conn)
        .await
        .unwrap();
        assert_eq!(events, 2_500);
    }

    #[tokio::test]
    async fn after_a_start_from_the_table_heartbeats_reach_each_agents_own_liveness_row() {
        let dir = tempfile::tempdir().unwrap();
        let before = fleet(dir.path()).await;
        let agents = enroll(&before, &["quiet", "beating"]).await;
        before.flush().await.unwrap();
        drop(before);
        let restarted = fleet(dir.path()).await;
        let (id, name) = &agents[1];
        // The first heartbeat changes the whole row; the second only its timestamps.
        for uptime in [5, 7] {
            let mut beat = heartbeat(name, vec![]);
            beat.uptime_seconds = uptime;
            restarted.heartbeat(id, beat, "127.0.0.1".into()).unwrap();
            restarted.flush().await.unwrap();
            let mut conn = restarted.db.acquire().await.unwrap();
            let row = db::agents::get(&mut conn, id).await.unwrap().unwrap();
            assert_eq!(
                row.uptime_seconds,
                Some(uptime as i64),
                "written by its key"
            );
            assert!(row.last_heartbeat_at.is_some());
        }
        let mut conn = restarted.db.acquire().await.unwrap();
        let quiet = db::agents::get(&mut conn, &agents[0].0)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (quiet.last_heartbeat_at, quiet.uptime_seconds),
            (None, None),
            "the other agent's row is untouched"
        );
    }

    #[tokio::test]
    async fn after_a_restart_only_agents_alive_when_the_console_stopped_get_time_to_check_in() {
        let dir = tempfile::tempdir().unwrap();
        let before = fleet(dir.path()).await;
        let agents = enroll(&before, &["alive", "dead"]).await;
        for (id, name) in &agents {
            before
                .heartbeat(id, heartbeat(name, vec![]), "127.0.0.1".into())
                .unwrap();
        }
        before.flush().await.unwrap();
        // The console stopped 10 minutes ago. "alive" heartbeated until then; "dead" had been
        // silent for 5 minutes already (longer than the 90 s after which it is unhealthy), but
        // the console stopped before it judged that.
        let minute = 60_000;
        let stopped = db::now_ms() - 10 * minute;
        for ((id, _), last) in agents.iter().zip([stopped, stopped - 5 * minute]) {
            sqlx::query(
                "UPDATE agent_liveness SET last_heartbeat_at = ?1, last_contact_at = ?1 WHERE agent_id = ?2",
            )
            .bind(last)
            .bind(id)
            .execute(&before.db)
            .await
            .unwrap();
        }
        let restarted = fleet(dir.path()).await;
        let grace = restarted.restart_grace().expect("an agent is spared");
        assert_eq!(grace.waiting, 1, "only the agent alive at the stop");
        restarted.sweep().await;
        let alive = restarted.get(&agents[0].0).unwrap();
        assert_eq!(
            (alive.health, alive.status),
            (Health::Healthy, Status::Active),
            "spared until it had 90 s to check in"
        );
        let dead = restarted.get(&agents[1].0).unwrap();
        assert_eq!(dead.health, Health::Unhealthy, "judged at once");
        assert!(
            dead.health_reason.starts_with("no heartbeat for"),
            "{}",
            dead.health_reason
        );
        // Its heartbeat ends the wait.
        restarted
            .heartbeat(&agents[0].0, heartbeat("alive", vec![]), "127.0.0.1".into())
            .unwrap();
        assert_eq!(restarted.restart_grace(), None);
    }
}
