//! One LDAP connection: connect (ldap:// or ldaps:// with an optional CA file), bind, read the
//! rootDSE, search (paged), add, modify, delete. Every failure is a [`DirectoryError`].

use super::error::{from_ldap, from_result, rc, Doing};
use super::DirectoryError;
use ldap3::adapters::{Adapter, EntriesOnly, PagedResults};
use ldap3::controls::RawControl;
use ldap3::exop::PasswordModify;
use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, Mod, Scope, SearchEntry};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::hash::Hash;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const OPERATION_TIMEOUT: Duration = Duration::from_secs(30);
/// A page size for [`Connection::search_paged`]: below AD's default MaxPageSize of 1000.
pub const PAGE_SIZE: i32 = 500;

/// The two directory dialects the agent speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Dialect {
    #[serde(rename = "active-directory")]
    ActiveDirectory,
    #[serde(rename = "openldap")]
    OpenLdap,
}

impl Dialect {
    pub fn label(self) -> &'static str {
        match self {
            Dialect::ActiveDirectory => "Active Directory",
            Dialect::OpenLdap => "OpenLDAP",
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Dialect::ActiveDirectory => "active-directory",
            Dialect::OpenLdap => "openldap",
        }
    }
}

/// Where a directory is and which CA to trust for it.
#[derive(Debug, Clone)]
pub struct Target {
    pub url: String,
    /// PEM text of the CA certificate(s) to trust instead of the system's roots.
    pub ca_pem: Option<Vec<u8>>,
    /// Upgrade an ldap:// connection with StartTLS (RFC 4511 §4.14) before anything else.
    pub starttls: bool,
}

impl Target {
    /// Checks the URL's scheme and parses the CA file now, so a typo fails before any network I/O.
    pub fn new(url: &str, ca_cert: Option<&Path>) -> Result<Self, DirectoryError> {
        let url = url.trim().to_owned();
        let bad = |reason: &str| DirectoryError::BadUrl {
            url: url.clone(),
            reason: reason.to_owned(),
        };
        let rest = url
            .strip_prefix("ldaps://")
            .or_else(|| url.strip_prefix("ldap://"))
            .ok_or_else(|| bad("expected ldap://HOST[:PORT] or ldaps://HOST[:PORT]"))?;
        if rest.trim_end_matches('/').is_empty() {
            return Err(bad("no host"));
        }
        let ca_pem = match ca_cert {
            None => None,
            Some(path) => {
                let bad_ca = |reason: String| DirectoryError::BadCaCert {
                    path: path.display().to_string(),
                    reason,
                };
                let pem = std::fs::read(path).map_err(|e| bad_ca(e.to_string()))?;
                let certs = parse_ca(&pem).map_err(bad_ca)?;
                if certs.is_empty() {
                    return Err(bad_ca(
                        "no PEM certificate (-----BEGIN CERTIFICATE-----) in it".into(),
                    ));
                }
                Some(pem)
            }
        };
        Ok(Self {
            url,
            ca_pem,
            starttls: false,
        })
    }

    /// Asks for StartTLS; only meaningful, and only accepted, on an ldap:// URL.
    pub fn with_starttls(mut self, on: bool) -> Result<Self, DirectoryError> {
        if on && !self.url.starts_with("ldap://") {
            return Err(DirectoryError::BadUrl {
                url: self.url,
                reason: "StartTLS is for ldap:// URLs (ldaps:// is TLS from the start)".into(),
            });
        }
        self.starttls = on;
        Ok(self)
    }
}

fn parse_ca(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a PEM certificate file: {e}"))
}

/// What the rootDSE says about a server.
#[derive(Debug, Clone)]
pub struct RootDse {
    pub dialect: Dialect,
    pub naming_contexts: Vec<String>,
    pub default_naming_context: Option<String>,
    pub vendor: String,
}

impl RootDse {
    /// Recognises AD by its capabilities and OpenLDAP by its rootDSE object class.
    pub fn from_entry(entry: &SearchEntry, url: &str) -> Result<Self, DirectoryError> {
        let values = |name: &str| -> Vec<String> {
            entry
                .attrs
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        let is_ad = values("supportedCapabilities")
            .iter()
            .any(|oid| oid == AD_CAPABILITY_OID)
            || !values("forestFunctionality").is_empty()
            || !values("isGlobalCatalogReady").is_empty();
        let is_openldap = values("objectClass")
            .iter()
            .any(|c| c.eq_ignore_ascii_case("OpenLDAProotDSE"));
        let vendor = [values("vendorName"), values("vendorVersion")]
            .concat()
            .join(" ");
        let dialect = match (is_ad, is_openldap) {
            (true, _) => Dialect::ActiveDirectory,
            (false, true) => Dialect::OpenLdap,
            (false, false) => {
                return Err(DirectoryError::Other(format!(
                    "the server at {url} is neither Active Directory nor OpenLDAP (its rootDSE has no AD capability {AD_CAPABILITY_OID} and no objectClass OpenLDAProotDSE{}); only those two are supported",
                    if vendor.is_empty() { String::new() } else { format!("; vendor: {vendor}") }
                )))
            }
        };
        Ok(Self {
            dialect,
            naming_contexts: values("namingContexts"),
            default_naming_context: values("defaultNamingContext").into_iter().next(),
            vendor,
        })
    }

    /// The base DN to use when none was given: AD's default naming context, or OpenLDAP's only
    /// naming context (or the one spelling the DNS domain, e.g. dc=corp,dc=example,dc=test).
    pub fn base_dn_for(&self, domain: &str) -> Result<String, DirectoryError> {
        if let Some(dn) = &self.default_naming_context {
            return Ok(dn.clone());
        }
        let from_domain = domain
            .split('.')
            .map(|label| format!("dc={label}"))
            .collect::<Vec<_>>()
            .join(",");
        match self.naming_contexts.as_slice() {
            [only] => Ok(only.clone()),
            [] => Err(DirectoryError::Other(
                "the server publishes no naming context: pass --base-dn".into(),
            )),
            many => many
                .iter()
                .find(|nc| nc.replace(' ', "").eq_ignore_ascii_case(&from_domain))
                .cloned()
                .ok_or_else(|| {
                    DirectoryError::Other(format!(
                        "the server has several naming contexts ({}) and none is {from_domain}: pass --base-dn",
                        many.join("; ")
                    ))
                }),
        }
    }
}

/// "LDAP_CAP_ACTIVE_DIRECTORY_OID": only Active Directory (and Samba AD) announce it.
pub const AD_CAPABILITY_OID: &str = "1.2.840.113556.1.4.800";

/// An open LDAP connection, bound or not.
pub struct Connection {
    ldap: Ldap,
    url: String,
    who: String,
}

impl Connection {
    /// Opens a connection (TLS for ldaps://). Nothing is sent yet: the first operation tells
    /// whether the server is really an LDAP server.
    pub async fn open(target: &Target) -> Result<Self, DirectoryError> {
        // ldap3 builds its default rustls config with the process-wide provider; make sure there
        // is one (reqwest picks ring per client, so none may be installed yet).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut settings = LdapConnSettings::new()
            .set_conn_timeout(CONNECT_TIMEOUT)
            .set_starttls(target.starttls);
        if let Some(pem) = &target.ca_pem {
            let mut roots = rustls::RootCertStore::empty();
            for cert in parse_ca(pem).map_err(DirectoryError::Other)? {
                roots.add(cert).map_err(|e| {
                    DirectoryError::Other(format!("the CA certificate is not usable: {e}"))
                })?;
            }
            let config = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map_err(|e| DirectoryError::Other(format!("TLS setup failed: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
            settings = settings.set_config(Arc::new(config));
        }
        let doing = Doing {
            url: target.url.clone(),
            who: "anonymous".into(),
            what: "connect".into(),
            dn: String::new(),
        };
        let (conn, ldap) = LdapConnAsync::with_settings(settings, &target.url)
            .await
            .map_err(|e| from_ldap(e, &doing))?;
        ldap3::drive!(conn);
        Ok(Self {
            ldap,
            url: target.url.clone(),
            who: "anonymous".into(),
        })
    }

    /// Opens and binds in one step.
    pub async fn bind_new(
        target: &Target,
        who: &str,
        password: &str,
    ) -> Result<Self, DirectoryError> {
        let mut conn = Self::open(target).await?;
        conn.bind(who, password).await?;
        Ok(conn)
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Who this connection acts as: the bind name, or "anonymous".
    pub fn who(&self) -> &str {
        &self.who
    }

    pub(super) fn ldap_mut(&mut self) -> &mut Ldap {
        &mut self.ldap
    }

    pub(super) fn doing(&self, what: &str, dn: &str) -> Doing {
        Doing {
            url: self.url.clone(),
            who: self.who.clone(),
            what: what.to_owned(),
            dn: dn.to_owned(),
        }
    }

    /// Simple bind. An empty password is refused here: LDAP servers treat it as an anonymous bind
    /// that "succeeds", which would pass any credential check.
    pub async fn bind(&mut self, who: &str, password: &str) -> Result<(), DirectoryError> {
        if password.is_empty() {
            return Err(DirectoryError::Other(format!(
                "the password for {who} is empty (an empty password would bind anonymously)"
            )));
        }
        let what = format!("bind as {who}");
        let doing = Doing {
            url: self.url.clone(),
            who: who.to_owned(),
            what,
            dn: who.to_owned(),
        };
        let result = self
            .ldap
            .with_timeout(OPERATION_TIMEOUT)
            .simple_bind(who, password)
            .await
            .map_err(|e| from_ldap(e, &doing))?;
        if result.rc != 0 {
            return Err(from_result(result.rc, &result.text, &doing));
        }
        self.who = who.to_owned();
        Ok(())
    }

    /// Reads the rootDSE (anonymous reads are allowed on both dialects) and detects the dialect.
    pub async fn root_dse(&mut self) -> Result<RootDse, DirectoryError> {
        let entry = self
            .read(
                "",
                &[
                    "objectClass",
                    "namingContexts",
                    "defaultNamingContext",
                    "supportedCapabilities",
                    "forestFunctionality",
                    "isGlobalCatalogReady",
                    "vendorName",
                    "vendorVersion",
                ],
                "read the rootDSE",
            )
            .await?
            .ok_or_else(|| {
                DirectoryError::Other(format!("the server at {} returned no rootDSE", self.url))
            })?;
        RootDse::from_entry(&entry, &self.url)
    }

    /// Reads one entry; `Ok(None)` when the search succeeds but returns nothing (an entry the
    /// caller may not see). "No such object" is an error naming `dn`.
    pub async fn read(
        &mut self,
        dn: &str,
        attrs: &[&str],
        what: &str,
    ) -> Result<Option<SearchEntry>, DirectoryError> {
        self.read_with(dn, attrs, what, Vec::new()).await
    }

    /// [`Self::read`] with request controls (e.g. AD's SD flags control).
    pub async fn read_with(
        &mut self,
        dn: &str,
        attrs: &[&str],
        what: &str,
        controls: Vec<RawControl>,
    ) -> Result<Option<SearchEntry>, DirectoryError> {
        let doing = self.doing(what, dn);
        let ldap3::SearchResult(entries, result) = self
            .ldap
            .with_timeout(OPERATION_TIMEOUT)
            .with_controls(controls)
            .search(dn, Scope::Base, "(objectClass=*)", attrs.to_vec())
            .await
            .map_err(|e| from_ldap(e, &doing))?;
        if result.rc != 0 {
            return Err(from_result(result.rc, &result.text, &doing));
        }
        Ok(entries.into_iter().next().map(SearchEntry::construct))
    }

    /// A subtree search returning at most `limit` entries (a size limit, not an error).
    pub async fn search(
        &mut self,
        base: &str,
        filter: &str,
        attrs: &[&str],
        limit: i32,
        what: &str,
    ) -> Result<Vec<SearchEntry>, DirectoryError> {
        let doing = self.doing(what, base);
        let ldap3::SearchResult(entries, result) = self
            .ldap
            .with_timeout(OPERATION_TIMEOUT)
            .with_search_options(ldap3::SearchOptions::new().sizelimit(limit))
            .search(base, Scope::Subtree, filter, attrs.to_vec())
            .await
            .map_err(|e| from_ldap(e, &doing))?;
        if result.rc != 0 && result.rc != rc::SIZE_LIMIT_EXCEEDED {
            return Err(from_result(result.rc, &result.text, &doing));
        }
        Ok(entries.into_iter().map(SearchEntry::construct).collect())
    }

    /// A subtree search over all matching entries, fetched in pages (RFC 2696), as sync needs
    /// for directories larger than the server's size limit.
    pub async fn search_paged(
        &mut self,
        base: &str,
        filter: &str,
        attrs: &[&str],
        page_size: i32,
        what: &str,
    ) -> Result<Vec<SearchEntry>, DirectoryError> {
        let adapters: Vec<Box<dyn Adapter<'_, &str, Vec<&str>>>> = vec![
            Box::new(EntriesOnly::new()),
            Box::new(PagedResults::new(page_size)),
        ];
        let doing = self.doing(what, base);
        let mut stream = self
            .ldap
            .streaming_search_with(adapters, base, Scope::Subtree, filter, attrs.to_vec())
            .await
            .map_err(|e| from_ldap(e, &doing))?;
        let mut out = Vec::new();
        while let Some(entry) = stream.next().await.map_err(|e| from_ldap(e, &doing))? {
            out.push(SearchEntry::construct(entry));
        }
        let result = stream.finish().await;
        if result.rc != 0 {
            return Err(from_result(result.rc, &result.text, &doing));
        }
        Ok(out)
    }

    /// A paged subtree search whose entries are taken one at a time, so a directory of 150,000
    /// users never sits in memory at once. Search references (AD referrals) are skipped.
    pub async fn paged_stream(
        &mut self,
        base: &str,
        filter: &str,
        attrs: Vec<String>,
        what: &str,
    ) -> Result<PagedStream, DirectoryError> {
        let adapters: Vec<Box<dyn Adapter<'static, String, Vec<String>>>> = vec![
            Box::new(EntriesOnly::new()),
            Box::new(PagedResults::new(PAGE_SIZE)),
        ];
        let doing = self.doing(what, base);
        let stream = self
            .ldap
            .streaming_search_with(adapters, base, Scope::Subtree, filter, attrs)
            .await
            .map_err(|e| from_ldap(e, &doing))?;
        Ok(PagedStream { stream, doing })
    }

    pub async fn add(
        &mut self,
        dn: &str,
        attrs: Vec<(Vec<u8>, HashSet<Vec<u8>>)>,
        what: &str,
    ) -> Result<(), DirectoryError> {
        let doing = self.doing(what, dn);
        let result = self
            .ldap
            .with_timeout(OPERATION_TIMEOUT)
            .add(dn, attrs)
            .await
            .map_err(|e| from_ldap(e, &doing))?;
        if result.rc != 0 {
            return Err(from_result(result.rc, &result.text, &doing));
        }
        Ok(())
    }

    /// Applies modifications; returns the server's result code for the codes in `accept` (used by
    /// probes that expect e.g. "no such attribute"), an error for any other non-zero code.
    pub async fn modify<S: AsRef<[u8]> + Eq + Hash>(
        &mut self,
        dn: &str,
        mods: Vec<Mod<S>>,
        controls: Vec<RawControl>,
        accept: &[u32],
        what: &str,
    ) -> Result<u32, DirectoryError> {
        let doing = self.doing(what, dn);
        let result = self
            .ldap
            .with_timeout(OPERATION_TIMEOUT)
            .with_controls(controls)
            .modify(dn, mods)
            .await
            .map_err(|e| from_ldap(e, &doing))?;
        if result.rc != 0 && !accept.contains(&result.rc) {
            return Err(from_result(result.rc, &result.text, &doing));
        }
        Ok(result.rc)
    }

    /// Renames and/or moves an entry (modify DN): `new_rdn` like `cn=Ann Lee` (escaped), and
    /// `new_superior` to move it under another parent.
    pub async fn rename(
        &mut self,
        dn: &str,
        new_rdn: &str,
        new_superior: Option<&str>,
        what: &str,
    ) -> Result<(), DirectoryError> {
        let doing = self.doing(what, dn);
        let result = self
            .ldap
            .with_timeout(OPERATION_TIMEOUT)
            .modifydn(dn, new_rdn, true, new_superior)
            .await
            .map_err(|e| from_ldap(e, &doing))?;
        if result.rc != 0 {
            return Err(from_result(result.rc, &result.text, &doing));
        }
        Ok(())
    }

    pub async fn delete(&mut self, dn: &str, what: &str) -> Result<(), DirectoryError> {
        let doing = self.doing(what, dn);
        let result = self
            .ldap
            .with_timeout(OPERATION_TIMEOUT)
            .delete(dn)
            .await
            .map_err(|e| from_ldap(e, &doing))?;
        if result.rc != 0 {
            return Err(from_result(result.rc, &result.text, &doing));
        }
        Ok(())
    }

    /// Sets a password with the Password Modify extended operation (RFC 3062), so the server
    /// hashes it with its own configured scheme.
    pub async fn set_password(
        &mut self,
        dn: &str,
        password: &str,
        what: &str,
    ) -> Result<(), DirectoryError> {
        let doing = self.doing(what, dn);
        let ldap3::result::ExopResult(_, result) = self
            .ldap
            .with_timeout(OPERATION_TIMEOUT)
            .extended(PasswordModify {
                user_id: Some(dn),
                old_pass: None,
                new_pass: Some(password),
            })
            .await
            .map_err(|e| from_ldap(e, &doing))?;
        if result.rc != 0 {
            return Err(from_result(result.rc, &result.text, &doing));
        }
        Ok(())
    }

    /// The Password Modify extended operation with an optional old password (a user's own change,
    /// which the server checks against the current one).
    pub async fn password_modify(
        &mut self,
        dn: &str,
        old: Option<&str>,
        new: &str,
        what: &str,
    ) -> Result<(), DirectoryError> {
        let doing = self.doing(what, dn);
        let ldap3::result::ExopResult(_, result) = self
            .ldap
            .with_timeout(OPERATION_TIMEOUT)
            .extended(PasswordModify {
                user_id: Some(dn),
                old_pass: old,
                new_pass: Some(new),
            })
            .await
            .map_err(|e| from_ldap(e, &doing))?;
        if result.rc != 0 {
            return Err(from_result(result.rc, &result.text, &doing));
        }
        Ok(())
    }

    /// Unbinds politely; errors are irrelevant at this point.
    pub async fn close(mut self) {
        let _ = self.ldap.unbind().await;
    }
}

/// See [`Connection::paged_stream`].
pub struct PagedStream {
    stream: ldap3::SearchStream<'static, String, Vec<String>>,
    doing: Doing,
}

impl PagedStream {
    /// The next entry, or None at the end (after checking the search's result code).
    pub async fn next(&mut self) -> Result<Option<SearchEntry>, DirectoryError> {
        match self
            .stream
            .next()
            .await
            .map_err(|e| from_ldap(e, &self.doing))?
        {
            Some(entry) => Ok(Some(SearchEntry::construct(entry))),
            None => {
                let result = self.stream.finish().await;
                if result.rc != 0 {
                    return Err(from_result(result.rc, &result.text, &self.doing));
                }
                Ok(None)
            }
        }
    }
}

/// The values of an attribute as bytes, whether ldap3 filed them as text or as binary.
pub fn bytes_of(entry: &SearchEntry, name: &str) -> Vec<Vec<u8>> {
    if let Some((_, v)) = entry
        .bin_attrs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
    {
        return v.clone();
    }
    entry
        .attrs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.iter().map(|s| s.as_bytes().to_vec()).collect())
        .unwrap_or_default()
}

/// The first text value of an attribute.
pub fn text_of(entry: &SearchEntry, name: &str) -> Option<String> {
    entry
        .attrs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .and_then(|(_, v)| v.first().cloned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn entry(attrs: &[(&str, &[&str])]) -> SearchEntry {
        SearchEntry {
            dn: String::new(),
            attrs: attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
                .collect::<HashMap<_, _>>(),
            bin_attrs: HashMap::new(),
        }
    }

    #[test]
    fn dialects_are_told_apart_by_the_root_dse() {
        let ad = entry(&[
            (
                "supportedCapabilities",
                &[AD_CAPABILITY_OID, "1.2.840.113556.1.4.1670"],
            ),
            ("defaultNamingContext", &["DC=corp,DC=example,DC=test"]),
            (
                "namingContexts",
                &[
                    "DC=corp,DC=example,DC=test",
                    "CN=Configuration,DC=corp,DC=example,DC=test",
                ],
            ),
        ]);
        let dse = RootDse::from_entry(&ad, "ldaps://dc1").expect("AD");
        assert_eq!(dse.dialect, Dialect::ActiveDirectory);
        assert_eq!(
            dse.base_dn_for("corp.example.test").unwrap(),
            "DC=corp,DC=example,DC=test"
        );

        let ol = entry(&[
            ("objectClass", &["top", "OpenLDAProotDSE"]),
            ("namingContexts", &["dc=example,dc=test"]),
        ]);
        let dse = RootDse::from_entry(&ol, "ldap://x").expect("OpenLDAP");
        assert_eq!(dse.dialect, Dialect::OpenLdap);
        assert_eq!(
            dse.base_dn_for("whatever.test").unwrap(),
            "dc=example,dc=test"
        );

        let two = entry(&[
            ("objectClass", &["OpenLDAProotDSE"]),
            ("namingContexts", &["dc=a", "dc=example,dc=test"]),
        ]);
        let dse = RootDse::from_entry(&two, "ldap://x").unwrap();
        assert_eq!(
            dse.base_dn_for("example.test").unwrap(),
            "dc=example,dc=test"
        );
        assert!(dse
            .base_dn_for("other.test")
            .unwrap_err()
            .to_string()
            .contains("--base-dn"));

        let other = entry(&[("objectClass", &["top"]), ("vendorName", &["389 Project"])]);
        let m = RootDse::from_entry(&other, "ldap://x")
            .unwrap_err()
            .to_string();
        assert!(
            m.contains("neither Active Directory nor OpenLDAP") && m.contains("389"),
            "{m}"
        );
    }

    #[test]
    fn urls_and_ca_files_are_checked_before_connecting() {
        assert!(Target::new("ldaps://dc1.corp", None).is_ok());
        assert!(Target::new("ldap://dc1", None)
            .unwrap()
            .with_starttls(true)
            .is_ok());
        let m = Target::new("ldaps://dc1", None)
            .unwrap()
            .with_starttls(true)
            .unwrap_err()
            .to_string();
        assert!(m.contains("StartTLS is for ldap://"), "{m}");
        let m = Target::new("https://dc1", None).unwrap_err().to_string();
        assert!(m.contains("ldaps://"), "{m}");
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("ca.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        let m = Target::new("ldaps://dc1", Some(&junk))
            .unwrap_err()
            .to_string();
        assert!(
            m.contains("ca.pem") && m.contains("no PEM certificate"),
            "{m}"
        );
        let m = Target::new("ldaps://dc1", Some(&dir.path().join("missing.pem")))
            .unwrap_err()
            .to_string();
        assert!(m.contains("missing.pem"), "{m}");
    }
}
