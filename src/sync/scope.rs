//! Scoping filters of a configuration: All users, Selected security groups (their direct members,
//! as in the admin center: nested groups are not followed), or Selected organizational units.

use crate::protocol::sync::ObjectKind;
use serde::{Deserialize, Serialize};

/// The admin center's limit: "≈ 50 OUs or groups".
pub const MAX_ENTRIES: usize = 50;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScopeMode {
    AllUsers,
    Groups,
    Ous,
}

impl ScopeMode {
    pub fn label(self) -> &'static str {
        match self {
            ScopeMode::AllUsers => "All users",
            ScopeMode::Groups => "Selected security groups",
            ScopeMode::Ous => "Selected organizational units",
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            ScopeMode::AllUsers => "all_users",
            ScopeMode::Groups => "groups",
            ScopeMode::Ous => "ous",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopeEntry {
    pub dn: String,
    /// For groups: the group's source anchor, found when the DN was validated through an agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anchor: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scope {
    pub mode: ScopeMode,
    #[serde(default)]
    pub entries: Vec<ScopeEntry>,
}

impl Default for Scope {
    fn default() -> Self {
        Scope {
            mode: ScopeMode::AllUsers,
            entries: Vec::new(),
        }
    }
}

/// What the scope needs to know about one object.
pub struct Candidate<'a> {
    pub kind: ObjectKind,
    pub dn: &'a str,
    pub anchor: &'a str,
    /// AD's isCriticalSystemObject (Administrator, Domain Admins…): never synced.
    pub critical: bool,
    /// A direct member of one of the selected groups.
    pub member_of_selected: bool,
}

impl Scope {
    /// Checks the shape (not whether the DNs exist: that needs an agent).
    pub fn check(&self) -> Result<(), String> {
        match self.mode {
            ScopeMode::AllUsers if !self.entries.is_empty() => {
                return Err("All users takes no distinguished names; remove them or pick Selected security groups / Selected organizational units.".into())
            }
            ScopeMode::Groups | ScopeMode::Ous if self.entries.is_empty() => {
                return Err(format!(
                    "{} needs at least one distinguished name.",
                    self.mode.label()
                ))
            }
            _ => {}
        }
        if self.entries.len() > MAX_ENTRIES {
            return Err(format!(
                "{} distinguished names given; a configuration takes at most {MAX_ENTRIES}.",
                self.entries.len()
            ));
        }
        for (i, entry) in self.entries.iter().enumerate() {
            if entry.dn.trim().is_empty() || !entry.dn.contains('=') {
                return Err(format!(
                    "{:?} is not a distinguished name (expected e.g. OU=Sales,DC=corp,DC=example,DC=test).",
                    entry.dn
                ));
            }
            if self.entries[..i]
                .iter()
                .any(|e| e.dn.eq_ignore_ascii_case(&entry.dn))
            {
                return Err(format!("{} is listed twice.", entry.dn));
            }
        }
        Ok(())
    }

    /// Anchors of the selected groups (those validated).
    pub fn group_anchors(&self) -> Vec<String> {
        if self.mode != ScopeMode::Groups {
            return Vec::new();
        }
        self.entries
            .iter()
            .filter_map(|e| e.anchor.clone())
            .collect()
    }

    /// Ok when the object is in scope; otherwise why not, for the provisioning log.
    pub fn decide(&self, c: &Candidate<'_>) -> Result<&'static str, String> {
        if c.critical {
            return Err(
                "isCriticalSystemObject is TRUE: system objects are never synced".to_owned(),
            );
        }
        match self.mode {
            ScopeMode::AllUsers => Ok("the scope is All users"),
            ScopeMode::Ous => {
                if self.entries.iter().any(|e| dn_is_under(c.dn, &e.dn)) {
                    Ok("the object is in a selected organizational unit")
                } else {
                    Err("the object is not in any selected organizational unit".to_owned())
                }
            }
            ScopeMode::Groups => match c.kind {
                ObjectKind::Group
                    if self
                        .entries
                        .iter()
                        .any(|e| e.anchor.as_deref() == Some(c.anchor)) =>
                {
                    Ok("the group is a selected security group")
                }
                ObjectKind::Group => {
                    Err("the group is not one of the selected security groups".to_owned())
                }
                ObjectKind::User if c.member_of_selected => {
                    Ok("the user is a direct member of a selected security group")
                }
                ObjectKind::User => Err(
                    "the user is not a direct member of any selected security group (nested groups are not followed)"
                        .to_owned(),
                ),
            },
        }
    }
}

/// `dn` is `base` or below it. Compared RDN by RDN, ASCII case-insensitively, ignoring spaces
/// after separators; escaped commas (`\,`) stay inside their RDN.
pub fn dn_is_under(dn: &str, base: &str) -> bool {
    let dn = rdns(dn);
    let base = rdns(base);
    !base.is_empty() && dn.len() >= base.len() && dn[dn.len() - base.len()..] == base[..]
}

fn rdns(dn: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut escaped = false;
    for ch in dn.chars() {
        if escaped {
            current.push(ch);
            escaped = false;
        } else if ch == '\\' {
            current.push(ch);
            escaped = true;
        } else if ch == ',' {
            out.push(normalize_rdn(&current));
            current.clear();
        } else {
            current.push(ch);
        }
    }
    if !current.trim().is_empty() {
        out.push(normalize_rdn(&current));
    }
    out
}

/// `attr=value` with the value unescaped (servers write `\2C` where people write `\,`) and both
/// sides lowercased.
fn normalize_rdn(rdn: &str) -> String {
    let rdn = rdn.trim();
    match rdn.split_once('=') {
        Some((attr, value)) => {
            let value = crate::directory::escape::unescape_dn_value(value.trim())
                .unwrap_or_else(|| value.trim().to_owned());
            format!(
                "{}={}",
                attr.trim().to_ascii_lowercase(),
                value.to_lowercase()
            )
        }
        None => rdn.to_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user<'a>(dn: &'a str, member: bool) -> Candidate<'a> {
        Candidate {
            kind: ObjectKind::User,
            dn,
            anchor: "a",
            critical: false,
            member_of_selected: member,
        }
    }

    #[test]
    fn dn_under_compares_rdns() {
        assert!(dn_is_under("CN=Ann,OU=Sales,DC=corp", "ou=sales, dc=corp"));
        assert!(dn_is_under("OU=Sales,DC=corp", "OU=Sales,DC=corp"));
        assert!(!dn_is_under(
            "CN=Ann,OU=PreSales,DC=corp",
            "OU=Sales,DC=corp"
        ));
        // An escaped comma is part of the RDN, not a separator.
        assert!(!dn_is_under(
            "CN=Doe\\, OU=Sales,DC=corp",
            "OU=Sales,DC=corp"
        ));
        assert!(dn_is_under(
            "CN=Doe\\, Jane,OU=Sales,DC=corp",
            "OU=Sales,DC=corp"
        ));
        assert!(!dn_is_under("CN=x,DC=corp", ""));
        // The server's hex escapes and a person's backslash escapes name the same OU.
        assert!(dn_is_under(
            "cn=a,ou=Sales\\2C EU,dc=corp",
            "OU=sales\\, eu,DC=corp"
        ));
        assert!(dn_is_under("cn=a,ou=Zoë,dc=corp", "OU=ZOË,DC=corp"));
    }

    #[test]
    fn modes_decide() {
        let ous = Scope {
            mode: ScopeMode::Ous,
            entries: vec![ScopeEntry {
                dn: "OU=Sales,DC=corp".into(),
                anchor: None,
            }],
        };
        assert!(ous.decide(&user("CN=a,OU=Sales,DC=corp", false)).is_ok());
        assert!(ous.decide(&user("CN=a,OU=IT,DC=corp", false)).is_err());
        let groups = Scope {
            mode: ScopeMode::Groups,
            entries: vec![ScopeEntry {
                dn: "CN=Pilot,DC=corp".into(),
                anchor: Some("g1".into()),
            }],
        };
        assert!(groups.decide(&user("CN=a,DC=corp", true)).is_ok());
        assert!(groups.decide(&user("CN=a,DC=corp", false)).is_err());
        let pilot = Candidate {
            kind: ObjectKind::Group,
            dn: "CN=Pilot,DC=corp",
            anchor: "g1",
            critical: false,
            member_of_selected: false,
        };
        assert!(groups.decide(&pilot).is_ok());
        let critical = Candidate {
            critical: true,
            ..user("CN=Administrator,DC=corp", true)
        };
        let reason = Scope::default().decide(&critical).unwrap_err();
        assert!(reason.contains("isCriticalSystemObject"), "{reason}");
    }

    #[test]
    fn check_rejects_bad_shapes() {
        let mut s = Scope {
            mode: ScopeMode::Ous,
            entries: vec![],
        };
        assert!(s.check().unwrap_err().contains("at least one"));
        s.entries = (0..51)
            .map(|i| ScopeEntry {
                dn: format!("OU={i},DC=corp"),
                anchor: None,
            })
            .collect();
        assert!(s.check().unwrap_err().contains("at most 50"));
        s.entries = vec![
            ScopeEntry {
                dn: "OU=a,DC=corp".into(),
                anchor: None,
            },
            ScopeEntry {
                dn: "ou=A,DC=corp".into(),
                anchor: None,
            },
        ];
        assert!(s.check().unwrap_err().contains("twice"));
        s.entries.truncate(1);
        assert!(s.check().is_ok());
        s.entries[0].dn = "Sales".into();
        assert!(s.check().unwrap_err().contains("not a distinguished name"));
    }
}
