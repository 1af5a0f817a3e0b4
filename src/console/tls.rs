//! HTTPS servers: the console's (`serve --tls-cert FILE --tls-key FILE`) and the agent API's (the
//! agent's self-signed certificate, made by `agent install`, which the console pins at
//! enrollment; see `fleet::call`). Here: the rustls server configuration (ring provider), self-signed
//! certificates, and a listener that hands axum connections whose TLS handshake is done.
//!
//! Handshakes run in their own tasks with a time limit, so a client that connects and stalls
//! cannot hold up the accept loop for everyone else.

use anyhow::{bail, Context};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// A client gets this long to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; further connections wait to be accepted.
pub const MAX_HANDSHAKES: usize = 512;

/// Reads a PEM certificate chain (leaf first) and its PEM private key.
pub fn server_config(cert: &Path, key: &Path) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("cannot read the certificate file {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("{} is not a PEM certificate chain", cert.display()))?;
    if chain.is_empty() {
        bail!("{} holds no PEM certificate", cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(key).with_context(|| {
        format!(
            "cannot read a PEM private key (PKCS#8, PKCS#1 or SEC1) from {}",
            key.display()
        )
    })?;
    server_config_der(chain, key)
}

/// The server configuration for a certificate chain (leaf first) and its private key, in DER.
pub fn server_config_der(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("cannot set up TLS")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("the certificate and the private key do not belong together")?;
    // Session tickets, sealed with a key the process makes and rotates (rustls: every 6 hours),
    // so a client's next connection resumes without the certificate and its signature. Agents
    // open a connection per heartbeat; the default resumption keeps 256 sessions on the server,
    // a tiny share of a fleet, while tickets cost the server no memory per client.
    config.ticketer = rustls::crypto::ring::Ticketer::new().context("cannot set up TLS tickets")?;
    // Our order, not the client's: rustls and OpenSSL clients list AES-256 with SHA-384 first.
    config.ignore_client_order = true;
    Ok(Arc::new(config))
}

/// ring's TLS provider with AES-128-GCM and SHA-256 first, for both ends of the console's
/// connections (the console's server, agents' API servers, the console's calls to agents).
/// Profiles of handshakes showed SHA-384's key schedule (SHA-512, without hardware help on common
/// CPUs) among the top costs; SHA-256 has it. Every TLS 1.3 implementation has both suites.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    let mut provider = rustls::crypto::ring::default_provider();
    provider
        .cipher_suites
        .sort_by_key(|suite| suite.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    Arc::new(provider)
}

/// A fresh key pair (ECDSA P-256) and a self-signed certificate for it: what an agent serves its
/// API with. Nothing checks its names or dates; the console trusts it by its SHA-256 alone.
pub struct SelfSigned {
    pub cert_pem: String,
    /// PKCS#8. Deliberately not `Debug`.
    pub key_pem: String,
    cert_der: CertificateDer<'static>,
    key_der: Vec<u8>,
}

impl SelfSigned {
    /// `name` (a DNS name) becomes the subject, for people who look at the certificate.
    pub fn generate(name: &str) -> anyhow::Result<Self> {
        let generate = || {
            let signing_key = rcgen::KeyPair::generate()?;
            let mut params = rcgen::CertificateParams::new(vec![name.to_owned()])?;
            params.distinguished_name = rcgen::DistinguishedName::new();
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, name);
            let cert = params.self_signed(&signing_key)?;
            Ok::<_, rcgen::Error>((cert, signing_key))
        };
        let (cert, signing_key) = generate().context("cannot generate a TLS certificate")?;
        Ok(SelfSigned {
            cert_pem: cert.pem(),
            key_pem: signing_key.serialize_pem(),
            cert_der: cert.der().clone(),
            key_der: signing_key.serialize_der(),
        })
    }

    /// The pin: lowercase hex SHA-256 of the certificate's DER.
    pub fn sha256_hex(&self) -> String {
        certificate_sha256_hex(&self.cert_der)
    }

    pub fn server_config(&self) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        let key = PrivatePkcs8KeyDer::from(self.key_der.clone());
        server_config_der(vec![self.cert_der.clone()], key.into())
    }
}

/// Lowercase hex SHA-256 of a DER certificate: the form in which the console pins an agent's.
pub fn certificate_sha256_hex(der: &[u8]) -> String {
    format!("{:x}", Sha256::digest(der))
}

/// A TCP listener whose connections come out TLS-terminated.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    handshakes: Arc<AtomicU64>,
}

impl TlsListener {
    pub fn new(tcp: TcpListener, config: Arc<rustls::ServerConfig>) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        let acceptor = TlsAcceptor::from(config);
        let slots = Arc::new(Semaphore::new(MAX_HANDSHAKES));
        let handshakes = Arc::new(AtomicU64::new(0));
        let completed = handshakes.clone();
        tokio::spawn(async move {
            loop {
                let Ok(permit) = slots.clone().acquire_owned().await else {
                    return;
                };
                let (stream, peer) = match tcp.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors and the like: wait instead of spinning.
                        tracing::warn!(error = %e, "cannot accept a connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                if tx.is_closed() {
                    return;
                }
                // A handshake is several small flights and a response may leave in more than one
                // record: with Nagle's algorithm each could wait for the peer's delayed ACK
                // (~40 ms), which made a health poll cost ~40 ms on loopback.
                if let Err(e) = stream.set_nodelay(true) {
                    tracing::debug!(peer = %peer, error = %e, "cannot set TCP_NODELAY");
                }
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                let completed = completed.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            completed.fetch_add(1, Relaxed);
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(peer = %peer, error = %e, "TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(peer = %peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener {
            ready,
            local,
            handshakes,
        })
    }

    /// Counts the TLS handshakes completed so far (the simulator reports it, so a test can tell
    /// a new connection from a reused one).
    pub fn handshakes(&self) -> Arc<AtomicU64> {
        self.handshakes.clone()
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept task only ends when this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
