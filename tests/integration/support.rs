//! Test support: start consoles and agents as real processes, sign in, wait for conditions.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const ADMIN: &str = "alice";
pub const HIA: &str = "hank";
pub const READER: &str = "rita";
pub const PASSWORD: &str = "correct horse battery staple";

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_hybridsync")
}

/// Runs `hybridsync ARGS` to completion, feeding `stdin`.
pub fn run(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(bin())
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn hybridsync");
    {
        let mut input = child.stdin.take().expect("stdin");
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).expect("write stdin");
        }
    }
    child.wait_with_output().expect("wait hybridsync")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Sends SIGTERM (graceful) or SIGKILL to a process.
pub fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status()
        .expect("kill");
    assert!(status.success(), "kill -{sig} failed");
}

/// Polls `check` every 100 ms until it returns Some or `timeout` passes.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the agent `id` has `health`, and returns it as the API shows it.
pub async fn wait_health(api: &Api, id: &str, health: &str) -> serde_json::Value {
    wait_for(
        &format!("agent {id} to be {health}"),
        Duration::from_secs(30),
        || async { api.agent(id).await.filter(|a| a["health"] == health) },
    )
    .await
}

/// A console process with its own data dir and three accounts (one per role).
pub struct Console {
    pub child: Child,
    pub url: String,
    pub dir: tempfile::TempDir,
    pub setup_link: Option<String>,
    pub output: mpsc::Receiver<String>,
}

/// Fast thresholds so health transitions happen in seconds.
pub const FAST: &[&str] = &[
    "--unhealthy-after",
    "3s",
    "--inactive-after",
    "6s",
    "--poll-interval",
    "1s",
    "--poll-timeout",
    "1s",
];

impl Console {
    /// A console with the three role accounts created through the CLI.
    pub fn start(extra: &[&str]) -> Console {
        let dir = tempfile::tempdir().expect("tempdir");
        for (user, role) in [
            (ADMIN, "global-administrator"),
            (HIA, "hybrid-identity-administrator"),
            (READER, "global-reader"),
        ] {
            create_user(dir.path(), user, role);
        }
        Self::start_in(dir, extra)
    }

    /// A console on an existing data dir (accounts or not).
    pub fn start_in(dir: tempfile::TempDir, extra: &[&str]) -> Console {
        let data_dir = dir.path().to_str().unwrap().to_string();
        let mut args = vec!["serve", "--data-dir", &data_dir];
        // A test that must know the port before start (an OIDC redirect URI) passes its own.
        if !extra.contains(&"--listen") {
            args.extend_from_slice(&["--listen", "127.0.0.1:0"]);
        }
        args.extend_from_slice(extra);
        let mut child = Command::new(bin())
            .args(&args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn console");
        let (tx, rx) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        let tx_out = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx_out.send(line);
            }
        });
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut setup_link = None;
        let deadline = Instant::now() + Duration::from_secs(30);
        let url = loop {
            let line = rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("console did not start");
            if let Some(rest) = line.split("/setup?token=").nth(1) {
                setup_link = Some(format!(
                    "/setup?token={}",
                    rest.split_whitespace().next().unwrap()
                ));
            }
            if let Some(url) = line.strip_prefix("hybridsync console listening on ") {
                break url.trim().to_string();
            }
        };
        Console {
            child,
            url,
            dir,
            setup_link,
            output: rx,
        }
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn data_dir_str(&self) -> String {
        self.dir.path().to_str().unwrap().to_string()
    }

    /// An API token acting as `username`.
    pub fn api_token(&self, username: &str) -> String {
        let o = run(
            &[
                "admin",
                "create-api-token",
                "--data-dir",
                &self.data_dir_str(),
                "--username",
                username,
            ],
            None,
        );
        assert!(o.status.success(), "create-api-token: {}", stderr(&o));
        stdout(&o).trim().to_string()
    }

    pub fn enrollment_token(&self, max_uses: u32) -> String {
        self.enrollment_token_expiring(max_uses, "1h")
    }

    pub fn enrollment_token_expiring(&self, max_uses: u32, expires: &str) -> String {
        let o = run(
            &[
                "admin",
                "create-enrollment-token",
                "--data-dir",
                &self.data_dir_str(),
                "--max-uses",
                &max_uses.to_string(),
                "--expires",
                expires,
            ],
            None,
        );
        assert!(
            o.status.success(),
            "create-enrollment-token: {}",
            stderr(&o)
        );
        stdout(&o).trim().to_string()
    }

    /// Graceful stop; returns the exit status.
    pub fn stop(mut self) -> (std::process::ExitStatus, tempfile::TempDir) {
        signal(&self.child, "TERM");
        let status = self.child.wait().expect("wait console");
        // Keep the data dir alive for the caller; the Drop below must not kill anything.
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        (status, dir)
    }

    /// Lines the console printed since the last call.
    pub fn drain_output(&self) -> Vec<String> {
        self.output.try_iter().collect()
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn create_user(data_dir: &Path, username: &str, role: &str) {
    let o = run(
        &[
            "admin",
            "create-user",
            "--data-dir",
            data_dir.to_str().unwrap(),
            "--username",
            username,
            "--role",
            role,
            "--password-stdin",
        ],
        Some(&format!("{PASSWORD}\n")),
    );
    assert!(o.status.success(), "create-user {username}: {}", stderr(&o));
}

/// An installed agent (data dir) and, once started, its process.
pub struct Agent {
    pub dir: tempfile::TempDir,
    pub child: Option<Child>,
    pub name: String,
}

impl Agent {
    /// Runs `agent install`; panics with its output if it fails.
    pub fn install(console: &Console, token: &str, name: &str) -> Agent {
        let dir = tempfile::tempdir().expect("tempdir");
        let o = install_into(dir.path(), &console.url, token, name, &[]);
        assert!(
            o.status.success(),
            "agent install failed: {}{}",
            stdout(&o),
            stderr(&o)
        );
        Agent {
            dir,
            child: None,
            name: name.into(),
        }
    }

    pub fn data_dir_str(&self) -> String {
        self.dir.path().to_str().unwrap().to_string()
    }

    pub fn agent_id(&self) -> String {
        let config: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(self.dir.path().join("agent.json")).unwrap(),
        )
        .unwrap();
        config["agent_id"]
            .as_str()
            .expect("agent_id in agent.json")
            .to_string()
    }

    /// Starts `agent run` with a short heartbeat interval.
    pub fn start(&mut self, heartbeat: &str) {
        self.start_with(heartbeat, &[]);
    }

    /// Starts `agent run` with more arguments (e.g. `--enforce-fips-policy true`).
    pub fn start_with(&mut self, heartbeat: &str, extra: &[&str]) {
        let child = Command::new(bin())
            .args([
                "agent",
                "run",
                "--data-dir",
                &self.data_dir_str(),
                "--heartbeat-interval",
                heartbeat,
            ])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn agent");
        self.child = Some(child);
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(&child, "KILL");
            let _ = child.wait();
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn install_into(
    dir: &Path,
    console_url: &str,
    token: &str,
    name: &str,
    extra: &[&str],
) -> Output {
    let mut args = vec![
        "agent",
        "install",
        "--console",
        console_url,
        "--enrollment-token",
        token,
        "--data-dir",
        dir.to_str().unwrap(),
        "--machine-name",
        name,
    ];
    args.extend_from_slice(extra);
    run(&args, None)
}

/// A JSON API client acting with one token.
pub struct Api {
    pub base: String,
    pub token: String,
    pub http: reqwest::Client,
}

impl Api {
    pub fn new(console: &Console, username: &str) -> Api {
        Api {
            base: format!("{}/api/v1", console.url),
            token: console.api_token(username),
            http: reqwest::Client::new(),
        }
    }

    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// The agent object, once it exists.
    pub async fn agent(&self, id: &str) -> Option<serde_json::Value> {
        let (status, body) = self.get(&format!("/agents/{id}")).await;
        (status == 200).then_some(body)
    }
}

/// A browser-like client: cookies kept, redirects not followed (tests look at them).
pub struct Browser {
    pub base: String,
    pub http: reqwest::Client,
}

impl Browser {
    pub fn new(console: &Console) -> Browser {
        let http = reqwest::Client::builder()
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Browser {
            base: console.url.clone(),
            http,
        }
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// GET returning the Location header of a redirect.
    pub async fn get_location(&self, path: &str) -> (u16, String) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let location = r
            .headers()
            .get("location")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        (r.status().as_u16(), location)
    }

    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> (u16, String, String) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .form(form)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let location = r
            .headers()
            .get("location")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        (status, location, r.text().await.unwrap())
    }

    /// Signs in through the real sign-in form.
    pub async fn sign_in(&self, username: &str, password: &str) -> u16 {
        let (_, html) = self.get("/login").await;
        let csrf = csrf_of(&html);
        let (status, _, _) = self
            .post(
                "/login",
                &[
                    ("username", username),
                    ("password", password),
                    ("csrf", &csrf),
                    ("next", "/"),
                ],
            )
            .await;
        status
    }
}

/// The value of the first `name="csrf"` hidden field of a page.
pub fn csrf_of(html: &str) -> String {
    let doc = scraper::Html::parse_document(html);
    let sel = scraper::Selector::parse(r#"input[name="csrf"]"#).unwrap();
    doc.select(&sel)
        .next()
        .and_then(|e| e.value().attr("value"))
        .expect("page has a csrf field")
        .to_string()
}

/// Texts of the elements matching a CSS selector.
pub fn texts(html: &str, selector: &str) -> Vec<String> {
    let doc = scraper::Html::parse_document(html);
    let sel = scraper::Selector::parse(selector).unwrap();
    doc.select(&sel)
        .map(|e| e.text().collect::<String>().trim().to_string())
        .collect()
}

/// The `/metrics` text, scraped with an API token as Prometheus does.
pub async fn scrape(console: &Console, api: &Api) -> String {
    let r = api
        .http
        .get(format!("{}/metrics", console.url))
        .bearer_auth(&api.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.text().await.unwrap()
}

/// The value of the sample `series` (name and labels exactly as written), if present.
pub fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}
