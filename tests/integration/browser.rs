//! Real headless Chromium (Debian's chromium + chromedriver, W3C WebDriver through fantoccini):
//! sign in through the form and watch the Agents page list agents and refresh itself.

use crate::chromium_support;
use crate::support::*;
use fantoccini::Locator;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Signs in as the Global Administrator on the sign-in form the browser was sent to.
async fn sign_in(c: &fantoccini::Client) -> Result<(), fantoccini::error::CmdError> {
    c.find(Locator::Css("input[name=username]"))
        .await?
        .send_keys(ADMIN)
        .await?;
    c.find(Locator::Css("input[name=password]"))
        .await?
        .send_keys(PASSWORD)
        .await?;
    c.find(Locator::Css("button[type=submit]"))
        .await?
        .click()
        .await
}

#[tokio::test]
async fn administrator_signs_in_and_sees_agents_refresh_live() {
    let console = Console::start(FAST);
    let token = console.enrollment_token(2);
    let _quiet = Agent::install(&console, &token, "branch-dc.corp.example.test");
    let mut live = Agent::install(&console, &token, "hq-dc.corp.example.test");

    let (_driver, c) = chromium_support::start().await;
    let result = async {
        c.goto(&format!("{}/agents", console.url)).await?;
        // Redirected to sign in.
        assert!(c.current_url().await?.path().starts_with("/login"));
        sign_in(&c).await?;
        c.wait().for_element(Locator::Css("#agents")).await?;
        assert_eq!(
            c.current_url().await?.path(),
            "/agents",
            "back where the administrator was going"
        );

        let rows = c.find_all(Locator::Css("#agents tbody tr")).await?;
        assert_eq!(rows.len(), 2);
        let table = c.find(Locator::Css("#agents")).await?.text().await?;
        assert!(
            table.contains("branch-dc.corp.example.test")
                && table.contains("hq-dc.corp.example.test"),
            "{table}"
        );
        assert!(
            table.contains("waiting for the first heartbeat")
                || table.contains("no heartbeat within 3s of enrollment"),
            "{table}"
        );

        // Start one agent: the table refreshes itself (htmx) and shows it healthy without a reload.
        live.start("1s");
        let deadline = std::time::Instant::now() + Duration::from_secs(40);
        loop {
            let selector = format!("tr[data-agent-id='{}']", live.agent_id());
            // htmx may swap the table between finding the row and reading it: a stale element
            // just means "read again".
            let row = match c.find(Locator::Css(&selector)).await?.text().await {
                Ok(text) => text,
                Err(fantoccini::error::CmdError::Standard(e))
                    if e.error == fantoccini::error::ErrorStatus::StaleElementReference =>
                {
                    String::new()
                }
                Err(e) => return Err(e),
            };
            if row.contains("healthy") && !row.contains("unhealthy") {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the Agents table did not refresh: {row}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let shot = c.screenshot().await?;
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
        std::fs::write(dir.join("agents-page.png"), shot).unwrap();

        // The agent's page from the list.
        c.find(Locator::LinkText("hq-dc.corp.example.test"))
            .await?
            .click()
            .await?;
        c.wait().for_element(Locator::Css("#timeline")).await?;
        let facts = c.find(Locator::Css(".facts")).await?.text().await?;
        assert!(
            facts.contains("cloud") || facts.contains("Cloud sync"),
            "{facts}"
        );
        Ok::<_, fantoccini::error::CmdError>(())
    }
    .await;
    let _ = c.close().await;
    result.expect("browser steps");
}

/// Reads the text of `selector` until it is `expected` (the page may still be navigating).
async fn wait_text(
    c: &fantoccini::Client,
    selector: &str,
    expected: &str,
) -> Result<(), fantoccini::error::CmdError> {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let text = match c.find(Locator::Css(selector)).await {
            Ok(e) => e.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if text.trim() == expected {
            return Ok(());
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{selector}: expected {expected:?}, found {text:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The whole cloud sync flow in a real browser, against a real OpenLDAP and a real agent: create a
/// configuration for the agent's domain, scope it to one organizational unit, enable it, sync, and
/// see exactly that OU's users on the Users page.
#[tokio::test]
async fn administrator_creates_an_ou_scoped_configuration_and_sees_the_synced_users() {
    use crate::directory_support::{add_directory, all_output, Slapd};
    use std::io::Write;

    let slapd = Slapd::start(true);
    // Two users in ou=sales; the testbed's alice, bob and carol live in ou=people (out of scope).
    let base = slapd.base_dn().to_string();
    let ou = format!("ou=sales,{base}");
    let mut ldif = format!("dn: {ou}\nobjectClass: organizationalUnit\nou: sales\n\n");
    for (uid, given, sn) in [("sam", "Sam", "Seller"), ("sue", "Sue", "Summers")] {
        ldif.push_str(&format!(
            "dn: uid={uid},{ou}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {given} {sn}\n\
             givenName: {given}\nsn: {sn}\nmail: {uid}@example.test\n\n"
        ));
    }
    let mut ldapadd = Command::new("ldapadd")
        .args(["-x", "-H", slapd.ldap_url(), "-D", slapd.admin_dn(), "-w"])
        .arg(slapd.admin_password())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("ldapadd (ldap-utils) is not installed");
    ldapadd
        .stdin
        .take()
        .unwrap()
        .write_all(ldif.as_bytes())
        .unwrap();
    assert!(ldapadd.wait().unwrap().success(), "ldapadd failed");

    let console = Console::start(FAST);
    let mut agent = Agent::install(&console, &console.enrollment_token(1), "ldap-sync01");
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

    let (_driver, c) = chromium_support::start().await;
    let result = async {
        c.goto(&format!("{}/configurations", console.url)).await?;
        sign_in(&c).await?;
        c.wait().for_element(Locator::Css("h1")).await?;
        assert_eq!(c.current_url().await?.path(), "/configurations");

        // The running agent reports its domain (its sync loop asks for a lease): it can be picked.
        let option = "#new-configuration select[name=domain] option[value='example.test']:not([disabled])";
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while c.find(Locator::Css(option)).await.is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "New configuration does not offer example.test: the agent has not reported it (lease)"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
            c.refresh().await?;
        }
        c.find(Locator::Css("#new-configuration select[name=domain]"))
            .await?
            .select_by_value("example.test")
            .await?;
        c.find(Locator::Css("#new-configuration button[type=submit]"))
            .await?
            .click()
            .await?;
        c.wait().for_element(Locator::Css("#overview")).await?;
        assert_eq!(c.find(Locator::Css("h1")).await?.text().await?, "example.test");

        // Scoping filters: Selected organizational units, the sales OU.
        c.find(Locator::LinkText("Scoping filters"))
            .await?
            .click()
            .await?;
        c.wait().for_element(Locator::Css("#scoping-form")).await?;
        c.find(Locator::Css("input[name=mode][value=ous]"))
            .await?
            .click()
            .await?;
        let dns = c.find(Locator::Css("textarea[name=dns]")).await?;
        dns.clear().await?;
        dns.send_keys(&ou).await?;
        c.find(Locator::Css("#scoping-form button[type=submit]"))
            .await?
            .click()
            .await?;
        wait_text(&c, "#current-scope", "Selected organizational units").await?;
        let entries = c.find(Locator::Css("#current-entries")).await?.text().await?;
        assert_eq!(entries.trim(), ou);

        // Properties: a short interval.
        c.find(Locator::LinkText("Properties")).await?.click().await?;
        c.wait().for_element(Locator::Css("#properties-form")).await?;
        let interval = c.find(Locator::Css("input[name=interval_seconds]")).await?;
        interval.clear().await?;
        interval.send_keys("5").await?;
        c.find(Locator::Css("#properties-form button[type=submit]"))
            .await?
            .click()
            .await?;
        c.wait().for_element(Locator::Css("#flash")).await?;

        // Overview: Enable, then Sync now.
        c.find(Locator::LinkText("Overview")).await?.click().await?;
        c.find(Locator::Css("button[data-operation=enable]"))
            .await?
            .click()
            .await?;
        wait_text(
            &c,
            "#flash",
            "Configuration enabled: the first cycle starts now.",
        )
        .await?;
        c.find(Locator::Css("button[data-operation=sync-now]"))
            .await?
            .click()
            .await?;
        wait_text(&c, "#flash", "A cycle starts now.").await?;

        // Users: the OU's two users appear (and nobody from ou=people).
        c.goto(&format!("{}/users", console.url)).await?;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let names = loop {
            let names = match c.find(Locator::Css("#objects")).await {
                Ok(table) => table.text().await?,
                Err(_) => String::new(),
            };
            if names.contains("Sam Seller") && names.contains("Sue Summers") {
                break names;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the Users page does not show the sales OU's users: {names:?}"
            );
            tokio::time::sleep(Duration::from_millis(1000)).await;
            c.refresh().await?;
        };
        assert!(
            !names.contains("Alice") && !names.contains("Bob") && !names.contains("Carol"),
            "{names}"
        );
        assert_eq!(c.find_all(Locator::Css("#objects tbody tr")).await?.len(), 2);
        let shot = c.screenshot().await?;
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
        std::fs::write(dir.join("users-page.png"), shot).unwrap();

        // A user's page, from the list.
        c.find(Locator::LinkText("Sam Seller")).await?.click().await?;
        c.wait().for_element(Locator::Css("#attributes")).await?;
        let facts = c.find(Locator::Css("#object")).await?.text().await?;
        assert!(facts.contains(&format!("uid=sam,{ou}")), "{facts}");

        // The configuration's overview: its last cycle and the agent holding the domain.
        c.goto(&format!("{}/configurations", console.url)).await?;
        c.find(Locator::LinkText("example.test"))
            .await?
            .click()
            .await?;
        c.wait().for_element(Locator::Css("#last-cycle")).await?;
        let leader = c.find(Locator::Css("#leader")).await?.text().await?;
        assert!(leader.starts_with("ldap-sync01 runs the cycles"), "{leader}");
        let shot = c.screenshot().await?;
        std::fs::write(dir.join("configuration-page.png"), shot).unwrap();
        Ok::<_, fantoccini::error::CmdError>(())
    }
    .await;
    let _ = c.close().await;
    result.expect("browser steps");
}

/// After a restart the Agents page says why an agent that has not checked in yet still shows its
/// last known health, and until when; once the agent checks in, the notice is gone.
#[tokio::test]
async fn after_a_restart_the_agents_page_explains_the_agents_not_yet_heard_from() {
    const THRESHOLDS: &[&str] = &["--unhealthy-after", "60s"];
    let console = Console::start(THRESHOLDS);
    let api = Api::new(&console, ADMIN);
    let mut agent = Agent::install(
        &console,
        &console.enrollment_token(1),
        "edge-dc.corp.example.test",
    );
    agent.start("1s");
    let id = agent.agent_id();
    wait_health(&api, &id, "healthy").await;
    // Back on the same address, where the agent looks for it.
    let address = console.url.trim_start_matches("http://").to_string();
    let (status, dir) = console.stop();
    assert!(status.success());
    agent.kill();
    let console = Console::start_in(dir, &[THRESHOLDS, &["--listen", &address]].concat());

    let (_driver, c) = chromium_support::start().await;
    let result = async {
        c.goto(&format!("{}/agents", console.url)).await?;
        sign_in(&c).await?;
        c.wait().for_element(Locator::Css("#restart-grace")).await?;
        let notice = c.find(Locator::Css("#restart-grace")).await?.text().await?;
        assert!(
            notice.contains(
                "1 agent that was heartbeating when the console stopped has not checked in since"
            ) && notice.contains("it keeps its last known health until"),
            "{notice}"
        );
        let row = c
            .find(Locator::Css(&format!("tr[data-agent-id='{id}']")))
            .await?
            .text()
            .await?;
        assert!(
            row.contains("healthy") && !row.contains("unhealthy"),
            "{row}"
        );

        // The agent comes back: the console heard from it, so there is nothing left to explain.
        let api = Api {
            base: format!("{}/api/v1", console.url),
            ..api
        };
        let stopped_at = api.agent(&id).await.expect("listed")["last_heartbeat_at"].clone();
        agent.start("1s");
        wait_for(
            "a heartbeat after the restart",
            Duration::from_secs(30),
            || async {
                let a = api.agent(&id).await?;
                (a["last_heartbeat_at"] != stopped_at).then_some(())
            },
        )
        .await;
        c.refresh().await?;
        c.wait().for_element(Locator::Css("#agents")).await?;
        assert!(
            c.find(Locator::Css("#restart-grace")).await.is_err(),
            "the notice is gone once every agent checked in"
        );
        Ok::<_, fantoccini::error::CmdError>(())
    }
    .await;
    let _ = c.close().await;
    result.expect("browser steps");
}
