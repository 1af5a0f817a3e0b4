//! Escaping of untrusted text put into LDAP search filters (RFC 4515) and DNs (RFC 4514).
//!
//! Every name that reaches a filter or a DN from outside (a user name typed in the console, an
//! account name on the command line, a value read back from another directory) goes through one of
//! these functions. Without them a name such as `*)(uid=*` widens a search and `a,ou=admins` moves
//! an entry to another container.

use std::fmt::Write as _;

/// Escapes a value for use inside a search filter assertion, e.g. `(uid=<here>)` (RFC 4515 §3).
///
/// `*`, `(`, `)`, `\` and NUL become `\2a`, `\28`, `\29`, `\5c`, `\00`. Other characters, UTF-8
/// included, stay as they are: RFC 4515 allows them verbatim, and servers compare them as UTF-8.
pub fn filter_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '*' | '(' | ')' | '\\' | '\0' => {
                let _ = write!(out, "\\{:02x}", c as u32);
            }
            _ => out.push(c),
        }
    }
    out
}

/// Escapes a value for use as an attribute value in a DN, e.g. `cn=<here>,ou=people,…`
/// (RFC 4514 §2.4).
///
/// `"`, `+`, `,`, `;`, `<`, `>`, `\` and `=` get a backslash; a leading `#` or space and a trailing
/// space get one too (otherwise the server would read a hex value or drop the space); NUL becomes
/// `\00`. Non-ASCII characters stay UTF-8, as RFC 4514 allows.
pub fn dn_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 4);
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        match c {
            '\0' => out.push_str("\\00"),
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' | '=' => {
                out.push('\\');
                out.push(c);
            }
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            _ => out.push(c),
        }
    }
    out
}

/// Reverses [`dn_value`] (and RFC 4514's `\XX` hex escapes). Used to show a DN's first value to
/// people and to check round trips; `None` for a malformed escape.
pub fn unescape_dn_value(escaped: &str) -> Option<String> {
    let bytes = escaped.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        let next = *bytes.get(i + 1)?;
        let hex = |b: u8| (b as char).to_digit(16);
        match (hex(next), bytes.get(i + 2).and_then(|b| hex(*b))) {
            (Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            _ => {
                out.push(next);
                i += 2;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Builds `attr=<escaped value>` for the first RDN of a DN.
pub fn rdn(attr: &str, value: &str) -> String {
    format!("{attr}={}", dn_value(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names an attacker or an unlucky administrator might choose.
    const HOSTILE: &[&str] = &[
        "Smith, John",
        "a+b",
        "say \"hi\"",
        "back\\slash",
        "nul\0byte",
        "Ærøskøbing Ünïcødé 山田",
        " leading space",
        "trailing space ",
        "#hash",
        "*)(uid=*",
        "x)(|(objectClass=*)",
        "semi;colon<angle>eq=",
    ];

    #[test]
    fn filter_values_neutralise_metacharacters() {
        assert_eq!(filter_value("*)(uid=*"), "\\2a\\29\\28uid=\\2a");
        assert_eq!(filter_value("back\\slash"), "back\\5cslash");
        assert_eq!(filter_value("nul\0byte"), "nul\\00byte");
        assert_eq!(filter_value("Smith, John"), "Smith, John");
        assert_eq!(filter_value("山田"), "山田");
        for name in HOSTILE {
            let escaped = filter_value(name);
            // No unescaped metacharacter survives: after removing the escapes, none is left.
            let stripped = escaped
                .replace("\\2a", "")
                .replace("\\28", "")
                .replace("\\29", "")
                .replace("\\5c", "")
                .replace("\\00", "");
            assert!(
                !stripped.contains(['*', '(', ')', '\\', '\0']),
                "{name:?} -> {escaped:?}"
            );
        }
    }

    #[test]
    fn filter_values_parse_as_one_equality_assertion() {
        // ldap3's own filter parser must see exactly one assertion whose value is the raw name.
        for name in HOSTILE {
            let filter = format!("(cn={})", filter_value(name));
            assert!(
                ldap3::parse_filter(&filter).is_ok(),
                "{name:?} gave the unparseable filter {filter:?}"
            );
        }
        // Unescaped, the injection changes the filter's meaning or breaks it.
        assert!(ldap3::parse_filter("(cn=x)(|(objectClass=*))").is_err());
    }

    #[test]
    fn dn_values_escape_specials_and_edges() {
        assert_eq!(dn_value("Smith, John"), "Smith\\, John");
        assert_eq!(dn_value("a+b"), "a\\+b");
        assert_eq!(dn_value("say \"hi\""), "say \\\"hi\\\"");
        assert_eq!(dn_value("back\\slash"), "back\\\\slash");
        assert_eq!(dn_value("nul\0byte"), "nul\\00byte");
        assert_eq!(dn_value(" leading space"), "\\ leading space");
        assert_eq!(dn_value("trailing space "), "trailing space\\ ");
        assert_eq!(dn_value(" "), "\\ ");
        assert_eq!(dn_value("#hash"), "\\#hash");
        assert_eq!(dn_value("in#side"), "in#side");
        assert_eq!(dn_value("Ærøskøbing 山田"), "Ærøskøbing 山田");
        assert_eq!(dn_value("semi;colon<angle>"), "semi\\;colon\\<angle\\>");
        assert_eq!(rdn("cn", "a,b"), "cn=a\\,b");
    }

    #[test]
    fn dn_values_round_trip_and_never_split_the_rdn() {
        for name in HOSTILE {
            let escaped = dn_value(name);
            assert_eq!(
                unescape_dn_value(&escaped).as_deref(),
                Some(*name),
                "{escaped:?}"
            );
            // Every `,`, `+` or `=` left in the escaped text is preceded by a backslash, so the
            // value can neither end the RDN nor start another attribute.
            let bytes = escaped.as_bytes();
            let mut i = 0;
            while i < bytes.len() {
                if bytes[i] == b'\\' {
                    i += 2;
                    continue;
                }
                assert!(
                    !matches!(bytes[i], b',' | b'+' | b'=' | b';' | b'"' | b'\0'),
                    "{name:?} -> {escaped:?}"
                );
                i += 1;
            }
            assert!(!escaped.starts_with(' ') && !escaped.starts_with('#'));
            assert!(!escaped.ends_with(' ') || escaped.ends_with("\\ "));
        }
    }

    #[test]
    fn unescape_reads_hex_escapes() {
        assert_eq!(unescape_dn_value("a\\2Cb").as_deref(), Some("a,b"));
        assert_eq!(unescape_dn_value("\\C3\\A6").as_deref(), Some("æ"));
        assert_eq!(unescape_dn_value("dangling\\"), None);
    }
}
