//! The install wizard's "Configure Service Account" and "Connect Active Directory" screens:
//! verify the administrator, detect the dialect and base DN, then create (and delegate rights to)
//! or verify the service account the agent will use from then on.
//!
//! Several agents per domain: every agent has its own account, all of them members of one group
//! (`provAgentSvcGroup`), and the rights are granted to the group once. The first agent of a
//! domain gets `provAgentSvc`; a later agent finds that name taken (its password lives only on the
//! first agent's machine, and resetting it would break that agent) and creates
//! `provAgentSvc-<first 6 characters of its agent id>` instead. Re-running `add-directory` on the
//! same agent reuses the account whose password it already holds.

use super::conn::{bytes_of, text_of, Connection, Dialect, Target};
use super::error::rc;
use super::escape::{dn_value, filter_value};
use super::sd::{self, Dacl};
use super::DirectoryError;
use ldap3::controls::RawControl;
use ldap3::Mod;
use rand::distributions::{Alphanumeric, DistString};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

/// Default service account name, after Entra's `provAgentgMSA$`.
pub const DEFAULT_ACCOUNT: &str = "provAgentSvc";
/// The group every agent's service account joins; the rights are granted to it.
pub const AGENT_GROUP: &str = "provAgentSvcGroup";

/// `create` or `custom`, as on the wizard's Configure Service Account screen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccountMode {
    Create,
    Custom,
}

/// What the administrator chose for the service account.
pub enum AccountChoice {
    /// Make a dedicated account (named, or the default).
    Create { name: Option<String> },
    /// Use an account the administrator made, with its password.
    Custom { name: String, password: String },
}

/// A service account this agent already holds the password of (a re-run of add-directory).
pub struct Known {
    pub bind_dn: String,
    pub password: String,
}

/// Everything needed to connect one directory.
pub struct ConnectRequest<'a> {
    pub domain: &'a str,
    pub target: &'a Target,
    pub base_dn: Option<&'a str>,
    pub admin: &'a str,
    pub admin_password: &'a str,
    pub choice: AccountChoice,
    /// The agent's id: names its own account when the default name is taken.
    pub agent_id: &'a str,
    pub machine_name: &'a str,
    pub known: Option<Known>,
}

/// The account the agent will bind as.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceAccount {
    pub mode: AccountMode,
    /// Short name (sAMAccountName / cn) for people; for custom accounts, what was given.
    pub name: String,
    /// What the agent binds with (a DN, or for custom AD accounts possibly a UPN).
    pub bind_dn: String,
}

/// The result of a successful connect. Deliberately not `Debug`: it holds a password.
pub struct Connected {
    pub dialect: Dialect,
    pub base_dn: String,
    pub account: ServiceAccount,
    pub password: String,
    /// What was done, for the operator (never secrets).
    pub notes: Vec<String>,
}

/// The olcAccess lines OpenLDAP needs for the agents' group (see README "Connect a directory").
pub fn openldap_acl(base_dn: &str) -> String {
    let group = format!("cn={AGENT_GROUP},{base_dn}");
    format!(
        "olcAccess: {{0}}to attrs=userPassword,pwdAccountLockedTime,pwdReset by group.exact=\"{group}\" write by * break\n\
         olcAccess: {{1}}to * by group.exact=\"{group}\" read by * break"
    )
}

/// A long random password: 40 letters and digits (about 238 bits) after a fixed prefix that
/// meets AD's complexity rule (three of upper, lower, digit, symbol) whatever the random part is.
pub fn random_password() -> String {
    format!(
        "Hs1-{}",
        Alphanumeric.sample_string(&mut rand::rngs::OsRng, 40)
    )
}

/// Verifies the administrator, detects the dialect and base DN, and sets up the service account.
pub async fn connect(req: ConnectRequest<'_>) -> Result<Connected, DirectoryError> {
    let mut admin = Connection::open(req.target).await?;
    let root = admin.root_dse().await?;
    admin.bind(req.admin, req.admin_password).await?;
    let base_dn = match req.base_dn {
        Some(dn) => dn.to_owned(),
        None => root.base_dn_for(req.domain)?,
    };
    let mut notes = vec![format!(
        "{} detected at {}; base DN {base_dn}",
        root.dialect.label(),
        req.target.url
    )];
    ensure_readable(&mut admin, &base_dn).await?;

    let (account, password) = match req.choice {
        AccountChoice::Custom { name, password } => {
            let mut svc = Connection::bind_new(req.target, &name, &password).await?;
            ensure_readable(&mut svc, &base_dn).await?;
            svc.close().await;
            notes.push(format!(
                "custom service account {name} can bind and read {base_dn}"
            ));
            let account = ServiceAccount {
                mode: AccountMode::Custom,
                name: name.clone(),
                bind_dn: name,
            };
            (account, password)
        }
        AccountChoice::Create { name } => {
            let mut setup = Setup {
                admin: &mut admin,
                target: req.target,
                dialect: root.dialect,
                base_dn: &base_dn,
                domain: req.domain,
                agent_id: req.agent_id,
                machine_name: req.machine_name,
                notes: &mut notes,
            };
            setup.create(name, req.known).await?
        }
    };
    admin.close().await;
    Ok(Connected {
        dialect: root.dialect,
        base_dn,
        account,
        password,
        notes,
    })
}

/// Checks that the bound identity can read the base entry. Servers hide entries one may not
/// read (OpenLDAP answers "no such object", AD returns nothing), so both mean missing rights.
async fn ensure_readable(conn: &mut Connection, base_dn: &str) -> Result<(), DirectoryError> {
    let what = format!("read the base DN {base_dn}");
    let missing = |conn: &Connection| DirectoryError::InsufficientAccess {
        who: conn.who().to_owned(),
        what: what.clone(),
        detail: String::new(),
    };
    match conn.read(base_dn, &["objectClass"], &what).await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(missing(conn)),
        Err(DirectoryError::NoSuchObject { .. }) => {
            // Tell "does not exist" from "may not see": the administrator (or anonymous, before
            // any bind) is asked separately by the caller; here, be explicit about both.
            Err(DirectoryError::InsufficientAccess {
                who: conn.who().to_owned(),
                what: format!("{what} (the server says it does not exist: check --base-dn, or the account's read rights)"),
                detail: String::new(),
            })
        }
        Err(e) => Err(e),
    }
}

/// Deletes a service account an agent created, after taking it out of the agents' group (the
/// group and its rights stay: other agents may be members).
pub async fn delete_account(
    target: &Target,
    admin: &str,
    admin_password: &str,
    dialect: Dialect,
    base_dn: &str,
    account_dn: &str,
) -> Result<(), DirectoryError> {
    let mut conn = Connection::bind_new(target, admin, admin_password).await?;
    if dialect == Dialect::OpenLdap {
        // AD drops the membership with the account; OpenLDAP keeps a dangling member unless the
        // memberof overlay's refint is on, so remove it first. The last member cannot go from a
        // groupOfNames (objectClass violation, 65): then the group goes.
        let group_dn = format!("cn={AGENT_GROUP},{base_dn}");
        let mods = vec![Mod::Delete(
            b"member".to_vec(),
            HashSet::from([account_dn.as_bytes().to_vec()]),
        )];
        let what = format!("remove {account_dn} from {group_dn}");
        match conn
            .modify(
                &group_dn,
                mods,
                Vec::new(),
                &[rc::NO_SUCH_ATTRIBUTE, OBJECT_CLASS_VIOLATION],
                &what,
            )
            .await
        {
            Ok(OBJECT_CLASS_VIOLATION) => {
                conn.delete(&group_dn, &format!("delete the empty group {group_dn}"))
                    .await?
            }
            Ok(_) | Err(DirectoryError::NoSuchObject { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    let deleted = conn
        .delete(
            account_dn,
            &format!("delete the service account {account_dn}"),
        )
        .await;
    conn.close().await;
    match deleted {
        Ok(()) | Err(DirectoryError::NoSuchObject { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

const OBJECT_CLASS_VIOLATION: u32 = 65;

/// Checks a stored service account: bind and read the base DN. The agent's health check.
pub async fn check_account(
    target: &Target,
    bind_dn: &str,
    password: &str,
    base_dn: &str,
) -> Result<(), DirectoryError> {
    let mut conn = Connection::bind_new(target, bind_dn, password).await?;
    let read = ensure_readable(&mut conn, base_dn).await;
    conn.close().await;
    read
}

struct Setup<'a> {
    admin: &'a mut Connection,
    target: &'a Target,
    dialect: Dialect,
    base_dn: &'a str,
    domain: &'a str,
    agent_id: &'a str,
    machine_name: &'a str,
    notes: &'a mut Vec<String>,
}

/// Where the account lives and how it is found, per dialect.
struct Place {
    dn: String,
    exists: bool,
}

impl Setup<'_> {
    fn own_name(&self) -> String {
        let short: String = self
            .agent_id
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(6)
            .collect();
        format!("{DEFAULT_ACCOUNT}-{short}")
    }

    async fn create(
        &mut self,
        name: Option<String>,
        known: Option<Known>,
    ) -> Result<(ServiceAccount, String), DirectoryError> {
        // A re-run on this agent: keep the account whose password this agent already holds.
        if let Some(known) = known {
            if check_account(self.target, &known.bind_dn, &known.password, self.base_dn)
                .await
                .is_ok()
            {
                let name = first_rdn_value(&known.bind_dn);
                self.ensure_group_and_rights(&known.bind_dn).await?;
                self.verify(&known.bind_dn, &known.password, false).await?;
                self.notes.push(format!(
                    "reused this agent's service account {} (its password is already in the data dir)",
                    known.bind_dn
                ));
                let account = ServiceAccount {
                    mode: AccountMode::Create,
                    name,
                    bind_dn: known.bind_dn,
                };
                return Ok((account, known.password));
            }
        }
        let own = self.own_name();
        let explicit = name.is_some();
        let candidates = match name {
            Some(name) => vec![name],
            None => vec![DEFAULT_ACCOUNT.to_owned(), own.clone()],
        };
        let password = random_password();
        for candidate in candidates {
            validate_account_name(&candidate, self.dialect)?;
            let place = self.find(&candidate).await?;
            let created = if !place.exists {
                match self.add_account(&candidate, &place.dn, &password).await {
                    Ok(()) => {}
                    // Another agent's add-directory created it a moment ago: this one's account
                    // is the next candidate, exactly as if it had been there before.
                    Err(e)
                        if e.rc() == Some(rc::ENTRY_ALREADY_EXISTS)
                            && !explicit
                            && candidate != own =>
                    {
                        self.notes.push(format!(
                            "{} was just created by another agent; creating this agent's own account",
                            place.dn
                        ));
                        continue;
                    }
                    Err(e) => return Err(e),
                }
                self.notes
                    .push(format!("created the service account {}", place.dn));
                true
            } else if candidate == own {
                // Named after this agent's id, so no other agent uses it: a new password is safe.
                self.reset_password(&place.dn, &password).await?;
                self.notes.push(format!(
                    "reset the password of this agent's own service account {}",
                    place.dn
                ));
                false
            } else if explicit {
                return Err(DirectoryError::Other(format!(
                    "the service account {} already exists and this agent does not hold its password (another agent may use it; resetting it would break that agent). Choose another --service-account-name, or pass --service-account custom with its password",
                    place.dn
                )));
            } else {
                self.notes.push(format!(
                    "{} already exists (another agent's); creating this agent's own account",
                    place.dn
                ));
                continue;
            };
            let set_up = async {
                self.ensure_group_and_rights(&place.dn).await?;
                self.verify(&place.dn, &password, true).await
            }
            .await;
            if let Err(e) = set_up {
                if created {
                    // Leave nothing half-made behind: the next attempt starts clean.
                    let _ = self
                        .admin
                        .delete(&place.dn, "remove the service account")
                        .await;
                }
                return Err(e);
            }
            let account = ServiceAccount {
                mode: AccountMode::Create,
                name: candidate,
                bind_dn: place.dn,
            };
            return Ok((account, password));
        }
        Err(DirectoryError::Other(format!(
            "both {DEFAULT_ACCOUNT} and {own} exist and this agent holds neither password; pass --service-account-name"
        )))
    }

    async fn find(&mut self, name: &str) -> Result<Place, DirectoryError> {
        match self.dialect {
            Dialect::ActiveDirectory => {
                let filter = format!("(sAMAccountName={})", filter_value(name));
                let found = self
                    .admin
                    .search(
                        self.base_dn,
                        &filter,
                        &["1.1"],
                        2,
                        "look the service account up",
                    )
                    .await?;
                Ok(match found.into_iter().next() {
                    Some(entry) => Place {
                        dn: entry.dn,
                        exists: true,
                    },
                    None => Place {
                        dn: format!("CN={},CN=Users,{}", dn_value(name), self.base_dn),
                        exists: false,
                    },
                })
            }
            Dialect::OpenLdap => {
                let dn = format!("cn={},{}", dn_value(name), self.base_dn);
                let exists = match self
                    .admin
                    .read(&dn, &["1.1"], "look the service account up")
                    .await
                {
                    Ok(found) => found.is_some(),
                    Err(DirectoryError::NoSuchObject { .. }) => false,
                    Err(e) => return Err(e),
                };
                Ok(Place { dn, exists })
            }
        }
    }

    fn description(&self) -> String {
        format!(
            "hybridsync provisioning agent {} on {}",
            self.agent_id, self.machine_name
        )
    }

    async fn add_account(
        &mut self,
        name: &str,
        dn: &str,
        password: &str,
    ) -> Result<(), DirectoryError> {
        let what = format!("create the service account {dn}");
        match self.dialect {
            Dialect::ActiveDirectory => {
                let attrs = vec![
                    attr(
                        "objectClass",
                        &["top", "person", "organizationalPerson", "user"],
                    ),
                    attr("sAMAccountName", &[name]),
                    attr("userPrincipalName", &[&format!("{name}@{}", self.domain)]),
                    attr("description", &[&self.description()]),
                    // NORMAL_ACCOUNT | DONT_EXPIRE_PASSWORD: a service must not stop when a
                    // password policy ages its password out.
                    attr("userAccountControl", &["66048"]),
                    (
                        b"unicodePwd".to_vec(),
                        HashSet::from([unicode_pwd(password)]),
                    ),
                ];
                self.admin.add(dn, attrs, &what).await
            }
            Dialect::OpenLdap => {
                let attrs = vec![
                    attr(
                        "objectClass",
                        &["applicationProcess", "simpleSecurityObject"],
                    ),
                    attr("cn", &[name]),
                    attr("description", &[&self.description()]),
                    attr("userPassword", &[password]),
                ];
                self.admin.add(dn, attrs, &what).await?;
                // Password Modify makes the server store its configured hash rather than the
                // clear text an add carries (unless a ppolicy hashes it already).
                self.admin
                    .set_password(dn, password, "set the service account's password")
                    .await
            }
        }
    }

    async fn reset_password(&mut self, dn: &str, password: &str) -> Result<(), DirectoryError> {
        let what = "reset the service account's password";
        match self.dialect {
            Dialect::ActiveDirectory => {
                let mods = vec![Mod::Replace(
                    b"unicodePwd".to_vec(),
                    HashSet::from([unicode_pwd(password)]),
                )];
                self.admin
                    .modify(dn, mods, Vec::new(), &[], what)
                    .await
                    .map(drop)
            }
            Dialect::OpenLdap => self.admin.set_password(dn, password, what).await,
        }
    }

    /// Puts the account in the agents' group, creating the group (and, on AD, its delegation on
    /// the domain root) when it is the first agent of the domain.
    async fn ensure_group_and_rights(&mut self, account_dn: &str) -> Result<(), DirectoryError> {
        match self.dialect {
            Dialect::ActiveDirectory => {
                let filter = format!("(&(objectClass=group)(sAMAccountName={AGENT_GROUP}))");
                let found = self
                    .admin
                    .search(
                        self.base_dn,
                        &filter,
                        &["objectSid"],
                        2,
                        "look the agents' group up",
                    )
                    .await?;
                let group_dn = match found.into_iter().next() {
                    Some(group) => group.dn,
                    None => {
                        let dn = format!("CN={AGENT_GROUP},CN=Users,{}", self.base_dn);
                        let attrs = vec![
                            attr("objectClass", &["top", "group"]),
                            attr("sAMAccountName", &[AGENT_GROUP]),
                            attr("description", &["hybridsync provisioning agents' service accounts (rights are delegated to this group)"]),
                        ];
                        match self
                            .admin
                            .add(&dn, attrs, &format!("create the group {dn}"))
                            .await
                        {
                            Ok(()) => self.notes.push(format!("created the group {dn}")),
                            // Another agent's add-directory created it meanwhile: use it.
                            Err(e) if e.rc() == Some(rc::ENTRY_ALREADY_EXISTS) => {}
                            Err(e) => return Err(e),
                        }
                        dn
                    }
                };
                self.add_member(&group_dn, account_dn).await?;
                let group = self
                    .admin
                    .read(&group_dn, &["objectSid"], "read the agents' group")
                    .await?
                    .ok_or_else(|| DirectoryError::Other(format!("cannot read {group_dn}")))?;
                let sid = bytes_of(&group, "objectSid")
                    .into_iter()
                    .next()
                    .ok_or_else(|| DirectoryError::Other(format!("{group_dn} has no objectSid")))?;
                self.delegate(&sid).await
            }
            Dialect::OpenLdap => {
                let group_dn = format!("cn={AGENT_GROUP},{}", self.base_dn);
                let exists = match self
                    .admin
                    .read(&group_dn, &["1.1"], "look the agents' group up")
                    .await
                {
                    Ok(found) => found.is_some(),
                    Err(DirectoryError::NoSuchObject { .. }) => false,
                    Err(e) => return Err(e),
                };
                if exists {
                    self.add_member(&group_dn, account_dn).await
                } else {
                    let attrs = vec![
                        attr("objectClass", &["groupOfNames"]),
                        attr("cn", &[AGENT_GROUP]),
                        attr("description", &["hybridsync provisioning agents' service accounts (the olcAccess rules name this group)"]),
                        attr("member", &[account_dn]),
                    ];
                    match self
                        .admin
                        .add(&group_dn, attrs, &format!("create the group {group_dn}"))
                        .await
                    {
                        Ok(()) => {
                            self.notes.push(format!("created the group {group_dn}"));
                            Ok(())
                        }
                        // Another agent's add-directory created it meanwhile: join it.
                        Err(e) if e.rc() == Some(rc::ENTRY_ALREADY_EXISTS) => {
                            self.add_member(&group_dn, account_dn).await
                        }
                        Err(e) => Err(e),
                    }
                }
            }
        }
    }

    async fn add_member(&mut self, group_dn: &str, member: &str) -> Result<(), DirectoryError> {
        let mods = vec![Mod::Add(
            b"member".to_vec(),
            HashSet::from([member.as_bytes().to_vec()]),
        )];
        // Already a member: AD answers 68 or 20, OpenLDAP 20; both are fine.
        self.admin
            .modify(
                group_dn,
                mods,
                Vec::new(),
                &[rc::ATTRIBUTE_OR_VALUE_EXISTS, rc::ENTRY_ALREADY_EXISTS],
                &format!("add {member} to {group_dn}"),
            )
            .await
            .map(drop)
    }

    /// AD: grants the group its rights on the domain root, unless they are there already.
    async fn delegate(&mut self, group_sid: &[u8]) -> Result<(), DirectoryError> {
        let control = || RawControl {
            ctype: sd::SD_FLAGS_OID.into(),
            crit: true,
            val: Some(sd::SD_FLAGS_DACL.to_vec()),
        };
        let what = format!("read the security descriptor of {}", self.base_dn);
        let root = self
            .admin
            .read_with(
                self.base_dn,
                &["nTSecurityDescriptor"],
                &what,
                vec![control()],
            )
            .await?
            .ok_or_else(|| DirectoryError::Other(format!("cannot {what}")))?;
        let raw = bytes_of(&root, "nTSecurityDescriptor")
            .into_iter()
            .next()
            .ok_or_else(|| DirectoryError::InsufficientAccess {
                who: self.admin.who().to_owned(),
                what: what.clone(),
                detail: String::new(),
            })?;
        let mut dacl = Dacl::parse(&raw).map_err(DirectoryError::Other)?;
        let added = dacl.grant(sd::agent_aces(group_sid));
        if added == 0 {
            self.notes.push(format!(
                "{AGENT_GROUP} ({}) already holds its rights on {}",
                sd::sid_text(group_sid),
                self.base_dn
            ));
            return Ok(());
        }
        let mods = vec![Mod::Replace(
            b"nTSecurityDescriptor".to_vec(),
            HashSet::from([dacl.to_security_descriptor()]),
        )];
        self.admin
            .modify(
                self.base_dn,
                mods,
                vec![control()],
                &[],
                &format!(
                    "delegate rights on {} (write its nTSecurityDescriptor)",
                    self.base_dn
                ),
            )
            .await?;
        self.notes.push(format!(
            "delegated to {AGENT_GROUP} on {}: read; Reset Password, write lockoutTime and pwdLastSet on descendant users; Unexpire Password",
            self.base_dn
        ));
        Ok(())
    }

    /// Binds as the new account and checks the rights it needs are in force.
    async fn verify(
        &mut self,
        dn: &str,
        password: &str,
        fresh: bool,
    ) -> Result<(), DirectoryError> {
        let mut svc = Connection::bind_new(self.target, dn, password)
            .await
            .map_err(|e| {
                if fresh {
                    DirectoryError::Other(format!("the new service account {dn} cannot bind: {e}"))
                } else {
                    e
                }
            })?;
        ensure_readable(&mut svc, self.base_dn).await?;
        let result = match self.dialect {
            Dialect::ActiveDirectory => self.verify_ad(&mut svc, dn).await,
            Dialect::OpenLdap => self.verify_openldap(&mut svc, dn).await,
        };
        svc.close().await;
        result
    }

    /// AD computes, per entry, which attributes the caller may write (allowedAttributesEffective).
    async fn verify_ad(
        &mut self,
        svc: &mut Connection,
        own_dn: &str,
    ) -> Result<(), DirectoryError> {
        let users = svc
            .search(
                self.base_dn,
                "(&(objectCategory=person)(objectClass=user)(!(isCriticalSystemObject=TRUE)))",
                &["allowedAttributesEffective"],
                20,
                "look for a user to check the delegation on",
            )
            .await?;
        let Some(user) = users
            .into_iter()
            .find(|u| !u.dn.eq_ignore_ascii_case(own_dn))
        else {
            self.notes
                .push("no user yet to check the delegation on".into());
            return Ok(());
        };
        let writable: Vec<String> = user
            .attrs
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("allowedAttributesEffective"))
            .map(|(_, v)| v.iter().map(|a| a.to_ascii_lowercase()).collect())
            .unwrap_or_default();
        let missing: Vec<&str> = ["lockoutTime", "pwdLastSet"]
            .into_iter()
            .filter(|a| !writable.contains(&a.to_ascii_lowercase()))
            .collect();
        if !missing.is_empty() {
            return Err(DirectoryError::InsufficientAccess {
                who: own_dn.to_owned(),
                what: format!(
                    "write {} on {} although {AGENT_GROUP} was delegated the right (has the delegation replicated to this DC?)",
                    missing.join(" and "),
                    user.dn
                ),
                detail: String::new(),
            });
        }
        self.notes.push(format!(
            "verified: {own_dn} may write lockoutTime and pwdLastSet on {}",
            user.dn
        ));
        Ok(())
    }

    /// OpenLDAP cannot grant or report rights over LDAP, so probe them: deleting a value that is
    /// not there is refused with "insufficient access" (50) without write access, and with "no
    /// such attribute" (16) with it; either way nothing changes.
    async fn verify_openldap(
        &mut self,
        svc: &mut Connection,
        own_dn: &str,
    ) -> Result<(), DirectoryError> {
        let users = svc
            .search(
                self.base_dn,
                "(|(objectClass=inetOrgPerson)(objectClass=posixAccount)(objectClass=person))",
                &["pwdAccountLockedTime"],
                50,
                "look for a user to check the ACL on",
            )
            .await?;
        let Some(user) = users.into_iter().find(|u| {
            !u.dn.eq_ignore_ascii_case(own_dn) && text_of(u, "pwdAccountLockedTime").is_none()
        }) else {
            self.notes.push("no user yet to check the ACL on".into());
            return Ok(());
        };
        let absent = format!("hybridsync-probe-{}", random_password());
        let probes: [(&str, HashSet<Vec<u8>>); 2] = [
            ("userPassword", HashSet::from([absent.into_bytes()])),
            ("pwdAccountLockedTime", HashSet::new()),
        ];
        for (attribute, values) in probes {
            let mods = vec![Mod::Delete(attribute.as_bytes().to_vec(), values)];
            let outcome = svc
                .modify(
                    &user.dn,
                    mods,
                    Vec::new(),
                    &[
                        rc::NO_SUCH_ATTRIBUTE,
                        rc::UNDEFINED_ATTRIBUTE_TYPE,
                        rc::CONSTRAINT_VIOLATION,
                    ],
                    &format!("write {attribute} on {}", user.dn),
                )
                .await;
            match outcome {
                Ok(rc::UNDEFINED_ATTRIBUTE_TYPE) => self.notes.push(format!(
                    "{attribute} is unknown to this server (no ppolicy overlay?): account lockout cannot be managed"
                )),
                Ok(_) => {}
                Err(DirectoryError::InsufficientAccess { who, what, .. }) => {
                    return Err(DirectoryError::InsufficientAccess {
                        who,
                        what: format!(
                            "{what}: the ACL for {AGENT_GROUP} is not in force. Add these rules ahead of the existing ones of the database (cn=config, e.g. with ldapmodify as cn=config's admin), then run add-directory again:\n{}",
                            openldap_acl(self.base_dn)
                        ),
                        detail: String::new(),
                    })
                }
                Err(e) => return Err(e),
            }
        }
        self.notes.push(format!(
            "verified: the olcAccess rules for {AGENT_GROUP} are in force (read, write userPassword and pwdAccountLockedTime)"
        ));
        Ok(())
    }
}

fn attr(name: &str, values: &[&str]) -> (Vec<u8>, HashSet<Vec<u8>>) {
    (
        name.as_bytes().to_vec(),
        values.iter().map(|v| v.as_bytes().to_vec()).collect(),
    )
}

/// AD's password attribute: the password in double quotes, UTF-16LE.
fn unicode_pwd(password: &str) -> Vec<u8> {
    format!("\"{password}\"")
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect()
}

/// Account names become a sAMAccountName (AD: at most 20 characters, none of `"/\[]:;|=,+*?<>`)
/// or a cn; refuse what would not work rather than let the server give an obscure error.
pub fn validate_account_name(name: &str, dialect: Dialect) -> Result<(), DirectoryError> {
    let bad = |why: &str| {
        Err(DirectoryError::Other(format!(
            "invalid service account name {name:?}: {why}"
        )))
    };
    if name.trim().is_empty() || name.trim() != name {
        return bad("empty, or leading or trailing spaces");
    }
    if name.chars().any(char::is_control) {
        return bad("control characters");
    }
    if dialect == Dialect::ActiveDirectory {
        if name.chars().count() > 20 {
            return bad("Active Directory allows at most 20 characters (sAMAccountName)");
        }
        if name.contains([
            '"', '/', '\\', '[', ']', ':', ';', '|', '=', ',', '+', '*', '?', '<', '>', '@',
        ]) {
            return bad("Active Directory does not allow \" / \\ [ ] : ; | = , + * ? < > @ in a sAMAccountName");
        }
    }
    Ok(())
}

/// `provAgentSvc` from `CN=provAgentSvc,CN=Users,…` (escapes undone).
fn first_rdn_value(dn: &str) -> String {
    let mut end = dn.len();
    let bytes = dn.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b',' => {
                end = i;
                break;
            }
            _ => i += 1,
        }
    }
    let rdn = &dn[..end.min(dn.len())];
    let value = rdn.split_once('=').map_or(rdn, |(_, v)| v);
    super::escape::unescape_dn_value(value).unwrap_or_else(|| value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_long_random_and_complex() {
        let a = random_password();
        assert_eq!(a.len(), 44);
        assert_ne!(a, random_password());
        assert!(a.chars().any(|c| c.is_ascii_uppercase()));
        assert!(a.chars().any(|c| c.is_ascii_lowercase()));
        assert!(a.chars().any(|c| c.is_ascii_digit()));
    }

    #[test]
    fn unicode_pwd_is_quoted_utf16le() {
        assert_eq!(unicode_pwd("ab"), vec![b'"', 0, b'a', 0, b'b', 0, b'"', 0]);
    }

    #[test]
    fn account_names_are_checked_per_dialect() {
        assert!(validate_account_name("provAgentSvc-abc123", Dialect::ActiveDirectory).is_ok());
        assert!(validate_account_name("provAgentSvc-abcdefgh", Dialect::ActiveDirectory).is_err());
        assert!(validate_account_name("a,b", Dialect::ActiveDirectory).is_err());
        assert!(validate_account_name("a,b + \"c\"", Dialect::OpenLdap).is_ok());
        assert!(validate_account_name(" x", Dialect::OpenLdap).is_err());
        assert!(validate_account_name("x\0", Dialect::OpenLdap).is_err());
    }

    #[test]
    fn first_rdn_value_undoes_escapes() {
        assert_eq!(
            first_rdn_value("CN=provAgentSvc,CN=Users,DC=corp"),
            "provAgentSvc"
        );
        assert_eq!(first_rdn_value("cn=a\\,b,dc=x"), "a,b");
        assert_eq!(first_rdn_value("cn=solo"), "solo");
    }

    #[test]
    fn acl_text_names_the_group() {
        let acl = openldap_acl("dc=example,dc=test");
        assert!(acl.contains("group.exact=\"cn=provAgentSvcGroup,dc=example,dc=test\" write"));
        assert!(acl.lines().count() == 2);
    }
}
