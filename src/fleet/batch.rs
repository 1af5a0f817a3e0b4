//! Batch enrollment: many agents with one token in one transaction, for the fleet simulator and for
//! scripted roll-outs. Each agent counts as one use of the token; either all enroll or none does.

use super::{usable_token, valid_machine_name, Agent, EnrollError, Fleet};
use crate::auth::tokens;
use crate::db::{self, agents::NewAgentEvent, audit::NewAuditEntry};
use crate::protocol::{BatchEnrollRequest, BatchEnrollResponse, BatchEnrolled};
use serde_json::json;

/// Most agents one batch may enroll (keeps one transaction and one response bounded).
pub const MAX_BATCH: usize = 10_000;

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
                now,
            );
            db::agents::upsert(&mut tx, &agent.to_row()).await?;
            db::agents::insert_event(
                &mut tx,
                &NewAgentEvent {
                    agent_id: agent.id.clone(),
                    at: now,
                    kind: "lifecycle",
                    from_value: None,
                    to_value: "enrolled".into(),
                    reason: format!(
                        "enrolled from {external_ip} in a batch with enrollment token #{}",
                        token.enrollment_token_id
                    ),
                },
            )
            .await?;
            answer.push(BatchEnrolled {
                agent_id: agent.id.clone(),
                agent_credential: credential,
                console_token: self.key.console_token(&agent.id, 1),
            });
            agents.push(agent);
        }
        // One audit entry for the batch: the token's creator is accountable for all of it.
        let actor = format!(
            "enrollment token #{} (created by {})",
            token.enrollment_token_id, token.created_by
        );
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
        for agent in agents {
            inner
                .by_credential
                .insert(agent.credential_hash.clone(), agent.id.clone());
            inner.agents.insert(agent.id.clone(), agent);
        }
        Ok(BatchEnrollResponse { agents: answer })
    }
}
