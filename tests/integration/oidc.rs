//! Administrator sign-in with OpenID Connect against a real provider (npm `oidc-provider`, started
//! from tests/oidc/oidc-server.mjs), driven without a browser: every redirect is followed by hand
//! so the tests can tamper with the state, replay the callback, or fail at the provider.

use crate::support::*;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ROLE_MAP: &str = "admins=global-administrator,developers=global-reader";

/// The OpenID Connect provider process; stopped by PID on drop.
struct Provider {
    child: Child,
    issuer: String,
}

impl Provider {
    fn start(redirect_uri: &str) -> Provider {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/oidc/oidc-server.mjs");
        let mut child = Command::new("node")
            .arg(script)
            .env("OIDC_PORT", "0")
            .env("CLIENT_ID", "console")
            .env("CLIENT_SECRET", "console-secret")
            .env("REDIRECT_URI", redirect_uri)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start node tests/oidc/oidc-server.mjs (run `npm ci` at the repository root)");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let issuer = loop {
            let line = rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("the OIDC provider did not start; is `npm ci` done?");
            if let Some(issuer) = line.strip_prefix("OIDC_ISSUER=") {
                break issuer.trim().to_string();
            }
        };
        Provider { child, issuer }
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// A provider and a console that trusts it (plus the three local accounts of `Console::start`).
fn start(extra: &[&str]) -> (Provider, Console) {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let provider = Provider::start(&format!("{url}/auth/oidc/callback"));
    let dir = tempfile::tempdir().unwrap();
    for (user, role) in [(ADMIN, "global-administrator"), (READER, "global-reader")] {
        create_user(dir.path(), user, role);
    }
    let secret = dir.path().join("oidc-client-secret");
    std::fs::write(&secret, "console-secret\n").unwrap();
    let listen = format!("127.0.0.1:{port}");
    let secret = secret.to_str().unwrap().to_string();
    let mut args = vec![
        "--listen",
        &listen,
        "--oidc-issuer",
        &provider.issuer,
        "--oidc-client-id",
        "console",
        "--oidc-client-secret-file",
        &secret,
        "--oidc-role-map",
        ROLE_MAP,
    ];
    args.extend_from_slice(extra);
    let console = Console::start_in(dir, &args);
    assert_eq!(console.url, url);
    (provider, console)
}

/// A cookie-keeping client that does not follow redirects, and the last response's parts.
struct Flow {
    http: reqwest::Client,
}

struct Answer {
    status: u16,
    location: Option<String>,
    body: String,
    set_cookies: Vec<String>,
}

impl Flow {
    fn new() -> Flow {
        Flow {
            http: reqwest::Client::builder()
                .cookie_store(true)
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
        }
    }

    async fn answer(r: reqwest::Response) -> Answer {
        let url = r.url().clone();
        let status = r.status().as_u16();
        let location = r
            .headers()
            .get("location")
            .map(|v| url.join(v.to_str().unwrap()).unwrap().to_string());
        let set_cookies = r
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect();
        Answer {
            status,
            location,
            body: r.text().await.unwrap(),
            set_cookies,
        }
    }

    async fn get(&self, url: &str) -> Answer {
        Self::answer(self.http.get(url).send().await.unwrap()).await
    }

    async fn post(&self, url: &str, form: &[(&str, &str)]) -> Answer {
        Self::answer(self.http.post(url).form(form).send().await.unwrap()).await
    }

    /// From the console's "Sign in with your organization's account" to the provider's sign-in
    /// form; returns the form's URL.
    async fn to_provider_form(&self, console: &Console) -> String {
        let (status, login) = {
            let a = self.get(&format!("{}/login", console.url)).await;
            (a.status, a.body)
        };
        assert_eq!(status, 200);
        assert!(
            login.contains("Sign in with your organization"),
            "the sign-in page offers the provider: {login}"
        );
        let start = self
            .get(&format!("{}/auth/oidc/start?next=/agents", console.url))
            .await;
        assert_eq!(start.status, 303, "{}", start.body);
        let authorize = start.location.expect("redirect to the provider");
        assert!(
            authorize.contains("code_challenge_method=S256"),
            "{authorize}"
        );
        assert!(authorize.contains("nonce="), "{authorize}");
        assert!(authorize.contains("state="), "{authorize}");
        let to_form = self.get(&authorize).await;
        assert!(
            (300..400).contains(&to_form.status),
            "provider /auth: {} {}",
            to_form.status,
            to_form.body
        );
        let form_url = to_form.location.expect("redirect to the interaction");
        let form = self.get(&form_url).await;
        assert_eq!(form.status, 200, "{}", form.body);
        form_url
    }

    /// Signs in at the provider; returns the console callback URL the provider redirects to.
    async fn at_provider(&self, form_url: &str, username: &str, password: &str) -> String {
        let posted = self
            .post(form_url, &[("username", username), ("password", password)])
            .await;
        assert!(
            (300..400).contains(&posted.status),
            "provider sign-in: {} {}",
            posted.status,
            posted.body
        );
        let resume = self.get(&posted.location.unwrap()).await;
        assert!((300..400).contains(&resume.status), "{}", resume.body);
        let callback = resume.location.expect("redirect back to the console");
        assert!(callback.contains("/auth/oidc/callback?"), "{callback}");
        callback
    }
}

/// The signed-in identity shown in the console's top bar, or None when not signed in.
async fn who(flow: &Flow, console: &Console) -> Option<String> {
    let a = flow.get(&format!("{}/agents", console.url)).await;
    if a.status != 200 {
        return None;
    }
    texts(&a.body, ".topbar .who").into_iter().next()
}

#[tokio::test]
async fn sign_in_through_the_provider_maps_groups_to_roles() {
    let (_provider, console) = start(&[]);

    let flow = Flow::new();
    let form = flow.to_provider_form(&console).await;
    let callback = flow.at_provider(&form, "alice", "alice-pw").await;
    let done = flow.get(&callback).await;
    assert_eq!(done.status, 303, "{}", done.body);
    assert_eq!(
        done.location.as_deref(),
        Some(format!("{}/agents", console.url).as_str()),
        "back to the page that asked for sign-in"
    );
    assert!(
        done.set_cookies
            .iter()
            .any(|c| c.starts_with("hybridsync_session=hss_")),
        "{:?}",
        done.set_cookies
    );
    // The provider's alice is in "admins" and "developers": the most privileged mapping wins. She is
    // a new console account, not the local account also named alice.
    let shown = who(&flow, &console).await.expect("signed in");
    assert!(shown.contains("Global Administrator"), "{shown}");
    assert!(
        shown.starts_with("alice."),
        "a suffixed name, not the local alice: {shown}"
    );

    // bob is only in "developers": a Global Reader, who reads and may not change.
    let bob = Flow::new();
    let form = bob.to_provider_form(&console).await;
    let callback = bob.at_provider(&form, "bob", "bob-pw").await;
    assert_eq!(bob.get(&callback).await.status, 303);
    let shown = who(&bob, &console).await.expect("bob signed in");
    assert_eq!(shown, "bob · Global Reader");
    let download = bob.get(&format!("{}/agents/download", console.url)).await;
    let csrf = csrf_of(&download.body);
    let refused = bob
        .post(
            &format!("{}/agents/download/tokens", console.url),
            &[("csrf", &csrf), ("expires", "1h"), ("max_uses", "1")],
        )
        .await;
    assert_eq!(refused.status, 403, "{}", refused.body);

    // The sign-in is audited, and nothing secret (code, tokens, client secret) is in the log.
    let api = Api::new(&console, ADMIN);
    let (_, audit) = api.get("/audit-log").await;
    let audit = audit.to_string();
    assert!(audit.contains("\"actor\":\"oidc\""), "{audit}");
    let log = console.drain_output().join("\n");
    assert!(log.contains("signed in through OpenID Connect"), "{log}");
    assert!(!log.contains("console-secret"), "{log}");
    assert!(
        !log.contains(callback.split("code=").nth(1).unwrap_or("-")),
        "{log}"
    );
}

#[tokio::test]
async fn wrong_password_at_the_provider_signs_nobody_in() {
    let (_provider, console) = start(&[]);
    let flow = Flow::new();
    let form = flow.to_provider_form(&console).await;
    let refused = flow
        .post(&form, &[("username", "alice"), ("password", "wrong")])
        .await;
    assert_eq!(refused.status, 401);
    assert!(refused.body.contains("Invalid username or password"));
    assert_eq!(who(&flow, &console).await, None);
    // The same flow still completes with the right password.
    let callback = flow.at_provider(&form, "alice", "alice-pw").await;
    assert_eq!(flow.get(&callback).await.status, 303);
    assert!(who(&flow, &console).await.is_some());

    // Cancelling at the provider comes back as access_denied: a clear refusal, no session.
    let cancelling = Flow::new();
    let form = cancelling.to_provider_form(&console).await;
    let abort = cancelling.get(&format!("{form}/abort")).await;
    assert!((300..400).contains(&abort.status), "{}", abort.body);
    let mut next = abort.location.unwrap();
    while !next.contains("/auth/oidc/callback") {
        let hop = cancelling.get(&next).await;
        next = hop.location.expect("redirects back to the console");
    }
    assert!(next.contains("error=access_denied"), "{next}");
    let refused = cancelling.get(&next).await;
    assert_eq!(refused.status, 401, "{}", refused.body);
    assert!(refused.body.contains("did not sign you in (access_denied)"));
    assert_eq!(who(&cancelling, &console).await, None);

    // A crafted error URL cannot put its own words on the console's page.
    let crafted = cancelling
        .get(&format!(
            "{}/auth/oidc/callback?error=Call%200800%20now&error_description=Your%20account%20is%20locked",
            console.url
        ))
        .await;
    assert_eq!(crafted.status, 401);
    assert!(
        !crafted.body.contains("0800") && !crafted.body.contains("locked"),
        "{}",
        crafted.body
    );
}

#[tokio::test]
async fn tampered_state_replayed_code_and_another_browser_are_refused() {
    let (_provider, console) = start(&[]);

    // Tampered state: unknown to the console.
    let flow = Flow::new();
    let form = flow.to_provider_form(&console).await;
    let callback = flow.at_provider(&form, "alice", "alice-pw").await;
    let url = reqwest::Url::parse(&callback).unwrap();
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == "state" {
                format!("{v}x")
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        })
        .collect();
    let mut tampered = url.clone();
    tampered.query_pairs_mut().clear().extend_pairs(&pairs);
    let refused = flow.get(tampered.as_str()).await;
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert!(refused
        .body
        .contains("unknown, expired or was already used"));
    assert_eq!(who(&flow, &console).await, None);

    // The genuine callback signs in once; replaying it (same code, same state) is refused.
    assert_eq!(flow.get(&callback).await.status, 303);
    let replayed = flow.get(&callback).await;
    assert_eq!(replayed.status, 400, "{}", replayed.body);
    assert!(replayed.body.contains("already used"));
    let thief = Flow::new();
    assert_eq!(thief.get(&callback).await.status, 400);
    assert_eq!(who(&thief, &console).await, None);

    // A callback finished in another browser than the one that started the flow.
    let victim = Flow::new();
    let form = victim.to_provider_form(&console).await;
    let callback = victim.at_provider(&form, "alice", "alice-pw").await;
    let attacker = Flow::new();
    attacker.get(&format!("{}/login", console.url)).await;
    let refused = attacker.get(&callback).await;
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert!(refused.body.contains("another browser"), "{}", refused.body);
    assert_eq!(who(&attacker, &console).await, None);
}

#[tokio::test]
async fn a_user_without_a_mapped_role_gets_a_clear_refusal() {
    let (_provider, console) = start(&[]);
    let flow = Flow::new();
    let form = flow.to_provider_form(&console).await;
    let callback = flow.at_provider(&form, "carol", "carol-pw").await;
    let refused = flow.get(&callback).await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    let message = texts(&refused.body, ".error-message").join(" ");
    assert!(message.contains("has no console role"), "{message}");
    assert!(message.contains("contractors"), "{message}");
    assert_eq!(who(&flow, &console).await, None);
}

#[tokio::test]
async fn local_sign_in_can_be_turned_off() {
    let (_provider, console) = start(&["--disable-local-sign-in"]);
    let browser = Browser::new(&console);
    let (status, html) = browser.get("/login").await;
    assert_eq!(status, 200);
    assert!(html.contains("Sign in with your organization"));
    assert!(
        !html.contains(r#"name="password""#),
        "no password form: {html}"
    );
    // A crafted POST is refused by the switch itself (checked before anything else).
    let (status, _, html) = browser
        .post(
            "/login",
            &[("username", ADMIN), ("password", PASSWORD), ("csrf", "")],
        )
        .await;
    assert_eq!(status, 403);
    assert!(html.contains("Password sign-in is turned off"), "{html}");
    assert_eq!(browser.get("/agents").await.0, 303, "not signed in");
}

#[tokio::test]
async fn an_unreachable_issuer_stops_serve_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "s").unwrap();
    let issuer = format!("http://127.0.0.1:{}", free_port());
    let o = run(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--oidc-issuer",
            &issuer,
            "--oidc-client-id",
            "console",
            "--oidc-client-secret-file",
            secret.to_str().unwrap(),
            "--oidc-role-map",
            ROLE_MAP,
        ],
        None,
    );
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("cannot set up OpenID Connect sign-in"),
        "{err}"
    );
    assert!(err.contains(".well-known/openid-configuration"), "{err}");

    let o = run(
        &[
            "serve",
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--oidc-issuer",
            &issuer,
            "--oidc-client-id",
            "console",
            "--oidc-client-secret-file",
            secret.to_str().unwrap(),
            "--oidc-role-map",
            "admins=root",
        ],
        None,
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("unknown role"), "{}", stderr(&o));
}
