//! [`DirectoryError`]: every way talking to a directory can fail, each with a message that names
//! the cause and what to do about it.
//!
//! Messages quote the server's diagnostic text (it helps with AD's `data 52e`-style sub-codes) but
//! never a password: no function here ever sees one.

use ldap3::LdapError;

/// LDAP result codes this module gives a meaning to (RFC 4511 §4.1.9).
pub(crate) mod rc {
    pub const SIZE_LIMIT_EXCEEDED: u32 = 4;
    pub const STRONGER_AUTH_REQUIRED: u32 = 8;
    pub const UNAVAILABLE_CRITICAL_EXTENSION: u32 = 12;
    pub const NO_SUCH_ATTRIBUTE: u32 = 16;
    pub const UNDEFINED_ATTRIBUTE_TYPE: u32 = 17;
    pub const CONSTRAINT_VIOLATION: u32 = 19;
    pub const ATTRIBUTE_OR_VALUE_EXISTS: u32 = 20;
    pub const NO_SUCH_OBJECT: u32 = 32;
    pub const INVALID_CREDENTIALS: u32 = 49;
    pub const INSUFFICIENT_ACCESS: u32 = 50;
    pub const UNWILLING_TO_PERFORM: u32 = 53;
    pub const ENTRY_ALREADY_EXISTS: u32 = 68;
}

#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("invalid LDAP URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("cannot read the CA certificate file {path}: {reason}")]
    BadCaCert { path: String, reason: String },
    #[error("cannot reach the directory server at {url}: {cause}. Check the URL, the port and that the server is running")]
    Unreachable { url: String, cause: String },
    #[error("the TLS certificate of {url} is not trusted ({cause}). Pass --ca-cert with the PEM file of the CA that issued the server's certificate")]
    UntrustedCertificate { url: String, cause: String },
    #[error("TLS with {url} failed: {cause}")]
    Tls { url: String, cause: String },
    #[error("the directory at {url} rejected the credentials of {who}: wrong user name or password (LDAP result 49, invalid credentials{detail})")]
    InvalidCredentials {
        url: String,
        who: String,
        detail: String,
    },
    #[error(
        "missing rights: {who} may not {what} (LDAP result 50, insufficient access rights{detail})"
    )]
    InsufficientAccess {
        who: String,
        what: String,
        detail: String,
    },
    #[error("the directory at {url} refuses to {what} without an encrypted connection: use an ldaps:// URL or --starttls (LDAP result {rc}{detail})")]
    NeedsTls {
        url: String,
        what: String,
        rc: u32,
        detail: String,
    },
    #[error("cannot {what}: {dn} does not exist or is not visible to {who} (LDAP result 32, no such object)")]
    NoSuchObject {
        what: String,
        dn: String,
        who: String,
    },
    #[error("cannot {what}: LDAP result {rc}{detail}")]
    Ldap {
        what: String,
        rc: u32,
        detail: String,
    },
    #[error("{0}")]
    Other(String),
}

impl DirectoryError {
    /// The LDAP result code, when the server answered with one.
    pub fn rc(&self) -> Option<u32> {
        match self {
            DirectoryError::InvalidCredentials { .. } => Some(rc::INVALID_CREDENTIALS),
            DirectoryError::InsufficientAccess { .. } => Some(rc::INSUFFICIENT_ACCESS),
            DirectoryError::NoSuchObject { .. } => Some(rc::NO_SUCH_OBJECT),
            DirectoryError::NeedsTls { rc, .. } | DirectoryError::Ldap { rc, .. } => Some(*rc),
            _ => None,
        }
    }
}

/// What was being done, by whom, where: the context an [`LdapError`] is translated in.
pub(crate) struct Doing {
    pub url: String,
    pub who: String,
    pub what: String,
    /// The entry the operation named, for "does not exist" messages.
    pub dn: String,
}

/// `, server says: …` when the server gave a diagnostic message, else nothing.
fn detail(text: &str) -> String {
    let text = text.trim().trim_end_matches('\0').trim();
    if text.is_empty() {
        String::new()
    } else {
        format!("; the server says: {text}")
    }
}

/// Maps a result code and the server's text to an error that names the cause.
pub(crate) fn from_result(code: u32, text: &str, doing: &Doing) -> DirectoryError {
    let detail = detail(text);
    match code {
        rc::INVALID_CREDENTIALS => DirectoryError::InvalidCredentials {
            url: doing.url.to_owned(),
            who: doing.who.to_owned(),
            detail: ad_bind_hint(text).map_or(detail, |hint| format!("; {hint}")),
        },
        rc::INSUFFICIENT_ACCESS => DirectoryError::InsufficientAccess {
            who: doing.who.to_owned(),
            what: doing.what.to_owned(),
            detail,
        },
        rc::NO_SUCH_OBJECT => DirectoryError::NoSuchObject {
            what: doing.what.to_owned(),
            dn: doing.dn.to_owned(),
            who: doing.who.to_owned(),
        },
        // 8: simple bind on a plain connection to an AD that requires strong auth; 53 with a
        // password write over a plain connection (AD: "unicodePwd needs a secure connection").
        rc::STRONGER_AUTH_REQUIRED => DirectoryError::NeedsTls {
            url: doing.url.to_owned(),
            what: doing.what.to_owned(),
            rc: code,
            detail,
        },
        rc::UNWILLING_TO_PERFORM
            if doing.url.starts_with("ldap://")
                && (text.contains("secure") || text.contains("confidential")) =>
        {
            DirectoryError::NeedsTls {
                url: doing.url.to_owned(),
                what: doing.what.to_owned(),
                rc: code,
                detail,
            }
        }
        _ => DirectoryError::Ldap {
            what: doing.what.to_owned(),
            rc: code,
            detail,
        },
    }
}

/// Active Directory puts the real reason of a failed bind in `data NNN` of its diagnostic text.
fn ad_bind_hint(text: &str) -> Option<String> {
    let code = text.split("data ").nth(1)?.get(..3)?;
    let reason = match code {
        "52e" => "wrong user name or password",
        "525" => "no such user",
        "530" | "531" => "logon not permitted at this time or from this workstation",
        "532" => "the password has expired",
        "533" => "the account is disabled",
        "701" => "the account has expired",
        "773" => "the user must change the password before the first logon",
        "775" => "the account is locked out",
        _ => return None,
    };
    Some(format!("Active Directory says: {reason} (data {code})"))
}

/// Translates any error of the ldap3 crate.
pub(crate) fn from_ldap(error: LdapError, doing: &Doing) -> DirectoryError {
    let url = doing.url.to_owned();
    match error {
        LdapError::LdapResult { result } => from_result(result.rc, &result.text, doing),
        LdapError::Timeout { .. } => DirectoryError::Unreachable {
            url,
            cause: "timed out".into(),
        },
        LdapError::Io { source } => from_io(&source, url),
        LdapError::Rustls { source } => from_rustls(&source, url),
        LdapError::UrlParsing { source } => DirectoryError::BadUrl {
            url,
            reason: source.to_string(),
        },
        LdapError::UnknownScheme(scheme) => DirectoryError::BadUrl {
            url,
            reason: format!("unknown scheme {scheme:?}; use ldap:// or ldaps://"),
        },
        other => DirectoryError::Other(format!("cannot {} on {url}: {other}", doing.what)),
    }
}

fn from_io(error: &std::io::Error, url: String) -> DirectoryError {
    // tokio-rustls reports handshake failures as io::Error wrapping the rustls::Error.
    if let Some(tls) = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        return from_rustls(tls, url);
    }
    use std::io::ErrorKind::*;
    let cause = match error.kind() {
        ConnectionRefused => "connection refused".to_owned(),
        TimedOut => "timed out".to_owned(),
        ConnectionReset | UnexpectedEof | ConnectionAborted => format!(
            "the server closed the connection ({error}); is it an LDAPS port spoken to with ldap://, or the other way round?"
        ),
        _ => error.to_string(),
    };
    DirectoryError::Unreachable { url, cause }
}

fn from_rustls(error: &rustls::Error, url: String) -> DirectoryError {
    match error {
        rustls::Error::InvalidCertificate(reason) => {
            let cause = match reason {
                rustls::CertificateError::UnknownIssuer => {
                    "issued by a CA this agent does not trust".to_owned()
                }
                rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. } => {
                    "it is not valid for the host name in the URL".to_owned()
                }
                rustls::CertificateError::Expired
                | rustls::CertificateError::ExpiredContext { .. } => "it has expired".to_owned(),
                other => format!("{other:?}"),
            };
            DirectoryError::UntrustedCertificate { url, cause }
        }
        other => DirectoryError::Tls {
            url,
            cause: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doing() -> Doing {
        Doing {
            url: "ldaps://dc1".into(),
            who: "CN=Administrator,CN=Users,DC=corp".into(),
            what: "bind".into(),
            dn: String::new(),
        }
    }

    #[test]
    fn result_codes_name_their_cause() {
        let e = from_result(49, "80090308: LdapErr: DSID-0C09042A, comment: AcceptSecurityContext error, data 775, v3839", &doing());
        let m = e.to_string();
        assert!(
            m.contains("LDAP result 49") && m.contains("locked out"),
            "{m}"
        );
        assert!(m.contains("CN=Administrator"), "{m}");
        let m = from_result(50, "no write access", &doing()).to_string();
        assert!(
            m.starts_with("missing rights:") && m.contains("no write access"),
            "{m}"
        );
        let m = from_result(8, "", &doing()).to_string();
        assert!(m.contains("ldaps://"), "{m}");
        assert_eq!(from_result(32, "", &doing()).rc(), Some(32));
    }

    #[test]
    fn refused_connection_is_unreachable() {
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let m = from_io(&io, "ldap://127.0.0.1:1".into()).to_string();
        assert!(
            m.contains("cannot reach") && m.contains("connection refused"),
            "{m}"
        );
    }

    #[test]
    fn unknown_issuer_is_an_untrusted_certificate() {
        let tls = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, tls);
        let m = from_io(&io, "ldaps://dc1".into()).to_string();
        assert!(m.contains("not trusted") && m.contains("--ca-cert"), "{m}");
    }
}
