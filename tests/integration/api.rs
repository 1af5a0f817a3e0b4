//! The JSON API: bearer tokens, roles, paging, errors as `{"error":{"code","message"}}`.

use crate::support::*;
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn roles_paging_errors_and_audit() {
    let console = Console::start(&[]);
    let admin = Api::new(&console, ADMIN);
    let reader = Api::new(&console, READER);

    // No or a wrong token: 401 with a JSON error that says what to do.
    let r = reqwest::get(format!("{}/api/v1/agents", console.url))
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("create-api-token"),
        "{body}"
    );
    let bogus = Api {
        token: "hsapi_bogus".into(),
        ..Api::new(&console, READER)
    };
    assert_eq!(bogus.get("/agents").await.0, 401);

    // A reader reads but does not change.
    assert_eq!(reader.get("/agents").await.0, 200);
    assert_eq!(reader.get("/enrollment-tokens").await.0, 200);
    let (status, body) = reader
        .send(Method::POST, "/enrollment-tokens", Some(json!({})))
        .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "forbidden");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("Global Reader"));

    // Create three tokens and page through them.
    for uses in [1, 2, 3] {
        let (status, body) = admin
            .send(
                Method::POST,
                "/enrollment-tokens",
                Some(json!({"max_uses": uses, "expires_in": "2h"})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        assert!(body["token"].as_str().unwrap().starts_with("hset_"));
        assert_eq!(body["uses_left"], uses);
    }
    let (_, page1) = admin.get("/enrollment-tokens?limit=2").await;
    assert_eq!(page1["total"], 3);
    assert_eq!(page1["items"].as_array().unwrap().len(), 2);
    let (_, page2) = admin.get("/enrollment-tokens?limit=2&offset=2").await;
    assert_eq!(page2["items"].as_array().unwrap().len(), 1);
    assert!(
        page1["items"][0].get("token").is_none(),
        "tokens are never listed in plain form"
    );

    // Bad input: each with a code and a message.
    let (status, body) = admin
        .send(
            Method::POST,
            "/enrollment-tokens",
            Some(json!({"expires_in": "forever"})),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("invalid duration"));
    let (status, body) = admin
        .send(
            Method::POST,
            "/enrollment-tokens",
            Some(json!({"max_uses": 0})),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    let (status, body) = admin
        .send(
            Method::POST,
            "/enrollment-tokens",
            Some(json!({"surprise": true})),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("surprise"));
    let r = admin
        .http
        .post(format!("{}/enrollment-tokens", admin.base))
        .bearer_auth(&admin.token)
        .header("content-type", "application/json")
        .body("{\"max_uses\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let (status, body) = admin.get("/agents?status=sleeping").await;
    assert_eq!(status, 400);
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("active, inactive or all"));
    let (status, _) = admin.get("/agents?limit=100000").await;
    assert_eq!(status, 400);
    let (status, body) = admin.get("/agents/does-not-exist").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let (status, body) = admin.get("/no/such/route").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let (status, _) = admin
        .send(Method::DELETE, "/enrollment-tokens/999", None)
        .await;
    assert_eq!(status, 404);

    // The audit log names who did what, and never the token.
    let (_, audit) = reader.get("/audit-log?limit=100").await;
    let created: Vec<_> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "enrollment_token.create")
        .collect();
    assert_eq!(created.len(), 3);
    assert_eq!(created[0]["actor"], ADMIN);
    assert!(created[0]["after"]["max_uses"].is_number());
    assert!(
        !audit.to_string().contains("hset_"),
        "no token in the audit log"
    );
}

#[tokio::test]
async fn secrets_are_stored_only_hashed() {
    let console = Console::start(&[]);
    let token = console.enrollment_token(1);
    let api_token = console.api_token(ADMIN);
    let agent = Agent::install(&console, &token, "hash01");
    let credential: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(agent.dir.path().join("credential.json")).unwrap(),
    )
    .unwrap();
    let agent_credential = credential["agent_credential"]
        .as_str()
        .expect("agent_credential")
        .to_string();
    let (_, dir) = console.stop();
    let mut raw = Vec::new();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "key") {
            raw.extend(std::fs::read(&path).unwrap());
        }
    }
    let raw = String::from_utf8_lossy(&raw);
    for secret in [
        token.as_str(),
        api_token.as_str(),
        agent_credential.as_str(),
        PASSWORD,
    ] {
        assert!(
            !raw.contains(secret),
            "a secret is stored in plain form in the database"
        );
    }
    assert!(
        raw.contains("hash01"),
        "the scan must see the database contents"
    );
}
