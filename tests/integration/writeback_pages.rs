//! Password writeback on the pages (issue 4): Password reset › On-premises integration, Reset
//! password and Unlock on a user's page, and the self-service portal `/my` — over HTTP with the
//! `Browser` client, and in a real Chromium. Real console, real agents, real OpenLDAP (ppolicy):
//! success is checked by binding with the new password.

use crate::directory_support::*;
use crate::support::*;
use reqwest::Method;
use serde_json::{json, Value};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(40);
const PAGE: &str = "/password-reset/on-premises-integration";

fn has(html: &str, selector: &str) -> bool {
    !texts(html, selector).is_empty()
}

fn text(html: &str, selector: &str) -> String {
    texts(html, selector).join(" ")
}

async fn binds(slapd: &Slapd, dn: &str, password: &str) -> bool {
    crate::directory_support::binds(slapd.ldaps_url(), slapd.ca_cert(), dn, password).await
}

/// An admin-like browser, signed in.
async fn signed_in(console: &Console, username: &str) -> Browser {
    let b = Browser::new(console);
    assert_eq!(b.sign_in(username, PASSWORD).await, 303);
    b
}

/// Saves the three options through the screen's form.
async fn save(b: &Browser, enable: bool, cloud: bool, unlock: bool) -> (u16, String, String) {
    let (_, html) = b.get(PAGE).await;
    let csrf = csrf_of(&html);
    let mut form = vec![("csrf", csrf.as_str())];
    if enable {
        form.push(("enable_writeback", "1"));
    }
    if cloud {
        form.push(("use_cloud_sync", "1"));
    }
    if unlock {
        form.push(("allow_unlock_without_reset", "1"));
    }
    b.post(PAGE, &form).await
}

fn checked(html: &str) -> [bool; 3] {
    [
        "enable_writeback",
        "use_cloud_sync",
        "allow_unlock_without_reset",
    ]
    .map(|name| has(html, &format!("input[name={name}][checked]")))
}

#[tokio::test]
async fn integration_screen_offers_cloud_sync_only_with_agents_and_keeps_its_options() {
    let console = Console::start(FAST);
    let admin = signed_in(&console, ADMIN).await;

    // No agent: the cloud sync option is absent and the page says why.
    let (status, html) = admin.get(PAGE).await;
    assert_eq!(status, 200);
    for label in [
        "Enable password write back for synced users",
        "Allow users to unlock accounts without resetting their password",
    ] {
        assert!(text(&html, "#integration-form").contains(label), "{label}");
    }
    assert!(!has(&html, "input[name=use_cloud_sync]"), "{html}");
    assert!(
        text(&html, "#cloud-sync-unavailable")
            .contains("offered only when provisioning agents are detected"),
        "{html}"
    );
    assert_eq!(
        texts(&html, "#integration-form button[type=submit]"),
        ["Save"]
    );
    assert!(text(&html, "#integration-message").contains("Password writeback is off"));
    assert!(has(&html, "#integration-state.bad"));

    // A forged "cloud sync" without an agent: refused with the reason, the form shown again.
    let (status, _, html) = save(&admin, true, true, false).await;
    assert_eq!(status, 422, "{html}");
    assert!(
        text(&html, "#error").contains("needs a provisioning agent"),
        "{html}"
    );

    // Without the form's token: refused.
    let (status, _, _) = admin.post(PAGE, &[("enable_writeback", "1")]).await;
    assert_eq!(status, 403);

    // An agent exists (enrolled, not even running): the option is offered.
    let _agent = Agent::install(&console, &console.enrollment_token(1), "wb-dc01");
    let (_, html) = admin.get(PAGE).await;
    assert!(has(&html, "input[name=use_cloud_sync]"), "{html}");
    assert!(!has(&html, "#cloud-sync-unavailable"));

    // Save, reload: kept.
    let (status, location, _) = save(&admin, true, true, true).await;
    assert_eq!(
        (status, location.as_str()),
        (303, "/password-reset/on-premises-integration?saved=1")
    );
    let (_, html) = admin.get(&location).await;
    assert_eq!(text(&html, "#flash"), "Your changes were saved.");
    assert_eq!(checked(&html), [true, true, true]);
    // No domain is synced: nothing lacks an agent, writeback is on: green.
    assert!(has(&html, "#integration-state.ok"), "{html}");
    assert!(text(&html, "#updated").contains(ADMIN));

    // A Hybrid Identity Administrator changes it too; a reload shows exactly that.
    let hia = signed_in(&console, HIA).await;
    let (status, _, _) = save(&hia, false, false, true).await;
    assert_eq!(status, 303);
    let (_, html) = admin.get(PAGE).await;
    assert_eq!(checked(&html), [false, false, true]);
    assert!(has(&html, "#integration-state.bad"));

    // A reader sees the state and disabled options, no Save, and cannot post.
    let reader = signed_in(&console, READER).await;
    let (status, html) = reader.get(PAGE).await;
    assert_eq!(status, 200);
    assert!(has(&html, "#integration-state"));
    assert_eq!(
        texts(
            &html,
            "#integration-form input[type=checkbox]:not([disabled])"
        )
        .len(),
        0
    );
    assert!(!has(&html, "#integration-form button"));
    let csrf = csrf_of(&html);
    let (status, _, html) = reader
        .post(PAGE, &[("csrf", &csrf), ("enable_writeback", "1")])
        .await;
    assert_eq!(status, 403);
    assert!(html.contains("Global Reader"), "{html}");
    let (_, html) = admin.get(PAGE).await;
    assert_eq!(
        checked(&html),
        [false, false, true],
        "the reader changed nothing"
    );

    // Every save is audited.
    let (_, audit) = admin.get("/audit-logs").await;
    assert!(audit.contains("password_reset.on_premises_integration"));
}

/// A configuration with password hash sync for the agent's domain, enabled, first cycle done.
async fn synced_with_hashes(api: &Api, domain: &str) -> String {
    let id: String = wait_for("the agent to report its domain", WAIT, || async {
        let (status, body) = api
            .send(
                Method::POST,
                "/configurations",
                Some(json!({"domain": domain, "password_hash_sync": true})),
            )
            .await;
        (status == 201).then(|| body["id"].as_str().unwrap().to_string())
    })
    .await;
    run_cycle(api, &id, "enable").await;
    id
}

async fn user(api: &Api, upn: &str) -> Value {
    let (_, body) = api.get(&format!("/users?q={upn}")).await;
    body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["user_principal_name"] == upn)
        .unwrap_or_else(|| panic!("{upn} not synced: {body}"))
        .clone()
}

/// A running agent connected to a fresh OpenLDAP (8-character minimum), its domain synced with
/// password hashes.
struct Bed {
    slapd: Slapd,
    console: Console,
    agent: Agent,
    api: Api,
    configuration: String,
}

async fn bed() -> Bed {
    let slapd = Slapd::start_with(true, &[("SLAPD_MIN_LENGTH", "8")]);
    let console = Console::start(FAST);
    let mut agent = Agent::install(&console, &console.enrollment_token(1), "ldap-wb");
    let out = add_directory(
        &agent,
        &[
            "--domain",
            "example.test",
            "--ldap-url",
            slapd.ldaps_url(),
            "--ca-cert",
            slapd.ca_cert(),
            "--admin",
            slapd.admin_dn(),
            "--service-account",
            "create",
        ],
        slapd.admin_password(),
    );
    assert!(out.status.success(), "{}", all_output(&out));
    agent.start("1s");
    let api = Api::new(&console, ADMIN);
    let configuration = synced_with_hashes(&api, "example.test").await;
    Bed {
        slapd,
        console,
        agent,
        api,
        configuration,
    }
}

async fn my_sign_in(b: &Browser, upn: &str, password: &str) -> (u16, String, String) {
    let (status, html) = b.get("/my").await;
    assert_eq!(status, 200);
    let csrf = csrf_of(&html);
    b.post(
        "/my",
        &[("csrf", &csrf), ("upn", upn), ("password", password)],
    )
    .await
}

async fn my_post(b: &Browser, path: &str, fields: &[(&str, &str)]) -> (u16, String) {
    let (status, html) = b.get("/my/account").await;
    assert_eq!(status, 200, "signed in to /my");
    let csrf = csrf_of(&html);
    let mut form = vec![("csrf", csrf.as_str())];
    form.extend_from_slice(fields);
    let (status, _, html) = b.post(path, &form).await;
    (status, html)
}

async fn lock_out(bed: &Bed, dn: &str, password: &str) {
    for _ in 0..3 {
        assert!(!binds(&bed.slapd, dn, "wrong").await);
    }
    assert!(!binds(&bed.slapd, dn, password).await, "locked out");
    run_cycle(&bed.api, &bed.configuration, "sync-now").await;
}

#[tokio::test]
async fn self_service_change_and_unlock_and_admin_reset_and_unlock_against_openldap() {
    let mut bed = bed().await;
    let base = bed.slapd.base_dn().to_string();
    let user_password = bed.slapd.var("LDAP_USER_PASSWORD").to_string();
    let admin = signed_in(&bed.console, ADMIN).await;

    // The screen with a domain and a healthy agent: off, then on and green.
    let (_, html) = admin.get(PAGE).await;
    assert!(has(&html, "input[name=use_cloud_sync]"));
    assert!(has(&html, "#integration-state.bad"));
    assert_eq!(save(&admin, true, true, false).await.0, 303);
    let (_, html) = admin.get(PAGE).await;
    assert!(has(&html, "#integration-state.ok"), "{html}");
    assert!(text(&html, "#integration-domains").contains("example.test"));

    // ---- /my: a user's own change, signed in with the synced {SSHA} hash.
    let alice = user(&bed.api, "alice@example.test").await;
    assert_eq!(alice["password_hash_synced"], true, "{alice}");
    let alice_dn = format!("uid=alice,ou=people,{base}");
    let me = Browser::new(&bed.console);
    let (status, _, html) = my_sign_in(&me, "alice@example.test", "not-her-password").await;
    assert_eq!(status, 401);
    assert_eq!(
        text(&html, "#error"),
        "Wrong user principal name or password."
    );
    let (status, _, html) = my_sign_in(&me, "nobody@example.test", &user_password).await;
    assert_eq!(status, 401, "{html}");
    // A console account is not a synced user.
    let (status, _, _) = my_sign_in(&me, ADMIN, PASSWORD).await;
    assert_eq!(status, 401);
    assert_eq!(
        me.get_location("/my/account").await,
        (303, "/my".to_string())
    );

    let (status, location, _) = my_sign_in(&me, "ALICE@example.test", &user_password).await;
    assert_eq!((status, location.as_str()), (303, "/my/account"));
    let (status, html) = me.get("/my/account").await;
    assert_eq!(status, 200);
    assert_eq!(text(&html, "#my-name"), "Alice Anderson");
    assert_eq!(text(&html, "#locked"), "No");
    assert!(!has(&html, "#my-unlock"));
    // The console's pages are not open to a self-service session.
    assert_eq!(me.get_location("/users").await.0, 303);

    let new_password = "Alice-New-Passw0rd";
    let change = |current: &'static str, new: &'static str, confirm: &'static str| {
        [
            ("current_password", current),
            ("new_password", new),
            ("confirm_password", confirm),
        ]
    };
    let (status, html) = my_post(
        &me,
        "/my/account/password",
        &change("x", "Abcdefgh1", "Abcdefgh2"),
    )
    .await;
    assert_eq!(status, 422);
    assert!(text(&html, "#flash").contains("differ"), "{html}");
    let (status, html) = my_post(
        &me,
        "/my/account/password",
        &[
            ("current_password", user_password.as_str()),
            ("new_password", "short"),
            ("confirm_password", "short"),
        ],
    )
    .await;
    assert_eq!(status, 422, "{html}");
    assert!(
        text(&html, "#flash")
            .starts_with("The new password does not meet the on-premises password policy:"),
        "{html}"
    );
    let (status, html) = my_post(
        &me,
        "/my/account/password",
        &change("Wrong-Current-1", new_password, new_password),
    )
    .await;
    assert_eq!(status, 422, "{html}");
    assert_eq!(text(&html, "#flash"), "The current password is wrong.");
    let (status, html) = my_post(
        &me,
        "/my/account/password",
        &[
            ("current_password", user_password.as_str()),
            ("new_password", new_password),
            ("confirm_password", new_password),
        ],
    )
    .await;
    assert_eq!(status, 200, "{html}");
    assert!(
        text(&html, "#flash").starts_with("Your password was changed"),
        "{html}"
    );
    assert!(!html.contains(new_password), "no password echoed");
    assert!(binds(&bed.slapd, &alice_dn, new_password).await);
    assert!(!binds(&bed.slapd, &alice_dn, &user_password).await);

    // Sign out; the old password (its hash is forgotten) no longer signs in, the new one does,
    // checked by the agent until the next cycle brings the new hash.
    let (status, html) = me.get("/my/account").await;
    assert_eq!(status, 200);
    let (status, location, _) = me.post("/my/logout", &[("csrf", &csrf_of(&html))]).await;
    assert_eq!((status, location.as_str()), (303, "/my?signed_out=1"));
    assert_eq!(me.get_location("/my/account").await.0, 303);
    let (status, _, _) = my_sign_in(&me, "alice@example.test", &user_password).await;
    assert_eq!(status, 401);
    let (status, location, _) = my_sign_in(&me, "alice@example.test", new_password).await;
    assert_eq!((status, location.as_str()), (303, "/my/account"));

    // ---- /my: unlock, refused while not allowed, then allowed.
    let carol_dn = format!("uid=carol,ou=people,{base}");
    lock_out(&bed, &carol_dn, &user_password).await;
    let carol_me = Browser::new(&bed.console);
    let (status, location, _) = my_sign_in(&carol_me, "carol@example.test", &user_password).await;
    assert_eq!(
        (status, location.as_str()),
        (303, "/my/account"),
        "a locked user signs in with the synced hash"
    );
    let (_, html) = carol_me.get("/my/account").await;
    assert_eq!(text(&html, "#locked"), "Yes");
    assert!(!has(&html, "#my-unlock"), "unlock is not allowed yet");
    let (status, html) = my_post(&carol_me, "/my/account/unlock", &[]).await;
    assert_eq!(status, 403);
    assert!(text(&html, "#flash").contains("may not unlock"), "{html}");
    assert!(
        !binds(&bed.slapd, &carol_dn, &user_password).await,
        "still locked"
    );
    assert_eq!(save(&admin, true, true, true).await.0, 303);
    let (_, html) = carol_me.get("/my/account").await;
    assert!(has(&html, "#my-unlock"), "{html}");
    let (status, html) = my_post(&carol_me, "/my/account/unlock", &[]).await;
    assert_eq!(status, 200, "{html}");
    assert!(
        text(&html, "#flash").starts_with("Your account is unlocked"),
        "{html}"
    );
    assert_eq!(text(&html, "#locked"), "No");
    assert!(binds(&bed.slapd, &carol_dn, &user_password).await);

    // ---- The Users page: lock state, Reset password and Unlock for managers only.
    let bob = user(&bed.api, "bob@example.test").await;
    let bob_id = bob["id"].as_str().unwrap().to_string();
    let bob_page = format!("/users/{bob_id}");
    let bob_dn = format!("uid=bob,ou=people,{base}");
    let reader = signed_in(&bed.console, READER).await;
    let (_, html) = reader.get(&bob_page).await;
    assert_eq!(text(&html, "#locked"), "No");
    assert!(!has(&html, "#reset-password-form") && !has(&html, "#unlock-form"));
    let (status, _, _) = reader
        .post(
            &format!("{bob_page}/reset-password"),
            &[
                ("csrf", &csrf_of(&html)),
                ("new_password", "Reader-Passw0rd"),
                ("confirm_password", "Reader-Passw0rd"),
            ],
        )
        .await;
    assert_eq!(status, 403);

    let (_, html) = admin.get(&bob_page).await;
    assert!(text(&html, "#reset-password-form")
        .contains("Require this user to change their password when they next sign in"));
    let csrf = csrf_of(&html);
    let reset = |new: &'static str, confirm: &'static str| {
        let csrf = csrf.clone();
        let admin = &admin;
        let path = format!("{bob_page}/reset-password");
        async move {
            admin
                .post(
                    &path,
                    &[
                        ("csrf", csrf.as_str()),
                        ("new_password", new),
                        ("confirm_password", confirm),
                    ],
                )
                .await
        }
    };
    let (status, _, html) = reset("Bob-Reset-Passw0rd", "Bob-Reset-Passw0rd-typo").await;
    assert_eq!(status, 422);
    assert!(text(&html, "#writeback-result").contains("differ"));
    let (status, _, html) = reset("short", "short").await;
    assert_eq!(status, 422);
    assert!(
        text(&html, "#writeback-result")
            .starts_with("The new password does not meet the on-premises password policy:"),
        "{html}"
    );
    let (status, _, html) = reset("Bob-Reset-Passw0rd", "Bob-Reset-Passw0rd").await;
    assert_eq!(status, 200, "{html}");
    assert_eq!(
        text(&html, "#writeback-result"),
        "The password of bob@example.test was reset on-premises by agent ldap-wb."
    );
    assert!(!html.contains("Bob-Reset-Passw0rd"), "no password echoed");
    assert!(binds(&bed.slapd, &bob_dn, "Bob-Reset-Passw0rd").await);

    lock_out(&bed, &bob_dn, "Bob-Reset-Passw0rd").await;
    let (_, html) = admin.get(&bob_page).await;
    assert_eq!(text(&html, "#locked"), "Yes");
    let (status, _, html) = admin
        .post(&format!("{bob_page}/unlock"), &[("csrf", &csrf_of(&html))])
        .await;
    assert_eq!(status, 200, "{html}");
    assert_eq!(
        text(&html, "#writeback-result"),
        "bob@example.test was unlocked on-premises by agent ldap-wb."
    );
    assert_eq!(text(&html, "#locked"), "No");
    assert!(binds(&bed.slapd, &bob_dn, "Bob-Reset-Passw0rd").await);

    // Writeback off: the page says so, nothing is sent.
    assert_eq!(save(&admin, false, false, true).await.0, 303);
    let (status, _, html) = reset("Bob-Other-Passw0rd", "Bob-Other-Passw0rd").await;
    assert_eq!(status, 409);
    assert!(
        text(&html, "#writeback-result").starts_with("Password writeback is off"),
        "{html}"
    );
    assert!(binds(&bed.slapd, &bob_dn, "Bob-Reset-Passw0rd").await);

    // The only agent is down: the page names the domain.
    assert_eq!(save(&admin, true, true, true).await.0, 303);
    bed.agent.kill();
    let (status, _, html) = reset("Bob-Other-Passw0rd", "Bob-Other-Passw0rd").await;
    assert!(matches!(status, 502 | 503), "{status} {html}");
    assert!(
        text(&html, "#writeback-result").contains("example.test"),
        "{html}"
    );

    // Audited; no password in the console's database or log.
    let (_, audit) = bed.api.get("/audit-log?limit=500").await;
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for action in [
        "user.password_change",
        "user.password_reset",
        "user.unlock",
        "user.self_service_sign_in",
    ] {
        assert!(actions.contains(&action), "{action} in {actions:?}");
    }
    let db_bytes = std::fs::read(bed.console.data_dir().join("hybridsync.sqlite3")).unwrap();
    let wal =
        std::fs::read(bed.console.data_dir().join("hybridsync.sqlite3-wal")).unwrap_or_default();
    for secret in [new_password, "Bob-Reset-Passw0rd"] {
        for bytes in [&db_bytes, &wal] {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{secret} stored"
            );
        }
    }
    let log = bed.console.drain_output().join("\n");
    assert!(!log.contains(new_password) && !log.contains("Bob-Reset-Passw0rd"));
}

#[tokio::test]
async fn my_sign_in_is_throttled() {
    let console = Console::start(FAST);
    let me = Browser::new(&console);
    for _ in 0..5 {
        let (status, _, _) = my_sign_in(&me, "ann@example.test", "guess").await;
        assert_eq!(status, 401);
    }
    let (status, _, html) = my_sign_in(&me, "ann@example.test", "guess").await;
    assert_eq!(status, 429);
    assert!(
        text(&html, "#error").contains("Too many failed sign-ins"),
        "{html}"
    );
}

// ---------------------------------------------------------------------------------------------
// Real Chromium

mod chromium {
    use super::*;
    use fantoccini::{Client, Locator};

    pub use crate::chromium_support::start;

    pub async fn fill(
        c: &Client,
        selector: &str,
        value: &str,
    ) -> Result<(), fantoccini::error::CmdError> {
        let e = c.find(Locator::Css(selector)).await?;
        e.clear().await?;
        e.send_keys(value).await
    }

    pub async fn click(c: &Client, selector: &str) -> Result<(), fantoccini::error::CmdError> {
        c.find(Locator::Css(selector)).await?.click().await
    }

    pub async fn is_checked(c: &Client, name: &str) -> Result<bool, fantoccini::error::CmdError> {
        Ok(c.find(Locator::Css(&format!("input[name={name}]")))
            .await?
            .prop("checked")
            .await?
            .as_deref()
            == Some("true"))
    }

    pub async fn text_of(
        c: &Client,
        selector: &str,
    ) -> Result<String, fantoccini::error::CmdError> {
        c.wait()
            .at_most(Duration::from_secs(30))
            .for_element(Locator::Css(selector))
            .await?
            .text()
            .await
    }
}

#[tokio::test]
async fn chromium_administrator_toggles_the_three_options() {
    use chromium::*;
    use fantoccini::Locator;
    let console = Console::start(FAST);
    let (_driver, c) = start().await;
    let result = async {
        c.goto(&format!("{}{PAGE}", console.url)).await?;
        fill(&c, "input[name=username]", ADMIN).await?;
        fill(&c, "input[name=password]", PASSWORD).await?;
        click(&c, "button[type=submit]").await?;
        c.wait()
            .for_element(Locator::Css("#integration-form"))
            .await?;
        assert_eq!(c.current_url().await?.path(), PAGE);

        // No agent: no cloud sync option, and why.
        assert!(c
            .find(Locator::Css("input[name=use_cloud_sync]"))
            .await
            .is_err());
        assert!(text_of(&c, "#cloud-sync-unavailable")
            .await?
            .contains("provisioning agents are detected"));
        click(&c, "input[name=enable_writeback]").await?;
        click(&c, "input[name=allow_unlock_without_reset]").await?;
        click(&c, "#integration-form button[type=submit]").await?;
        assert_eq!(text_of(&c, "#flash").await?, "Your changes were saved.");
        c.refresh().await?;
        c.wait()
            .for_element(Locator::Css("#integration-form"))
            .await?;
        assert!(is_checked(&c, "enable_writeback").await?);
        assert!(is_checked(&c, "allow_unlock_without_reset").await?);

        // An agent is installed: the option appears; turn it on, turn unlock off.
        let _agent = Agent::install(&console, &console.enrollment_token(1), "chromium-dc");
        c.goto(&format!("{}{PAGE}", console.url)).await?;
        c.wait()
            .for_element(Locator::Css("input[name=use_cloud_sync]"))
            .await?;
        assert!(!is_checked(&c, "use_cloud_sync").await?);
        click(&c, "input[name=use_cloud_sync]").await?;
        click(&c, "input[name=allow_unlock_without_reset]").await?;
        click(&c, "#integration-form button[type=submit]").await?;
        assert_eq!(text_of(&c, "#flash").await?, "Your changes were saved.");
        c.goto(&format!("{}{PAGE}", console.url)).await?;
        c.wait()
            .for_element(Locator::Css("#integration-form"))
            .await?;
        assert!(is_checked(&c, "enable_writeback").await?);
        assert!(is_checked(&c, "use_cloud_sync").await?);
        assert!(!is_checked(&c, "allow_unlock_without_reset").await?);
        assert!(c.find(Locator::Css("#integration-state.ok")).await.is_ok());
        let shot = c.screenshot().await?;
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
        std::fs::write(dir.join("on-premises-integration-page.png"), shot).unwrap();
        Ok::<_, fantoccini::error::CmdError>(())
    }
    .await;
    let _ = c.close().await;
    result.expect("browser steps");
}

#[tokio::test]
async fn chromium_user_changes_a_password_at_my() {
    use chromium::*;
    use fantoccini::Locator;
    let bed = bed().await;
    let admin = signed_in(&bed.console, ADMIN).await;
    assert_eq!(save(&admin, true, true, false).await.0, 303);
    let user_password = bed.slapd.var("LDAP_USER_PASSWORD").to_string();
    let dn = format!("uid=alice,ou=people,{}", bed.slapd.base_dn());
    let (_driver, c) = start().await;
    let result = async {
        c.goto(&format!("{}/my", bed.console.url)).await?;
        fill(&c, "input[name=upn]", "alice@example.test").await?;
        fill(&c, "input[name=password]", &user_password).await?;
        click(&c, "#my-sign-in button[type=submit]").await?;
        assert_eq!(text_of(&c, "#my-name").await?, "Alice Anderson");
        assert_eq!(c.current_url().await?.path(), "/my/account");
        fill(&c, "input[name=current_password]", &user_password).await?;
        fill(&c, "input[name=new_password]", "Chromium-Passw0rd-1").await?;
        fill(&c, "input[name=confirm_password]", "Chromium-Passw0rd-1").await?;
        click(&c, "#my-change-password button[type=submit]").await?;
        let flash = text_of(&c, "#flash").await?;
        assert!(flash.starts_with("Your password was changed"), "{flash}");
        let shot = c.screenshot().await?;
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
        std::fs::write(dir.join("my-account-page.png"), shot).unwrap();
        click(&c, "#my-sign-out button[type=submit]").await?;
        c.wait().for_element(Locator::Css("#my-sign-in")).await?;
        Ok::<_, fantoccini::error::CmdError>(())
    }
    .await;
    let _ = c.close().await;
    result.expect("browser steps");
    assert!(binds(&bed.slapd, &dn, "Chromium-Passw0rd-1").await);
    assert!(!binds(&bed.slapd, &dn, &user_password).await);
}
