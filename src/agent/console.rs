//! HTTP client for the console's agent API (`enroll`, `heartbeat`, `whoami`), and the agent's side
//! of sign-in by device code (RFC 8628, through the oauth2 crate's device flow).
//!
//! Every failure becomes a [`ConsoleError`] that tells "could not talk to the console" apart from
//! "the console answered no", because install, run and status each react differently to the two.

use crate::protocol::{
    EnrollRequest, EnrollResponse, ErrorBody, Heartbeat, HeartbeatResponse, WhoAmI,
    CONSOLE_AGENT_API, VERSION,
};
use anyhow::{bail, Context, Result};
use reqwest::{RequestBuilder, StatusCode, Url};
use serde::de::DeserializeOwned;
use std::path::Path;
use std::time::Duration;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// An idle connection to the console is dropped after this long: long enough to reuse it within
/// a burst (a sync cycle's batches), shorter than the console's `--idle-timeout` (5 s by default),
/// so the agent, not the console, closes it and never sends on a connection being closed.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub(crate) enum ConsoleError {
    #[error("cannot reach the console at {url}: {cause}. Check the URL and that `hybridsync serve` is running")]
    Unreachable { url: String, cause: String },
    /// The console's own JSON error.
    #[error("{message} (console answered HTTP {status}, {code})")]
    Refused {
        status: StatusCode,
        code: String,
        message: String,
    },
    /// An answer that is not the console's JSON: a proxy, another server, or a console bug.
    #[error("the server at {url} answered HTTP {status} with {detail}")]
    Unexpected {
        url: String,
        status: StatusCode,
        detail: String,
    },
}

impl ConsoleError {
    /// The HTTP status, when the console answered at all.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ConsoleError::Unreachable { .. } => None,
            ConsoleError::Refused { status, .. } | ConsoleError::Unexpected { status, .. } => {
                Some(*status)
            }
        }
    }

    /// Worth retrying soon: the console may come back, whereas a 4xx will not change by retrying.
    pub fn is_transient(&self) -> bool {
        self.status().is_none_or(|s| s.is_server_error())
    }
}

/// Checks the console URL an operator typed and drops trailing slashes, so endpoint paths can be
/// appended to it.
pub(crate) fn normalize_url(raw: &str) -> Result<String> {
    let trimmed = raw.trim().trim_end_matches('/');
    let url = Url::parse(trimmed).with_context(|| format!("invalid console URL {raw:?}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        bail!("invalid console URL {raw:?}: expected http://HOST:PORT or https://HOST");
    }
    Ok(trimmed.to_owned())
}

/// The console's CA certificate, copied into the agent's data dir by `install --console-ca-cert`.
pub(crate) const CONSOLE_CA_FILE: &str = "console-ca.pem";

#[derive(Clone)]
pub(crate) struct Console {
    http: reqwest::Client,
    url: String,
    /// The private CA the console's certificate must chain to, instead of the public roots.
    ca: Option<Vec<reqwest::Certificate>>,
}

/// Reads PEM CA certificates; the error names the file.
pub(crate) fn read_ca(path: &Path) -> Result<Vec<reqwest::Certificate>> {
    let pem = std::fs::read(path)
        .with_context(|| format!("cannot read the CA certificate {}", path.display()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .with_context(|| format!("{} is not a PEM certificate", path.display()))?;
    if certs.is_empty() {
        bail!("{} holds no PEM certificate", path.display());
    }
    Ok(certs)
}

impl Console {
    /// `url` must come from [`normalize_url`]. The console's certificate (for https) must chain to
    /// a public root.
    pub fn new(url: &str) -> Result<Self> {
        Self::with_ca(url, None)
    }

    /// For an installed agent: trusts the console CA saved in `data_dir` at install, if there is one.
    pub fn for_data_dir(url: &str, data_dir: &Path) -> Result<Self> {
        let ca = data_dir.join(CONSOLE_CA_FILE);
        if ca.exists() {
            Self::with_ca(url, Some(read_ca(&ca)?))
        } else {
            Self::new(url)
        }
    }

    /// With `ca`, only certificates issued by it are accepted (a private CA).
    pub fn with_ca(url: &str, ca: Option<Vec<reqwest::Certificate>>) -> Result<Self> {
        let http = Self::client_builder(ca.as_deref())
            .build()
            .context("cannot create the HTTP client")?;
        Ok(Self {
            http,
            url: url.to_owned(),
            ca,
        })
    }

    fn client_builder(ca: Option<&[reqwest::Certificate]>) -> reqwest::ClientBuilder {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .user_agent(format!("hybridsync-agent/{VERSION}"));
        if let Some(ca) = ca {
            builder = builder.tls_built_in_root_certs(false);
            for cert in ca {
                builder = builder.add_root_certificate(cert.clone());
            }
        }
        builder
    }

    pub async fn enroll(&self, request: &EnrollRequest) -> Result<EnrollResponse, ConsoleError> {
        self.send(self.http.post(self.endpoint("enroll")).json(request))
            .await
    }

    pub async fn heartbeat(
        &self,
        agent_credential: &str,
        heartbeat: &Heartbeat,
    ) -> Result<HeartbeatResponse, ConsoleError> {
        let request = self
            .http
            .post(self.endpoint("heartbeat"))
            // The next heartbeat is an interval away (30 s by default): a connection kept for it
            // would cost the console memory and a file descriptor per agent in between.
            .header(reqwest::header::CONNECTION, "close")
            .bearer_auth(agent_credential)
            .json(heartbeat);
        self.send(request).await
    }

    /// Tells the console the agent's full list of domains (`agent add-directory` / `remove-directory`).
    pub async fn report_domains(
        &self,
        agent_credential: &str,
        report: &crate::protocol::DomainsReport,
    ) -> Result<crate::protocol::DomainsAccepted, ConsoleError> {
        let request = self
            .http
            .post(self.endpoint("domains"))
            .bearer_auth(agent_credential)
            .json(report);
        self.send(request).await
    }

    /// Asks for the leases of the agent's domains, and the cycles due.
    pub async fn sync_lease(
        &self,
        agent_credential: &str,
        request: &crate::protocol::sync::LeaseRequest,
    ) -> Result<crate::protocol::sync::LeaseResponse, ConsoleError> {
        let request = self
            .http
            .post(self.endpoint("sync/lease"))
            .bearer_auth(agent_credential)
            .json(request);
        self.send(request).await
    }

    pub async fn sync_batch(
        &self,
        agent_credential: &str,
        cycle_id: &str,
        batch: &crate::protocol::sync::Batch,
    ) -> Result<crate::protocol::sync::BatchAccepted, ConsoleError> {
        let request = self
            .http
            .post(self.endpoint(&format!("sync/cycles/{cycle_id}/batch")))
            .bearer_auth(agent_credential)
            .json(batch);
        self.send(request).await
    }

    pub async fn sync_finish(
        &self,
        agent_credential: &str,
        cycle_id: &str,
        finish: &crate::protocol::sync::Finish,
    ) -> Result<crate::protocol::sync::FinishAccepted, ConsoleError> {
        let request = self
            .http
            .post(self.endpoint(&format!("sync/cycles/{cycle_id}/finish")))
            .bearer_auth(agent_credential)
            .json(finish);
        self.send(request).await
    }

    pub async fn whoami(&self, agent_credential: &str) -> Result<WhoAmI, ConsoleError> {
        let request = self
            .http
            .get(self.endpoint("whoami"))
            .bearer_auth(agent_credential);
        self.send(request).await
    }

    /// Runs the device authorization grant: asks the console for a code, shows it through
    /// `show(verification_uri, user_code)`, and polls until an administrator approves (returns the
    /// enrollment token the console issued for this machine), denies, or the code expires.
    pub async fn device_sign_in(
        &self,
        machine_name: &str,
        show: impl FnOnce(&str, &str),
    ) -> Result<String> {
        use oauth2::basic::BasicClient;
        use oauth2::DeviceCodeErrorResponseType as E;
        use oauth2::{
            AuthType, ClientId, DeviceAuthorizationUrl, RequestTokenError,
            StandardDeviceAuthorizationResponse, TokenResponse, TokenUrl,
        };
        let client = BasicClient::new(ClientId::new("hybridsync-agent".to_owned()))
            .set_auth_type(AuthType::RequestBody)
            .set_device_authorization_url(DeviceAuthorizationUrl::new(
                self.endpoint("device/authorize"),
            )?)
            .set_token_uri(TokenUrl::new(self.endpoint("device/token"))?);
        // The token endpoint must not redirect: following one could send the device code elsewhere.
        let http = Self::client_builder(self.ca.as_deref())
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .context("cannot create the HTTP client")?;
        let details: StandardDeviceAuthorizationResponse = client
            .exchange_device_code()
            .add_extra_param("machine_name", machine_name)
            .request_async(&http)
            .await
            .map_err(|e| match e {
                RequestTokenError::ServerResponse(r) => anyhow::anyhow!(
                    "the console refused to start sign-in by code: {}",
                    r.error_description().cloned().unwrap_or_else(|| r.error().to_string())
                ),
                RequestTokenError::Request(e) => anyhow::anyhow!(
                    "cannot reach the console at {}: {e}. Check the URL and that `hybridsync serve` is running",
                    self.url
                ),
                other => anyhow::anyhow!("sign-in by code failed: {other}"),
            })?;
        show(
            details.verification_uri().as_str(),
            details.user_code().secret(),
        );
        let token = client
            .exchange_device_access_token(&details)
            .request_async(&http, tokio::time::sleep, None)
            .await
            .map_err(|e| match e {
                RequestTokenError::ServerResponse(r) => match r.error() {
                    E::AccessDenied => anyhow::anyhow!(
                        "an administrator denied this agent in the console; nothing was installed"
                    ),
                    E::ExpiredToken => anyhow::anyhow!(
                        "the code expired before an administrator approved it; run `hybridsync agent install` again"
                    ),
                    other => anyhow::anyhow!(
                        "the console refused the sign-in ({}): {}",
                        other.as_ref(),
                        r.error_description().cloned().unwrap_or_default()
                    ),
                },
                other => anyhow::anyhow!("sign-in by code failed: {other}"),
            })?;
        Ok(token.access_token().secret().clone())
    }

    fn endpoint(&self, name: &str) -> String {
        format!("{}{CONSOLE_AGENT_API}/{name}", self.url)
    }

    async fn send<T: DeserializeOwned>(&self, request: RequestBuilder) -> Result<T, ConsoleError> {
        let unreachable = |e: reqwest::Error| ConsoleError::Unreachable {
            url: self.url.clone(),
            cause: transport_cause(&e),
        };
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        let body = response.bytes().await.map_err(unreachable)?;
        let unexpected = |detail: String| ConsoleError::Unexpected {
            url: self.url.clone(),
            status,
            detail,
        };
        if status.is_success() {
            return serde_json::from_slice(&body)
                .map_err(|e| unexpected(format!("a body that is not the expected JSON ({e})")));
        }
        match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(ErrorBody { error }) => Err(ConsoleError::Refused {
                status,
                code: error.code,
                message: error.message,
            }),
            Err(_) => Err(unexpected(
                "a body that is not a console error; is this the console's URL?".to_owned(),
            )),
        }
    }
}

/// What went wrong on the wire. reqwest's outer "error sending request for url (...)" only repeats
/// the URL; the innermost source ("Connection refused", a DNS or TLS failure) says what happened.
fn transport_cause(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        return "timed out".to_owned();
    }
    let mut innermost: &dyn std::error::Error = error;
    while let Some(source) = innermost.source() {
        innermost = source;
    }
    innermost.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_url_is_checked_and_trimmed() {
        assert_eq!(
            normalize_url(" http://127.0.0.1:8720/ ").expect("valid"),
            "http://127.0.0.1:8720"
        );
        assert!(normalize_url("127.0.0.1:8720").is_err());
        assert!(normalize_url("ftp://console").is_err());
    }

    #[tokio::test]
    async fn closed_port_is_unreachable() {
        // Bind then drop, so the port is (almost certainly) closed.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let url = format!("http://127.0.0.1:{port}");
        let err = Console::new(&url)
            .expect("client")
            .whoami("credential")
            .await
            .expect_err("must fail");
        assert!(err.is_transient());
        assert_eq!(err.status(), None);
        let message = err.to_string();
        assert!(message.contains(&url), "{message}");
        assert!(message.contains("hybridsync serve"), "{message}");
    }

    /// A console stand-in over real TCP that answers each heartbeat as a console does (keeping
    /// the connection open), and reports whether the client then closed the connection itself.
    #[tokio::test]
    async fn a_heartbeat_does_not_keep_its_connection_to_the_console() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let mut requests = Vec::new();
            for _ in 0..2 {
                let (mut tcp, _) = listener.accept().await.unwrap();
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                // The head and the JSON body (the client sends a Content-Length).
                while !request.contains(&b'}') {
                    let n = tcp.read(&mut buf).await.unwrap();
                    assert!(n > 0, "the client closed before its request was complete");
                    request.extend_from_slice(&buf[..n]);
                }
                let body = r#"{"agent_id":"a","status":"active","health":"healthy"}"#;
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                tcp.write_all(response.as_bytes()).await.unwrap();
                // A client that kept the connection would leave this read waiting.
                let closed = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
                    .await
                    .map(|read| matches!(read, Ok(0)))
                    .unwrap_or(false);
                requests.push((String::from_utf8_lossy(&request).to_lowercase(), closed));
            }
            requests
        });
        let console = Console::new(&url).unwrap();
        let beat = Heartbeat {
            version: "1".into(),
            machine_name: "m".into(),
            uptime_seconds: 1,
            heartbeat_interval_seconds: 30,
            listen_addr: None,
            checks: vec![],
            domains: vec![],
        };
        for _ in 0..2 {
            let answer = console.heartbeat("credential", &beat).await.unwrap();
            assert_eq!(answer.health, "healthy");
        }
        let requests = server.await.unwrap();
        assert_eq!(
            requests.len(),
            2,
            "each heartbeat came on its own connection"
        );
        for (request, closed) in requests {
            assert!(request.contains("connection: close"), "{request}");
            assert!(closed, "the agent kept its connection after a heartbeat");
        }
    }
}
