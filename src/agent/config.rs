//! The agent's files in its data dir: `agent.json` (plain config), `credential.json` (secrets), and
//! the key pair the agent API serves TLS with, `tls.key.pem` (secret) and `tls.cert.pem` (its
//! self-signed certificate, which the console pinned at enrollment).
//!
//! All are replaced by writing a temporary file and renaming it over the old one, so a crash
//! never leaves a half-written file. Secrets are created with mode 0600 from the first byte, so
//! they are never readable by other users, not even for an instant.

use crate::console::tls::SelfSigned;
use crate::protocol::{Environment, Extension};
use anyhow::{bail, Context, Result};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, ErrorKind, Write};
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Arc;
use uuid::Uuid;

const CONFIG_FILE: &str = "agent.json";
const CREDENTIAL_FILE: &str = "credential.json";
pub(crate) const TLS_KEY_FILE: &str = "tls.key.pem";
pub(crate) const TLS_CERT_FILE: &str = "tls.cert.pem";

/// `agent.json`: nothing secret, so an operator may read and share it.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct AgentConfig {
    /// Without a trailing slash, so endpoint paths can be appended.
    pub console_url: String,
    pub agent_id: String,
    pub machine_name: String,
    pub listen: SocketAddr,
    pub extension: Extension,
    pub environment: Environment,
}

/// `credential.json`. Deliberately not `Debug`, so the credential cannot end up in a log line.
#[derive(Serialize, Deserialize)]
pub(crate) struct Credential {
    /// Bearer token the agent presents to the console.
    pub agent_credential: String,
    /// Lowercase hex SHA-256 of the token the console presents to the agent; the token itself is
    /// never stored, so a copy of the data dir does not let anyone impersonate the console.
    pub console_token_sha256: String,
}

/// An enrolled agent: both files of a data dir.
pub(crate) struct Agent {
    pub config: AgentConfig,
    pub credential: Credential,
}

impl Agent {
    /// Reads both files; a missing one means the agent was never installed in this data dir.
    pub fn load(data_dir: &Path) -> Result<Self> {
        let config = read_json(&data_dir.join(CONFIG_FILE))?;
        let credential: Credential = read_json(&data_dir.join(CREDENTIAL_FILE))?;
        if !is_sha256_hex(&credential.console_token_sha256) {
            bail!(
                "{} is damaged: console_token_sha256 is not a hex SHA-256; run `hybridsync agent install` again",
                data_dir.join(CREDENTIAL_FILE).display()
            );
        }
        Ok(Self { config, credential })
    }

    /// The agent a previous install left in `data_dir`, if any. A fresh data dir is not an error,
    /// but unreadable files are: silently enrolling a new agent would orphan the old one in the
    /// console.
    pub fn load_existing(data_dir: &Path) -> Result<Option<Self>> {
        if !data_dir.join(CREDENTIAL_FILE).exists() {
            return Ok(None);
        }
        Self::load(data_dir).map(Some).with_context(|| {
            format!(
                "{} holds a previous agent that cannot be read; remove {CONFIG_FILE} and {CREDENTIAL_FILE} to enroll as a new agent",
                data_dir.display()
            )
        })
    }

    /// Writes both files, creating the data dir (mode 0700) if needed. The credential goes first:
    /// on a re-install, which keeps the agent id, a crash between the two writes still leaves a
    /// matching pair.
    pub fn save(&self, data_dir: &Path) -> Result<()> {
        create_data_dir(data_dir)?;
        write_atomic(
            data_dir,
            CREDENTIAL_FILE,
            &to_json(&self.credential)?,
            0o600,
        )?;
        write_atomic(data_dir, CONFIG_FILE, &to_json(&self.config)?, 0o644)
    }
}

/// Writes the agent API's private key (0600) and certificate, creating the data dir if needed.
/// The key goes first: the certificate names the pair the console pinned.
pub(crate) fn save_tls(data_dir: &Path, tls: &SelfSigned) -> Result<()> {
    create_data_dir(data_dir)?;
    write_atomic(data_dir, TLS_KEY_FILE, tls.key_pem.as_bytes(), 0o600)?;
    write_atomic(data_dir, TLS_CERT_FILE, tls.cert_pem.as_bytes(), 0o644)
}

/// The TLS configuration `agent run` serves the agent API with, from the data dir's key pair.
pub(crate) fn tls_server_config(data_dir: &Path) -> Result<Arc<rustls::ServerConfig>> {
    let cert = data_dir.join(TLS_CERT_FILE);
    let key = data_dir.join(TLS_KEY_FILE);
    if !cert.exists() || !key.exists() {
        bail!(
            "{} has no TLS certificate for the agent API ({TLS_CERT_FILE}, {TLS_KEY_FILE}); an \
             older version installed this agent: run `hybridsync agent install` again",
            data_dir.display()
        );
    }
    crate::console::tls::server_config(&cert, &key).with_context(|| {
        format!(
            "cannot use the agent API's TLS certificate in {}; `hybridsync agent install` makes a new one",
            data_dir.display()
        )
    })
}

fn create_data_dir(data_dir: &Path) -> Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(data_dir)
        .with_context(|| format!("cannot create the data dir {}", data_dir.display()))
}

/// Lowercase hex SHA-256, the form in which the console token is stored and compared.
pub(crate) fn sha256_hex(text: &str) -> String {
    format!("{:x}", Sha256::digest(text.as_bytes()))
}

fn is_sha256_hex(text: &str) -> bool {
    text.len() == 64
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == ErrorKind::NotFound => bail!(
            "{} not found: no agent is installed in this data dir; run `hybridsync agent install` first",
            path.display()
        ),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    serde_json::from_slice(&bytes).with_context(|| {
        format!(
            "{} is damaged; run `hybridsync agent install` again",
            path.display()
        )
    })
}

fn to_json<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    let mut json = serde_json::to_vec_pretty(value).context("cannot serialize the agent files")?;
    json.push(b'\n');
    Ok(json)
}

/// Replaces `dir/name` with `contents` by renaming a fresh temporary file over it.
pub(crate) fn write_atomic(dir: &Path, name: &str, contents: &[u8], mode: u32) -> Result<()> {
    let target = dir.join(name);
    // A unique name, because `mode` only applies to a file this call creates itself.
    let temp = dir.join(format!(".{name}.{}.tmp", Uuid::new_v4().simple()));
    let written = write_new(&temp, contents, mode).and_then(|()| fs::rename(&temp, &target));
    if written.is_err() {
        // Best effort: the write already failed, and that is the error worth reporting.
        let _ = fs::remove_file(&temp);
    }
    written.with_context(|| format!("cannot write {}", target.display()))?;
    // The rename itself is durable only once the directory is synced.
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot sync the data dir {}", dir.display()))
}

fn write_new(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).expect("metadata").permissions().mode() & 0o777
    }

    fn agent(credential: &str) -> Agent {
        Agent {
            config: AgentConfig {
                console_url: "http://127.0.0.1:8720".into(),
                agent_id: "agent-1".into(),
                machine_name: "host".into(),
                listen: "127.0.0.1:0".parse().expect("addr"),
                extension: Extension::CloudSync,
                environment: Environment::Public,
            },
            credential: Credential {
                agent_credential: credential.into(),
                console_token_sha256: sha256_hex("console-token"),
            },
        }
    }

    #[test]
    fn credential_is_private_and_replaced_atomically() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data_dir = dir.path().join("data");
        let cred_path = data_dir.join(CREDENTIAL_FILE);

        agent("first").save(&data_dir).expect("first save");
        assert_eq!(mode_of(&data_dir), 0o700);
        assert_eq!(mode_of(&cred_path), 0o600);
        let first_inode = fs::metadata(&cred_path).expect("metadata").ino();

        // A looser file in the way must be replaced, not rewritten in place with its old mode.
        fs::set_permissions(&cred_path, fs::Permissions::from_mode(0o644)).expect("chmod");
        agent("second").save(&data_dir).expect("second save");
        assert_eq!(mode_of(&cred_path), 0o600);
        assert_ne!(
            fs::metadata(&cred_path).expect("metadata").ino(),
            first_inode
        );

        let loaded = Agent::load(&data_dir).expect("load");
        assert_eq!(loaded.credential.agent_credential, "second");
        assert_eq!(loaded.config.agent_id, "agent-1");
        let leftovers: Vec<_> = fs::read_dir(&data_dir)
            .expect("read_dir")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name())
            .filter(|n| n.to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    }

    #[test]
    fn tls_key_is_private_and_the_pair_serves() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data_dir = dir.path().join("data");
        let err = tls_server_config(dir.path()).expect_err("no pair yet");
        assert!(format!("{err:#}").contains("agent install"), "{err:#}");

        let first = SelfSigned::generate("agent.hybridsync.invalid").expect("generate");
        save_tls(&data_dir, &first).expect("save");
        assert_eq!(mode_of(&data_dir.join(TLS_KEY_FILE)), 0o600);
        assert_eq!(mode_of(&data_dir.join(TLS_CERT_FILE)), 0o644);
        tls_server_config(&data_dir).expect("the saved pair serves");

        // A re-install's new pair replaces the old one: a different certificate.
        let second = SelfSigned::generate("agent.hybridsync.invalid").expect("generate");
        assert_ne!(first.sha256_hex(), second.sha256_hex());
        save_tls(&data_dir, &second).expect("save");
        let cert = fs::read_to_string(data_dir.join(TLS_CERT_FILE)).expect("cert");
        assert_eq!(cert, second.cert_pem);

        // A key that does not belong to the certificate is refused with a way out.
        fs::write(data_dir.join(TLS_KEY_FILE), &first.key_pem).expect("write");
        let err = tls_server_config(&data_dir).expect_err("mismatched pair");
        assert!(
            format!("{err:#}").contains("do not belong together"),
            "{err:#}"
        );
    }

    #[test]
    fn missing_files_point_to_install() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = Agent::load(dir.path()).err().expect("must fail");
        let message = format!("{err:#}");
        assert!(message.contains(CONFIG_FILE), "{message}");
        assert!(message.contains("hybridsync agent install"), "{message}");
        assert!(Agent::load_existing(dir.path())
            .expect("fresh dir")
            .is_none());
    }

    #[test]
    fn sha256_hex_is_lowercase_hex() {
        let hex = sha256_hex("abc");
        assert_eq!(
            hex,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(is_sha256_hex(&hex));
        assert!(!is_sha256_hex(&hex.to_uppercase()));
    }
}
