//! Random tokens, their SHA-256 digests (what the database keeps) and HMAC derivations from the
//! console key (tokens the console can recompute instead of storing).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::Path;
use subtle::ConstantTimeEq;

/// Prefixes make a leaked token recognisable (secret scanners) and say what it is for.
pub const ENROLLMENT_PREFIX: &str = "hset_";
pub const AGENT_CREDENTIAL_PREFIX: &str = "hsac_";
pub const CONSOLE_TOKEN_PREFIX: &str = "hsct_";
pub const API_TOKEN_PREFIX: &str = "hsapi_";
pub const SESSION_PREFIX: &str = "hss_";

/// A fresh token: `prefix` + 32 random bytes, base64url.
pub fn generate(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// SHA-256 of a token: tokens carry 256 bits of entropy, so an unsalted fast hash is enough.
pub fn digest(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// [`digest`] as a fixed-size array, for keys kept in memory.
pub fn digest_array(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

pub fn hex_digest(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Constant-time equality of two byte strings.
pub fn equal(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// The console's secret key (32 bytes), kept in a 0600 file in the data dir, never in the database.
#[derive(Clone)]
pub struct ConsoleKey([u8; 32]);

impl std::fmt::Debug for ConsoleKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConsoleKey(..)")
    }
}

/// File name of the console key in the data dir.
pub const CONSOLE_KEY_FILE: &str = "console.key";

impl ConsoleKey {
    /// Loads the key from `data_dir`, creating it (mode 0600) on first start.
    pub fn load_or_create(data_dir: &Path) -> anyhow::Result<Self> {
        use anyhow::Context;
        let path = data_dir.join(CONSOLE_KEY_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => {
                let key: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
                    anyhow::anyhow!("{} is damaged: expected 32 bytes", path.display())
                })?;
                Ok(ConsoleKey(key))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; 32];
                rand::rngs::OsRng.fill_bytes(&mut key);
                std::fs::create_dir_all(data_dir)?;
                let tmp = data_dir.join(format!("{CONSOLE_KEY_FILE}.tmp"));
                {
                    use std::os::unix::fs::OpenOptionsExt;
                    let mut file = std::fs::OpenOptions::new()
                        .write(true)
                        .create(true)
                        .truncate(true)
                        .mode(0o600)
                        .open(&tmp)
                        .with_context(|| format!("cannot create {}", tmp.display()))?;
                    file.write_all(&key)?;
                    file.sync_all()?;
                }
                // Two processes starting at once: the first rename wins and both read the winner.
                std::fs::rename(&tmp, &path)?;
                Self::load_or_create(data_dir)
            }
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    #[cfg(test)]
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        ConsoleKey(bytes)
    }

    fn mac(&self, purpose: &str, input: &str) -> [u8; 32] {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(purpose.as_bytes());
        mac.update(&[0]);
        mac.update(input.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// The bearer token the console presents to an agent: derived, so the database never holds it.
    /// Bumping `generation` (at re-install) rotates it.
    pub fn console_token(&self, agent_id: &str, generation: i64) -> String {
        let mac = self.mac("console-to-agent", &format!("{agent_id}/{generation}"));
        format!("{CONSOLE_TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(mac))
    }

    /// The CSRF token bound to a session (or pre-session) cookie value.
    pub fn csrf_token(&self, cookie_value: &str) -> String {
        URL_SAFE_NO_PAD.encode(self.mac("csrf", cookie_value))
    }

    pub fn verify_csrf(&self, cookie_value: &str, presented: &str) -> bool {
        equal(
            self.csrf_token(cookie_value).as_bytes(),
            presented.as_bytes(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_unique_prefixed_and_digests_stable() {
        let a = generate(API_TOKEN_PREFIX);
        let b = generate(API_TOKEN_PREFIX);
        assert_ne!(a, b);
        assert!(a.starts_with("hsapi_") && a.len() > 40);
        assert_eq!(digest(&a), digest(&a));
        assert_ne!(digest(&a), digest(&b));
        assert_eq!(
            hex_digest("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn derived_tokens_depend_on_key_agent_and_generation() {
        let k1 = ConsoleKey::from_bytes([1; 32]);
        let k2 = ConsoleKey::from_bytes([2; 32]);
        assert_eq!(k1.console_token("a", 1), k1.console_token("a", 1));
        assert_ne!(k1.console_token("a", 1), k1.console_token("a", 2));
        assert_ne!(k1.console_token("a", 1), k1.console_token("b", 1));
        assert_ne!(k1.console_token("a", 1), k2.console_token("a", 1));
        // The derivation agents were enrolled with: another one would lock every agent out. The
        // value is HMAC-SHA256(key, "console-to-agent\0a/1") in unpadded base64url, computed with
        // Python's hmac module.
        assert_eq!(
            k1.console_token("a", 1),
            "hsct_tWx0Y0-QUmeTwoPxhRw0m6sUAdlB44vU9-nf2_TI6a0"
        );
        let csrf = k1.csrf_token("session");
        assert!(k1.verify_csrf("session", &csrf));
        assert!(!k1.verify_csrf("other", &csrf));
        assert!(!k2.verify_csrf("session", &csrf));
    }

    #[test]
    fn console_key_is_created_once_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let k1 = ConsoleKey::load_or_create(dir.path()).unwrap();
        let k2 = ConsoleKey::load_or_create(dir.path()).unwrap();
        assert_eq!(k1.console_token("x", 1), k2.console_token("x", 1));
        let mode = std::fs::metadata(dir.path().join(CONSOLE_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
