//! Real headless Chromium (Debian's chromium + chromedriver, W3C WebDriver through fantoccini):
//! sign in through the form and watch the Agents page list agents and refresh itself.

use crate::support::*;
use fantoccini::{ClientBuilder, Locator};
use std::process::{Command, Stdio};
use std::time::Duration;

struct Chromedriver {
    child: std::process::Child,
    url: String,
    _profile: tempfile::TempDir,
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn chromedriver() -> Chromedriver {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver is not installed: run .ci/run, or apt-get install chromium chromium-driver");
    let url = format!("http://127.0.0.1:{port}");
    let status = format!("{url}/status");
    wait_for("chromedriver", Duration::from_secs(20), || async {
        reqwest::get(&status)
            .await
            .ok()
            .filter(|r| r.status().is_success())
            .map(|_| ())
    })
    .await;
    Chromedriver {
        child,
        url,
        _profile: tempfile::tempdir().unwrap(),
    }
}

async fn browser(driver: &Chromedriver) -> fantoccini::Client {
    // Both ring and aws-lc-rs are compiled in (reqwest, fantoccini): rustls needs to be told which.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--no-first-run", "--window-size=1280,800",
                     format!("--user-data-dir={}", driver._profile.path().display())]
        }),
    );
    ClientBuilder::rustls()
        .expect("tls")
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("WebDriver session")
}

#[tokio::test]
async fn administrator_signs_in_and_sees_agents_refresh_live() {
    let console = Console::start(FAST);
    let token = console.enrollment_token(2);
    let _quiet = Agent::install(&console, &token, "branch-dc.corp.example.test");
    let mut live = Agent::install(&console, &token, "hq-dc.corp.example.test");

    let driver = chromedriver().await;
    let c = browser(&driver).await;
    let result = async {
        c.goto(&format!("{}/agents", console.url)).await?;
        // Redirected to sign in.
        assert!(c.current_url().await?.path().starts_with("/login"));
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
            .await?;
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
