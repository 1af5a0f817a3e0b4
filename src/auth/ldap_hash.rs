//! Checking a password against an OpenLDAP `userPassword` hash, as password hash sync brings it:
//! `{SCHEME}base64`. Salted schemes (`{SSHA}`, `{SSHA256}`, `{SSHA512}`, `{SMD5}`) keep the salt
//! after the digest (RFC 2307 style, as slappasswd writes them); unsalted ones are the digest alone.
//! The comparison is constant-time.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use md5::Md5;
use sha1::Sha1;
use sha2::{Digest, Sha256, Sha512};
use subtle::ConstantTimeEq;

/// What a check says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Match,
    Mismatch,
    /// Not a `{SCHEME}` value this module knows (e.g. `{CRYPT}`, `{ARGON2}`), or not well formed:
    /// the caller must check the password another way.
    Unsupported,
}

fn digest_of<D: Digest>(password: &[u8], salt: &[u8]) -> Vec<u8> {
    let mut d = D::new();
    d.update(password);
    d.update(salt);
    d.finalize().to_vec()
}

/// Checks `password` against `stored` (`{SSHA}…`, `{SHA}…`, `{SSHA256}…`, `{SSHA512}…`,
/// `{SHA256}…`, `{SHA512}…`, `{MD5}…`, `{SMD5}…`; scheme names are case-insensitive).
pub fn verify(stored: &str, password: &str) -> Verdict {
    let Some((scheme, encoded)) = stored
        .strip_prefix('{')
        .and_then(|rest| rest.split_once('}'))
    else {
        return Verdict::Unsupported;
    };
    let Ok(decoded) = STANDARD.decode(encoded.trim()) else {
        return Verdict::Unsupported;
    };
    // (digest length, salted, digest function)
    type Hasher = fn(&[u8], &[u8]) -> Vec<u8>;
    let (len, salted, hash): (usize, bool, Hasher) = match scheme.to_ascii_uppercase().as_str() {
        "SHA" => (20, false, digest_of::<Sha1>),
        "SSHA" => (20, true, digest_of::<Sha1>),
        "SHA256" => (32, false, digest_of::<Sha256>),
        "SSHA256" => (32, true, digest_of::<Sha256>),
        "SHA512" => (64, false, digest_of::<Sha512>),
        "SSHA512" => (64, true, digest_of::<Sha512>),
        "MD5" => (16, false, digest_of::<Md5>),
        "SMD5" => (16, true, digest_of::<Md5>),
        _ => return Verdict::Unsupported,
    };
    let well_formed = if salted {
        decoded.len() > len
    } else {
        decoded.len() == len
    };
    if !well_formed {
        return Verdict::Unsupported;
    }
    let (expected, salt) = decoded.split_at(len);
    let actual = hash(password.as_bytes(), salt);
    if bool::from(actual.ct_eq(expected)) {
        Verdict::Match
    } else {
        Verdict::Mismatch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Vectors for "secret" with the salt 01..08 (computed with Python's hashlib), and values
    /// written by OpenLDAP's slappasswd for "Corr3ct h0rse!".
    #[test]
    fn known_vectors_match() {
        let secret = [
            "{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=",
            "{SSHA}lHFzXul4wnzRItssVcTnvXWRjNgBAgMEBQYHCA==",
            "{SHA256}K7gNU3sdo+OL0wNhqoVWhr3g6s1xYv72ol/pe/Unols=",
            "{SSHA256}A7N1lAy5bBb4T6qH9e85zAvHBmzNPhRFbZ105DjjWDIBAgMEBQYHCA==",
            "{SHA512}vSsar3708Jvp9Szi2NWZZ02Bqp1qRCFpbcTZPdBhnWgs5WtNZKnvCXdhztmeD2cmW192CF5bDufKRpayrW/isg==",
            "{SSHA512}KO8EsMPQTwZrxxbOkDAOOXEeVCc2grMQg1pnZwZhC1bBQLby8zCmFn7qTZRvoTd+yQdROQQNYHWpTUST4zjTdQECAwQFBgcI",
            "{MD5}Xr4ilOzQ4PCOq3aQ0qbuaQ==",
            "{SMD5}yeWhvSFtvhMX4jDO9I847gECAwQFBgcI",
        ];
        for stored in secret {
            assert_eq!(verify(stored, "secret"), Verdict::Match, "{stored}");
            assert_eq!(verify(stored, "Secret"), Verdict::Mismatch, "{stored}");
            assert_eq!(verify(stored, ""), Verdict::Mismatch, "{stored}");
        }
        let slappasswd = [
            "{SSHA}Gb9It+sBdbJ869lV2OT0P/qBaZr2avs7",
            "{SMD5}QX5EVnJ0G0xmWcZhdsn/+cb8aqY=",
            "{SHA}oElfD5jAzMch/KY5q3+ZnDOo3p4=",
            "{MD5}MemV4Y2Uiju63jdY42VWew==",
        ];
        for stored in slappasswd {
            assert_eq!(verify(stored, "Corr3ct h0rse!"), Verdict::Match, "{stored}");
            assert_eq!(
                verify(stored, "Corr3ct h0rse"),
                Verdict::Mismatch,
                "{stored}"
            );
        }
    }

    #[test]
    fn scheme_names_are_case_insensitive() {
        assert_eq!(
            verify("{ssha}lHFzXul4wnzRItssVcTnvXWRjNgBAgMEBQYHCA==", "secret"),
            Verdict::Match
        );
    }

    #[test]
    fn unknown_or_malformed_values_are_unsupported() {
        for stored in [
            "secret",
            "{CRYPT}$6$abc$def",
            "{ARGON2}$argon2id$v=19$m=65536,t=2,p=1$xx$yy",
            "{SSHA}not base64!",
            // A salted scheme with no salt, an unsalted one of the wrong length.
            "{SSHA}5en6G6MezRroT3XKqkdPOmY/BfQ=",
            "{SHA}lHFzXul4wnzRItssVcTnvXWRjNgBAgMEBQYHCA==",
            "{SHA",
        ] {
            assert_eq!(verify(stored, "secret"), Verdict::Unsupported, "{stored}");
        }
    }
}
