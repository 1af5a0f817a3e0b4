//! HTTPS: `serve --tls-cert/--tls-key` with a certificate from a private CA made here with rcgen,
//! an agent that trusts only that CA (`--console-ca-cert`), and the failures around it; and the
//! other direction, the console calling agents over TLS to the certificate pinned at enrollment.

use crate::support::*;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What "Check now" and the agent's health say when the agent's certificate is not the pinned one.
const MISMATCH: &str = "the agent presented a certificate that does not match the one pinned at enrollment (re-install the agent to rotate it)";

/// A private CA and a console certificate for 127.0.0.1 and localhost, as PEM files in `dir`.
struct Pki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    other_key: PathBuf,
}

fn make_pki(dir: &Path) -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "hybridsync test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let params =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let pki = Pki {
        ca: dir.join("ca.pem"),
        cert: dir.join("console.pem"),
        key: dir.join("console.key"),
        other_key: dir.join("other.key"),
    };
    std::fs::write(&pki.ca, ca_cert.pem()).unwrap();
    std::fs::write(&pki.cert, cert.pem()).unwrap();
    std::fs::write(&pki.key, key.serialize_pem()).unwrap();
    std::fs::write(&pki.other_key, KeyPair::generate().unwrap().serialize_pem()).unwrap();
    pki
}

fn client(ca: Option<&Path>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none());
    if let Some(ca) = ca {
        let cert = reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap();
        builder = builder
            .tls_built_in_root_certs(false)
            .add_root_certificate(cert);
    }
    builder.build().unwrap()
}

/// A console serving HTTPS with the PKI's certificate.
fn https_console(pki: &Pki) -> Console {
    Console::start(&[
        "--tls-cert",
        pki.cert.to_str().unwrap(),
        "--tls-key",
        pki.key.to_str().unwrap(),
    ])
}

#[tokio::test]
async fn the_console_serves_https_and_an_agent_trusting_the_private_ca_enrolls() {
    let pki_dir = tempfile::tempdir().unwrap();
    let pki = make_pki(pki_dir.path());
    let console = https_console(&pki);
    assert!(
        console.url.starts_with("https://127.0.0.1:"),
        "{}",
        console.url
    );

    // Trusted through the private CA; session cookies are Secure under TLS.
    let trusting = client(Some(&pki.ca));
    let r = trusting
        .get(format!("{}/login", console.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r
        .headers()
        .get_all("set-cookie")
        .iter()
        .all(|c| c.to_str().unwrap().contains("; Secure")));
    // Without the CA the certificate is refused; plain HTTP on the port gets no answer.
    let err = client(None)
        .get(format!("{}/healthz", console.url))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_connect(), "{err:?}");
    let plain = console.url.replace("https://", "http://");
    assert!(client(None)
        .get(format!("{plain}/healthz"))
        .send()
        .await
        .is_err());

    // An agent without the CA cannot enroll and says why.
    let token = console.enrollment_token(1);
    let dir = tempfile::tempdir().unwrap();
    let o = install_into(dir.path(), &console.url, &token, "dc-tls", &[]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.to_lowercase().contains("certificate"), "{err}");

    // With --console-ca-cert it enrolls, keeps the CA, and runs against the HTTPS console.
    let o = install_into(
        dir.path(),
        &console.url,
        &token,
        "dc-tls",
        &["--console-ca-cert", pki.ca.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(dir.path().join("console-ca.pem").exists());
    let mut agent = Agent {
        dir,
        child: None,
        name: "dc-tls".into(),
    };
    let id = agent.agent_id();
    agent.start("1s");
    let token = console.api_token(ADMIN);
    let url = format!("{}/api/v1/agents/{id}", console.url);
    wait_for(
        "the agent's first heartbeat over HTTPS",
        std::time::Duration::from_secs(30),
        || {
            let req = trusting.get(&url).bearer_auth(&token);
            async move {
                let body: serde_json::Value = req.send().await.ok()?.json().await.ok()?;
                body["last_heartbeat_at"].is_string().then_some(())
            }
        },
    )
    .await;
    let status = run(
        &["agent", "status", "--data-dir", &agent.data_dir_str()],
        None,
    );
    assert!(status.status.success(), "{}", stderr(&status));
}

/// Agents open a connection per heartbeat, so the console's TLS must make reconnecting cheap: a
/// client resumes its session (no certificate, no signature) even after hundreds of other clients
/// connected, which the server's default session cache (256 sessions) would not allow, and the
/// console picks AES-128-GCM with SHA-256 though the client lists AES-256 with SHA-384 first.
#[tokio::test]
async fn a_client_resumes_its_tls_session_after_many_others_and_gets_aes_128() {
    use rustls::pki_types::{pem::PemObject, CertificateDer, ServerName};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let pki_dir = tempfile::tempdir().unwrap();
    let pki = make_pki(pki_dir.path());
    let console = https_console(&pki);
    let address = console.url.trim_start_matches("https://").to_string();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(&pki.ca).unwrap())
        .unwrap();
    // Each connector keeps its own sessions, as each agent does.
    let connector = || {
        let provider = rustls::crypto::ring::default_provider();
        assert_eq!(
            provider.cipher_suites[0].suite(),
            rustls::CipherSuite::TLS13_AES_256_GCM_SHA384,
            "the client prefers AES-256"
        );
        let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(provider))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots.clone())
            .with_no_client_auth();
        tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
    };
    let healthz = |connector: tokio_rustls::TlsConnector| {
        let address = address.clone();
        async move {
            let tcp = tokio::net::TcpStream::connect(&address).await.unwrap();
            let name = ServerName::try_from("localhost").unwrap();
            let mut tls = connector.connect(name, tcp).await.unwrap();
            tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            let mut answer = Vec::new();
            // Reading to the end also takes in the session tickets sent after the handshake.
            tls.read_to_end(&mut answer).await.unwrap();
            assert!(answer.starts_with(b"HTTP/1.1 200"));
            let (_, session) = tls.get_ref();
            (
                session.handshake_kind(),
                session.negotiated_cipher_suite().map(|s| s.suite()),
            )
        }
    };
    let agent = connector();
    let (kind, suite) = healthz(agent.clone()).await;
    assert_eq!(kind, Some(rustls::HandshakeKind::Full));
    assert_eq!(suite, Some(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256));
    for _ in 0..300 {
        healthz(connector()).await;
    }
    let (kind, suite) = healthz(agent).await;
    assert_eq!(kind, Some(rustls::HandshakeKind::Resumed));
    assert_eq!(suite, Some(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256));
}

#[tokio::test]
async fn a_key_that_does_not_match_the_certificate_stops_serve() {
    let pki_dir = tempfile::tempdir().unwrap();
    let pki = make_pki(pki_dir.path());
    let data = tempfile::tempdir().unwrap();
    let o = run(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data.path().to_str().unwrap(),
            "--tls-cert",
            pki.cert.to_str().unwrap(),
            "--tls-key",
            pki.other_key.to_str().unwrap(),
        ],
        None,
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("do not belong together"),
        "{}",
        stderr(&o)
    );
    let o = run(
        &[
            "serve",
            "--data-dir",
            data.path().to_str().unwrap(),
            "--tls-cert",
            pki.cert.to_str().unwrap(),
        ],
        None,
    );
    assert!(!o.status.success(), "--tls-cert needs --tls-key");
    assert!(stderr(&o).contains("--tls-key"), "{}", stderr(&o));
}

/// Lowercase hex SHA-256 of the DER certificate in an agent's `tls.cert.pem`: its pin.
fn pin_of(agent_dir: &Path) -> String {
    use rustls::pki_types::pem::PemObject;
    use sha2::Digest;
    let der =
        rustls::pki_types::CertificateDer::from_pem_file(agent_dir.join("tls.cert.pem")).unwrap();
    format!("{:x}", sha2::Sha256::digest(der.as_ref()))
}

async fn check_now(api: &Api, id: &str) -> serde_json::Value {
    let (status, body) = api
        .send(reqwest::Method::POST, &format!("/agents/{id}/check"), None)
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

/// The agent's timeline as shown on its page.
async fn timeline(browser: &Browser, id: &str) -> String {
    let (status, page) = browser.get(&format!("/agents/{id}")).await;
    assert_eq!(status, 200);
    texts(&page, "#timeline tbody tr").join("\n")
}

#[tokio::test]
async fn the_console_calls_agents_only_over_tls_to_the_certificate_pinned_at_enrollment() {
    let console = Console::start(FAST);
    let api = Api::new(&console, ADMIN);
    let token = console.enrollment_token(2);
    let mut agent = Agent::install(&console, &token, "pin01");
    let id = agent.agent_id();
    let key = agent.dir.path().join("tls.key.pem");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the agent's TLS key must be 0600");
    let first_pin = pin_of(agent.dir.path());

    // Polled over TLS: Check now answers, the agent is healthy.
    agent.start("1s");
    let healthy = wait_for("a healthy agent", Duration::from_secs(30), || async {
        api.agent(&id).await.filter(|a| a["health"] == "healthy")
    })
    .await;
    let api_url = healthy["api_url"].as_str().unwrap().to_string();
    assert!(api_url.starts_with("https://127.0.0.1:"), "{api_url}");
    let check = check_now(&api, &id).await;
    assert_eq!(check["ok"], true, "{check}");
    // The agent API speaks TLS only.
    let plain = api_url.replace("https://", "http://");
    let answer = reqwest::Client::new()
        .get(format!("{plain}/v1/health"))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(answer.is_err(), "plain HTTP answered: {answer:?}");
    // The timeline names the pinned certificate.
    let browser = Browser::new(&console);
    assert_eq!(browser.sign_in(READER, PASSWORD).await, 303);
    let events = timeline(&browser, &id).await;
    assert!(events.contains(&first_pin[..16]), "{events}");

    // Another key pair under the same file names: the console refuses it.
    agent.kill();
    let other =
        rcgen::generate_simple_self_signed(vec!["agent.hybridsync.invalid".into()]).unwrap();
    std::fs::write(agent.dir.path().join("tls.cert.pem"), other.cert.pem()).unwrap();
    std::fs::write(&key, other.signing_key.serialize_pem()).unwrap();
    agent.start("1s");
    let restarted = wait_for(
        "a heartbeat from the restarted agent",
        Duration::from_secs(30),
        || async {
            api.agent(&id)
                .await
                .filter(|a| a["api_url"].as_str() != Some(api_url.as_str()))
        },
    )
    .await;
    let check = check_now(&api, &id).await;
    assert_eq!(check["ok"], false, "{check}");
    assert_eq!(
        check["message"],
        format!("health endpoint unreachable: {MISMATCH}"),
        "{check}"
    );
    assert_eq!(check["agent"]["health"], "unhealthy", "{check}");
    assert_eq!(
        check["agent"]["health_reason"],
        format!("health endpoint unreachable: {MISMATCH}")
    );
    // Heartbeats keep coming, polls keep failing: it stays unhealthy.
    let since = restarted["last_heartbeat_at"].clone();
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = api.agent(&id).await.unwrap();
        assert_eq!(now["health"], "unhealthy", "{now}");
        // (A poll that timed out on a loaded machine would say so instead; it still fails.)
        assert!(now["last_poll_error"].is_string(), "{now}");
    }
    let now = api.agent(&id).await.unwrap();
    assert_ne!(now["last_heartbeat_at"], since, "heartbeats stopped: {now}");
    // Check now on the agent's page, and the timeline, say why.
    let (status, page) = browser.get(&format!("/agents/{id}")).await;
    assert_eq!(status, 200, "{page}");
    let (status, location, _) = browser
        .post(&format!("/agents/{id}/check"), &[("csrf", &csrf_of(&page))])
        .await;
    assert_eq!(status, 303, "{location}");
    let (_, page) = browser.get(&location).await;
    let shown = texts(&page, "#check-result").join(" ");
    assert!(shown.contains(MISMATCH), "{shown}");
    let events = timeline(&browser, &id).await;
    assert!(events.contains(MISMATCH), "{events}");

    // A re-install makes a new pair and rotates the pin: polls work again.
    agent.kill();
    let o = install_into(agent.dir.path(), &console.url, &token, "pin01", &[]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(agent.agent_id(), id);
    let second_pin = pin_of(agent.dir.path());
    assert_ne!(second_pin, first_pin);
    agent.start("1s");
    wait_for("Check now to succeed", Duration::from_secs(30), || async {
        let check = check_now(&api, &id).await;
        (check["ok"] == true).then_some(())
    })
    .await;
    wait_for(
        "the agent healthy again",
        Duration::from_secs(30),
        || async { api.agent(&id).await.filter(|a| a["health"] == "healthy") },
    )
    .await;
    let events = timeline(&browser, &id).await;
    assert!(events.contains(&second_pin[..16]), "{events}");
}
