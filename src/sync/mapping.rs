//! Attribute mappings of a configuration: which cloud attribute each user and group attribute is
//! computed from (Direct, Constant, Expression or None), Entra's default mappings for each
//! directory dialect, the checks a set of mappings must pass before it is saved, and [`apply`],
//! which computes one object's cloud attributes from its directory attributes.

use std::collections::{BTreeSet, HashSet};

use serde::{Deserialize, Serialize};

use super::expr::{self, ExprError, Value};
use crate::directory::Dialect;

pub use super::expr::Attributes;

/// Mappings per object type are capped so a configuration stays reviewable in the console and one
/// object's evaluation stays cheap.
const MAX_MAPPINGS: usize = 100;
/// The one target every object type must map, directly, from an immutable attribute: it is how an
/// object is matched to its cloud counterpart, so it must never be computed.
const SOURCE_ANCHOR: &str = "sourceAnchor";
/// Written as a JSON boolean rather than text.
const ACCOUNT_ENABLED: &str = "accountEnabled";
/// Written as a JSON array of every value (group membership).
const MEMBERS: &str = "members";

/// Where a target attribute's value comes from.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MappingSource {
    /// The value(s) of one directory attribute, as they are.
    Direct { source: String },
    /// The same text for every object.
    Constant { value: String },
    /// An expression of [`super::expr`], e.g. `Join("@", [uid], "corp.example.test")`.
    Expression { expression: String },
    /// No source: only the default value, when the object is created (Entra's "None").
    None,
}

/// When a mapping is applied.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Apply {
    /// "Always": on create and on every update.
    #[default]
    Always,
    /// "Only during creation".
    OnCreate,
}

/// One attribute mapping: the cloud attribute `target` is computed from `source`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Mapping {
    pub target: String,
    #[serde(flatten)]
    pub source: MappingSource,
    /// "Default value if null": used when the source yields nothing and the object is created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_value: Option<String>,
    #[serde(default)]
    pub apply: Apply,
}

/// The attribute mappings of one configuration, per object type.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ObjectMappings {
    pub users: Vec<Mapping>,
    pub groups: Vec<Mapping>,
}

/// A mapping that cannot be saved or applied; `Display` is the full message for administrators.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MappingError {
    #[error(
        "{object_type} mappings: there are {count}, over the limit of {limit}; remove the ones \
         you do not need"
    )]
    TooMany {
        object_type: &'static str,
        count: usize,
        limit: usize,
    },
    #[error(
        "{object_type} mapping #{number}: the target attribute is empty; enter the name of the \
         cloud attribute to write"
    )]
    EmptyTarget {
        object_type: &'static str,
        /// 1-based, as the mapping list shows it.
        number: usize,
    },
    #[error(
        "{object_type} mapping for {target:?}: not a valid target attribute name; names start \
         with a letter and contain only letters, digits and underscores"
    )]
    InvalidTarget {
        object_type: &'static str,
        target: String,
    },
    #[error(
        "{object_type} mapping for {target}: {target} is mapped more than once; keep a single \
         mapping per target attribute"
    )]
    DuplicateTarget {
        object_type: &'static str,
        target: String,
    },
    #[error(
        "{object_type} mappings: there is no sourceAnchor mapping; add a Direct mapping to \
         sourceAnchor from an immutable attribute such as objectGUID (Active Directory) or \
         entryUUID (OpenLDAP)"
    )]
    MissingSourceAnchor { object_type: &'static str },
    #[error(
        "{object_type} mapping for sourceAnchor: it must be a Direct mapping of an immutable \
         attribute such as objectGUID or entryUUID, because it is how objects are matched to \
         their cloud counterparts"
    )]
    SourceAnchorNotDirect { object_type: &'static str },
    #[error(
        "{object_type} mapping for {target}: source {attribute:?} is not a valid attribute name; \
         names start with a letter and contain only letters, digits and hyphens"
    )]
    InvalidSource {
        object_type: &'static str,
        target: String,
        /// Not named `source`: thiserror would take that for the underlying error.
        attribute: String,
    },
    #[error("{object_type} mapping for {target}: expression: {error}")]
    InvalidExpression {
        object_type: &'static str,
        target: String,
        error: ExprError,
    },
    /// A constant or default value that the target can never accept.
    #[error(
        "{object_type} mapping for {target}: {what} {value:?} is not a true/false value; use true \
         or false"
    )]
    NotBooleanSetting {
        object_type: &'static str,
        target: String,
        what: &'static str,
        value: String,
    },
    /// The expression of a stored mapping no longer parses (checked by `validate` before saving).
    #[error("mapping for {target}: expression: {error}")]
    Expression { target: String, error: ExprError },
    #[error(
        "mapping for {target}: {value:?} is not a true/false value; the source must yield true, \
         false, 1 or 0"
    )]
    NotBoolean { target: String, value: String },
}

impl Mapping {
    fn new(target: &str, source: MappingSource) -> Self {
        Mapping {
            target: target.to_string(),
            source,
            default_value: None,
            apply: Apply::Always,
        }
    }

    fn direct(target: &str, source: &str) -> Self {
        Self::new(
            target,
            MappingSource::Direct {
                source: source.to_string(),
            },
        )
    }

    fn expression(target: &str, expression: &str) -> Self {
        Self::new(
            target,
            MappingSource::Expression {
                expression: expression.to_string(),
            },
        )
    }

    fn constant(target: &str, value: &str) -> Self {
        Self::new(
            target,
            MappingSource::Constant {
                value: value.to_string(),
            },
        )
    }
}

/// `text` as a string literal of the expression language.
fn string_literal(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

/// A target attribute name: a letter, then letters, digits and underscores (as Entra's extension
/// attributes, `extension_<app>_<name>`, need).
fn is_target_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Text accepted for a boolean target: Entra's `True`/`False` in any case, or 1/0.
fn parse_boolean(text: &str) -> Option<bool> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("true") || text == "1" {
        Some(true)
    } else if text.eq_ignore_ascii_case("false") || text == "0" {
        Some(false)
    } else {
        None
    }
}

impl ObjectMappings {
    /// Entra's default mappings, adapted to the attributes of each directory dialect. `domain` is
    /// the configuration's domain, which OpenLDAP users without `mail` get their UPN suffix from.
    pub fn defaults(dialect: Dialect, domain: &str) -> Self {
        let anchor = match dialect {
            Dialect::ActiveDirectory => "objectGUID",
            Dialect::OpenLdap => "entryUUID",
        };
        let users = match dialect {
            Dialect::ActiveDirectory => vec![
                Mapping::direct(SOURCE_ANCHOR, anchor),
                Mapping::direct("userPrincipalName", "userPrincipalName"),
                Mapping::direct("onPremisesSamAccountName", "sAMAccountName"),
                Mapping::direct("displayName", "displayName"),
                Mapping::direct("givenName", "givenName"),
                Mapping::direct("surname", "sn"),
                Mapping::direct("mail", "mail"),
                Mapping::direct("department", "department"),
                Mapping::direct("jobTitle", "title"),
                Mapping::direct("telephoneNumber", "telephoneNumber"),
                // ACCOUNTDISABLE is bit 2 of userAccountControl; an account whose flags cannot be
                // read is created enabled, as Entra does.
                Mapping {
                    default_value: Some("true".to_string()),
                    ..Mapping::expression(ACCOUNT_ENABLED, "Not(BitAnd([userAccountControl], 2))")
                },
            ],
            Dialect::OpenLdap => vec![
                Mapping::direct(SOURCE_ANCHOR, anchor),
                // OpenLDAP has no UPN: the mail address, else uid@domain.
                Mapping::expression(
                    "userPrincipalName",
                    &format!(
                        "Coalesce([mail], Join(\"@\", [uid], {}))",
                        string_literal(domain)
                    ),
                ),
                Mapping::direct("onPremisesSamAccountName", "uid"),
                Mapping::expression("displayName", "Coalesce([displayName], [cn])"),
                Mapping::direct("givenName", "givenName"),
                Mapping::direct("surname", "sn"),
                Mapping::direct("mail", "mail"),
                Mapping::direct("department", "departmentNumber"),
                Mapping::direct("jobTitle", "title"),
                Mapping::direct("telephoneNumber", "telephoneNumber"),
                // inetOrgPerson has no standard "disabled" flag.
                Mapping::constant(ACCOUNT_ENABLED, "true"),
            ],
        };
        let groups = vec![
            Mapping::direct(SOURCE_ANCHOR, anchor),
            // AD groups have a displayName only sometimes, OpenLDAP groups rarely; cn always.
            Mapping::expression("displayName", "Coalesce([displayName], [cn])"),
            Mapping::direct("description", "description"),
            Mapping::direct(MEMBERS, "member"),
        ];
        ObjectMappings { users, groups }
    }

    /// Checks everything that can be checked before any object is seen, so a bad mapping is
    /// refused when it is saved rather than failing every object at the next sync.
    pub fn validate(&self) -> Result<(), MappingError> {
        validate_object_type("user", &self.users)?;
        validate_object_type("group", &self.groups)
    }

    /// The lowercase names of every directory attribute the mappings read, sorted and
    /// deduplicated: what the agent must import.
    pub fn source_attributes(&self) -> Vec<String> {
        let mut names = BTreeSet::new();
        for mapping in self.users.iter().chain(&self.groups) {
            match &mapping.source {
                MappingSource::Direct { source } => {
                    names.insert(source.to_ascii_lowercase());
                }
                MappingSource::Expression { expression } => {
                    // An expression that does not parse reads nothing; validate() reports it.
                    if let Ok(parsed) = expr::parse(expression) {
                        names.extend(parsed.attributes());
                    }
                }
                MappingSource::Constant { .. } | MappingSource::None => {}
            }
        }
        names.into_iter().collect()
    }
}

fn validate_object_type(
    object_type: &'static str,
    mappings: &[Mapping],
) -> Result<(), MappingError> {
    if mappings.len() > MAX_MAPPINGS {
        return Err(MappingError::TooMany {
            object_type,
            count: mappings.len(),
            limit: MAX_MAPPINGS,
        });
    }
    // Cloud attribute names are case-insensitive, so "mail" and "Mail" are the same target.
    let mut seen = HashSet::new();
    for (index, mapping) in mappings.iter().enumerate() {
        let target = &mapping.target;
        if target.trim().is_empty() {
            return Err(MappingError::EmptyTarget {
                object_type,
                number: index + 1,
            });
        }
        if !is_target_name(target) {
            return Err(MappingError::InvalidTarget {
                object_type,
                target: target.clone(),
            });
        }
        if !seen.insert(target.to_ascii_lowercase()) {
            return Err(MappingError::DuplicateTarget {
                object_type,
                target: target.clone(),
            });
        }
        let is_anchor = target.eq_ignore_ascii_case(SOURCE_ANCHOR);
        if is_anchor && !matches!(mapping.source, MappingSource::Direct { .. }) {
            return Err(MappingError::SourceAnchorNotDirect { object_type });
        }
        match &mapping.source {
            MappingSource::Direct { source } => {
                if !expr::is_attribute_name(source) {
                    return Err(MappingError::InvalidSource {
                        object_type,
                        target: target.clone(),
                        attribute: source.clone(),
                    });
                }
            }
            MappingSource::Expression { expression } => {
                expr::parse(expression).map_err(|error| MappingError::InvalidExpression {
                    object_type,
                    target: target.clone(),
                    error,
                })?;
            }
            MappingSource::Constant { value } => {
                check_boolean_setting(object_type, target, "constant", value)?;
            }
            MappingSource::None => {}
        }
        if let Some(default_value) = &mapping.default_value {
            check_boolean_setting(object_type, target, "default value", default_value)?;
        }
    }
    if !seen.contains(&SOURCE_ANCHOR.to_ascii_lowercase()) {
        return Err(MappingError::MissingSourceAnchor { object_type });
    }
    Ok(())
}

/// A constant or default of accountEnabled must be a boolean; an empty one means null and is fine.
fn check_boolean_setting(
    object_type: &'static str,
    target: &str,
    what: &'static str,
    value: &str,
) -> Result<(), MappingError> {
    if target.eq_ignore_ascii_case(ACCOUNT_ENABLED)
        && !value.is_empty()
        && parse_boolean(value).is_none()
    {
        return Err(MappingError::NotBooleanSetting {
            object_type,
            target: target.to_string(),
            what,
            value: value.to_string(),
        });
    }
    Ok(())
}

/// The cloud attributes computed for one object: target name → JSON value.
pub type Target = std::collections::BTreeMap<String, serde_json::Value>;

/// Computes the target attributes of one object. `creating` = the object does not exist in the
/// cloud directory yet.
///
/// Mappings with [`Apply::OnCreate`] are skipped when `!creating`. A mapping's `default_value` is
/// used when its source yields null, and (as in Entra) only when creating. `accountEnabled` is a
/// JSON boolean, `members` a JSON array of every value, any other target the first value as a JSON
/// string; a null result leaves the target out.
pub fn apply(
    mappings: &[Mapping],
    source: &Attributes,
    creating: bool,
) -> Result<Target, MappingError> {
    let mut target = Target::new();
    for mapping in mappings {
        if mapping.apply == Apply::OnCreate && !creating {
            continue;
        }
        let mut values = source_values(mapping, source)?;
        if values.is_empty() && creating {
            values.extend(
                mapping
                    .default_value
                    .iter()
                    .filter(|d| !d.is_empty())
                    .cloned(),
            );
        }
        if let Some(value) = to_json(&mapping.target, values)? {
            target.insert(mapping.target.clone(), value);
        }
    }
    Ok(target)
}

/// The non-empty values a mapping's source yields for one object (empty = null).
fn source_values(mapping: &Mapping, source: &Attributes) -> Result<Vec<String>, MappingError> {
    Ok(match &mapping.source {
        MappingSource::Direct { source: name } => expr::lookup(source, name)
            .map(|values| {
                values
                    .iter()
                    .filter(|value| !value.is_empty())
                    .cloned()
                    .collect()
            })
            .unwrap_or_default(),
        MappingSource::Constant { value } if !value.is_empty() => vec![value.clone()],
        MappingSource::Constant { .. } | MappingSource::None => Vec::new(),
        MappingSource::Expression { expression } => {
            let expression_error = |error| MappingError::Expression {
                target: mapping.target.clone(),
                error,
            };
            let parsed = parsed_expression(expression).map_err(expression_error)?;
            parsed
                .evaluate(source)
                .map_err(expression_error)?
                .map(|value: Value| value.to_string())
                .into_iter()
                .collect()
        }
    })
}

thread_local! {
    /// Parsed expressions by their text: a cycle maps 150,000 objects with the same few expressions.
    static PARSED: std::cell::RefCell<std::collections::HashMap<String, std::rc::Rc<expr::Expr>>> =
        Default::default();
}

/// `expr::parse`, remembered per thread (bounded: a few configurations' expressions).
fn parsed_expression(text: &str) -> Result<std::rc::Rc<expr::Expr>, expr::ExprError> {
    if let Some(hit) = PARSED.with(|cache| cache.borrow().get(text).cloned()) {
        return Ok(hit);
    }
    let parsed = std::rc::Rc::new(expr::parse(text)?);
    PARSED.with(|cache| {
        let mut cache = cache.borrow_mut();
        if cache.len() >= 512 {
            cache.clear();
        }
        cache.insert(text.to_owned(), std::rc::Rc::clone(&parsed));
    });
    Ok(parsed)
}

fn to_json(target: &str, values: Vec<String>) -> Result<Option<serde_json::Value>, MappingError> {
    if values.is_empty() {
        return Ok(None);
    }
    if target.eq_ignore_ascii_case(MEMBERS) {
        return Ok(Some(values.into()));
    }
    let first = values.into_iter().next().unwrap_or_default();
    if target.eq_ignore_ascii_case(ACCOUNT_ENABLED) {
        return match parse_boolean(&first) {
            Some(enabled) => Ok(Some(enabled.into())),
            None => Err(MappingError::NotBoolean {
                target: target.to_string(),
                value: first,
            }),
        };
    }
    Ok(Some(first.into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn attrs(pairs: &[(&str, &[&str])]) -> Attributes {
        pairs
            .iter()
            .map(|(name, values)| {
                (
                    name.to_string(),
                    values.iter().map(|value| value.to_string()).collect(),
                )
            })
            .collect()
    }

    fn ad_user(user_account_control: &str) -> Attributes {
        attrs(&[
            ("objectguid", &["9b2f6c1e-0000-4000-8000-000000000001"]),
            ("userprincipalname", &["zoe@corp.example.test"]),
            ("samaccountname", &["zoe"]),
            ("displayname", &["Zoë Ærøskøbing"]),
            ("givenname", &["Zoë"]),
            ("sn", &["Ærøskøbing"]),
            ("title", &["Engineer"]),
            ("useraccountcontrol", &[user_account_control]),
        ])
    }

    fn user_mappings(mappings: Vec<Mapping>) -> ObjectMappings {
        let mut all = ObjectMappings::defaults(Dialect::ActiveDirectory, "corp.example.test");
        all.users = mappings;
        all
    }

    fn anchor() -> Mapping {
        Mapping::direct(SOURCE_ANCHOR, "objectGUID")
    }

    #[test]
    fn defaults_validate_for_both_dialects() {
        for dialect in [Dialect::ActiveDirectory, Dialect::OpenLdap] {
            let defaults = ObjectMappings::defaults(dialect, "corp.example.test");
            assert_eq!(defaults.validate(), Ok(()), "{dialect:?}");
            let targets: Vec<&str> = defaults.users.iter().map(|m| m.target.as_str()).collect();
            assert_eq!(
                targets,
                [
                    "sourceAnchor",
                    "userPrincipalName",
                    "onPremisesSamAccountName",
                    "displayName",
                    "givenName",
                    "surname",
                    "mail",
                    "department",
                    "jobTitle",
                    "telephoneNumber",
                    "accountEnabled"
                ]
            );
            let group_targets: Vec<&str> =
                defaults.groups.iter().map(|m| m.target.as_str()).collect();
            assert_eq!(
                group_targets,
                ["sourceAnchor", "displayName", "description", "members"]
            );
        }
    }

    #[test]
    fn source_attributes_of_the_defaults() {
        let ad = ObjectMappings::defaults(Dialect::ActiveDirectory, "corp.example.test");
        assert_eq!(
            ad.source_attributes(),
            [
                "cn",
                "department",
                "description",
                "displayname",
                "givenname",
                "mail",
                "member",
                "objectguid",
                "samaccountname",
                "sn",
                "telephonenumber",
                "title",
                "useraccountcontrol",
                "userprincipalname"
            ]
        );
        let openldap = ObjectMappings::defaults(Dialect::OpenLdap, "corp.example.test");
        assert_eq!(
            openldap.source_attributes(),
            [
                "cn",
                "departmentnumber",
                "description",
                "displayname",
                "entryuuid",
                "givenname",
                "mail",
                "member",
                "sn",
                "telephonenumber",
                "title",
                "uid"
            ]
        );
    }

    #[test]
    fn openldap_user_principal_name_uses_the_domain() {
        let mappings = ObjectMappings::defaults(Dialect::OpenLdap, "corp.example.test");
        let user = attrs(&[
            ("entryuuid", &["e1"]),
            ("uid", &["jdoe"]),
            ("cn", &["John Doe"]),
        ]);
        let target = apply(&mappings.users, &user, true).unwrap();
        assert_eq!(target["userPrincipalName"], json!("jdoe@corp.example.test"));
        assert_eq!(target["displayName"], json!("John Doe"));
        assert_eq!(target["accountEnabled"], json!(true));
        assert_eq!(target["sourceAnchor"], json!("e1"));

        let with_mail = attrs(&[("uid", &["jdoe"]), ("mail", &["john@mail.example.test"])]);
        let target = apply(&mappings.users, &with_mail, false).unwrap();
        assert_eq!(target["userPrincipalName"], json!("john@mail.example.test"));
    }

    #[test]
    fn domain_is_escaped_as_a_string_literal() {
        let hostile = "a\"b\\c";
        let mappings = ObjectMappings::defaults(Dialect::OpenLdap, hostile);
        assert_eq!(mappings.validate(), Ok(()));
        let target = apply(&mappings.users, &attrs(&[("uid", &["x"])]), true).unwrap();
        assert_eq!(target["userPrincipalName"], json!("x@a\"b\\c"));
    }

    #[test]
    fn account_enabled_from_user_account_control() {
        let mappings = ObjectMappings::defaults(Dialect::ActiveDirectory, "corp.example.test");
        let enabled = apply(&mappings.users, &ad_user("512"), false).unwrap();
        assert_eq!(enabled["accountEnabled"], json!(true));
        let disabled = apply(&mappings.users, &ad_user("514"), false).unwrap();
        assert_eq!(disabled["accountEnabled"], json!(false));
        assert_eq!(disabled["jobTitle"], json!("Engineer"));
        assert_eq!(disabled["surname"], json!("Ærøskøbing"));
        assert_eq!(disabled["onPremisesSamAccountName"], json!("zoe"));
        assert!(
            !disabled.contains_key("mail"),
            "a missing source leaves the target out"
        );
        assert!(!disabled.contains_key("onPremisesDistinguishedName"));
    }

    #[test]
    fn default_value_applies_on_create_only() {
        let mappings = ObjectMappings::defaults(Dialect::ActiveDirectory, "corp.example.test");
        let mut unreadable = ad_user("512");
        unreadable.remove("useraccountcontrol");
        let created = apply(&mappings.users, &unreadable, true).unwrap();
        assert_eq!(created["accountEnabled"], json!(true));
        let updated = apply(&mappings.users, &unreadable, false).unwrap();
        assert!(!updated.contains_key("accountEnabled"));

        let with_default = vec![Mapping {
            default_value: Some("Staff".into()),
            ..Mapping::direct("jobTitle", "title")
        }];
        let no_title = attrs(&[("title", &[""])]);
        assert_eq!(
            apply(&with_default, &no_title, true).unwrap()["jobTitle"],
            json!("Staff")
        );
        assert!(apply(&with_default, &no_title, false).unwrap().is_empty());
        // The source wins over the default whenever it has a value.
        assert_eq!(
            apply(&with_default, &ad_user("512"), true).unwrap()["jobTitle"],
            json!("Engineer")
        );
    }

    #[test]
    fn on_create_mappings_are_skipped_on_update() {
        let mappings = vec![
            Mapping {
                apply: Apply::OnCreate,
                ..Mapping::constant("usageLocation", "DK")
            },
            Mapping::direct("givenName", "GivenName"),
        ];
        let user = ad_user("512");
        let created = apply(&mappings, &user, true).unwrap();
        assert_eq!(created["usageLocation"], json!("DK"));
        assert_eq!(created["givenName"], json!("Zoë"));
        let updated = apply(&mappings, &user, false).unwrap();
        assert!(!updated.contains_key("usageLocation"));
        assert_eq!(updated["givenName"], json!("Zoë"));
    }

    #[test]
    fn none_and_empty_constants_produce_nothing_but_the_default() {
        let mappings = vec![
            Mapping::new("employeeType", MappingSource::None),
            Mapping::constant("companyName", ""),
            Mapping {
                default_value: Some("Member".into()),
                ..Mapping::new("userType", MappingSource::None)
            },
        ];
        let created = apply(&mappings, &Attributes::new(), true).unwrap();
        assert_eq!(created.len(), 1);
        assert_eq!(created["userType"], json!("Member"));
        assert!(apply(&mappings, &Attributes::new(), false)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn members_keep_every_value() {
        let mappings = ObjectMappings::defaults(Dialect::ActiveDirectory, "corp.example.test");
        let group = attrs(&[
            ("objectguid", &["g1"]),
            ("cn", &["Engineers"]),
            ("member", &["CN=A,DC=corp", "", "CN=B,DC=corp"]),
        ]);
        let target = apply(&mappings.groups, &group, false).unwrap();
        assert_eq!(target["members"], json!(["CN=A,DC=corp", "CN=B,DC=corp"]));
        assert_eq!(target["displayName"], json!("Engineers"));
        assert_eq!(target["sourceAnchor"], json!("g1"));
        assert!(!target.contains_key("description"));

        let empty = attrs(&[("objectguid", &["g2"]), ("cn", &["Empty"])]);
        assert!(!apply(&mappings.groups, &empty, false)
            .unwrap()
            .contains_key("members"));
    }

    #[test]
    fn other_targets_get_the_first_value_as_text() {
        let mappings = vec![
            Mapping::direct("proxyAddresses", "proxyAddresses"),
            Mapping::expression("extension_app_flags", "BitAnd([flags], 6)"),
            Mapping::expression("initials", "ToUpper(Left([givenName], 1))"),
        ];
        let user = attrs(&[
            ("proxyaddresses", &["SMTP:a@x", "smtp:b@x"]),
            ("flags", &["7"]),
            ("givenname", &["ærø"]),
        ]);
        let target = apply(&mappings, &user, false).unwrap();
        assert_eq!(target["proxyAddresses"], json!("SMTP:a@x"));
        assert_eq!(target["extension_app_flags"], json!("6"));
        assert_eq!(target["initials"], json!("Æ"));
    }

    #[test]
    fn account_enabled_accepts_boolean_text_only() {
        for (text, expected) in [
            ("true", true),
            ("True", true),
            ("1", true),
            ("false", false),
            ("0", false),
        ] {
            let mappings = vec![Mapping::direct(ACCOUNT_ENABLED, "enabled")];
            let target = apply(&mappings, &attrs(&[("enabled", &[text])]), false).unwrap();
            assert_eq!(target[ACCOUNT_ENABLED], json!(expected), "{text}");
        }
        let mappings = vec![Mapping::direct(ACCOUNT_ENABLED, "enabled")];
        let error = apply(&mappings, &attrs(&[("enabled", &["yes"])]), false).unwrap_err();
        assert_eq!(
            error.to_string(),
            "mapping for accountEnabled: \"yes\" is not a true/false value; the source must \
             yield true, false, 1 or 0"
        );
    }

    #[test]
    fn evaluation_errors_name_the_target() {
        let mappings = vec![Mapping::expression("jobTitle", "Mid([title], 0, 2)")];
        let error = apply(&mappings, &ad_user("512"), false).unwrap_err();
        assert_eq!(
            error.to_string(),
            "mapping for jobTitle: expression: position 1: Mid's start position counts from 1 \
             (the first character), but got 0"
        );
        let broken = vec![Mapping::expression("jobTitle", "Left([title]")];
        assert!(apply(&broken, &ad_user("512"), true)
            .unwrap_err()
            .to_string()
            .starts_with("mapping for jobTitle: expression: position 5: unbalanced parentheses"));
    }

    #[test]
    fn validate_reports_each_problem() {
        let error = |users: Vec<Mapping>| user_mappings(users).validate().unwrap_err().to_string();

        assert_eq!(
            error(vec![
                anchor(),
                Mapping::expression("jobTitle", "Lft([title], 1)")
            ]),
            "user mapping for jobTitle: expression: position 1: unknown function Lft; the known \
             functions are Append, BitAnd, CBool, Coalesce, IIF, IsNullOrEmpty, IsPresent, Join, \
             Left, Mid, Not, Replace, ToLower, ToUpper, Trim"
        );
        assert_eq!(
            error(vec![anchor(), Mapping::direct(" ", "mail")]),
            "user mapping #2: the target attribute is empty; enter the name of the cloud \
             attribute to write"
        );
        assert!(error(vec![anchor(), Mapping::direct("job title", "title")])
            .starts_with("user mapping for \"job title\": not a valid target attribute name"));
        assert!(error(vec![anchor(), Mapping::direct("1st", "title")])
            .contains("not a valid target attribute name"));
        assert_eq!(
            error(vec![
                anchor(),
                Mapping::direct("mail", "mail"),
                Mapping::direct("Mail", "x")
            ]),
            "user mapping for Mail: Mail is mapped more than once; keep a single mapping per \
             target attribute"
        );
        assert!(
            error(vec![anchor(), Mapping::direct("sourceanchor", "entryUUID")])
                .contains("sourceanchor is mapped more than once")
        );
        assert!(error(vec![Mapping::direct("mail", "mail")])
            .starts_with("user mappings: there is no sourceAnchor mapping"));
        assert!(
            error(vec![Mapping::expression(SOURCE_ANCHOR, "[objectGUID]")])
                .starts_with("user mapping for sourceAnchor: it must be a Direct mapping")
        );
        assert_eq!(
            error(vec![anchor(), Mapping::direct("mail", "[mail]")]),
            "user mapping for mail: source \"[mail]\" is not a valid attribute name; names start \
             with a letter and contain only letters, digits and hyphens"
        );
        assert!(
            error(vec![anchor(), Mapping::constant(ACCOUNT_ENABLED, "yes")]).starts_with(
                "user mapping for accountEnabled: constant \"yes\" is not a true/false value"
            )
        );
        assert!(error(vec![
            anchor(),
            Mapping {
                default_value: Some("enabled".into()),
                ..Mapping::direct(ACCOUNT_ENABLED, "enabled")
            }
        ])
        .starts_with("user mapping for accountEnabled: default value \"enabled\""));

        let too_many: Vec<Mapping> = std::iter::once(anchor())
            .chain((0..MAX_MAPPINGS).map(|i| Mapping::direct(&format!("extension_{i}"), "cn")))
            .collect();
        assert_eq!(
            error(too_many),
            "user mappings: there are 101, over the limit of 100; remove the ones you do not need"
        );
        let exactly_the_limit: Vec<Mapping> = std::iter::once(anchor())
            .chain((1..MAX_MAPPINGS).map(|i| Mapping::direct(&format!("extension_{i}"), "cn")))
            .collect();
        assert_eq!(user_mappings(exactly_the_limit).validate(), Ok(()));

        let mut groups_without_anchor =
            ObjectMappings::defaults(Dialect::OpenLdap, "corp.example.test");
        groups_without_anchor.groups.remove(0);
        assert!(groups_without_anchor
            .validate()
            .unwrap_err()
            .to_string()
            .starts_with("group mappings: there is no sourceAnchor mapping"));
    }

    #[test]
    fn serde_shape_is_the_public_api() {
        let mail = Mapping::direct("mail", "mail");
        assert_eq!(
            serde_json::to_string(&mail).unwrap(),
            r#"{"target":"mail","type":"direct","source":"mail","apply":"always"}"#
        );
        assert_eq!(
            serde_json::to_value(Mapping {
                default_value: Some("true".into()),
                apply: Apply::OnCreate,
                ..Mapping::expression("accountEnabled", "Not([x])")
            })
            .unwrap(),
            json!({"target": "accountEnabled", "type": "expression", "expression": "Not([x])",
                   "default_value": "true", "apply": "on_create"})
        );
        assert_eq!(
            serde_json::to_value(Mapping::constant("c", "v")).unwrap(),
            json!({"target": "c", "type": "constant", "value": "v", "apply": "always"})
        );
        assert_eq!(
            serde_json::to_value(Mapping::new("n", MappingSource::None)).unwrap(),
            json!({"target": "n", "type": "none", "apply": "always"})
        );
        // `apply` and `default_value` may be left out by API clients.
        let minimal: Mapping =
            serde_json::from_str(r#"{"target":"mail","type":"direct","source":"mail"}"#).unwrap();
        assert_eq!(minimal, mail);

        for dialect in [Dialect::ActiveDirectory, Dialect::OpenLdap] {
            let defaults = ObjectMappings::defaults(dialect, "corp.example.test");
            let json = serde_json::to_string(&defaults).unwrap();
            let back: ObjectMappings = serde_json::from_str(&json).unwrap();
            assert_eq!(back, defaults);
        }
        assert!(serde_json::from_str::<Mapping>(r#"{"target":"x","type":"regex"}"#).is_err());
    }
}
