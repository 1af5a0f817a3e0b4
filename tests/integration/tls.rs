//! HTTPS: `serve --tls-cert/--tls-key` with a certificate from a private CA made here with rcgen,
//! an agent that trusts only that CA (`--console-ca-cert`), and the failures around it.

use crate::support::*;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use std::path::{Path, PathBuf};

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

#[tokio::test]
async fn the_console_serves_https_and_an_agent_trusting_the_private_ca_enrolls() {
    let pki_dir = tempfile::tempdir().unwrap();
    let pki = make_pki(pki_dir.path());
    let console = Console::start(&[
        "--tls-cert",
        pki.cert.to_str().unwrap(),
        "--tls-key",
        pki.key.to_str().unwrap(),
    ]);
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
