//! Password writeback and unlock (issue 4) end to end over the JSON API and the CLI: real console,
//! real agents, the real OpenLDAP (ppolicy) and Samba AD testbeds. Success is checked by binding
//! with the new password.

use crate::directory_support::*;
use crate::support::*;
use hybridsync::directory::conn::Connection;
use reqwest::Method;
use serde_json::{json, Value};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(40);

/// A configuration for `domain`, enabled, with its first cycle done.
async fn synced(api: &Api, domain: &str, scope: Option<Value>) -> String {
    let id: String = wait_for("the agent to report its domain", WAIT, || async {
        let (status, body) = api
            .send(
                Method::POST,
                "/configurations",
                Some(json!({"domain": domain})),
            )
            .await;
        (status == 201).then(|| body["id"].as_str().unwrap().to_string())
    })
    .await;
    if let Some(scope) = scope {
        // The DNs are checked through the agent, which may still be starting (its first
        // heartbeat reports the address the console calls).
        let mut last = (0, Value::Null);
        for _ in 0..40 {
            last = api
                .send(
                    Method::PATCH,
                    &format!("/configurations/{id}"),
                    Some(json!({"scope": scope})),
                )
                .await;
            if last.0 == 200 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        assert_eq!(last.0, 200, "{}", last.1);
    }
    run_cycle(api, &id, "enable").await;
    id
}

async fn user_id(api: &Api, upn: &str) -> String {
    let (_, body) = api.get(&format!("/users?q={upn}")).await;
    body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["user_principal_name"] == upn)
        .unwrap_or_else(|| panic!("{upn} not synced: {body}"))["id"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn reset(api: &Api, id: &str, password: &str) -> (u16, Value) {
    api.send(
        Method::POST,
        &format!("/users/{id}/reset-password"),
        Some(json!({"new_password": password, "must_change_at_next_sign_in": false})),
    )
    .await
}

async fn set_integration(api: &Api, on: bool, unlock: bool) -> (u16, Value) {
    api.send(
        Method::PUT,
        "/password-reset/on-premises-integration",
        Some(json!({"enable_writeback": on, "use_cloud_sync": on, "allow_unlock_without_reset": unlock})),
    )
    .await
}

#[tokio::test]
async fn openldap_reset_policy_unlock_failover_and_refusals() {
    let slapd = Slapd::start_with(true, &[("SLAPD_MIN_LENGTH", "8")]);
    let base = slapd.base_dn().to_string();
    let console = Console::start(FAST);
    let api = Api::new(&console, ADMIN);

    // With no agent, "Write back passwords with cloud sync" cannot be turned on.
    let (_, state) = api.get("/password-reset/on-premises-integration").await;
    assert_eq!(state["agents_detected"], false, "{state}");
    assert_eq!(state["enable_writeback"], false);
    let (status, body) = set_integration(&api, true, false).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("agent"),
        "{body}"
    );

    let token = console.enrollment_token(2);
    let mut first = Agent::install(&console, &token, "ldap-a");
    let mut second = Agent::install(&console, &token, "ldap-b");
    for agent in [&first, &second] {
        connect_created(
            agent,
            "example.test",
            slapd.ldaps_url(),
            slapd.ca_cert(),
            slapd.admin_dn(),
            slapd.admin_password(),
        );
    }
    first.start("1s");
    second.start("1s");
    let config = synced(&api, "example.test", None).await;
    let alice = user_id(&api, "alice@example.test").await;
    let alice_dn = format!("uid=alice,ou=people,{base}");
    let old_password = "password";
    assert!(binds(slapd.ldaps_url(), slapd.ca_cert(), &alice_dn, old_password).await);

    // Writeback off: refused, nothing sent.
    let (status, body) = reset(&api, &alice, "Fresh-Passw0rd-1").await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("writeback is off"),
        "{body}"
    );
    assert!(binds(slapd.ldaps_url(), slapd.ca_cert(), &alice_dn, old_password).await);

    // Readers may look, not change.
    let reader = Api::new(&console, READER);
    assert_eq!(set_integration(&reader, true, true).await.0, 403);
    let (status, _) = set_integration(&api, true, false).await;
    assert_eq!(status, 200);
    assert_eq!(reset(&reader, &alice, "Fresh-Passw0rd-1").await.0, 403);
    let (_, state) = api.get("/password-reset/on-premises-integration").await;
    assert_eq!(state["ok"], true, "{state}");

    // An administrator's reset: the new password binds, the old one no longer does.
    let new_password = "Fresh-Passw0rd-1";
    let (status, body) = reset(&api, &alice, new_password).await;
    assert_eq!(status, 200, "{body}");
    assert!(binds(slapd.ldaps_url(), slapd.ca_cert(), &alice_dn, new_password).await);
    assert!(!binds(slapd.ldaps_url(), slapd.ca_cert(), &alice_dn, old_password).await);

    // The directory's policy (8 characters) refuses a short one, with its reason.
    let (status, body) = reset(&api, &alice, "short").await;
    assert_eq!(status, 422, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("The new password does not meet the on-premises password policy:"),
        "{message}"
    );
    assert_eq!(body["error"]["code"], "password_policy");

    // Unlock after three bad binds, then the right password binds again.
    let carol_dn = format!("uid=carol,ou=people,{base}");
    for _ in 0..3 {
        assert!(!binds(slapd.ldaps_url(), slapd.ca_cert(), &carol_dn, "wrong").await);
    }
    assert!(
        !binds(slapd.ldaps_url(), slapd.ca_cert(), &carol_dn, "password").await,
        "locked out"
    );
    run_cycle(&api, &config, "sync-now").await;
    let carol = user_id(&api, "carol@example.test").await;
    let (_, detail) = api.get(&format!("/users/{carol}")).await;
    assert_eq!(
        detail["locked"], true,
        "the lock state is visible: {detail}"
    );
    let (status, body) = api
        .send(Method::POST, &format!("/users/{carol}/unlock"), None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["locked"], false);
    assert!(binds(slapd.ldaps_url(), slapd.ca_cert(), &carol_dn, "password").await);
    let (_, detail) = api.get(&format!("/users/{carol}")).await;
    assert_eq!(detail["locked"], false, "{detail}");

    // "Must change at next sign-in" sets pwdReset; a plain reset clears it again.
    let (status, body) = api
        .send(
            Method::POST,
            &format!("/users/{alice}/reset-password"),
            Some(json!({"new_password": "Temp-Passw0rd-9", "must_change_at_next_sign_in": true})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let mut admin = Connection::bind_new(
        &target(slapd.ldaps_url(), slapd.ca_cert()),
        slapd.admin_dn(),
        slapd.admin_password(),
    )
    .await
    .unwrap();
    let pwd_reset =
        |e: Option<ldap3::SearchEntry>| e.and_then(|e| e.attrs.get("pwdReset").cloned());
    let entry = admin.read(&alice_dn, &["pwdReset"], "read").await.unwrap();
    assert_eq!(pwd_reset(entry), Some(vec!["TRUE".to_string()]));
    let (status, body) = reset(&api, &alice, new_password).await;
    assert_eq!(status, 200, "{body}");
    let entry = admin.read(&alice_dn, &["pwdReset"], "read").await.unwrap();
    assert_eq!(pwd_reset(entry), None);

    // The agent that would serve first is killed: the next one does it.
    let (_, agents) = api.get("/agents").await;
    assert_eq!(agents["total"], 2);
    first.kill();
    let (status, body) = reset(&api, &alice, "Second-Passw0rd-2").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        binds(
            slapd.ldaps_url(),
            slapd.ca_cert(),
            &alice_dn,
            "Second-Passw0rd-2"
        )
        .await
    );

    // All agents down: a clear error, well within the 90 s deadline.
    second.kill();
    let started = std::time::Instant::now();
    let (status, body) = reset(&api, &alice, "Third-Passw0rd-3").await;
    assert!(started.elapsed() < Duration::from_secs(90));
    assert!(matches!(status, 502 | 503), "{status} {body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("example.test"), "{message}");
    assert!(
        binds(
            slapd.ldaps_url(),
            slapd.ca_cert(),
            &alice_dn,
            "Second-Passw0rd-2"
        )
        .await
    );

    // Every reset and unlock is audited, and no password is anywhere in the console's database.
    let (_, audit) = api.get("/audit-log?limit=500").await;
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(
        actions
            .iter()
            .filter(|a| **a == "user.password_reset")
            .count()
            >= 5,
        "{actions:?}"
    );
    assert!(actions.contains(&"user.unlock"));
    assert!(actions.contains(&"password_reset.on_premises_integration"));
    let db_bytes = std::fs::read(console.data_dir().join("hybridsync.sqlite3")).unwrap();
    let wal = std::fs::read(console.data_dir().join("hybridsync.sqlite3-wal")).unwrap_or_default();
    for secret in [
        new_password,
        "Second-Passw0rd-2",
        "Third-Passw0rd-3",
        "short",
    ] {
        let needle = secret.as_bytes();
        for bytes in [&db_bytes, &wal] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "{secret} stored"
            );
        }
    }
    let log = console.drain_output().join("\n");
    assert!(!log.contains("Second-Passw0rd-2") && !log.contains(new_password));
}

#[tokio::test]
async fn writeback_cli_get_and_set() {
    let console = Console::start(FAST);
    let token = console.api_token(ADMIN);
    let mut agent = Agent::install(&console, &console.enrollment_token(1), "cli-agent");
    agent.start("1s");
    let api = Api::new(&console, ADMIN);
    wait_for("the agent", WAIT, || async {
        api.agent(&agent.agent_id()).await
    })
    .await;
    let set = run(
        &[
            "writeback",
            "set",
            "--console",
            &console.url,
            "--api-token-stdin",
            "--enable",
            "true",
        ],
        Some(&token),
    );
    assert!(set.status.success(), "{}", stderr(&set));
    assert!(
        stdout(&set).contains("Write back passwords with cloud sync: true"),
        "{}",
        stdout(&set)
    );
    let get = std::process::Command::new(bin())
        .args(["writeback", "get", "--console", &console.url])
        .env("HYBRIDSYNC_API_TOKEN", &token)
        .output()
        .unwrap();
    assert!(get.status.success(), "{}", stderr(&get));
    assert!(stdout(&get).contains("Enable password write back for synced users: true"));
    let (_, state) = api.get("/password-reset/on-premises-integration").await;
    assert_eq!(state["use_cloud_sync"], true);
    // No token: a message that says where to get one.
    let none = std::process::Command::new(bin())
        .args(["writeback", "get", "--console", &console.url])
        .env_remove("HYBRIDSYNC_API_TOKEN")
        .output()
        .unwrap();
    assert!(!none.status.success());
    assert!(
        stderr(&none).contains("create-api-token"),
        "{}",
        stderr(&none)
    );
}

#[tokio::test]
async fn active_directory_reset_policy_and_unlock() {
    let ad = samba();
    let base = ad.base_dn().to_string();
    let mut admin = Connection::bind_new(
        &target(ad.ldaps_url(), ad.ca_cert()),
        ad.admin(),
        ad.admin_password(),
    )
    .await
    .unwrap();
    let ou = format!("OU=Writeback{},{base}", std::process::id());
    let attr = |name: &str, values: &[&str]| {
        (
            name.as_bytes().to_vec(),
            values
                .iter()
                .map(|v| v.as_bytes().to_vec())
                .collect::<std::collections::HashSet<_>>(),
        )
    };
    admin
        .add(
            &ou,
            vec![attr("objectClass", &["organizationalUnit"])],
            "add ou",
        )
        .await
        .unwrap();
    let gina = format!("CN=Gina Green,{ou}");
    let pwd: Vec<u8> = "\"Gina-Passw0rd-1\""
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect();
    admin
        .add(
            &gina,
            vec![
                attr(
                    "objectClass",
                    &["top", "person", "organizationalPerson", "user"],
                ),
                attr("sAMAccountName", &["gina.wb"]),
                attr("userPrincipalName", &["gina.wb@corp.example.test"]),
                attr("displayName", &["Gina Green"]),
                (
                    b"unicodePwd".to_vec(),
                    std::collections::HashSet::from([pwd]),
                ),
                attr("userAccountControl", &["512"]),
            ],
            "add gina",
        )
        .await
        .unwrap();
    // Lockout for Gina only (a fine-grained password policy), so other tests' bad binds on this
    // shared DC lock nobody out.
    let conf = ad.var("SAMBA_CONF").to_string();
    let pso = format!("wbpso{}", std::process::id());
    for args in [
        vec![
            "domain",
            "passwordsettings",
            "pso",
            "create",
            &pso,
            "1",
            "--account-lockout-threshold=3",
            "--min-pwd-age=0",
            "--account-lockout-duration=30",
            "--reset-account-lockout-after=30",
            "-s",
            &conf,
        ],
        vec![
            "domain",
            "passwordsettings",
            "pso",
            "apply",
            &pso,
            "gina.wb",
            "-s",
            &conf,
        ],
    ] {
        let out = std::process::Command::new("samba-tool")
            .args(&args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "samba-tool {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let console = Console::start(FAST);
    let api = Api::new(&console, ADMIN);
    let mut agent = Agent::install(&console, &console.enrollment_token(1), "dc-wb");
    let domain = ad.var("AD_REALM").to_lowercase();
    connect_created(
        &agent,
        &domain,
        ad.ldaps_url(),
        ad.ca_cert(),
        ad.admin(),
        ad.admin_password(),
    );
    agent.start("1s");
    let config = synced(
        &api,
        &domain,
        Some(json!({"mode": "ous", "entries": [{"dn": ou}]})),
    )
    .await;
    assert_eq!(set_integration(&api, true, true).await.0, 200);
    let id = user_id(&api, "gina.wb@corp.example.test").await;

    let (status, body) = reset(&api, &id, "Gina-Reset-Passw0rd-2").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        binds(
            ad.ldaps_url(),
            ad.ca_cert(),
            "gina.wb@corp.example.test",
            "Gina-Reset-Passw0rd-2"
        )
        .await
    );

    let (status, body) = reset(&api, &id, "a1").await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("The new password does not meet the on-premises password policy:"),
        "{body}"
    );

    for _ in 0..3 {
        assert!(
            !binds(
                ad.ldaps_url(),
                ad.ca_cert(),
                "gina.wb@corp.example.test",
                "wrong"
            )
            .await
        );
    }
    assert!(
        !binds(
            ad.ldaps_url(),
            ad.ca_cert(),
            "gina.wb@corp.example.test",
            "Gina-Reset-Passw0rd-2"
        )
        .await,
        "locked out"
    );
    run_cycle(&api, &config, "sync-now").await;
    let (_, detail) = api.get(&format!("/users/{id}")).await;
    assert_eq!(detail["locked"], true, "{detail}");
    let (status, body) = api
        .send(Method::POST, &format!("/users/{id}/unlock"), None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        binds(
            ad.ldaps_url(),
            ad.ca_cert(),
            "gina.wb@corp.example.test",
            "Gina-Reset-Passw0rd-2"
        )
        .await
    );

    // A user's own change at /my: no hash is synced from AD, so the agent checks the password with
    // a bind; the change deletes the old unicodePwd and adds the new one.
    let (status, _) = set_integration(&api, true, true).await;
    assert_eq!(status, 200);
    let me = Browser::new(&console);
    let (_, html) = me.get("/my").await;
    let (status, location, _) = me
        .post(
            "/my",
            &[
                ("csrf", &csrf_of(&html)),
                ("upn", "gina.wb@corp.example.test"),
                ("password", "Gina-Reset-Passw0rd-2"),
            ],
        )
        .await;
    assert_eq!((status, location.as_str()), (303, "/my/account"));
    let (_, html) = me.get("/my/account").await;
    let (status, _, page) = me
        .post(
            "/my/account/password",
            &[
                ("csrf", &csrf_of(&html)),
                ("current_password", "Gina-Reset-Passw0rd-2"),
                ("new_password", "Gina-Own-Passw0rd-3"),
                ("confirm_password", "Gina-Own-Passw0rd-3"),
            ],
        )
        .await;
    assert_eq!(status, 200, "{page}");
    assert!(
        binds(
            ad.ldaps_url(),
            ad.ca_cert(),
            "gina.wb@corp.example.test",
            "Gina-Own-Passw0rd-3"
        )
        .await
    );
    assert!(
        !binds(
            ad.ldaps_url(),
            ad.ca_cert(),
            "gina.wb@corp.example.test",
            "Gina-Reset-Passw0rd-2"
        )
        .await
    );

    // "Must change at next sign-in": pwdLastSet=0.
    let (status, body) = api
        .send(
            Method::POST,
            &format!("/users/{id}/reset-password"),
            Some(json!({"new_password": "Gina-Temp-Passw0rd-4", "must_change_at_next_sign_in": true})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let entry = admin
        .read(&gina, &["pwdLastSet"], "read pwdLastSet")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(entry.attrs["pwdLastSet"], vec!["0".to_string()]);
}
