//! Real headless Chromium (Debian's chromium + chromedriver, W3C WebDriver through fantoccini) for
//! the page tests.

use crate::support::*;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

/// A chromedriver and the Chromium it starts, in a process group of their own: dropping it stops
/// both, even when a test failed before it closed its session.
pub struct Driver {
    child: std::process::Child,
    url: String,
    profile: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        // Chromium is chromedriver's child: killing chromedriver alone would leave it running.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts chromedriver and opens a headless Chromium session.
pub async fn start() -> (Driver, fantoccini::Client) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
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
    let driver = Driver {
        child,
        url,
        profile: tempfile::tempdir().unwrap(),
    };
    // Both ring and aws-lc-rs are compiled in (reqwest, fantoccini): rustls needs to be told which.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--no-first-run", "--window-size=1280,900",
                     format!("--user-data-dir={}", driver.profile.path().display())]
        }),
    );
    let client = fantoccini::ClientBuilder::rustls()
        .expect("tls")
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("WebDriver session");
    (driver, client)
}
