//! Agent sign-in by device code (RFC 8628): the real `agent install` without a token prints a code,
//! an administrator approves or denies it on the console's `/device` page, and the install finishes
//! or stops with a message. Expiry, slow_down and bad requests at the endpoints.

use crate::support::*;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// `agent install` without a token, running; its stdout lines arrive on `lines`.
struct Installing {
    child: Child,
    lines: mpsc::Receiver<String>,
    _dir: tempfile::TempDir,
}

impl Installing {
    fn start(console: &Console, machine: &str) -> Installing {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(bin())
            .args([
                "agent",
                "install",
                "--console",
                &console.url,
                "--data-dir",
                dir.path().to_str().unwrap(),
                "--machine-name",
                machine,
            ])
            .env("RUST_LOG", "warn")
            .env_remove("HYBRIDSYNC_ENROLLMENT_TOKEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, rx) = mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        Installing {
            child,
            lines: rx,
            _dir: dir,
        }
    }

    /// The verification URL and user code the installer printed.
    fn prompt(&self) -> (String, String) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let line = self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("the installer printed no code");
            if let Some(rest) = line.split(" opens ").nth(1) {
                let url = rest.split_whitespace().next().unwrap().to_string();
                let code = line.rsplit(' ').next().unwrap().to_string();
                return (url, code);
            }
        }
    }

    /// Waits for the installer to exit; returns success, everything it printed, and its data dir.
    fn finish(mut self) -> (bool, String, tempfile::TempDir) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "the installer did not finish");
            std::thread::sleep(Duration::from_millis(100));
        };
        // The reader threads end with the pipes; collect what is left.
        std::thread::sleep(Duration::from_millis(100));
        let out: Vec<String> = self.lines.try_iter().collect();
        let dir = std::mem::replace(&mut self._dir, tempfile::tempdir().unwrap());
        (status.success(), out.join("\n"), dir)
    }
}

impl Drop for Installing {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const FAST: &[&str] = &["--device-poll-interval", "1s"];

#[tokio::test]
async fn an_administrator_approves_the_machine_and_the_install_finishes() {
    let console = Console::start(FAST);
    let installing = Installing::start(&console, "dc-device-01");
    let (url, code) = installing.prompt();
    assert_eq!(url, format!("{}/device", console.url));
    assert_eq!(code.len(), 9, "{code}");

    // A Global Reader may look at nothing here.
    let reader = Browser::new(&console);
    assert_eq!(reader.sign_in(READER, PASSWORD).await, 303);
    let (status, _) = reader.get(&format!("/device?user_code={code}")).await;
    assert_eq!(status, 403);

    // A Hybrid Identity Administrator enters the code (any case, no dash) and sees the machine.
    let hank = Browser::new(&console);
    assert_eq!(hank.sign_in(HIA, PASSWORD).await, 303);
    let (status, html) = hank.get("/device").await;
    assert_eq!(status, 200, "{html}");
    let typed = code.replace('-', "").to_lowercase();
    let (status, html) = hank.get(&format!("/device?user_code={typed}")).await;
    assert_eq!(status, 200, "{html}");
    assert_eq!(texts(&html, "#machine-name"), vec!["dc-device-01"]);
    let csrf = csrf_of(&html);
    let (status, _, html) = hank
        .post(
            "/device",
            &[
                ("csrf", &csrf),
                ("user_code", &code),
                ("decision", "approve"),
            ],
        )
        .await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("approved"), "{html}");

    let (ok, out, dir) = installing.finish();
    assert!(ok, "install failed: {out}");
    assert!(out.contains("registered with"), "{out}");
    assert!(dir.path().join("credential.json").exists());

    let api = Api::new(&console, ADMIN);
    let (_, agents) = api.get("/agents?status=all").await;
    assert_eq!(
        agents["items"][0]["machine_name"], "dc-device-01",
        "{agents}"
    );
    let (_, audit) = api.get("/audit-log").await;
    let actions: Vec<(String, String)> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_string(),
                e["actor"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        actions.contains(&("device_code.approve".into(), HIA.into())),
        "{actions:?}"
    );
    assert!(
        actions.contains(&("enrollment_token.create".into(), HIA.into())),
        "{actions:?}"
    );

    // The code is spent: entering it again finds nothing waiting.
    let (status, _) = hank.get(&format!("/device?user_code={code}")).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_denied_machine_stops_with_a_clear_message() {
    let console = Console::start(FAST);
    let installing = Installing::start(&console, "rogue-box");
    let (_, code) = installing.prompt();
    let admin = Browser::new(&console);
    assert_eq!(admin.sign_in(ADMIN, PASSWORD).await, 303);
    let (_, html) = admin.get(&format!("/device?user_code={code}")).await;
    assert_eq!(texts(&html, "#machine-name"), vec!["rogue-box"]);
    let csrf = csrf_of(&html);
    let (status, _, html) = admin
        .post(
            "/device",
            &[("csrf", &csrf), ("user_code", &code), ("decision", "deny")],
        )
        .await;
    assert_eq!(status, 200, "{html}");
    let (ok, out, dir) = installing.finish();
    assert!(!ok, "a denied install must fail: {out}");
    assert!(out.contains("denied this agent"), "{out}");
    assert!(!dir.path().join("credential.json").exists());
    let (_, agents) = Api::new(&console, ADMIN).get("/agents?status=all").await;
    assert_eq!(agents["total"], 0);
}

#[tokio::test]
async fn an_unapproved_code_expires() {
    let console = Console::start(&[
        "--device-poll-interval",
        "1s",
        "--device-code-lifetime",
        "2s",
    ]);
    let installing = Installing::start(&console, "forgotten");
    let (_, code) = installing.prompt();
    let (ok, out, _) = installing.finish();
    assert!(!ok, "{out}");
    assert!(
        out.contains("expired before an administrator approved it"),
        "{out}"
    );
    // Nobody can approve it any more.
    let admin = Browser::new(&console);
    assert_eq!(admin.sign_in(ADMIN, PASSWORD).await, 303);
    let (status, html) = admin.get(&format!("/device?user_code={code}")).await;
    assert_eq!(status, 404);
    assert!(html.contains("expired"), "{html}");
}

#[tokio::test]
async fn the_endpoints_answer_rfc_8628_errors() {
    // A long interval, so the second poll below is certainly too fast.
    let console = Console::start(&["--device-poll-interval", "1h"]);
    let http = reqwest::Client::new();
    let authorize = format!("{}/agent-api/v1/device/authorize", console.url);
    let token = format!("{}/agent-api/v1/device/token", console.url);

    let r = http
        .post(&authorize)
        .form(&[("client_id", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "invalid_request", "{body}");

    let r = http
        .post(&authorize)
        .form(&[("machine_name", "dc-poll")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let started: serde_json::Value = r.json().await.unwrap();
    assert_eq!(started["interval"], 3600);
    assert!(started["verification_uri_complete"]
        .as_str()
        .unwrap()
        .ends_with(started["user_code"].as_str().unwrap()));
    let device_code = started["device_code"].as_str().unwrap();
    let poll = |grant: &'static str, code: String| {
        let req = http
            .post(&token)
            .form(&[("grant_type", grant), ("device_code", &code)]);
        async move {
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            let body: serde_json::Value = r.json().await.unwrap();
            (status, body["error"].as_str().unwrap_or("").to_string())
        }
    };
    const GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
    assert_eq!(
        poll(GRANT, device_code.into()).await,
        (400, "authorization_pending".into())
    );
    assert_eq!(
        poll(GRANT, device_code.into()).await,
        (400, "slow_down".into())
    );
    assert_eq!(
        poll(GRANT, "hsdc_forged".into()).await,
        (400, "invalid_grant".into())
    );
    assert_eq!(
        poll("authorization_code", device_code.into()).await,
        (400, "unsupported_grant_type".into())
    );
}
