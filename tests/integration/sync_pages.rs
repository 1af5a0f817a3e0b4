//! The synchronization pages over HTTP: Configurations (list, New configuration, overview and its
//! operations, Scoping filters, Attribute mapping with Test expression, Properties, Provision on
//! demand, Delete configuration), Users, Groups and Provisioning logs; roles and CSRF. Domains are
//! reported and cycles run through the agents' own sync API with an enrolled agent's credential.

use crate::support::*;
use serde_json::{json, Value};

const DOMAIN: &str = "corp.example.test";
const BASE_DN: &str = "dc=corp,dc=example,dc=test";

fn agent_credential(agent: &Agent) -> String {
    let credential: Value = serde_json::from_str(
        &std::fs::read_to_string(agent.dir.path().join("credential.json")).unwrap(),
    )
    .unwrap();
    credential["agent_credential"].as_str().unwrap().to_string()
}

async fn agent_post(console: &Console, credential: &str, path: &str, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{}/agent-api/v1{path}", console.url))
        .bearer_auth(credential)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// The agent's sync loop asking for its lease: reports `domains` (OpenLDAP) to the console.
async fn lease(console: &Console, credential: &str, domains: &[&str]) -> Value {
    let domains: Vec<Value> = domains
        .iter()
        .map(|d| json!({"domain": d, "dialect": "openldap", "base_dn": BASE_DN}))
        .collect();
    let (status, body) = agent_post(
        console,
        credential,
        "/sync/lease",
        // A long lease, so the agent still holds the domain when the pages are read.
        json!({"domains": domains, "poll_interval_ms": 60_000}),
    )
    .await;
    assert_eq!(status, 200, "lease: {body}");
    body
}

/// The agent's connected directories (what `agent add-directory` reports): an active agent
/// serving a domain makes it selectable in New configuration.
async fn connect(console: &Console, credential: &str, domains: &[&str]) {
    let domains: Vec<Value> = domains
        .iter()
        .map(|d| {
            json!({"domain": d, "dialect": "openldap", "base_dn": BASE_DN,
                   "ldap_url": "ldaps://127.0.0.1:1", "service_account": "cn=provAgentSvc"})
        })
        .collect();
    let (status, body) = agent_post(
        console,
        credential,
        "/domains",
        json!({ "domains": domains }),
    )
    .await;
    assert_eq!(status, 200, "domains: {body}");
}

/// Values of one attribute of the elements matching a CSS selector.
fn attrs(html: &str, selector: &str, attr: &str) -> Vec<String> {
    let doc = scraper::Html::parse_document(html);
    let sel = scraper::Selector::parse(selector).unwrap();
    doc.select(&sel)
        .filter_map(|e| e.value().attr(attr).map(str::to_string))
        .collect()
}

/// The CSP forbids inline script and style: no page may need them.
fn assert_no_inline(page: &str, html: &str) {
    let doc = scraper::Html::parse_document(html);
    let all = scraper::Selector::parse("*").unwrap();
    for e in doc.select(&all) {
        assert!(
            e.value().name() != "script" || e.value().attr("src").is_some(),
            "{page}: inline <script>"
        );
        for (name, _) in e.value().attrs() {
            assert!(
                !name.starts_with("on") && name != "style",
                "{page}: inline {name}= on <{}>",
                e.value().name()
            );
        }
    }
}

fn count(html: &str, selector: &str) -> usize {
    texts(html, selector).len()
}

/// POSTs a form with the page's CSRF token added.
async fn submit(
    browser: &Browser,
    csrf: &str,
    path: &str,
    fields: &[(&str, &str)],
) -> (u16, String, String) {
    let mut all = vec![("csrf", csrf)];
    all.extend_from_slice(fields);
    browser.post(path, &all).await
}

#[tokio::test]
async fn configuration_pages_create_edit_operate_and_delete() {
    let console = Console::start(&[]);
    let admin = Browser::new(&console);
    assert_eq!(admin.sign_in(ADMIN, PASSWORD).await, 303);

    // No agent reported a directory: the list says why nothing can be created.
    let (status, html) = admin.get("/configurations").await;
    assert_eq!(status, 200);
    assert!(
        texts(&html, ".empty")
            .join(" ")
            .contains("No configurations yet"),
        "{html}"
    );
    let why = texts(&html, "#no-domains").join("");
    assert!(
        why.contains("No agent has reported a directory yet")
            && why.contains("hybridsync agent add-directory"),
        "{why}"
    );
    assert_eq!(count(&html, "#new-configuration"), 0);

    // An agent reports two domains; it serves (has connected) only one.
    let agent = Agent::install(&console, &console.enrollment_token(1), "corp-dc");
    let credential = agent_credential(&agent);
    let answer = lease(&console, &credential, &[DOMAIN, "branch.example.test"]).await;
    assert_eq!(answer["assignments"][0]["role"], "none", "{answer}");
    connect(&console, &credential, &[DOMAIN]).await;

    let (_, html) = admin.get("/configurations").await;
    let csrf = csrf_of(&html);
    let enabled = attrs(
        &html,
        "#new-configuration select[name=domain] option:not([disabled])",
        "value",
    );
    assert_eq!(enabled, vec![DOMAIN]);
    let disabled = texts(
        &html,
        "#new-configuration select[name=domain] option[disabled]",
    );
    assert_eq!(disabled.len(), 1);
    assert!(
        disabled[0].starts_with("branch.example.test") && disabled[0].contains("no active agent"),
        "{disabled:?}"
    );

    // Create, without and then with the form's CSRF token.
    let (status, _, _) = admin
        .post(
            "/configurations",
            &[("domain", DOMAIN), ("password_hash_sync", "1")],
        )
        .await;
    assert_eq!(status, 403);
    let (status, location, _) = submit(
        &admin,
        &csrf,
        "/configurations",
        &[("domain", DOMAIN), ("password_hash_sync", "1")],
    )
    .await;
    assert_eq!(status, 303);
    let id = location
        .strip_prefix("/configurations/")
        .and_then(|l| l.strip_suffix("?done=created"))
        .unwrap_or_else(|| panic!("redirect to the new configuration: {location}"))
        .to_string();
    let page = format!("/configurations/{id}");
    let (status, html) = admin.get(&location).await;
    assert_eq!(status, 200);
    assert!(texts(&html, "#flash")[0].starts_with("Configuration created."));
    assert_eq!(texts(&html, "h1"), vec![DOMAIN]);
    assert_eq!(texts(&html, "#status-text"), vec!["Not enabled yet"]);
    assert_eq!(count(&html, "#hash-note"), 0, "OpenLDAP: no AD note");
    assert_eq!(
        texts(&html, "#get-started li a"),
        vec![
            "Add scoping filters",
            "Map attributes",
            "Test",
            "View default properties"
        ]
    );
    assert_eq!(
        attrs(&html, "#commands button", "data-operation"),
        vec!["enable", "restart", "preview"]
    );
    // A domain has one configuration; the list no longer offers it.
    let (status, _, html) = submit(&admin, &csrf, "/configurations", &[("domain", DOMAIN)]).await;
    assert_eq!(status, 409);
    assert!(
        texts(&html, ".error-message")[0].contains("already has a configuration"),
        "{html}"
    );
    let (_, html) = admin.get("/configurations").await;
    let row = texts(&html, &format!("tr[data-configuration-id='{id}'] td"));
    assert_eq!(row[0], DOMAIN);
    assert!(row[1].starts_with("NotRun"), "{row:?}");
    assert_eq!(row[2], "never");
    assert_eq!(row[3], "none");
    assert_eq!(
        attrs(&html, "select[name=domain] option:not([disabled])", "value"),
        Vec::<String>::new()
    );

    // Properties: a threshold of 0 is refused with the input kept; then saved.
    let props = format!("{page}/properties");
    let (_, html) = admin.get(&props).await;
    assert_eq!(
        attrs(&html, "input[name=delete_threshold]", "value"),
        vec!["500"]
    );
    assert_eq!(
        attrs(&html, "input[name=interval_seconds]", "value"),
        vec!["120"]
    );
    let mut fields = vec![
        ("notification_email", "it-team@example.com"),
        ("prevent_accidental_deletes", "1"),
        ("delete_threshold", "0"),
        ("interval_seconds", "30"),
    ];
    let (status, _, html) = submit(&admin, &csrf, &props, &fields).await;
    assert_eq!(status, 422);
    assert_eq!(
        texts(&html, ".error-message"),
        vec!["The accidental-deletion threshold must be between 1 and 150000, not 0."]
    );
    assert_eq!(
        attrs(&html, "input[name=delete_threshold]", "value"),
        vec!["0"]
    );
    assert_eq!(
        attrs(&html, "input[name=notification_email]", "value"),
        vec!["it-team@example.com"]
    );
    fields[2] = ("delete_threshold", "lots");
    let (status, _, html) = submit(&admin, &csrf, &props, &fields).await;
    assert_eq!(status, 422);
    assert_eq!(
        texts(&html, ".error-message"),
        vec!["Accidental deletion threshold must be a whole number, not \"lots\"."]
    );
    fields[2] = ("delete_threshold", "50");
    let (status, location, _) = submit(&admin, &csrf, &props, &fields).await;
    assert_eq!(
        (status, location.as_str()),
        (303, &*format!("{props}?saved=1"))
    );
    let (_, html) = admin.get(&location).await;
    assert!(texts(&html, "#flash")[0].starts_with("Properties saved."));
    assert_eq!(
        attrs(&html, "input[name=delete_threshold]", "value"),
        vec!["50"]
    );
    assert_eq!(
        attrs(&html, "input[name=interval_seconds]", "value"),
        vec!["30"]
    );
    assert_eq!(count(&html, "input[name=password_hash_sync][checked]"), 0);
    let api = Api::new(&console, ADMIN);
    let (_, json) = api.get(&format!("/configurations/{id}")).await;
    assert_eq!(json["delete_threshold"], 50);
    assert_eq!(json["password_hash_sync"], false);
    assert_eq!(json["notification_email"], "it-team@example.com");

    // Attribute mapping: add, edit, refuse a bad expression and a duplicate, remove.
    let mappings = format!("{page}/mappings");
    let saved = format!("{mappings}?saved=1");
    let (status, location, _) = submit(
        &admin,
        &csrf,
        &mappings,
        &[
            ("action", "save"),
            ("kind", "user"),
            ("original", ""),
            ("target", "employeeId"),
            ("mapping_type", "direct"),
            ("source", "employeeNumber"),
            ("apply", "always"),
        ],
    )
    .await;
    assert_eq!((status, location.as_str()), (303, saved.as_str()));
    let (_, html) = admin.get(&saved).await;
    assert!(texts(&html, "#flash")[0].starts_with("Attribute mappings saved."));
    let row = texts(&html, "#user-mappings tr[data-target=employeeId] td");
    assert_eq!(
        row[..5],
        ["employeeId", "Direct", "employeeNumber", "—", "Always"]
    );
    let (status, html) = admin
        .get(&format!("{mappings}?kind=user&edit=employeeId"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        texts(&html, "#mapping-form-title"),
        vec!["Edit attribute mapping: employeeId"]
    );
    assert_eq!(
        attrs(&html, "#mapping-form input[name=original]", "value"),
        vec!["employeeId"]
    );
    assert_eq!(
        attrs(&html, "#mapping-form input[name=source]", "value"),
        vec!["employeeNumber"]
    );
    let (status, _, _) = submit(
        &admin,
        &csrf,
        &mappings,
        &[
            ("action", "save"),
            ("kind", "user"),
            ("original", "employeeId"),
            ("target", "employeeId"),
            ("mapping_type", "constant"),
            ("value", "E-1"),
            ("apply", "on_create"),
        ],
    )
    .await;
    assert_eq!(status, 303);
    let (_, html) = admin.get(&mappings).await;
    let row = texts(&html, "#user-mappings tr[data-target=employeeId] td");
    assert_eq!(
        row[..5],
        ["employeeId", "Constant", "E-1", "—", "Only during creation"]
    );
    let bad = r#"Join(" ", [givenName]"#;
    let (status, _, html) = submit(
        &admin,
        &csrf,
        &mappings,
        &[
            ("action", "save"),
            ("kind", "user"),
            ("target", "nickname"),
            ("mapping_type", "expression"),
            ("expression", bad),
            ("apply", "always"),
        ],
    )
    .await;
    assert_eq!(status, 422);
    let error = texts(&html, "#mapping-error").join("");
    assert!(
        error.contains("nickname") && error.contains("expression"),
        "{error}"
    );
    assert_eq!(
        texts(&html, "#mapping-form textarea[name=expression]"),
        vec![bad]
    );
    assert_eq!(
        attrs(&html, "#mapping-form input[name=target]", "value"),
        vec!["nickname"]
    );
    let (status, _, html) = submit(
        &admin,
        &csrf,
        &mappings,
        &[
            ("action", "save"),
            ("kind", "group"),
            ("target", "displayName"),
            ("mapping_type", "direct"),
            ("source", "cn"),
        ],
    )
    .await;
    assert_eq!(status, 422);
    assert!(
        texts(&html, "#mapping-error")[0].contains("more than once"),
        "{html}"
    );
    let (status, _, _) = submit(
        &admin,
        &csrf,
        &mappings,
        &[
            ("action", "remove"),
            ("kind", "user"),
            ("target", "employeeId"),
        ],
    )
    .await;
    assert_eq!(status, 303);
    let (_, html) = admin.get(&mappings).await;
    assert_eq!(count(&html, "#user-mappings tr[data-target=employeeId]"), 0);
    assert_eq!(
        count(&html, "#user-mappings tr[data-target=sourceAnchor]"),
        1
    );
    let (status, _, html) = submit(
        &admin,
        &csrf,
        &mappings,
        &[
            ("action", "remove"),
            ("kind", "user"),
            ("target", "sourceAnchor"),
        ],
    )
    .await;
    assert_eq!(status, 422);
    assert!(
        texts(&html, "#mapping-error")[0].contains("sourceAnchor"),
        "{html}"
    );
    assert_eq!(
        count(&html, "#user-mappings tr[data-target=sourceAnchor]"),
        1
    );

    // Test expression: the output, or the error.
    let (status, _, html) = submit(
        &admin,
        &csrf,
        &mappings,
        &[
            ("action", "test"),
            ("test_expression", r#"Join(" ", [givenName], [sn])"#),
            ("sample", "givenName: Ann\nsn: Lee\n"),
        ],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(texts(&html, "#test-output"), vec!["Ann Lee"]);
    let (status, _, html) = submit(
        &admin,
        &csrf,
        &mappings,
        &[
            ("action", "test"),
            ("test_expression", "Join("),
            ("sample", ""),
        ],
    )
    .await;
    assert_eq!(status, 422);
    assert!(!texts(&html, "#test-error")[0].is_empty());
    assert_eq!(
        texts(&html, "#test-form textarea[name=test_expression]"),
        vec!["Join("]
    );

    // Scoping filters: each DN is checked through an agent (this one does not answer).
    let scoping = format!("{page}/scoping");
    let ou = "ou=sales,dc=corp,dc=example,dc=test";
    let (status, _, html) = submit(
        &admin,
        &csrf,
        &scoping,
        &[("mode", "ous"), ("dns", &format!("{ou}\n\n"))],
    )
    .await;
    assert_eq!(status, 422);
    let error = texts(&html, ".error-message").join("");
    assert!(error.contains(&format!("Cannot check {ou}")), "{error}");
    assert_eq!(texts(&html, "textarea[name=dns]"), vec![ou]);
    assert_eq!(
        attrs(&html, "input[name=mode][checked]", "value"),
        vec!["ous"]
    );
    let many: String = (0..51).map(|i| format!("ou=o{i},{BASE_DN}\n")).collect();
    let (status, _, html) = submit(
        &admin,
        &csrf,
        &scoping,
        &[("mode", "groups"), ("dns", &many)],
    )
    .await;
    assert_eq!(status, 422);
    assert!(
        texts(&html, ".error-message")[0].contains("at most 50"),
        "{html}"
    );
    let (status, location, _) = submit(
        &admin,
        &csrf,
        &scoping,
        &[("mode", "all_users"), ("dns", "")],
    )
    .await;
    assert_eq!(
        (status, location.as_str()),
        (303, &*format!("{scoping}?saved=1"))
    );
    let (_, html) = admin.get(&location).await;
    assert!(texts(&html, "#flash")[0].contains("Restart sync"), "{html}");
    assert_eq!(texts(&html, "#current-scope"), vec!["All users"]);
    assert!(html.contains("Changing scope → Restart sync recommended."));

    // Operations, each with its flash message after the redirect.
    let op = |name: &str| format!("{page}/{name}");
    let (status, _, html) = submit(&admin, &csrf, &op("sync-now"), &[]).await;
    assert_eq!(status, 409);
    assert!(
        texts(&html, ".error-message")[0].contains("enable it first"),
        "{html}"
    );
    let (status, _, _) = admin.post(&op("enable"), &[]).await;
    assert_eq!(status, 403, "no CSRF token");
    for (name, flash) in [
        ("enable", "Configuration enabled: the first cycle starts now."),
        ("sync-now", "A cycle starts now."),
        ("disable", "Configuration disabled: no cycles run until it is enabled again."),
        ("restart", "Restarted: staged deletions, watermark and quarantine are cleared; a full cycle starts now."),
    ] {
        let (status, location, _) = submit(&admin, &csrf, &op(name), &[]).await;
        assert_eq!((status, location.as_str()), (303, &*format!("{page}?done={name}")));
        let (_, html) = admin.get(&location).await;
        assert_eq!(texts(&html, "#flash"), vec![flash], "{name}");
        if name == "enable" {
            assert_eq!(
                attrs(&html, "#commands button", "data-operation"),
                vec!["disable", "sync-now", "restart", "preview"]
            );
            assert_eq!(texts(&html, "#status-text"), vec!["Enabled, first cycle pending"]);
        }
    }
    let (status, _, html) = submit(&admin, &csrf, &op("clear-quarantine"), &[]).await;
    assert_eq!(status, 409);
    assert!(html.contains("not in quarantine"));
    let (status, _, html) = submit(&admin, &csrf, &op("allow-deletes"), &[]).await;
    assert_eq!(status, 422);
    assert!(texts(&html, ".error-message")[0].contains("Nothing was deleted"));
    let (status, _, _) = submit(&admin, &csrf, &op("explode"), &[]).await;
    assert_eq!(status, 404);

    // Provision on demand: errors in the form, the DN kept.
    let on_demand = format!("{page}/provision-on-demand");
    let (status, html) = admin.get(&on_demand).await;
    assert_eq!(status, 200);
    assert_eq!(count(&html, "#on-demand-form"), 1);
    let (status, _, html) = submit(&admin, &csrf, &on_demand, &[("dn", "ann")]).await;
    assert_eq!(status, 422);
    assert!(texts(&html, ".error-message")[0].contains("is not a distinguished name"));
    let dn = format!("uid=ann,ou=people,{BASE_DN}");
    let (status, _, html) = submit(&admin, &csrf, &on_demand, &[("dn", &dn)]).await;
    assert_eq!(status, 422, "{html}");
    assert!(
        texts(&html, ".error-message")[0].contains("corp-dc"),
        "{html}"
    );
    assert_eq!(attrs(&html, "input[name=dn]", "value"), vec![dn.clone()]);

    for path in [
        "/configurations".to_string(),
        page.clone(),
        props.clone(),
        mappings.clone(),
        scoping.clone(),
        on_demand.clone(),
        format!("{page}/delete"),
    ] {
        let (status, html) = admin.get(&path).await;
        assert_eq!(status, 200, "{path}");
        assert_no_inline(&path, &html);
    }

    // A Global Reader sees everything, no change buttons, and is refused every change.
    let reader = Browser::new(&console);
    assert_eq!(reader.sign_in(READER, PASSWORD).await, 303);
    let (status, html) = reader.get("/configurations").await;
    assert_eq!(status, 200);
    assert_eq!(count(&html, "#new-configuration"), 0);
    assert!(html.contains("Your role can view but not create configurations."));
    let reader_csrf = csrf_of(&html);
    let (status, html) = reader.get(&page).await;
    assert_eq!(status, 200);
    assert_eq!(count(&html, "#commands"), 0);
    assert!(!html.contains("Delete configuration"));
    let (_, html) = reader.get(&props).await;
    assert_eq!(count(&html, "#properties-form button"), 0);
    assert_eq!(count(&html, "#properties-form input[disabled]"), 5);
    let (_, html) = reader.get(&mappings).await;
    assert_eq!(count(&html, "#mapping-form"), 0);
    assert_eq!(count(&html, ".row-actions"), 0);
    let (_, html) = reader.get(&scoping).await;
    assert_eq!(count(&html, "#scoping-form"), 0);
    let (status, _) = reader.get(&format!("{page}/delete")).await;
    assert_eq!(status, 403);
    for (path, fields) in [
        (
            "/configurations".to_string(),
            vec![("domain", "branch.example.test")],
        ),
        (op("enable"), vec![]),
        (
            props.clone(),
            vec![("delete_threshold", "10"), ("interval_seconds", "10")],
        ),
        (scoping.clone(), vec![("mode", "all_users")]),
        (
            mappings.clone(),
            vec![("action", "remove"), ("kind", "user"), ("target", "mail")],
        ),
        (on_demand.clone(), vec![("dn", dn.as_str())]),
        (format!("{page}/delete"), vec![]),
    ] {
        let (status, _, html) = submit(&reader, &reader_csrf, &path, &fields).await;
        assert_eq!(status, 403, "{path}");
        assert!(html.contains("Global Reader"), "{path}: {html}");
    }
    // Testing an expression changes nothing: readers may.
    let (status, _, html) = submit(
        &reader,
        &reader_csrf,
        &mappings,
        &[
            ("action", "test"),
            ("test_expression", r#"Join("@", [uid], "x.test")"#),
            ("sample", "uid: ann"),
        ],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(texts(&html, "#test-output"), vec!["ann@x.test"]);

    // Delete configuration: a confirmation naming what goes and what stays.
    let (status, html) = admin.get(&format!("{page}/delete")).await;
    assert_eq!(status, 200);
    let message = texts(&html, "#delete-message").join("");
    assert!(
        message.contains(&format!("The configuration of {DOMAIN} goes"))
            && message.contains("0 users and 0 groups already synced stay in the cloud directory"),
        "{message}"
    );
    let (status, _, _) = admin.post(&format!("{page}/delete"), &[]).await;
    assert_eq!(status, 403, "no CSRF token");
    let (status, location, _) = submit(&admin, &csrf, &format!("{page}/delete"), &[]).await;
    assert_eq!(
        (status, location.as_str()),
        (303, "/configurations?deleted=corp.example.test")
    );
    let (_, html) = admin.get(&location).await;
    let flash = texts(&html, "#flash").join("");
    assert!(
        flash.contains("corp.example.test was deleted") && flash.contains("stay"),
        "{flash}"
    );
    assert_eq!(
        attrs(&html, "select[name=domain] option:not([disabled])", "value"),
        vec![DOMAIN],
        "the domain can be configured again"
    );
    assert_eq!(admin.get(&page).await.0, 404);
    let (_, html) = admin.get("/configurations?deleted=evil.example.test").await;
    assert_eq!(
        count(&html, "#flash"),
        0,
        "only a real deletion is announced"
    );
    let (_, audit) = admin.get("/audit-logs").await;
    for action in [
        "configuration.create",
        "configuration.update",
        "configuration.enable",
        "configuration.delete",
    ] {
        assert!(audit.contains(action), "{action}");
    }
}

/// A user object as the agent sends it.
fn user(uid: &str, given: &str, sn: &str, anchor: &str) -> Value {
    json!({
        "kind": "user",
        "dn": format!("uid={uid},ou=people,{BASE_DN}"),
        "anchor": anchor,
        "attributes": {
            "uid": [uid], "cn": [format!("{given} {sn}")], "givenname": [given], "sn": [sn],
            "mail": [format!("{uid}@{DOMAIN}")], "entryuuid": [anchor],
            "objectclass": ["inetOrgPerson"]
        }
    })
}

#[tokio::test]
async fn synced_users_groups_and_logs_pages() {
    let console = Console::start(&[]);
    let admin = Browser::new(&console);
    assert_eq!(admin.sign_in(ADMIN, PASSWORD).await, 303);

    // Before anything syncs: honest empty states; bad log filters are a 400 with the reason.
    let (status, html) = admin.get("/users").await;
    assert_eq!(status, 200);
    assert!(texts(&html, ".empty")[0].starts_with("No synced users yet."));
    let (status, html) = admin.get("/groups").await;
    assert_eq!(status, 200);
    assert!(texts(&html, ".empty")[0].starts_with("No synced groups yet."));
    assert_eq!(
        attrs(&html, "nav.sidenav a[aria-current=page]", "href"),
        vec!["/groups"]
    );
    let (status, html) = admin.get("/provisioning-logs").await;
    assert_eq!(status, 200);
    assert!(texts(&html, ".empty")[0].starts_with("No provisioning activity yet."));
    let (status, html) = admin.get("/provisioning-logs?status=bogus").await;
    assert_eq!(status, 400);
    assert!(
        texts(&html, ".error-message")[0].starts_with(
            "status=\"bogus\" is unknown: use one of success, warning, failure, skipped."
        ),
        "{html}"
    );
    let (status, html) = admin.get("/provisioning-logs?since=yesterday").await;
    assert_eq!(status, 400);
    assert!(
        texts(&html, ".error-message")[0].contains("is not a time"),
        "{html}"
    );
    let (status, html) = admin.get("/provisioning-logs?since=2026-01-01").await;
    assert_eq!(status, 200);
    assert_eq!(
        texts(&html, ".empty"),
        vec!["No entries match these filters."]
    );
    assert_eq!(admin.get("/users/nope").await.0, 404);
    assert_eq!(admin.get("/groups/nope").await.0, 404);
    assert_eq!(admin.get("/provisioning-logs/999999").await.0, 404);
    assert_eq!(admin.get("/provisioning-logs/abc").await.0, 404);

    // One full cycle through the agents' sync API: two users and a group.
    let agent = Agent::install(&console, &console.enrollment_token(1), "corp-dc");
    let credential = agent_credential(&agent);
    lease(&console, &credential, &[DOMAIN]).await;
    let api = Api::new(&console, ADMIN);
    let (status, created) = api
        .send(
            reqwest::Method::POST,
            "/configurations",
            Some(json!({"domain": DOMAIN})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    let (status, _) = api
        .send(
            reqwest::Method::POST,
            &format!("/configurations/{id}/enable"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let answer = lease(&console, &credential, &[DOMAIN]).await;
    let cycle = answer["assignments"][0]["cycle"]["cycle_id"]
        .as_str()
        .unwrap_or_else(|| panic!("a cycle is due: {answer}"))
        .to_string();
    let ann = "1f0c2a3e-0000-4000-8000-00000000a001";
    let bob = "1f0c2a3e-0000-4000-8000-00000000b002";
    let staff = "1f0c2a3e-0000-4000-8000-00000000c003";
    let objects = json!([
        user("ann", "Ann", "Lee", ann),
        user("bob", "Bob", "Brown", bob),
        {
            "kind": "group",
            "dn": format!("cn=staff,ou=groups,{BASE_DN}"),
            "anchor": staff,
            "attributes": {
                "cn": ["Staff"], "entryuuid": [staff], "objectclass": ["groupOfNames"],
                "member": [format!("uid=ann,ou=people,{BASE_DN}"), format!("uid=bob,ou=people,{BASE_DN}")]
            }
        }
    ]);
    let (status, body) = agent_post(
        &console,
        &credential,
        &format!("/sync/cycles/{cycle}/batch"),
        json!({"objects": objects, "poll_interval_ms": 60_000}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["created"], 3, "{body}");
    let (status, body) = agent_post(
        &console,
        &credential,
        &format!("/sync/cycles/{cycle}/finish"),
        json!({"complete": true, "deleted": [], "watermark": "w1", "error": null}),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    // Configurations: the last cycle, the agent holding the domain, the counts.
    let (_, html) = admin.get("/configurations").await;
    let row = texts(&html, &format!("tr[data-configuration-id='{id}'] td"));
    assert!(
        row[1].starts_with("Active") && row[1].contains("Healthy"),
        "{row:?}"
    );
    assert!(
        row[2].contains("full") && row[2].contains("imported 3 · created 3"),
        "{row:?}"
    );
    assert_eq!(row[3], "corp-dc");
    assert_eq!(row[4..], ["2", "1"]);
    let (_, html) = admin.get(&format!("/configurations/{id}")).await;
    assert_eq!(
        texts(&html, "#last-cycle td"),
        vec!["3", "3", "0", "0", "0", "0", "0"]
    );
    assert!(texts(&html, "#leader")[0].starts_with("corp-dc runs the cycles"));
    assert_eq!(count(&html, "#cycles tbody tr"), 1);
    let (_, html) = admin.get(&format!("/configurations/{id}/delete")).await;
    assert!(texts(&html, "#delete-message")[0]
        .contains("The 2 users and 1 groups already synced stay in the cloud directory."));

    // Users: list, search, detail with its groups and a link to its logs.
    let (_, html) = admin.get("/users").await;
    assert_eq!(
        texts(&html, "#objects tbody td:first-child"),
        vec!["Ann Lee", "Bob Brown"]
    );
    let row = texts(&html, "#objects tbody tr:first-child td");
    assert_eq!(row[1..4], [&*format!("ann@{DOMAIN}"), DOMAIN, "Yes"]);
    let (_, html) = admin.get("/users?q=bob").await;
    assert_eq!(
        texts(&html, "#objects tbody td:first-child"),
        vec!["Bob Brown"]
    );
    let (_, html) = admin.get("/users?q=nobody").await;
    assert_eq!(
        texts(&html, ".empty"),
        vec!["No synced user matches “nobody”."]
    );
    let (_, html) = admin.get("/users?q=ann").await;
    let link = attrs(&html, "#objects tbody td a", "href").remove(0);
    let (status, html) = admin.get(&link).await;
    assert_eq!(status, 200);
    let facts = texts(&html, "#object dd").join("|");
    assert!(
        facts.contains(&format!("uid=ann,ou=people,{BASE_DN}")) && facts.contains(ann),
        "{facts}"
    );
    assert_eq!(texts(&html, "#password-hash"), vec!["No"]);
    assert!(texts(&html, "#attributes td").contains(&"givenName".to_string()));
    assert_eq!(texts(&html, "#related td a"), vec!["Staff"]);
    let group_link = attrs(&html, "#related td a", "href").remove(0);
    assert!(group_link.starts_with("/groups/"));
    assert_eq!(
        attrs(&html, "#object-logs", "href"),
        vec![format!("/provisioning-logs?q={ann}")]
    );

    // Groups: the group with its members.
    let (_, html) = admin.get("/groups").await;
    assert_eq!(texts(&html, "#objects tbody td:first-child"), vec!["Staff"]);
    let (status, html) = admin.get(&group_link).await;
    assert_eq!(status, 200);
    assert_eq!(texts(&html, "#related td a"), vec!["Ann Lee", "Bob Brown"]);
    assert!(attrs(&html, "#related td a", "href")[0].starts_with("/users/"));

    // Provisioning logs: filters, paging base, the entry's tabs.
    let (_, html) = admin.get("/provisioning-logs").await;
    assert_eq!(count(&html, "#logs tbody tr"), 3);
    let (_, html) = admin.get(&format!("/provisioning-logs?q={ann}")).await;
    assert_eq!(count(&html, "#logs tbody tr"), 1);
    let row = texts(&html, "#logs tbody td");
    assert_eq!(
        row[1..6],
        [
            "create",
            "success",
            &*format!("uid=ann,ou=people,{BASE_DN}"),
            "Ann Lee",
            DOMAIN
        ]
    );
    let (_, html) = admin
        .get(&format!(
            "/provisioning-logs?action=create&configuration={id}"
        ))
        .await;
    assert_eq!(count(&html, "#logs tbody tr"), 3);
    assert_eq!(
        attrs(
            &html,
            "select[name=configuration] option[selected]",
            "value"
        ),
        vec![id.clone()]
    );
    let (_, html) = admin.get("/provisioning-logs?status=failure").await;
    assert_eq!(
        texts(&html, ".empty"),
        vec!["No entries match these filters."]
    );
    let (_, html) = admin
        .get(&format!("/provisioning-logs?cycle={cycle}"))
        .await;
    assert_eq!(count(&html, "#logs tbody tr"), 3);
    let (_, html) = admin.get(&format!("/provisioning-logs?q={ann}")).await;
    let entry = attrs(&html, "#logs tbody td a", "href").remove(0);
    let (status, html) = admin.get(&entry).await;
    assert_eq!(status, 200);
    assert_eq!(
        texts(&html, "#steps li strong"),
        vec!["Import", "Determine if in scope", "Match", "Perform action"]
    );
    assert!(texts(&html, "#modified-properties td").contains(&"displayName".to_string()));
    assert!(texts(&html, "#troubleshooting .empty")[0].starts_with("Nothing to troubleshoot"));
    let summary = texts(&html, "#summary dd").join("|");
    assert!(
        summary.contains("create") && summary.contains(ann) && summary.contains(&cycle),
        "{summary}"
    );
    assert_eq!(
        attrs(&html, "#summary a[href^='/configurations/']", "href"),
        vec![format!("/configurations/{id}")]
    );
    assert!(attrs(&html, "#summary a[href^='/users/']", "href")[0] == link);

    // Accidental deletes: with a threshold of 1, a cycle that deletes Bob stages the deletion;
    // the overview lists it and Allow deletes applies it once confirmed.
    let page = format!("/configurations/{id}");
    let (_, html) = admin.get(&page).await;
    let csrf = csrf_of(&html);
    let (status, _, _) = submit(
        &admin,
        &csrf,
        &format!("{page}/properties"),
        &[
            ("prevent_accidental_deletes", "1"),
            ("delete_threshold", "1"),
            ("interval_seconds", "120"),
        ],
    )
    .await;
    assert_eq!(status, 303);
    let (status, _, _) = submit(&admin, &csrf, &format!("{page}/sync-now"), &[]).await;
    assert_eq!(status, 303);
    let answer = lease(&console, &credential, &[DOMAIN]).await;
    let delta = answer["assignments"][0]["cycle"]["cycle_id"]
        .as_str()
        .unwrap_or_else(|| panic!("Sync now: a cycle is due: {answer}"))
        .to_string();
    let (status, body) = agent_post(
        &console,
        &credential,
        &format!("/sync/cycles/{delta}/finish"),
        json!({"complete": false, "deleted": [bob], "watermark": "w2", "error": null}),
    )
    .await;
    assert_eq!(
        (status, body["state"].as_str()),
        (200, Some("threshold")),
        "{body}"
    );
    let (_, html) = admin.get(&page).await;
    assert_eq!(
        texts(&html, "#status-text"),
        vec!["Delete threshold exceeded"]
    );
    assert_eq!(
        texts(&html, "#staged tbody tr td:nth-child(2)"),
        vec!["Bob Brown"]
    );
    assert_eq!(
        texts(&html, "#allow-deletes label"),
        vec!["Yes, delete this object"]
    );
    let (status, _, html) = submit(&admin, &csrf, &format!("{page}/allow-deletes"), &[]).await;
    assert_eq!(status, 422);
    assert_eq!(
        count(&html, "#staged"),
        1,
        "nothing deleted without confirmation"
    );
    let (status, location, _) = submit(
        &admin,
        &csrf,
        &format!("{page}/allow-deletes"),
        &[("confirm", "yes")],
    )
    .await;
    assert_eq!(
        (status, location.as_str()),
        (303, &*format!("{page}?done=allow-deletes"))
    );
    let (_, html) = admin.get(&location).await;
    assert_eq!(
        texts(&html, "#flash"),
        vec!["The staged deletions were applied."]
    );
    assert_eq!(count(&html, "#staged"), 0);
    let (_, html) = admin.get("/users").await;
    assert_eq!(
        texts(&html, "#objects tbody td:first-child"),
        vec!["Ann Lee"]
    );
    let (_, html) = admin.get("/provisioning-logs?action=stagedDelete").await;
    assert_eq!(count(&html, "#logs tbody tr"), 1);
    let (_, html) = admin.get("/provisioning-logs?action=delete").await;
    assert_eq!(
        texts(&html, "#logs tbody td:nth-child(5)"),
        vec!["Bob Brown"]
    );

    // Preview: the agent's dry run of a change to Ann, shown on the overview, nothing applied.
    let (status, location, _) = submit(&admin, &csrf, &format!("{page}/preview"), &[]).await;
    assert_eq!(
        (status, location.as_str()),
        (303, &*format!("{page}?done=preview"))
    );
    let answer = lease(&console, &credential, &[DOMAIN]).await;
    let order = &answer["assignments"][0]["cycle"];
    assert_eq!(order["kind"], "preview", "{answer}");
    let preview = order["cycle_id"].as_str().unwrap().to_string();
    let (status, body) = agent_post(
        &console,
        &credential,
        &format!("/sync/cycles/{preview}/batch"),
        json!({"objects": [user("ann", "Annie", "Lee", ann)], "poll_interval_ms": 60_000}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = agent_post(
        &console,
        &credential,
        &format!("/sync/cycles/{preview}/finish"),
        json!({"complete": false, "deleted": [], "watermark": "w3", "error": null}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (_, html) = admin.get(&page).await;
    let summary = texts(&html, "#preview p").join(" ");
    assert!(
        summary.contains("would create 0, update 1 and delete 0 objects"),
        "{summary}"
    );
    let item = texts(&html, "#preview tbody td").join("|");
    assert!(
        item.contains("update") && item.contains("Annie Lee"),
        "{item}"
    );
    let (_, html) = admin.get("/users").await;
    assert_eq!(
        texts(&html, "#objects tbody td:first-child"),
        vec!["Ann Lee"],
        "a preview applies nothing"
    );

    // Quarantine: three failed cycles in a row; the overview says why, Clear quarantine clears it.
    let reason = "cannot bind to ldaps://dc1.corp.example.test: invalid credentials";
    for _ in 0..3 {
        let (status, _, _) = submit(&admin, &csrf, &format!("{page}/sync-now"), &[]).await;
        assert_eq!(status, 303);
        let answer = lease(&console, &credential, &[DOMAIN]).await;
        let failing = answer["assignments"][0]["cycle"]["cycle_id"]
            .as_str()
            .unwrap_or_else(|| panic!("a cycle is due: {answer}"))
            .to_string();
        let (status, body) = agent_post(
            &console,
            &credential,
            &format!("/sync/cycles/{failing}/finish"),
            json!({"complete": false, "deleted": [], "watermark": null, "error": reason}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    let (_, html) = admin.get(&page).await;
    assert_eq!(
        texts(&html, "#status-text"),
        vec![format!("Quarantine: {reason}")]
    );
    let quarantine = texts(&html, "#quarantine").join(" ");
    assert!(quarantine.contains(reason), "{quarantine}");
    assert_eq!(texts(&html, "#quarantine dd")[1], "3");
    assert!(attrs(&html, "#commands button", "data-operation")
        .contains(&"clear-quarantine".to_string()));
    let (status, location, _) =
        submit(&admin, &csrf, &format!("{page}/clear-quarantine"), &[]).await;
    assert_eq!(status, 303);
    let (_, html) = admin.get(&location).await;
    assert_eq!(
        texts(&html, "#flash"),
        vec!["Quarantine cleared: a full cycle starts now."]
    );
    assert_eq!(count(&html, "#quarantine"), 0);

    // A reader sees all of it.
    let reader = Browser::new(&console);
    assert_eq!(reader.sign_in(READER, PASSWORD).await, 303);
    for page in [
        "/users",
        &link,
        "/groups",
        &group_link,
        "/provisioning-logs",
        &entry,
        &format!("/configurations/{id}"),
    ] {
        let (status, html) = reader.get(page).await;
        assert_eq!(status, 200, "{page}");
        assert_no_inline(page, &html);
    }
}
