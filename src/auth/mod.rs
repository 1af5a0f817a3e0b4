//! Who may do what: console roles and their capabilities, password hashing and token handling.
//!
//! No HTTP here: `web` turns a [`Denied`] into a 403 page or JSON error.

pub mod device;
pub mod identity;
pub mod ldap_hash;
pub mod oidc;
pub mod password;
pub mod throttle;
pub mod tokens;

use serde::Serialize;
use std::fmt;
use std::str::FromStr;

/// The console roles, named after the Entra roles an administrator knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    GlobalAdministrator,
    HybridIdentityAdministrator,
    GlobalReader,
}

impl Role {
    pub const ALL: [Role; 3] = [
        Role::GlobalAdministrator,
        Role::HybridIdentityAdministrator,
        Role::GlobalReader,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::GlobalAdministrator => "global-administrator",
            Role::HybridIdentityAdministrator => "hybrid-identity-administrator",
            Role::GlobalReader => "global-reader",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Role::GlobalAdministrator => "Global Administrator",
            Role::HybridIdentityAdministrator => "Hybrid Identity Administrator",
            Role::GlobalReader => "Global Reader",
        }
    }

    /// May change cloud sync settings, enrollment tokens and agents.
    pub fn can_manage_sync(self) -> bool {
        matches!(
            self,
            Role::GlobalAdministrator | Role::HybridIdentityAdministrator
        )
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                format!("unknown role {s:?}: use global-administrator, hybrid-identity-administrator or global-reader")
            })
    }
}

/// An authenticated console principal: a signed-in administrator or an API token's owner.
#[derive(Debug, Clone)]
pub struct Principal {
    pub account_id: i64,
    pub username: String,
    pub role: Role,
}

/// Refusal of an action the principal's role does not allow; the message says what to do.
#[derive(Debug, Clone)]
pub struct Denied(pub String);

impl Principal {
    /// Checks the principal may change sync settings and the fleet; `what` names the action.
    pub fn require_manage(&self, what: &str) -> Result<(), Denied> {
        if self.role.can_manage_sync() {
            Ok(())
        } else {
            Err(Denied(format!(
                "Your role, {}, can view but not change: {what} needs a Global Administrator or a Hybrid Identity Administrator.",
                self.role.label()
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_round_trip_and_reader_cannot_manage() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
        }
        assert!("admin".parse::<Role>().is_err());
        let reader = Principal {
            account_id: 1,
            username: "r".into(),
            role: Role::GlobalReader,
        };
        let denied = reader.require_manage("deleting an agent").unwrap_err();
        assert!(denied.0.contains("Global Reader"), "{}", denied.0);
        assert!(denied.0.contains("deleting an agent"));
        let hia = Principal {
            role: Role::HybridIdentityAdministrator,
            ..reader
        };
        assert!(hia.require_manage("x").is_ok());
    }
}
