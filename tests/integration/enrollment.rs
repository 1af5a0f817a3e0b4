//! Enrollment from the agent's side: install, re-install without a duplicate, every bad-token case,
//! environment mismatch, unreachable console, and `agent status`.

use crate::support::*;
use std::os::unix::fs::PermissionsExt;

#[tokio::test]
async fn install_writes_a_private_credential_and_reinstall_keeps_the_agent_id() {
    let console = Console::start(&[]);
    let api = Api::new(&console, ADMIN);
    let token = console.enrollment_token(2);

    let agent = Agent::install(&console, &token, "dc01.corp.example.test");
    let id = agent.agent_id();
    let mode = std::fs::metadata(agent.dir.path().join("credential.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "credential file must be 0600");
    let credential = std::fs::read_to_string(agent.dir.path().join("credential.json")).unwrap();
    assert!(
        !credential.contains("hsct_"),
        "the agent must not keep the console token in plain form"
    );

    // Same data dir, same token (second use): same agent, not a new one.
    let again = install_into(
        agent.dir.path(),
        &console.url,
        &token,
        "dc01.corp.example.test",
        &[],
    );
    assert!(again.status.success(), "re-install: {}", stderr(&again));
    assert_eq!(agent.agent_id(), id);
    let (_, list) = api.get("/agents?status=all").await;
    assert_eq!(
        list["total"], 1,
        "re-install must not create a second agent: {list}"
    );
    assert_eq!(list["items"][0]["id"], id.as_str());
    assert_eq!(list["items"][0]["machine_name"], "dc01.corp.example.test");
    assert_eq!(list["items"][0]["extension"], "cloud-sync");
    assert_eq!(list["items"][0]["external_ip"], "127.0.0.1");

    // Token used up now.
    let dir = tempfile::tempdir().unwrap();
    let used = install_into(dir.path(), &console.url, &token, "dc02", &[]);
    assert!(!used.status.success());
    assert!(
        stderr(&used).contains("used 2 of 2 times"),
        "{}",
        stderr(&used)
    );

    // The audit log recorded the enrollment and the re-install.
    let (_, audit) = api.get("/audit-log").await;
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(
        actions.contains(&"agent.enroll") && actions.contains(&"agent.reinstall"),
        "{actions:?}"
    );
}

#[tokio::test]
async fn bad_tokens_each_get_their_own_message() {
    let console = Console::start(&[]);
    let api = Api::new(&console, ADMIN);
    let dir = tempfile::tempdir().unwrap();

    let invalid = install_into(dir.path(), &console.url, "hset_not-a-real-token", "x", &[]);
    assert!(!invalid.status.success());
    assert!(
        stderr(&invalid).contains("not valid"),
        "{}",
        stderr(&invalid)
    );

    // Revoked through the API.
    let (status, created) = api
        .send(
            reqwest::Method::POST,
            "/enrollment-tokens",
            Some(serde_json::json!({"max_uses": 3})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let token = created["token"].as_str().unwrap().to_string();
    assert!(created["install_command"]
        .as_str()
        .unwrap()
        .contains(&token));
    let (status, revoked) = api
        .send(
            reqwest::Method::DELETE,
            &format!("/enrollment-tokens/{}", created["id"]),
            None,
        )
        .await;
    assert_eq!((status, revoked["state"].as_str()), (200, Some("revoked")));
    let out = install_into(dir.path(), &console.url, &token, "x", &[]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("revoked by alice"),
        "{}",
        stderr(&out)
    );

    // Expired: move the expiry into the past in the real database.
    let token = console.enrollment_token(1);
    let pool = hybridsync::db::open(console.data_dir()).await.unwrap();
    sqlx::query("UPDATE enrollment_token SET expires_at = expires_at - 7200000 WHERE uses = 0 AND revoked_at IS NULL")
        .execute(&pool)
        .await
        .unwrap();
    let out = install_into(dir.path(), &console.url, &token, "x", &[]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("expired"), "{}", stderr(&out));

    // Nothing was enrolled by any of these.
    let (_, list) = api.get("/agents?status=all").await;
    assert_eq!(list["total"], 0);
}

#[tokio::test]
async fn environment_mismatch_and_unreachable_console_are_explained() {
    let console = Console::start(&["--environment", "us-government"]);
    let token = console.enrollment_token(5);
    let dir = tempfile::tempdir().unwrap();

    let out = install_into(dir.path(), &console.url, &token, "x", &[]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("us-government") && err.contains("public"),
        "must name both environments: {err}"
    );

    let ok = install_into(
        dir.path(),
        &console.url,
        &token,
        "gov01",
        &["--environment", "us-government"],
    );
    assert!(ok.status.success(), "{}", stderr(&ok));
    let api = Api::new(&console, READER);
    let (_, list) = api.get("/agents").await;
    assert_eq!(list["items"][0]["environment"], "us-government");

    let other = tempfile::tempdir().unwrap();
    let out = install_into(other.path(), "http://127.0.0.1:9", &token, "x", &[]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("cannot reach the console"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn agent_status_verifies_the_local_agent() {
    let console = Console::start(&[]);
    let token = console.enrollment_token(1);
    let agent = Agent::install(&console, &token, "status01");
    let out = run(
        &["agent", "status", "--data-dir", &agent.data_dir_str()],
        None,
    );
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    assert!(text.contains(&agent.agent_id()), "{text}");
    assert!(text.contains(&console.url), "{text}");

    // Deleted from the console: status says it is not known and fails.
    let api = Api::new(&console, ADMIN);
    let (status, _) = api
        .send(
            reqwest::Method::DELETE,
            &format!("/agents/{}?force=true", agent.agent_id()),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let out = run(
        &["agent", "status", "--data-dir", &agent.data_dir_str()],
        None,
    );
    assert!(
        !out.status.success(),
        "status must fail for an agent the console does not know"
    );

    // Console gone: not reachable, non-zero exit.
    drop(console);
    let out = run(
        &["agent", "status", "--data-dir", &agent.data_dir_str()],
        None,
    );
    assert!(!out.status.success());

    // No install at all: a clear message.
    let empty = tempfile::tempdir().unwrap();
    let out = run(
        &[
            "agent",
            "status",
            "--data-dir",
            empty.path().to_str().unwrap(),
        ],
        None,
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("agent install"), "{}", stderr(&out));
}
