//! Console → agent calls: HTTPS to the certificate each agent's enrollment pinned.
//!
//! `agent install` generates a key pair and a self-signed certificate and enrolls with the
//! certificate's SHA-256, the pin; a re-install generates a new pair and so rotates the pin. The
//! console calls every agent through one reqwest client (one connection pool, which matters when a
//! poll round covers 10,000 agents), addressing agent X as
//! `https://<pin prefix>.<X>.agent.hybridsync.invalid:<port>`:
//! - a DNS resolver maps that name to the address agent X reported in its heartbeats;
//! - the certificate verifier reads the agent id from the same name (the TLS server name) and
//!   accepts exactly the certificate whose SHA-256 is X's pin, then checks the handshake signature
//!   against that certificate's key as usual (so the agent must hold the private key).
//!
//! The pin prefix in the name keys the connection pool (and TLS session resumption) by pin: once a
//! re-install has rotated the pin, no connection verified against the old certificate is reused, and
//! a name with a stale prefix is refused.
//!
//! Other console code calls agents through [`Fleet::agent_request`].

use super::{Fleet, Inner};
use crate::protocol::AGENT_API;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, OtherError, SignatureScheme};
use sha2::{Digest, Sha256};
use std::fmt::{self, Write as _};
use std::net::SocketAddr;
use std::sync::{Arc, PoisonError, RwLock, Weak};
use std::time::Duration;
use subtle::ConstantTimeEq;

/// SHA-256 of an agent's DER certificate.
pub type Pin = [u8; 32];

/// What an administrator reads ("Check now", the agent's health reason and timeline) when an
/// agent presents another certificate than the one pinned at enrollment.
pub const PIN_MISMATCH: &str = "the agent presented a certificate that does not match the one pinned at enrollment (re-install the agent to rotate it)";
/// The agent enrolled without a certificate (a version from before pinning).
pub const NO_PIN: &str = "no certificate is pinned for this agent (it enrolled before the console pinned agent certificates): upgrade and re-install the agent";
/// The agent has not sent a heartbeat that says where its API listens.
pub const NO_ADDRESS: &str = "the agent has not reported its API address yet (no heartbeat)";
const NOT_TLS: &str = "the agent did not answer over TLS (an agent older than the console?): upgrade and re-install the agent";
const STALE: &str =
    "the agent's certificate was rotated (re-install) while this call was prepared; try again";

const HOST_SUFFIX: &str = ".agent.hybridsync.invalid";
/// Bytes of the pin in the host name: enough to tell rotated pins apart, short for a DNS label.
const PIN_LABEL_BYTES: usize = 8;

/// A pin in its stored form (64 hex digits, either case); None if it is not one.
pub fn parse_pin(hex: &str) -> Option<Pin> {
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let nibble = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut pin = [0u8; 32];
    for (byte, pair) in pin.iter_mut().zip(hex.as_bytes().chunks_exact(2)) {
        *byte = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(pin)
}

/// Lowercase hex, the stored form of a pin.
pub fn hex(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len() * 2);
    push_hex(&mut text, bytes);
    text
}

fn push_hex(text: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for &b in bytes {
        text.push(char::from(DIGITS[usize::from(b >> 4)]));
        text.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
}

/// `https://<name the console gives the agent>:<port><AGENT_API><path>`. Built by hand, not with
/// `format!`: a poll round builds one per agent.
fn agent_url(agent_id: &uuid::Uuid, pin: &Pin, port: u16, path: &str) -> String {
    let mut url = String::with_capacity(128);
    url.push_str("https://");
    push_hex(&mut url, &pin[..PIN_LABEL_BYTES]);
    url.push('.');
    url.push_str(
        agent_id
            .hyphenated()
            .encode_lower(&mut uuid::Uuid::encode_buffer()),
    );
    url.push_str(HOST_SUFFIX);
    // Writing to a String cannot fail.
    let _ = write!(url, ":{port}");
    url.push_str(AGENT_API);
    url.push_str(path);
    url
}

/// What a host name made by [`agent_url`] stands for, checked against the fleet now.
struct Target {
    addr: Option<SocketAddr>,
    pin: Pin,
}

fn target(fleet: &Weak<RwLock<Inner>>, host: &str) -> Result<Target, String> {
    let host = host.to_ascii_lowercase();
    let (label, agent_id) = host
        .strip_suffix(HOST_SUFFIX)
        .and_then(|rest| rest.split_once('.'))
        .ok_or_else(|| format!("{host} is not the address of an agent"))?;
    let fleet = fleet
        .upgrade()
        .ok_or_else(|| "the console is shutting down".to_string())?;
    let inner = fleet.read().unwrap_or_else(PoisonError::into_inner);
    let agent = inner
        .slots
        .find_str(agent_id)
        .and_then(|idx| inner.slots.get(idx))
        .ok_or_else(|| format!("no agent with id {agent_id}"))?;
    let pin = agent.tls_pin.ok_or(NO_PIN)?;
    if label != hex(&pin[..PIN_LABEL_BYTES]) {
        return Err(STALE.into());
    }
    Ok(Target {
        addr: agent.api_addr(),
        pin,
    })
}

/// Resolves agent names to the address each agent reported.
struct AgentResolver(Weak<RwLock<Inner>>);

impl reqwest::dns::Resolve for AgentResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let found = target(&self.0, name.as_str())
            .and_then(|t| t.addr.ok_or_else(|| NO_ADDRESS.to_string()))
            .map(|addr| Box::new(std::iter::once(addr)) as reqwest::dns::Addrs)
            .map_err(Into::into);
        Box::pin(std::future::ready(found))
    }
}

/// Why the verifier refused a certificate, in words for an administrator.
#[derive(Debug)]
struct Refused(String);

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

fn refuse(message: impl Into<String>) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(Refused(
        message.into(),
    )))))
}

/// Accepts the one certificate pinned for the agent the server name stands for.
struct PinVerifier {
    fleet: Weak<RwLock<Inner>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl fmt::Debug for PinVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PinVerifier")
    }
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ServerName::DnsName(name) = server_name else {
            return Err(refuse("agents are called by name, not by IP address"));
        };
        let pin = target(&self.fleet, name.as_ref()).map_err(refuse)?.pin;
        let presented: Pin = Sha256::digest(end_entity.as_ref()).into();
        if bool::from(presented.ct_eq(&pin)) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(refuse(PIN_MISMATCH))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The one client for every agent: pinned TLS, names resolved from the fleet, no proxy.
pub(super) fn client(
    fleet: &Arc<RwLock<Inner>>,
    timeout: Duration,
) -> anyhow::Result<reqwest::Client> {
    // AES-128-GCM with SHA-256 first; the agent's server prefers it too.
    let provider = crate::console::tls::provider();
    let verifier = PinVerifier {
        fleet: Arc::downgrade(fleet),
        algorithms: provider.signature_verification_algorithms,
    };
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .dns_resolver(Arc::new(AgentResolver(Arc::downgrade(fleet))))
        .https_only(true)
        // Agents are reached directly; an HTTPS_PROXY meant for the outside world does not apply.
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        // reqwest's default retries only HTTP/2 and HTTP/3 refusals, and agents speak HTTP/1.1;
        // it still copies every request's headers in case. A poll round makes 10,000 requests.
        .retry(reqwest::retry::never().max_retries_per_request(0))
        .connect_timeout(timeout)
        .timeout(timeout)
        .pool_idle_timeout(Duration::from_secs(90))
        .build()?)
}

impl Fleet {
    /// A request to `<agent's pinned HTTPS address><AGENT_API><path>` (`path` starts with `/`)
    /// carrying the console token, ready for a body and `send()`. Err(message for an
    /// administrator) when the agent is unknown, has not reported its address, or has no pinned
    /// certificate. The request times out after `--poll-timeout` unless given its own
    /// `.timeout(…)`. A failed `send()` is best described by [`describe_error`].
    pub fn agent_request(
        &self,
        agent_id: &str,
        method: reqwest::Method,
        path: &str,
    ) -> Result<reqwest::RequestBuilder, String> {
        let id =
            uuid::Uuid::parse_str(agent_id).map_err(|_| format!("no agent with id {agent_id}"))?;
        self.request_to(&id, method, path)
    }

    /// [`Fleet::agent_request`] for an agent known by its id.
    pub(super) fn request_to(
        &self,
        agent_id: &uuid::Uuid,
        method: reqwest::Method,
        path: &str,
    ) -> Result<reqwest::RequestBuilder, String> {
        if !path.starts_with('/') {
            return Err(format!("agent API path {path:?} does not start with /"));
        }
        let (url, token) = {
            let inner = self.read();
            let agent = inner
                .slots
                .find(agent_id)
                .and_then(|idx| inner.slots.get(idx))
                .ok_or_else(|| format!("no agent with id {agent_id}"))?;
            let addr = agent.api_addr().ok_or(NO_ADDRESS)?;
            let pin = agent.tls_pin.ok_or(NO_PIN)?;
            (
                agent_url(&agent.id, &pin, addr.port(), path),
                self.console_token_for(agent),
            )
        };
        Ok(self.http.request(method, url).bearer_auth(token))
    }
}

/// A short cause for a failed call to an agent: the pin mismatch in words, "connection refused",
/// "timed out after 5s", …
pub fn describe_error(err: &reqwest::Error, timeout: Duration) -> String {
    if err.is_timeout() {
        return format!("timed out after {}", humantime::format_duration(timeout));
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    let mut first_io = None;
    while let Some(e) = source {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return describe_tls(tls);
        }
        source = match e.downcast_ref::<std::io::Error>() {
            Some(io) => {
                first_io.get_or_insert(io);
                // `io::Error::source()` skips the error it wraps, where TLS errors travel.
                io.get_ref()
                    .map(|inner| inner as &(dyn std::error::Error + 'static))
            }
            None => e.source(),
        };
    }
    if let Some(io) = first_io {
        return match io.kind() {
            std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
            std::io::ErrorKind::ConnectionReset => "connection reset".into(),
            std::io::ErrorKind::TimedOut => "timed out".into(),
            std::io::ErrorKind::UnexpectedEof => "the agent closed the connection".into(),
            _ => io.to_string(),
        };
    }
    innermost(err)
}

fn describe_tls(err: &rustls::Error) -> String {
    match err {
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(other))) => {
            match other.downcast_ref::<Refused>() {
                Some(Refused(message)) => message.clone(),
                None => format!("the agent's certificate was refused: {other}"),
            }
        }
        rustls::Error::InvalidMessage(_) => NOT_TLS.into(),
        other => format!("TLS handshake with the agent failed: {other}"),
    }
}

pub(super) fn innermost(err: &(dyn std::error::Error + 'static)) -> String {
    let mut current = err;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_parse_from_hex_of_either_case_and_nothing_else() {
        let text = "00ff".repeat(16);
        let pin = parse_pin(&text).expect("pin");
        assert_eq!(hex(&pin), text);
        assert_eq!(parse_pin(&text.to_uppercase()), Some(pin));
        assert_eq!(parse_pin(&text[2..]), None);
        assert_eq!(parse_pin(&format!("{}zz", &text[2..])), None);
        assert_eq!(parse_pin(&format!("é{}", &text[2..])), None);
    }

    use crate::auth::tokens::ConsoleKey;
    use crate::console::tls::{SelfSigned, TlsListener};
    use crate::fleet::health::Thresholds;
    use crate::fleet::FleetConfig;
    use crate::protocol::{AgentHealth, BatchEnrollRequest, Environment, Extension, Heartbeat};
    use std::sync::atomic::Ordering::Relaxed;

    /// One agent enrolled with `pin`, heartbeating from `listen`.
    async fn enroll(fleet: &Fleet, name: &str, pin: &str, listen: Option<SocketAddr>) -> String {
        let token = crate::console::enrollment::create(&fleet.db, name, Duration::from_secs(60), 1)
            .await
            .unwrap();
        let request = BatchEnrollRequest {
            enrollment_token: token.token,
            machine_names: vec![name.into()],
            extension: Extension::CloudSync,
            environment: Environment::Public,
            version: "1".into(),
            tls_cert_sha256: Some(pin.into()),
        };
        let enrolled = fleet
            .enroll_batch(request, "127.0.0.1".into())
            .await
            .unwrap();
        let id = enrolled.agents[0].agent_id.clone();
        let beat = Heartbeat {
            version: "1".into(),
            machine_name: name.into(),
            uptime_seconds: 1,
            heartbeat_interval_seconds: 30,
            listen_addr: listen.map(|a| a.to_string()),
            checks: vec![],
            domains: vec![],
        };
        fleet.heartbeat(&id, beat, "127.0.0.1".into()).unwrap();
        id
    }

    /// A fleet on a new database in `dir`, polling as given.
    async fn fleet(
        dir: &std::path::Path,
        poll_interval: Duration,
        poll_timeout: Duration,
    ) -> Fleet {
        let db = crate::db::open(dir).await.unwrap();
        let config = FleetConfig {
            environment: Environment::Public,
            thresholds: Thresholds {
                unhealthy_after: Duration::from_secs(90),
                inactive_after: Duration::from_secs(3600),
            },
            hide_inactive_after: Duration::from_secs(864_000),
            event_retention: Duration::from_secs(30 * 86_400),
            poll_interval,
            poll_timeout,
            poll_concurrency: 4,
            poll_keepalive: 4,
            snapshot_file: None,
        };
        Fleet::load(db, ConsoleKey::from_bytes([7; 32]), config)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_long_poll_round_holds_the_next_one_back_three_times_its_length() {
        let dir = tempfile::tempdir().unwrap();
        let timeout = Duration::from_millis(300);
        let fleet = Arc::new(fleet(dir.path(), Duration::from_millis(100), timeout).await);
        // An agent API that accepts connections and never answers: every round lasts the timeout.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = silent.local_addr().unwrap();
        let accepting = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((socket, _)) = silent.accept().await {
                open.push(socket);
            }
        });
        enroll(&fleet, "silent", &hex(&[1; 32]), Some(addr)).await;

        let (stop, stopped) = tokio::sync::watch::channel(false);
        let background = tokio::spawn(fleet.clone().run_background(stopped));
        let count = |counter: &std::sync::atomic::AtomicU64| counter.load(Relaxed);
        let round_ends = |n: u64| {
            let fleet = fleet.clone();
            async move {
                let deadline = std::time::Instant::now() + Duration::from_secs(20);
                while count(&fleet.metrics.poll_rounds) < n {
                    assert!(std::time::Instant::now() < deadline, "no poll round {n}");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                std::time::Instant::now()
            }
        };
        let first = round_ends(1).await;
        let second = round_ends(2).await;
        // Round two starts at least 3 × 300 ms after round one ends, and lasts 300 ms itself.
        // Every 100 ms (the interval), they would be 300–400 ms apart; the margin is for the
        // sampling above.
        let apart = second - first;
        assert!(apart >= Duration::from_millis(800), "{apart:?}");
        assert!(count(&fleet.metrics.poll_rounds_held) >= 1);
        assert!(count(&fleet.metrics.polls_failed) >= 2);

        stop.send(true).unwrap();
        background.await.unwrap();
        accepting.abort();
    }

    #[tokio::test]
    async fn calls_reach_the_pinned_certificate_and_refuse_any_other() {
        let dir = tempfile::tempdir().unwrap();
        let fleet = fleet(dir.path(), Duration::from_secs(60), Duration::from_secs(5)).await;

        // An agent API serving `served`, answering every poll.
        let served = SelfSigned::generate("agent.hybridsync.invalid").unwrap();
        let other = SelfSigned::generate("agent.hybridsync.invalid").unwrap();
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let app = axum::Router::new().route(
            "/v1/health",
            axum::routing::get(|| async {
                axum::Json(AgentHealth {
                    agent_id: "x".into(),
                    version: "1".into(),
                    uptime_seconds: 1,
                    checks: vec![],
                })
            }),
        );
        let listener = TlsListener::new(tcp, served.server_config().unwrap()).unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });

        let good = enroll(&fleet, "good", &served.sha256_hex(), Some(addr)).await;
        let bad = enroll(&fleet, "bad", &other.sha256_hex(), Some(addr)).await;
        let silent = enroll(&fleet, "silent", &served.sha256_hex(), None).await;

        let response = fleet
            .agent_request(&good, reqwest::Method::GET, "/health")
            .unwrap()
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert!(fleet.poll_one(&good).await.unwrap().ok);
        fleet.flush().await.unwrap();
        // A poll that only moves timestamps takes the cheap write path, and still persists them.
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(fleet.poll_one(&good).await.unwrap().ok);
        {
            let inner = fleet.read();
            let slot = inner
                .slots
                .get(inner.slots.find_str(&good).unwrap())
                .unwrap();
            assert!(!slot.dirty);
            assert!(slot.beating);
        }
        fleet.flush().await.unwrap();
        let polled_at = fleet.get(&good).unwrap().last_poll_at;
        let mut conn = fleet.db.acquire().await.unwrap();
        let row = crate::db::agents::get(&mut conn, &good)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.last_poll_at, polled_at);
        drop(conn);

        let err = fleet
            .agent_request(&bad, reqwest::Method::GET, "/health")
            .unwrap()
            .send()
            .await
            .unwrap_err();
        assert_eq!(describe_error(&err, Duration::from_secs(5)), PIN_MISMATCH);
        let outcome = fleet.poll_one(&bad).await.unwrap();
        assert!(!outcome.ok);
        assert!(
            outcome.message.ends_with(PIN_MISMATCH),
            "{}",
            outcome.message
        );
        let agent = fleet.get(&bad).unwrap();
        assert_eq!(agent.health, crate::fleet::health::Health::Unhealthy);
        assert!(agent.health_reason.contains(PIN_MISMATCH));
        assert!(
            fleet
                .read()
                .queues
                .events
                .iter()
                .any(|e| e.agent_id.to_string() == bad
                    && e.as_row().to_value == "certificate refused")
        );
        fleet.flush().await.expect("the events can be written");
        // A heartbeat from a new address does not make the refusal go away.
        let beat = Heartbeat {
            version: "1".into(),
            machine_name: "bad".into(),
            uptime_seconds: 2,
            heartbeat_interval_seconds: 30,
            listen_addr: Some("127.0.0.1:1".into()),
            checks: vec![],
            domains: vec![],
        };
        fleet.heartbeat(&bad, beat, "127.0.0.1".into()).unwrap();
        assert_eq!(
            fleet.get(&bad).unwrap().last_poll_error.as_deref(),
            Some(PIN_MISMATCH)
        );

        assert_eq!(
            fleet
                .agent_request(&silent, reqwest::Method::GET, "/health")
                .unwrap_err(),
            NO_ADDRESS
        );
        assert!(fleet
            .agent_request("nobody", reqwest::Method::GET, "/health")
            .is_err());
        assert!(fleet
            .agent_request(&good, reqwest::Method::GET, "health")
            .is_err());
    }

    #[test]
    fn agent_urls_carry_the_pin_prefix_the_agent_id_and_the_port() {
        let mut pin = [0xab; 32];
        pin[1] = 0x09;
        pin[8] = 0xff; // past the prefix: not in the name
        let id = uuid::Uuid::parse_str("0b7e1c2d-3e4f-4a5b-8c6d-7e8f9a0b1c2d").unwrap();
        assert_eq!(
            agent_url(&id, &pin, 8443, "/health"),
            format!(
                "https://ab09abababababab.0b7e1c2d-3e4f-4a5b-8c6d-7e8f9a0b1c2d\
                 .agent.hybridsync.invalid:8443{AGENT_API}/health"
            )
        );
        assert_eq!(hex(&[0x00, 0x0f, 0xa0, 0xff]), "000fa0ff");
    }
}
