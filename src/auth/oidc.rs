//! Administrator sign-in with OpenID Connect: discovery, the authorization code flow with PKCE,
//! state and nonce (through the `oauth2` crate), ID token validation (signature against the
//! provider's JWKS, issuer, audience, expiry, nonce) and the mapping of a claim to a console role.
//!
//! No HTTP server here: `web::oidc` calls [`Oidc::start`] and [`Oidc::finish`]. The flow's secrets
//! (PKCE verifier, nonce) stay in this process, keyed by the `state` value, and each pending flow
//! is bound to the browser that started it, so a code cannot be injected into another browser.

use crate::auth::tokens;
use crate::auth::Role;
use anyhow::{anyhow, bail, Context};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use oauth2::basic::{
    BasicErrorResponse, BasicRevocationErrorResponse, BasicTokenIntrospectionResponse,
    BasicTokenType,
};
use oauth2::{
    AuthUrl, AuthorizationCode, Client, ClientId, ClientSecret, CsrfToken, EndpointNotSet,
    EndpointSet, ExtraTokenFields, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope,
    StandardRevocableToken, StandardTokenResponse, TokenUrl,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

/// How the console is registered with the provider, from `serve --oidc-*`.
#[derive(Clone)]
pub struct OidcSettings {
    pub issuer: String,
    pub client_id: String,
    pub client_secret: String,
    pub scopes: Vec<String>,
    pub role_claim: String,
    pub role_map: Vec<(String, Role)>,
    /// `<console URL>/auth/oidc/callback`.
    pub redirect_url: String,
}

impl std::fmt::Debug for OidcSettings {
    // The client secret never reaches a log line through `{:?}`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcSettings")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("scopes", &self.scopes)
            .field("role_claim", &self.role_claim)
            .field("role_map", &self.role_map)
            .field("redirect_url", &self.redirect_url)
            .finish_non_exhaustive()
    }
}

/// Parses `--oidc-role-map`: `GROUP=ROLE,GROUP=ROLE`, roles as in `admin create-user --role`.
pub fn parse_role_map(s: &str) -> Result<Vec<(String, Role)>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (value, role) = pair.rsplit_once('=').ok_or_else(|| {
                format!("invalid role mapping {pair:?}: write CLAIM_VALUE=ROLE, e.g. admins=global-administrator")
            })?;
            let value = value.trim();
            if value.is_empty() {
                return Err(format!("invalid role mapping {pair:?}: the claim value is empty"));
            }
            Ok((value.to_string(), role.trim().parse::<Role>()?))
        })
        .collect()
}

/// The ID token arrives as an extra field of the token response.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct IdTokenField {
    #[serde(default)]
    pub id_token: Option<String>,
}
impl ExtraTokenFields for IdTokenField {}

type TokenResponse = StandardTokenResponse<IdTokenField, BasicTokenType>;
type OidcClient = Client<
    BasicErrorResponse,
    TokenResponse,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
}

/// One sign-in between the redirect to the provider and its return.
struct Pending {
    verifier: PkceCodeVerifier,
    nonce: String,
    /// SHA-256 of the pre-session cookie of the browser that started the flow.
    browser: Vec<u8>,
    next: String,
    started: Instant,
}

/// A pending flow must come back within this time (the provider's own sign-in page included).
const PENDING_LIFETIME: Duration = Duration::from_secs(600);
/// Upper bound on pending flows, so anonymous `start` requests cannot grow memory without end.
const MAX_PENDING: usize = 10_000;

/// Who signed in, once the ID token checked out and a role was mapped.
#[derive(Debug, Clone)]
pub struct SignedIn {
    pub subject: String,
    pub username: String,
    pub role: Role,
    pub next: String,
}

/// Why a callback did not sign anyone in. Messages are for the person at the browser.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("This sign-in attempt is unknown, expired or was already used. Start again from the sign-in page.")]
    UnknownState,
    #[error("This sign-in was started in another browser. Start again from the sign-in page.")]
    OtherBrowser,
    #[error("The identity provider did not complete the sign-in: {0}")]
    Provider(String),
    #[error("The identity provider's answer could not be verified ({0}). Start again from the sign-in page; if this persists, check the console's OpenID Connect settings.")]
    Invalid(String),
    #[error("Your account {username:?} has no console role: its {claim} ({values}) does not map to any role. Ask an administrator to add you to a group that grants a console role.")]
    NoRole {
        username: String,
        claim: String,
        values: String,
    },
}

/// A configured and discovered OpenID Connect provider.
pub struct Oidc {
    settings: OidcSettings,
    client: OidcClient,
    /// No redirects: a token endpoint that redirects is misconfigured, and following it could
    /// leak the code to another host.
    http: reqwest::Client,
    jwks_uri: String,
    jwks: RwLock<JwkSet>,
    pending: Mutex<HashMap<String, Pending>>,
}

impl std::fmt::Debug for Oidc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Oidc")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Signature algorithms accepted for ID tokens: asymmetric only, so a token signed with the
/// client secret or a public key used as an HMAC secret ("alg confusion") is refused.
const ALGORITHMS: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

impl Oidc {
    /// Reads the provider's discovery document and keys. Fails with a message naming the issuer
    /// when it cannot be reached or its document does not belong to it.
    pub async fn discover(settings: OidcSettings) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .build()
            .context("cannot create the HTTP client")?;
        let issuer = settings.issuer.trim_end_matches('/').to_string();
        let url = format!("{issuer}/.well-known/openid-configuration");
        let discovery: Discovery = http
            .get(&url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .with_context(|| format!("cannot read the OpenID Connect discovery document {url}"))?
            .json()
            .await
            .with_context(|| format!("{url} is not an OpenID Connect discovery document"))?;
        // OpenID Connect Discovery §4.3: the document must name the issuer it was fetched for.
        if discovery.issuer.trim_end_matches('/') != issuer {
            bail!(
                "the discovery document at {url} names the issuer {:?}, not {issuer:?}: check --oidc-issuer",
                discovery.issuer
            );
        }
        let client = Client::new(ClientId::new(settings.client_id.clone()))
            .set_client_secret(ClientSecret::new(settings.client_secret.clone()))
            .set_auth_uri(AuthUrl::new(discovery.authorization_endpoint)?)
            .set_token_uri(TokenUrl::new(discovery.token_endpoint)?)
            .set_redirect_uri(RedirectUrl::new(settings.redirect_url.clone())?);
        let jwks = fetch_jwks(&http, &discovery.jwks_uri).await?;
        Ok(Oidc {
            settings: OidcSettings {
                issuer: discovery.issuer,
                ..settings
            },
            client,
            http,
            jwks_uri: discovery.jwks_uri,
            jwks: RwLock::new(jwks),
            pending: Mutex::new(HashMap::new()),
        })
    }

    pub fn issuer(&self) -> &str {
        &self.settings.issuer
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<String, Pending>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a sign-in for the browser holding `browser_cookie`; returns the provider URL to
    /// redirect to.
    pub fn start(&self, browser_cookie: &str, next: &str) -> String {
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let nonce = tokens::generate("");
        let mut request = self
            .client
            .authorize_url(CsrfToken::new_random)
            .set_pkce_challenge(challenge)
            .add_extra_param("nonce", nonce.clone());
        for scope in &self.settings.scopes {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        let (url, state) = request.url();
        let mut pending = self.pending();
        pending.retain(|_, p| p.started.elapsed() < PENDING_LIFETIME);
        if pending.len() >= MAX_PENDING {
            // Under a flood, drop the oldest flow rather than refuse everyone.
            if let Some(oldest) = pending
                .iter()
                .min_by_key(|(_, p)| p.started)
                .map(|(k, _)| k.clone())
            {
                pending.remove(&oldest);
            }
        }
        pending.insert(
            state.secret().clone(),
            Pending {
                verifier,
                nonce,
                browser: tokens::digest(browser_cookie),
                next: next.to_string(),
                started: Instant::now(),
            },
        );
        url.to_string()
    }

    /// Completes a sign-in at the callback: the state must be one this console issued to this
    /// browser (and is consumed), the code is exchanged with the PKCE verifier, and the ID token
    /// is verified before its claims are believed.
    pub async fn finish(
        &self,
        browser_cookie: &str,
        state: &str,
        code: &str,
    ) -> Result<SignedIn, OidcError> {
        let pending = self
            .pending()
            .remove(state)
            .filter(|p| p.started.elapsed() < PENDING_LIFETIME)
            .ok_or(OidcError::UnknownState)?;
        if !tokens::equal(&pending.browser, &tokens::digest(browser_cookie)) {
            return Err(OidcError::OtherBrowser);
        }
        let response = self
            .client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .set_pkce_verifier(pending.verifier)
            .request_async(&self.http)
            .await
            .map_err(|e| match e {
                oauth2::RequestTokenError::ServerResponse(r) => OidcError::Provider(format!(
                    "the token endpoint answered {}{}",
                    r.error(),
                    r.error_description()
                        .map(|d| format!(": {d}"))
                        .unwrap_or_default()
                )),
                other => {
                    tracing::warn!(error = %other, "OpenID Connect token request failed");
                    OidcError::Invalid("the token request failed".into())
                }
            })?;
        let id_token = response
            .extra_fields()
            .id_token
            .clone()
            .ok_or_else(|| OidcError::Invalid("the token response has no ID token".into()))?;
        let claims = self.verify_id_token(&id_token, &pending.nonce).await?;
        let subject = claims
            .get("sub")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| OidcError::Invalid("the ID token has no subject".into()))?
            .to_string();
        let username = ["preferred_username", "email"]
            .iter()
            .find_map(|c| claims.get(*c).and_then(Value::as_str))
            .filter(|s| !s.is_empty())
            .unwrap_or(&subject)
            .to_string();
        let values = claim_values(claims.get(&self.settings.role_claim));
        let role = map_role(&values, &self.settings.role_map).ok_or_else(|| OidcError::NoRole {
            username: username.clone(),
            claim: format!("claim {:?}", self.settings.role_claim),
            values: if values.is_empty() {
                "absent".into()
            } else {
                values.join(", ")
            },
        })?;
        Ok(SignedIn {
            subject,
            username,
            role,
            next: pending.next,
        })
    }

    async fn verify_id_token(
        &self,
        id_token: &str,
        nonce: &str,
    ) -> Result<serde_json::Map<String, Value>, OidcError> {
        let invalid = |what: &str| OidcError::Invalid(what.to_string());
        let header =
            jsonwebtoken::decode_header(id_token).map_err(|_| invalid("malformed ID token"))?;
        if !ALGORITHMS.contains(&header.alg) {
            return Err(invalid("ID token signed with a refused algorithm"));
        }
        let key = match self.key_for(header.kid.as_deref()) {
            Some(key) => key,
            None => {
                // The provider may have rotated its keys since start: fetch them once more.
                let fresh = fetch_jwks(&self.http, &self.jwks_uri).await.map_err(|e| {
                    tracing::warn!(error = %e, "cannot refresh the provider's keys");
                    invalid("the provider's signing keys could not be read")
                })?;
                *self.jwks.write().unwrap_or_else(|p| p.into_inner()) = fresh;
                self.key_for(header.kid.as_deref())
                    .ok_or_else(|| invalid("ID token signed with an unknown key"))?
            }
        };
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[self.settings.issuer.as_str()]);
        validation.set_audience(&[self.settings.client_id.as_str()]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let data =
            jsonwebtoken::decode::<serde_json::Map<String, Value>>(id_token, &key, &validation)
                .map_err(|e| {
                    use jsonwebtoken::errors::ErrorKind;
                    OidcError::Invalid(
                        match e.kind() {
                            ErrorKind::InvalidSignature => "bad ID token signature",
                            ErrorKind::ExpiredSignature => "the ID token has expired",
                            ErrorKind::InvalidIssuer => "the ID token is from another issuer",
                            ErrorKind::InvalidAudience => "the ID token is for another client",
                            _ => "invalid ID token",
                        }
                        .into(),
                    )
                })?;
        let presented = data.claims.get("nonce").and_then(Value::as_str);
        if !presented.is_some_and(|n| tokens::equal(n.as_bytes(), nonce.as_bytes())) {
            return Err(invalid("the ID token's nonce does not match this sign-in"));
        }
        Ok(data.claims)
    }

    fn key_for(&self, kid: Option<&str>) -> Option<DecodingKey> {
        let jwks = self.jwks.read().unwrap_or_else(|p| p.into_inner());
        let jwk = match kid {
            Some(kid) => jwks.find(kid),
            // Without a kid, only an unambiguous single key is usable.
            None if jwks.keys.len() == 1 => jwks.keys.first(),
            None => None,
        }?;
        DecodingKey::from_jwk(jwk).ok()
    }
}

async fn fetch_jwks(http: &reqwest::Client, url: &str) -> anyhow::Result<JwkSet> {
    http.get(url)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .with_context(|| format!("cannot read the provider's keys at {url}"))?
        .json::<JwkSet>()
        .await
        .map_err(|e| anyhow!("{url} is not a JSON Web Key Set: {e}"))
}

/// A claim's values: a string, or the strings of an array (groups, roles).
fn claim_values(claim: Option<&Value>) -> Vec<String> {
    match claim {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

/// The most privileged role any of the values maps to.
fn map_role(values: &[String], map: &[(String, Role)]) -> Option<Role> {
    let rank = |r: Role| Role::ALL.iter().position(|x| *x == r).unwrap_or(usize::MAX);
    map.iter()
        .filter(|(value, _)| values.iter().any(|v| v == value))
        .map(|(_, role)| *role)
        .min_by_key(|r| rank(*r))
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use jsonwebtoken::{EncodingKey, Header};

    const ISSUER: &str = "https://idp.example.test";
    const CLIENT: &str = "console";

    /// A provider stand-in: an ES256 key published as a one-key JWKS. The JWKS URL points at a
    /// closed port, so a refresh for an unknown key fails.
    fn provider() -> (Oidc, EncodingKey) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let raw = key.public_key_raw();
        assert_eq!(raw[0], 4, "uncompressed P-256 point");
        let jwks: JwkSet = serde_json::from_value(serde_json::json!({"keys": [{
            "kty": "EC", "crv": "P-256", "kid": "k1", "alg": "ES256", "use": "sig",
            "x": URL_SAFE_NO_PAD.encode(&raw[1..33]), "y": URL_SAFE_NO_PAD.encode(&raw[33..65]),
        }]}))
        .unwrap();
        let settings = OidcSettings {
            issuer: ISSUER.into(),
            client_id: CLIENT.into(),
            client_secret: "secret".into(),
            scopes: vec!["openid".into()],
            role_claim: "groups".into(),
            role_map: vec![],
            redirect_url: "http://127.0.0.1:1/auth/oidc/callback".into(),
        };
        let client = Client::new(ClientId::new(CLIENT.into()))
            .set_client_secret(ClientSecret::new("secret".into()))
            .set_auth_uri(AuthUrl::new("http://127.0.0.1:1/auth".into()).unwrap())
            .set_token_uri(TokenUrl::new("http://127.0.0.1:1/token".into()).unwrap())
            .set_redirect_uri(RedirectUrl::new(settings.redirect_url.clone()).unwrap());
        let oidc = Oidc {
            settings,
            client,
            http: reqwest::Client::new(),
            jwks_uri: "http://127.0.0.1:1/jwks".into(),
            jwks: RwLock::new(jwks),
            pending: Mutex::new(HashMap::new()),
        };
        let signing = EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).unwrap();
        (oidc, signing)
    }

    fn now() -> i64 {
        time::OffsetDateTime::now_utc().unix_timestamp()
    }

    fn claims(overrides: serde_json::Value) -> serde_json::Value {
        let mut c = serde_json::json!({
            "iss": ISSUER, "aud": CLIENT, "sub": "u1", "nonce": "n1",
            "iat": now(), "exp": now() + 300,
        });
        for (k, v) in overrides.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c
    }

    fn es256(kid: &str) -> Header {
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some(kid.into());
        h
    }

    #[tokio::test]
    async fn id_tokens_are_checked_for_signature_issuer_audience_expiry_and_nonce() {
        let (oidc, key) = provider();
        let sign = |c: serde_json::Value| jsonwebtoken::encode(&es256("k1"), &c, &key).unwrap();
        let good = sign(claims(serde_json::json!({})));
        assert_eq!(
            oidc.verify_id_token(&good, "n1").await.unwrap()["sub"],
            "u1"
        );

        let refused = |token: String, nonce: &'static str| {
            let oidc = &oidc;
            async move {
                match oidc.verify_id_token(&token, nonce).await {
                    Err(OidcError::Invalid(why)) => why,
                    other => panic!("accepted or wrong error: {other:?}"),
                }
            }
        };
        assert!(refused(good.clone(), "n2").await.contains("nonce"));
        let no_nonce = sign(claims(serde_json::json!({"nonce": null})));
        assert!(refused(no_nonce, "n1").await.contains("nonce"));
        let other_issuer = sign(claims(serde_json::json!({"iss": "https://evil.test"})));
        assert!(refused(other_issuer, "n1").await.contains("another issuer"));
        let other_client = sign(claims(serde_json::json!({"aud": "someone-else"})));
        assert!(refused(other_client, "n1").await.contains("another client"));
        let expired = sign(claims(serde_json::json!({"exp": now() - 3600})));
        assert!(refused(expired, "n1").await.contains("expired"));
        let no_sub = sign(claims(serde_json::json!({"sub": null})));
        refused(no_sub, "n1").await;

        // A valid signature by another key, a flipped signature byte, an HMAC token made with the
        // client secret, an unknown key id: all refused.
        let (_, stranger) = provider();
        let forged =
            jsonwebtoken::encode(&es256("k1"), &claims(serde_json::json!({})), &stranger).unwrap();
        assert!(refused(forged, "n1").await.contains("signature"));
        let mut tampered = good.clone().into_bytes();
        let last = tampered.len() - 2;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        refused(String::from_utf8(tampered).unwrap(), "n1").await;
        let hmac = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims(serde_json::json!({})),
            &EncodingKey::from_secret(b"secret"),
        )
        .unwrap();
        assert!(refused(hmac, "n1").await.contains("refused algorithm"));
        let unknown_kid =
            jsonwebtoken::encode(&es256("k2"), &claims(serde_json::json!({})), &key).unwrap();
        refused(unknown_kid, "n1").await;
        refused("not.a.jwt".into(), "n1").await;
    }

    #[tokio::test]
    async fn a_callback_state_is_one_use_and_bound_to_its_browser() {
        let (oidc, _) = provider();
        let url = oidc.start("browser-a", "/agents");
        assert!(url.contains("code_challenge_method=S256") && url.contains("nonce="));
        let state = reqwest::Url::parse(&url)
            .unwrap()
            .query_pairs()
            .find(|(k, _)| k == "state")
            .unwrap()
            .1
            .into_owned();
        assert!(matches!(
            oidc.finish("browser-b", &state, "code").await,
            Err(OidcError::OtherBrowser)
        ));
        // The attempt from the other browser consumed the state: the flow cannot be finished now.
        assert!(matches!(
            oidc.finish("browser-a", &state, "code").await,
            Err(OidcError::UnknownState)
        ));
    }

    #[test]
    fn role_map_parses_and_reports_mistakes() {
        let map =
            parse_role_map("admins=global-administrator, sync-ops=hybrid-identity-administrator,")
                .unwrap();
        assert_eq!(
            map,
            vec![
                ("admins".to_string(), Role::GlobalAdministrator),
                ("sync-ops".to_string(), Role::HybridIdentityAdministrator)
            ]
        );
        assert!(parse_role_map("admins")
            .unwrap_err()
            .contains("CLAIM_VALUE=ROLE"));
        assert!(parse_role_map("admins=root")
            .unwrap_err()
            .contains("unknown role"));
        assert!(parse_role_map("=global-reader")
            .unwrap_err()
            .contains("empty"));
    }

    #[test]
    fn the_most_privileged_mapped_role_wins() {
        let map = parse_role_map("readers=global-reader,admins=global-administrator").unwrap();
        let values = claim_values(Some(&serde_json::json!(["readers", "admins", "x"])));
        assert_eq!(map_role(&values, &map), Some(Role::GlobalAdministrator));
        let one = claim_values(Some(&serde_json::json!("readers")));
        assert_eq!(map_role(&one, &map), Some(Role::GlobalReader));
        assert_eq!(
            map_role(&claim_values(Some(&serde_json::json!(42))), &map),
            None
        );
        assert_eq!(map_role(&claim_values(None), &map), None);
    }
}
