//! Synchronization against Active Directory (the test binary's Samba AD DC), mirroring the
//! OpenLDAP end-to-end tests of `sync.rs` with real console and agent processes: scoping by
//! security group, modify / rename / move, hostile names, preview, provision on demand, the
//! accidental-deletion threshold, quarantine and failover.
//!
//! The DC is shared by every test of the binary, and other tests change it concurrently: each test
//! here works in an OU of its own (named after the test and this process), scopes its
//! configuration to that OU or to a group in it, and only ever counts objects it created.

use crate::directory_support::*;
use crate::support::*;
use crate::sync::{
    attr, configuration, create_configuration, cycle_after, find, logs, names, objects, operate,
    patch,
};
use hybridsync::directory::conn::Connection;
use hybridsync::directory::escape::{dn_value, unescape_dn_value};
use ldap3::Mod;
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(40);

// ---------------------------------------------------------------------------------------------
// Console API helpers beyond those of sync.rs

fn set_of(names: &[&str]) -> HashSet<String> {
    names.iter().map(|n| n.to_string()).collect()
}

/// How many provisioning logs the console holds in all.
async fn log_total(api: &Api) -> u64 {
    let (status, body) = api.get("/provisioning-logs?limit=1").await;
    assert_eq!(status, 200, "{body}");
    body["total"].as_u64().unwrap()
}

/// Percent-encodes a query parameter value (a DN with spaces, commas, quotes…).
fn query_value(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A DN as its RDNs, each `(attribute lowercased, value unescaped)`: servers are free to write
/// `\2C` where a person writes `\,`, so DNs are compared this way.
fn parsed_dn(dn: &str) -> Vec<(String, String)> {
    let mut parts = Vec::new();
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
            parts.push(std::mem::take(&mut current));
        } else {
            current.push(ch);
        }
    }
    parts.push(current);
    parts
        .iter()
        .map(|rdn| {
            let (a, v) = rdn
                .trim()
                .split_once('=')
                .unwrap_or_else(|| panic!("bad RDN {rdn:?} in {dn:?}"));
            let value =
                unescape_dn_value(v.trim()).unwrap_or_else(|| panic!("bad escape in {dn:?}"));
            (a.trim().to_ascii_lowercase(), value)
        })
        .collect()
}

fn same_dn(a: &str, b: &str) -> bool {
    let lower = |d: Vec<(String, String)>| {
        d.into_iter()
            .map(|(k, v)| (k, v.to_lowercase()))
            .collect::<Vec<_>>()
    };
    lower(parsed_dn(a)) == lower(parsed_dn(b))
}

fn step_names(outcome: &Value) -> Vec<String> {
    outcome["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_owned())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The test's own corner of the shared DC

/// An administrator's connection and an OU of the test's own.
struct TestOu {
    admin: Connection,
    ou: String,
    domain: String,
}

impl TestOu {
    async fn create(test: &str) -> TestOu {
        let ad = samba();
        let mut admin = Connection::bind_new(
            &target(ad.ldaps_url(), ad.ca_cert()),
            ad.admin(),
            ad.admin_password(),
        )
        .await
        .expect("the AD administrator binds");
        let ou = format!("OU=SyncAd-{test}-{},{}", std::process::id(), ad.base_dn());
        admin
            .add(
                &ou,
                vec![attr("objectClass", &["organizationalUnit"])],
                "add the test's OU",
            )
            .await
            .unwrap_or_else(|e| panic!("add {ou}: {e}"));
        TestOu {
            admin,
            ou,
            domain: ad.var("AD_REALM").to_lowercase(),
        }
    }

    fn upn(&self, sam: &str) -> String {
        format!("{sam}@{}", self.domain)
    }

    /// `OU=<name escaped>,<parent>`.
    async fn add_ou(&mut self, name: &str, parent: &str) -> String {
        let dn = format!("OU={},{parent}", dn_value(name));
        self.admin
            .add(
                &dn,
                vec![attr("objectClass", &["organizationalUnit"])],
                "add an OU",
            )
            .await
            .unwrap_or_else(|e| panic!("add {dn}: {e}"));
        dn
    }

    /// A (disabled, passwordless) user `CN=<name escaped>,<parent>` whose displayName is `name`.
    async fn add_user(&mut self, parent: &str, name: &str, sam: &str) -> String {
        let dn = format!("CN={},{parent}", dn_value(name));
        let upn = self.upn(sam);
        self.admin
            .add(
                &dn,
                vec![
                    attr(
                        "objectClass",
                        &["top", "person", "organizationalPerson", "user"],
                    ),
                    attr("sAMAccountName", &[sam]),
                    attr("userPrincipalName", &[&upn]),
                    attr("displayName", &[name]),
                    attr("givenName", &[name.split(' ').next().unwrap()]),
                    attr("userAccountControl", &["514"]),
                ],
                "add a user",
            )
            .await
            .unwrap_or_else(|e| panic!("add {dn}: {e}"));
        dn
    }

    async fn add_group(&mut self, parent: &str, name: &str, sam: &str, members: &[&str]) -> String {
        let dn = format!("CN={},{parent}", dn_value(name));
        let mut attrs = vec![
            attr("objectClass", &["top", "group"]),
            attr("sAMAccountName", &[sam]),
        ];
        if !members.is_empty() {
            attrs.push(attr("member", members));
        }
        self.admin
            .add(&dn, attrs, "add a group")
            .await
            .unwrap_or_else(|e| panic!("add {dn}: {e}"));
        dn
    }

    async fn modify(&mut self, dn: &str, mods: Vec<Mod<&str>>) {
        self.admin
            .modify(dn, mods, vec![], &[], "modify")
            .await
            .unwrap_or_else(|e| panic!("modify {dn}: {e}"));
    }

    async fn delete(&mut self, dn: &str) {
        self.admin
            .delete(dn, "delete")
            .await
            .unwrap_or_else(|e| panic!("delete {dn}: {e}"));
    }
}

/// AD's unicodePwd value: the password in double quotes, UTF-16LE.
fn unicode_pwd(password: &str) -> Vec<u8> {
    format!("\"{password}\"")
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect()
}

/// `add-directory --service-account create` against the shared DC. This file's tests run two at
/// a time: one at a time here, so two agents never race to create `provAgentSvc` (or the agents'
/// group) at the same moment; a retry covers agents of other test files doing so.
fn connect_to_ad(agent: &Agent, domain: &str) {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let ad = samba();
    let _guard = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut last = String::new();
    for attempt in 1..=3 {
        let out = add_directory(
            agent,
            &[
                "--domain",
                domain,
                "--ldap-url",
                ad.ldaps_url(),
                "--ca-cert",
                ad.ca_cert(),
                "--admin",
                ad.admin(),
                "--service-account",
                "create",
            ],
            ad.admin_password(),
        );
        if out.status.success() {
            return;
        }
        last = all_output(&out);
        eprintln!("add-directory attempt {attempt} failed: {last}");
        std::thread::sleep(Duration::from_secs(1));
    }
    panic!("add-directory failed: {last}");
}

/// A console and a running agent connected to the DC, with the domain's configuration created.
struct Synced {
    console: Console,
    api: Api,
    agent: Agent,
    id: String,
}

async fn start_synced(dir: &TestOu, machine: &str) -> Synced {
    let console = Console::start(FAST);
    let api = Api::new(&console, ADMIN);
    let mut agent = Agent::install(&console, &console.enrollment_token(1), machine);
    connect_to_ad(&agent, &dir.domain);
    agent.start("1s");
    let id = create_configuration(&api, &dir.domain, false).await;
    Synced {
        console,
        api,
        agent,
        id,
    }
}

fn scope_body(mode: &str, dns: &[&str]) -> Value {
    let entries: Vec<Value> = dns.iter().map(|dn| json!({ "dn": dn })).collect();
    json!({"scope": {"mode": mode, "entries": entries}})
}

/// Saves a scope that must be accepted. The DNs are checked through the agent, which may still be
/// starting: retried until accepted.
async fn set_scope(api: &Api, id: &str, mode: &str, dns: &[&str]) -> Value {
    let body = scope_body(mode, dns);
    let mut last = (0, Value::Null);
    for _ in 0..40 {
        last = patch(api, id, body.clone()).await;
        if last.0 == 200 {
            return last.1;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("the scope {body} was refused: {} {}", last.0, last.1);
}

fn error_message(body: &Value) -> String {
    body["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("no error message in {body}"))
        .to_owned()
}

// ---------------------------------------------------------------------------------------------
// The tests

#[tokio::test]
async fn ad_scoping_by_security_group_syncs_only_its_members() {
    let mut dir = TestOu::create("Groups").await;
    let ou = dir.ou.clone();
    let elsewhere = dir.add_ou("Elsewhere", &ou).await;
    let gail = dir.add_user(&ou, "Gail Green", "gail.adgs").await;
    let hugo = dir.add_user(&ou, "Hugo Hill", "hugo.adgs").await;
    let ivy = dir.add_user(&ou, "Ivy Ito", "ivy.adgs").await;
    // A member outside the group's OU: group scoping follows memberships, not places.
    let jade = dir.add_user(&elsewhere, "Jade Jones", "jade.adgs").await;
    let team = dir
        .add_group(&ou, "Scope Team", "scopeteam.adgs", &[&gail, &hugo, &jade])
        .await;
    dir.add_group(&ou, "Other Team", "otherteam.adgs", &[&ivy])
        .await;

    let s = start_synced(&dir, "dc-groups").await;
    let (api, id) = (&s.api, s.id.as_str());
    assert_eq!(configuration(api, id).await["dialect"], "active-directory");
    let saved = set_scope(api, id, "groups", &[&team]).await;
    let team_anchor = saved["scope"]["entries"][0]["anchor"]
        .as_str()
        .unwrap_or_else(|| panic!("the group's anchor was found: {saved}"))
        .to_owned();
    assert_eq!(team_anchor.len(), 36, "objectGUID as a GUID: {saved}");

    // A DN that does not exist, a user and an OU are refused, each with a message saying why;
    // the saved scope stays as it was.
    let missing = format!("CN=No Such Group,{ou}");
    let (status, body) = patch(api, id, scope_body("groups", &[&missing])).await;
    assert_eq!(status, 422, "{body}");
    let message = error_message(&body);
    assert!(
        message.contains("does not exist") && message.contains(&missing),
        "{body}"
    );
    let (status, body) = patch(api, id, scope_body("groups", &[&gail])).await;
    assert_eq!(status, 422, "a user is not a group: {body}");
    assert!(error_message(&body).contains("is not a group"), "{body}");
    let (status, body) = patch(api, id, scope_body("groups", &[&elsewhere])).await;
    assert_eq!(status, 422, "an OU is not a group: {body}");
    assert!(error_message(&body).contains("is not a group"), "{body}");
    let c = configuration(api, id).await;
    assert_eq!(c["scope"]["mode"], "groups", "{c}");
    assert_eq!(c["scope"]["entries"].as_array().unwrap().len(), 1, "{c}");
    assert_eq!(c["scope"]["entries"][0]["dn"], team.as_str(), "{c}");

    // The first cycle: the group's direct members (wherever they are) and the group itself.
    let cycle = cycle_after(api, id, "enable").await;
    assert_eq!(cycle["state"], "succeeded", "{cycle}");
    let users = objects(api, "users").await;
    assert_eq!(
        names(&users),
        set_of(&["Gail Green", "Hugo Hill", "Jade Jones"])
    );
    assert_eq!(users.len(), 3);
    let jade_user = find(&users, "display_name", "Jade Jones").unwrap();
    assert_eq!(jade_user["user_principal_name"], dir.upn("jade.adgs"));
    assert!(same_dn(jade_user["dn"].as_str().unwrap(), &jade));
    let groups = objects(api, "groups").await;
    assert_eq!(names(&groups), set_of(&["Scope Team"]), "not Other Team");
    assert_eq!(groups[0]["anchor"], team_anchor.as_str());
    let team_id = groups[0]["id"].as_str().unwrap().to_owned();
    let (_, detail) = api.get(&format!("/groups/{team_id}")).await;
    assert_eq!(
        names(detail["related"].as_array().unwrap()),
        set_of(&["Gail Green", "Hugo Hill", "Jade Jones"])
    );
    // Ivy was imported and left out, with the reason in her provisioning log.
    let ivy_logs = logs(api, &format!("q={}", query_value(&ivy))).await;
    let ivy_log = ivy_logs
        .iter()
        .find(|l| l["source"]["dn"].as_str().is_some_and(|d| same_dn(d, &ivy)))
        .unwrap_or_else(|| panic!("a log for Ivy: {ivy_logs:?}"));
    assert_eq!(ivy_log["action"], "skip", "{ivy_log}");
    let scope_step = &ivy_log["steps"][1];
    assert_eq!(scope_step["name"], "Determine if in scope", "{ivy_log}");
    assert!(
        scope_step["detail"]
            .as_str()
            .unwrap()
            .contains("not a direct member of any selected security group"),
        "{ivy_log}"
    );

    // Membership changes in AD move users in and out of the scope at the next Sync now.
    dir.modify(
        &team,
        vec![
            Mod::Add("member", HashSet::from([ivy.as_str()])),
            Mod::Delete("member", HashSet::from([hugo.as_str()])),
        ],
    )
    .await;
    let cycle = cycle_after(api, id, "sync-now").await;
    assert_eq!(cycle["state"], "succeeded", "{cycle}");
    assert_eq!(cycle["created"], 1, "Ivy joined: {cycle}");
    assert_eq!(cycle["deleted"], 1, "Hugo left: {cycle}");
    let users = objects(api, "users").await;
    assert_eq!(
        names(&users),
        set_of(&["Gail Green", "Ivy Ito", "Jade Jones"])
    );
    let (_, detail) = api.get(&format!("/groups/{team_id}")).await;
    assert_eq!(
        names(detail["related"].as_array().unwrap()),
        set_of(&["Gail Green", "Ivy Ito", "Jade Jones"])
    );
    let hugo_gone = logs(
        api,
        &format!("action=delete&cycle={}", cycle["id"].as_str().unwrap()),
    )
    .await;
    assert_eq!(hugo_gone.len(), 1, "{hugo_gone:?}");
    assert_eq!(hugo_gone[0]["target"]["display_name"], "Hugo Hill");
    assert!(
        hugo_gone[0]["steps"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("left the configuration's scope"),
        "{}",
        hugo_gone[0]
    );
}

#[tokio::test]
async fn ad_modify_rename_and_move_update_the_same_objects() {
    let mut dir = TestOu::create("Moves").await;
    let ou = dir.ou.clone();
    let moved = dir.add_ou("Moved Here", &ou).await;
    let kim = dir.add_user(&ou, "Kim Kane", "kim.admv").await;
    let leo = dir.add_user(&ou, "Leo Lam", "leo.admv").await;
    let mia = dir.add_user(&ou, "Mia Moss", "mia.admv").await;

    let s = start_synced(&dir, "dc-moves").await;
    let (api, id) = (&s.api, s.id.as_str());
    set_scope(api, id, "ous", &[&ou]).await;
    let cycle = cycle_after(api, id, "enable").await;
    assert_eq!(cycle["state"], "succeeded", "{cycle}");
    let before = objects(api, "users").await;
    assert_eq!(names(&before), set_of(&["Kim Kane", "Leo Lam", "Mia Moss"]));
    let id_of = |items: &[Value], name: &str| {
        let o = find(items, "display_name", name).unwrap_or_else(|| panic!("{name} synced"));
        (o["id"].clone(), o["anchor"].clone())
    };

    // Modify Kim; rename Leo (modrdn of the CN only); move Mia to another OU inside the scope.
    dir.modify(
        &kim,
        vec![Mod::Replace("title", HashSet::from(["Engineer"]))],
    )
    .await;
    dir.admin
        .rename(&leo, "CN=Leo Lambert", None, "rename")
        .await
        .unwrap();
    let leo_new = format!("CN=Leo Lambert,{ou}");
    dir.admin
        .rename(&mia, "CN=Mia Moss", Some(&moved), "move")
        .await
        .unwrap();
    let mia_new = format!("CN=Mia Moss,{moved}");

    let cycle = cycle_after(api, id, "sync-now").await;
    assert_eq!(cycle["state"], "succeeded", "{cycle}");
    assert_eq!(cycle["created"], 0, "no new objects: {cycle}");
    assert_eq!(cycle["deleted"], 0, "nothing deleted: {cycle}");
    assert_eq!(cycle["updated"], 3, "Kim, Leo and Mia: {cycle}");
    let cycle_id = cycle["id"].as_str().unwrap();
    for action in ["create", "delete", "stagedDelete"] {
        let l = logs(api, &format!("action={action}&cycle={cycle_id}")).await;
        assert!(l.is_empty(), "no {action} in this cycle: {l:?}");
    }
    let after = objects(api, "users").await;
    assert_eq!(after.len(), 3, "{after:?}");
    for name in ["Kim Kane", "Leo Lam", "Mia Moss"] {
        assert_eq!(
            id_of(&after, name),
            id_of(&before, name),
            "{name} is the same console object (same id and anchor)"
        );
    }
    let kim_user = find(&after, "display_name", "Kim Kane").unwrap();
    assert_eq!(kim_user["attributes"]["jobTitle"], "Engineer");
    let kim_logs = logs(
        api,
        &format!(
            "q={}&action=update&cycle={cycle_id}",
            kim_user["anchor"].as_str().unwrap()
        ),
    )
    .await;
    assert_eq!(kim_logs.len(), 1, "{kim_logs:?}");
    assert!(kim_logs[0]["modified_properties"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["name"] == "jobTitle" && m["old"].is_null() && m["new"] == "Engineer"));
    // A rename or a move alone is an update of the same object: its DN
    // (onPremisesDistinguishedName) changes, nothing else (AD keeps the displayName).
    let leo_user = find(&after, "display_name", "Leo Lam").unwrap();
    assert!(
        same_dn(leo_user["dn"].as_str().unwrap(), &leo_new),
        "renamed: {leo_user}"
    );
    let mia_user = find(&after, "display_name", "Mia Moss").unwrap();
    assert!(
        same_dn(mia_user["dn"].as_str().unwrap(), &mia_new),
        "moved: {mia_user}"
    );
    for (user, old_dn, new_dn) in [(leo_user, &leo, &leo_new), (mia_user, &mia, &mia_new)] {
        let old = find(&before, "id", user["id"].as_str().unwrap()).unwrap();
        assert_ne!(user["updated_at"], old["updated_at"], "{user}");
        assert_eq!(user["created_at"], old["created_at"], "{user}");
        let l = logs(
            api,
            &format!("q={}&cycle={cycle_id}", user["anchor"].as_str().unwrap()),
        )
        .await;
        assert_eq!(l.len(), 1, "{l:?}");
        assert_eq!(l[0]["action"], "update", "{l:?}");
        assert_eq!(l[0]["target"]["id"], user["id"], "{l:?}");
        let changed = l[0]["modified_properties"].as_array().unwrap();
        assert_eq!(changed.len(), 1, "only the DN changed: {l:?}");
        assert_eq!(changed[0]["name"], "onPremisesDistinguishedName", "{l:?}");
        assert!(
            same_dn(changed[0]["old"].as_str().unwrap(), old_dn),
            "{l:?}"
        );
        assert!(
            same_dn(changed[0]["new"].as_str().unwrap(), new_dn),
            "{l:?}"
        );
    }
    // The same, as the API shows one user.
    let (_, detail) = api
        .get(&format!("/users/{}", mia_user["id"].as_str().unwrap()))
        .await;
    assert!(
        same_dn(detail["dn"].as_str().unwrap(), &mia_new),
        "{detail}"
    );

    // Rename and move at once, with a display name change: one update of the same object.
    let leo_last = format!("CN=Leo Lambert-Lee,{moved}");
    dir.admin
        .rename(
            &leo_new,
            "CN=Leo Lambert-Lee",
            Some(&moved),
            "rename and move",
        )
        .await
        .unwrap();
    dir.modify(
        &leo_last,
        vec![Mod::Replace(
            "displayName",
            HashSet::from(["Leo Lambert-Lee"]),
        )],
    )
    .await;
    let cycle = cycle_after(api, id, "sync-now").await;
    assert_eq!(
        (
            cycle["created"].as_i64(),
            cycle["updated"].as_i64(),
            cycle["deleted"].as_i64()
        ),
        (Some(0), Some(1), Some(0)),
        "{cycle}"
    );
    let after = objects(api, "users").await;
    assert_eq!(
        names(&after),
        set_of(&["Kim Kane", "Leo Lambert-Lee", "Mia Moss"])
    );
    assert_eq!(id_of(&after, "Leo Lambert-Lee"), id_of(&before, "Leo Lam"));
    let leo_user = find(&after, "display_name", "Leo Lambert-Lee").unwrap();
    assert!(same_dn(leo_user["dn"].as_str().unwrap(), &leo_last));
    let leo_logs = logs(
        api,
        &format!("q={}&action=update", leo_user["anchor"].as_str().unwrap()),
    )
    .await;
    let changed = leo_logs[0]["modified_properties"].as_array().unwrap();
    assert!(
        changed.iter().any(|m| m["name"] == "displayName"
            && m["old"] == "Leo Lam"
            && m["new"] == "Leo Lambert-Lee"),
        "{leo_logs:?}"
    );
    assert!(
        changed
            .iter()
            .any(|m| m["name"] == "onPremisesDistinguishedName"
                && m["new"].as_str().is_some_and(|d| same_dn(d, &leo_last))),
        "{leo_logs:?}"
    );
}

#[tokio::test]
async fn ad_hostile_names_sync_with_their_display_names() {
    let mut dir = TestOu::create("Hostile").await;
    let ou = dir.ou.clone();
    // The scope itself is an OU whose name needs escaping.
    let ou_name = "Sales, \"EMEA\" + Ops";
    let hostile_ou = dir.add_ou(ou_name, &ou).await;
    let zoe_name = "Zoë \"Q\" O'Neil+Test, Jr.";
    let zoe = dir.add_user(&hostile_ou, zoe_name, "zoe.adhn").await;
    assert!(
        zoe.starts_with("CN=Zoë \\\"Q\\\" O'Neil\\+Test\\, Jr.,OU=Sales\\, \\\"EMEA\\\" \\+ Ops,"),
        "escaped per RFC 4514: {zoe}"
    );
    let yuki_name = "Yamada; <Ærø> = 山田 #1";
    let yuki = dir.add_user(&hostile_ou, yuki_name, "yuki.adhn").await;
    let group_name = "Team \"A+B\", Ünïcødé";
    let group = dir
        .add_group(&hostile_ou, group_name, "team.adhn", &[&zoe, &yuki])
        .await;
    // Next to the scoped OU, not in it.
    dir.add_user(&ou, "Plain Outsider", "plain.adhn").await;

    let s = start_synced(&dir, "dc-hostile").await;
    let (api, id) = (&s.api, s.id.as_str());
    let saved = set_scope(api, id, "ous", &[&hostile_ou]).await;
    assert_eq!(saved["scope"]["entries"][0]["dn"], hostile_ou.as_str());
    let cycle = cycle_after(api, id, "enable").await;
    assert_eq!(cycle["state"], "succeeded", "{cycle}");
    let users = objects(api, "users").await;
    assert_eq!(names(&users), set_of(&[zoe_name, yuki_name]), "{users:?}");
    for (name, dn, sam) in [
        (zoe_name, &zoe, "zoe.adhn"),
        (yuki_name, &yuki, "yuki.adhn"),
    ] {
        let user = find(&users, "display_name", name).unwrap();
        assert_eq!(user["user_principal_name"], dir.upn(sam));
        assert_eq!(user["attributes"]["displayName"], name);
        // The DN as the server writes it names the same entry: every RDN value unescapes to
        // what was created.
        let synced = parsed_dn(user["dn"].as_str().unwrap());
        assert_eq!(synced, parsed_dn(dn), "{user}");
        assert_eq!(synced[0], ("cn".to_owned(), name.to_owned()));
        assert_eq!(synced[1], ("ou".to_owned(), ou_name.to_owned()));
    }
    assert_eq!(
        find(&users, "display_name", zoe_name).unwrap()["attributes"]["givenName"],
        "Zoë"
    );
    // The group's members resolve through their escaped DNs.
    let groups = objects(api, "groups").await;
    assert_eq!(names(&groups), set_of(&[group_name]));
    let (_, detail) = api
        .get(&format!("/groups/{}", groups[0]["id"].as_str().unwrap()))
        .await;
    assert_eq!(
        names(detail["related"].as_array().unwrap()),
        set_of(&[zoe_name, yuki_name]),
        "{detail}"
    );
    assert!(same_dn(groups[0]["dn"].as_str().unwrap(), &group));

    // A change to an entry with a hostile DN travels as an update of the same object.
    let zoe_id = find(&users, "display_name", zoe_name).unwrap()["id"].clone();
    dir.modify(
        &zoe,
        vec![Mod::Replace(
            "title",
            HashSet::from(["Chief, \"R&D\" + QA"]),
        )],
    )
    .await;
    let cycle = cycle_after(api, id, "sync-now").await;
    assert_eq!(
        (
            cycle["created"].as_i64(),
            cycle["updated"].as_i64(),
            cycle["deleted"].as_i64()
        ),
        (Some(0), Some(1), Some(0)),
        "{cycle}"
    );
    let users = objects(api, "users").await;
    let zoe_user = find(&users, "display_name", zoe_name).unwrap();
    assert_eq!(zoe_user["id"], zoe_id);
    assert_eq!(zoe_user["attributes"]["jobTitle"], "Chief, \"R&D\" + QA");

    // The Users page shows the display names as they are.
    let browser = Browser::new(&s.console);
    assert_eq!(browser.sign_in(ADMIN, PASSWORD).await, 303);
    let (status, html) = browser.get("/users").await;
    assert_eq!(status, 200);
    let shown = texts(&html, "#objects tbody td:first-child");
    assert_eq!(shown.len(), 2, "{shown:?}");
    assert_eq!(
        shown.into_iter().collect::<HashSet<_>>(),
        set_of(&[zoe_name, yuki_name])
    );
}

#[tokio::test]
async fn ad_preview_shows_the_next_cycle_without_applying_it() {
    let mut dir = TestOu::create("Preview").await;
    let ou = dir.ou.clone();
    let nia = dir.add_user(&ou, "Nia Nash", "nia.adpv").await;
    let oto = dir.add_user(&ou, "Oto Ortiz", "oto.adpv").await;

    let s = start_synced(&dir, "dc-preview").await;
    let (api, id) = (&s.api, s.id.as_str());
    set_scope(api, id, "ous", &[&ou]).await;

    // Preview works while disabled: the first cycle would create the OU's two users.
    let (status, preview) = api
        .send(Method::POST, &format!("/configurations/{id}/preview"), None)
        .await;
    assert_eq!(status, 200, "{preview}");
    assert_eq!(
        (
            preview["would_create"].as_i64(),
            preview["would_update"].as_i64(),
            preview["would_delete"].as_i64()
        ),
        (Some(2), Some(0), Some(0)),
        "{preview}"
    );
    let creates: Vec<&Value> = preview["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["action"] == "create")
        .collect();
    assert_eq!(creates.len(), 2, "{preview}");
    for dn in [&nia, &oto] {
        assert!(
            creates
                .iter()
                .any(|i| same_dn(i["dn"].as_str().unwrap(), dn)),
            "{dn} in {preview}"
        );
    }
    assert!(objects(api, "users").await.is_empty(), "nothing created");
    let c = configuration(api, id).await;
    assert_eq!(c["enabled"], false);
    assert_eq!(c["status"]["code"], "NotRun", "{c}");

    let cycle = cycle_after(api, id, "enable").await;
    assert_eq!(cycle["state"], "succeeded", "{cycle}");
    assert_eq!(cycle["created"], 2, "{cycle}");
    let before = objects(api, "users").await;
    assert_eq!(names(&before), set_of(&["Nia Nash", "Oto Ortiz"]));
    let logs_before = log_total(api).await;

    // One create, one update and one delete pending in AD.
    let pam = dir.add_user(&ou, "Pam Park", "pam.adpv").await;
    dir.modify(
        &nia,
        vec![Mod::Replace("title", HashSet::from(["Analyst"]))],
    )
    .await;
    dir.delete(&oto).await;
    let (status, preview) = api
        .send(Method::POST, &format!("/configurations/{id}/preview"), None)
        .await;
    assert_eq!(status, 200, "{preview}");
    assert_eq!(
        (
            preview["would_create"].as_i64(),
            preview["would_update"].as_i64(),
            preview["would_delete"].as_i64()
        ),
        (Some(1), Some(1), Some(1)),
        "{preview}"
    );
    assert_eq!(preview["would_exceed_threshold"], false);
    let items = preview["items"].as_array().unwrap();
    let item = |action: &str, dn: &str| {
        items
            .iter()
            .find(|i| i["action"] == action && same_dn(i["dn"].as_str().unwrap(), dn))
            .unwrap_or_else(|| panic!("{action} of {dn} in {preview}"))
    };
    item("create", &pam);
    let update = item("update", &nia);
    assert!(update["changes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["name"] == "jobTitle" && c["old"].is_null() && c["new"] == "Analyst"));
    let delete = item("delete", &oto);
    assert_eq!(delete["target_name"], "Oto Ortiz");
    // The preview is kept with the configuration.
    let c = configuration(api, id).await;
    assert_eq!(c["preview"]["would_create"], 1, "{c}");
    assert_eq!(c["preview"]["cycle"]["id"], preview["cycle"]["id"], "{c}");

    // Nothing was applied: the same objects, unchanged, and no new provisioning log.
    let after = objects(api, "users").await;
    for name in ["Nia Nash", "Oto Ortiz"] {
        assert_eq!(
            find(&after, "display_name", name),
            find(&before, "display_name", name),
            "{name} unchanged"
        );
    }
    assert_eq!(after.len(), 2);
    assert_eq!(log_total(api).await, logs_before, "a preview logs nothing");

    // Sync now does what the preview said.
    let cycle = cycle_after(api, id, "sync-now").await;
    assert_eq!(
        (
            cycle["created"].as_i64(),
            cycle["updated"].as_i64(),
            cycle["deleted"].as_i64()
        ),
        (Some(1), Some(1), Some(1)),
        "{cycle}"
    );
    let users = objects(api, "users").await;
    assert_eq!(names(&users), set_of(&["Nia Nash", "Pam Park"]));
    assert_eq!(
        find(&users, "display_name", "Nia Nash").unwrap()["attributes"]["jobTitle"],
        "Analyst"
    );
}

#[tokio::test]
async fn ad_provision_on_demand_of_a_user() {
    let mut dir = TestOu::create("OnDemand").await;
    let ou = dir.ou.clone();
    let scoped = dir.add_ou("Scoped", &ou).await;
    let outside = dir.add_ou("Outside", &ou).await;
    dir.add_user(&scoped, "Quinn Quade", "quinn.adod").await;

    let s = start_synced(&dir, "dc-ondemand").await;
    let (api, id) = (&s.api, s.id.as_str());
    set_scope(api, id, "ous", &[&scoped]).await;
    let cycle = cycle_after(api, id, "enable").await;
    assert_eq!(cycle["state"], "succeeded", "{cycle}");
    assert_eq!(
        names(&objects(api, "users").await),
        set_of(&["Quinn Quade"])
    );

    // A user created after the cycle, provisioned at once by DN.
    let rosa = dir.add_user(&scoped, "Rosa Reyes", "rosa.adod").await;
    let (status, pod) = api
        .send(
            Method::POST,
            &format!("/configurations/{id}/provision-on-demand"),
            Some(json!({ "dn": rosa })),
        )
        .await;
    assert_eq!(status, 200, "{pod}");
    assert_eq!(pod["agent"], "dc-ondemand", "{pod}");
    let outcome = &pod["outcome"];
    assert_eq!(outcome["action"], "create", "{pod}");
    assert_eq!(outcome["status"], "success", "{pod}");
    assert_eq!(
        step_names(outcome),
        ["Import", "Determine if in scope", "Match", "Perform action"]
    );
    assert!(outcome["steps"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["status"] == "success"));
    assert!(
        outcome["steps"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("through agent dc-ondemand"),
        "{pod}"
    );
    assert_eq!(outcome["target_name"], "Rosa Reyes");
    let users = objects(api, "users").await;
    assert_eq!(names(&users), set_of(&["Quinn Quade", "Rosa Reyes"]));
    let rosa_user = find(&users, "display_name", "Rosa Reyes").unwrap().clone();
    assert_eq!(rosa_user["user_principal_name"], dir.upn("rosa.adod"));
    assert_eq!(rosa_user["id"], outcome["target_id"]);
    assert_eq!(rosa_user["anchor"], outcome["anchor"]);
    let rosa_logs = logs(api, &format!("q={}", rosa_user["anchor"].as_str().unwrap())).await;
    assert_eq!(rosa_logs.len(), 1, "{rosa_logs:?}");
    assert_eq!(rosa_logs[0]["action"], "create");
    assert!(
        rosa_logs[0]["initiated_by"]
            .as_str()
            .unwrap()
            .starts_with("Provision on demand by"),
        "{}",
        rosa_logs[0]
    );

    // A user outside the scope is read and explained, not provisioned.
    let sam = dir.add_user(&outside, "Sam Stone", "sam.adod").await;
    let (status, pod) = api
        .send(
            Method::POST,
            &format!("/configurations/{id}/provision-on-demand"),
            Some(json!({ "dn": sam })),
        )
        .await;
    assert_eq!(status, 200, "{pod}");
    assert_eq!(pod["outcome"]["action"], "skip", "{pod}");
    assert_eq!(pod["outcome"]["steps"][1]["status"], "skipped", "{pod}");
    assert!(
        pod["outcome"]["steps"][1]["detail"]
            .as_str()
            .unwrap()
            .contains("not in any selected organizational unit"),
        "{pod}"
    );
    assert!(find(&objects(api, "users").await, "display_name", "Sam Stone").is_none());

    // A DN that names nothing, and one that names an OU, are explained.
    let (status, body) = api
        .send(
            Method::POST,
            &format!("/configurations/{id}/provision-on-demand"),
            Some(json!({ "dn": format!("CN=Nobody Here,{scoped}") })),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    assert!(error_message(&body).contains("No object"), "{body}");
    let (status, body) = api
        .send(
            Method::POST,
            &format!("/configurations/{id}/provision-on-demand"),
            Some(json!({ "dn": scoped })),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    assert!(
        error_message(&body).contains("not a user or group"),
        "{body}"
    );

    // The next cycle finds Rosa already there: the same object, nothing created.
    let cycle = cycle_after(api, id, "sync-now").await;
    assert_eq!(cycle["state"], "succeeded", "{cycle}");
    assert_eq!(cycle["created"], 0, "{cycle}");
    assert_eq!(cycle["deleted"], 0, "{cycle}");
    let users = objects(api, "users").await;
    assert_eq!(names(&users), set_of(&["Quinn Quade", "Rosa Reyes"]));
    assert_eq!(
        find(&users, "display_name", "Rosa Reyes").unwrap()["id"],
        rosa_user["id"]
    );

    // Deleting her in AD is seen by the next cycle, although only on demand put her there.
    dir.delete(&rosa).await;
    let cycle = cycle_after(api, id, "sync-now").await;
    assert_eq!(cycle["deleted"], 1, "{cycle}");
    assert_eq!(
        names(&objects(api, "users").await),
        set_of(&["Quinn Quade"])
    );
}

#[tokio::test]
async fn ad_accidental_deletion_threshold_stages_then_allows() {
    let mut dir = TestOu::create("Threshold").await;
    let ou = dir.ou.clone();
    let tess = dir.add_user(&ou, "Tess Tate", "tess.adth").await;
    let uma = dir.add_user(&ou, "Uma Udall", "uma.adth").await;
    dir.add_user(&ou, "Vic Vance", "vic.adth").await;
    dir.add_user(&ou, "Wes Wong", "wes.adth").await;

    let s = start_synced(&dir, "dc-threshold").await;
    let (api, id) = (&s.api, s.id.as_str());
    set_scope(api, id, "ous", &[&ou]).await;
    let cycle = cycle_after(api, id, "enable").await;
    assert_eq!(cycle["state"], "succeeded", "{cycle}");
    assert_eq!(objects(api, "users").await.len(), 4);
    let (status, body) = patch(api, id, json!({"delete_threshold": 2})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["delete_threshold"], 2);
    assert_eq!(body["prevent_accidental_deletes"], true);

    // Two deletions against a threshold of 2: staged, nothing deleted.
    dir.delete(&tess).await;
    dir.delete(&uma).await;
    let cycle = cycle_after(api, id, "sync-now").await;
    assert_eq!(cycle["state"], "threshold", "{cycle}");
    assert_eq!(cycle["deleted"], 0, "{cycle}");
    assert_eq!(cycle["staged"], 2, "{cycle}");
    let c = configuration(api, id).await;
    assert_eq!(c["status"]["text"], "Delete threshold exceeded", "{c}");
    assert_eq!(c["staged_deletes"], 2, "{c}");
    let staged = c["staged"].as_array().unwrap();
    assert_eq!(staged.len(), 2, "{c}");
    assert_eq!(names(staged), set_of(&["Tess Tate", "Uma Udall"]));
    for dn in [&tess, &uma] {
        let entry = staged
            .iter()
            .find(|e| same_dn(e["dn"].as_str().unwrap(), dn))
            .unwrap_or_else(|| panic!("{dn} staged: {c}"));
        assert!(
            entry["reason"]
                .as_str()
                .unwrap()
                .contains("deleted from the on-premises directory"),
            "{entry}"
        );
    }
    assert_eq!(
        names(&objects(api, "users").await),
        set_of(&["Tess Tate", "Uma Udall", "Vic Vance", "Wes Wong"]),
        "nothing deleted yet"
    );
    let staged_logs = logs(api, "action=stagedDelete").await;
    assert_eq!(staged_logs.len(), 2, "{staged_logs:?}");

    // Allow deletes: they go, and the configuration is healthy again.
    let allowed = operate(api, id, "allow-deletes").await;
    assert_eq!(allowed["deleted"], 2, "{allowed}");
    assert_eq!(
        names(&objects(api, "users").await),
        set_of(&["Vic Vance", "Wes Wong"])
    );
    let c = configuration(api, id).await;
    assert_eq!(c["status"]["text"], "Healthy", "{c}");
    assert!(c["staged"].as_array().unwrap().is_empty(), "{c}");
    let deletes = logs(api, "action=delete").await;
    assert_eq!(
        names(
            &deletes
                .iter()
                .map(|l| json!({"display_name": l["target"]["display_name"]}))
                .collect::<Vec<_>>()
        ),
        set_of(&["Tess Tate", "Uma Udall"])
    );
    // A later cycle has nothing left to delete.
    let cycle = cycle_after(api, id, "sync-now").await;
    assert_eq!(cycle["state"], "succeeded", "{cycle}");
    assert_eq!(cycle["deleted"], 0, "{cycle}");
    assert_eq!(objects(api, "users").await.len(), 2);
}

#[tokio::test]
async fn ad_quarantine_when_the_service_account_cannot_bind() {
    let ad = samba();
    let mut dir = TestOu::create("Quarantine").await;
    let ou = dir.ou.clone();
    dir.add_user(&ou, "Xena Xu", "xena.adqr").await;

    let s = start_synced(&dir, "dc-quarantine").await;
    let (api, id) = (&s.api, s.id.as_str());
    set_scope(api, id, "ous", &[&ou]).await;
    let cycle = cycle_after(api, id, "enable").await;
    assert_eq!(cycle["state"], "succeeded", "{cycle}");
    let xena_id = objects(api, "users").await[0]["id"].clone();

    // An administrator resets the agent's service account password in AD: the agent's binds fail.
    let account = directory_config(&s.agent, &dir.domain)["service_account"]["bind_dn"]
        .as_str()
        .unwrap()
        .to_owned();
    let good = directory_secret(&s.agent, &dir.domain);
    let set_password = |password: &str| {
        vec![Mod::Replace(
            b"unicodePwd".to_vec(),
            HashSet::from([unicode_pwd(password)]),
        )]
    };
    dir.admin
        .modify(
            &account,
            set_password("Chang3d-Elsewhere!"),
            vec![],
            &[],
            "reset the service account's password",
        )
        .await
        .unwrap();
    assert!(!binds(ad.ldaps_url(), ad.ca_cert(), &account, &good).await);
    for n in 1..=3 {
        let failed = cycle_after(api, id, "sync-now").await;
        assert_eq!(failed["state"], "failed", "cycle {n}: {failed}");
        assert!(
            failed["error"]
                .as_str()
                .unwrap()
                .contains("rejected the credentials"),
            "{failed}"
        );
    }
    let c = configuration(api, id).await;
    assert_eq!(c["status"]["code"], "Quarantine", "{c}");
    let reason = c["quarantine"]["reason"].as_str().unwrap();
    assert!(
        reason.to_lowercase().contains("credentials") && reason.contains(&account),
        "{c}"
    );
    assert!(c["status"]["text"]
        .as_str()
        .unwrap()
        .starts_with("Quarantine: "));
    assert!(c["quarantine"]["next_attempt"].is_string(), "{c}");
    // Synced objects stay while quarantined.
    assert_eq!(objects(api, "users").await[0]["id"], xena_id);

    // Fixed in AD: the password the agent holds is set again, and the account (locked out by the
    // failed binds: the testbed locks after three) unlocked. Then Clear quarantine.
    dir.admin
        .modify(&account, set_password(&good), vec![], &[], "restore")
        .await
        .unwrap();
    dir.admin
        .modify(
            &account,
            vec![Mod::Replace(
                b"lockoutTime".to_vec(),
                HashSet::from([b"0".to_vec()]),
            )],
            vec![],
            &[],
            "unlock",
        )
        .await
        .unwrap();
    assert!(binds(ad.ldaps_url(), ad.ca_cert(), &account, &good).await);
    let cycle = cycle_after(api, id, "clear-quarantine").await;
    assert_eq!(cycle["state"], "succeeded", "{cycle}");
    assert_eq!(cycle["kind"], "full", "{cycle}");
    assert_eq!(cycle["created"], 0, "{cycle}");
    assert_eq!(cycle["deleted"], 0, "{cycle}");
    let c = configuration(api, id).await;
    assert_eq!(c["status"]["code"], "Active", "{c}");
    assert!(c["quarantine"].is_null(), "{c}");
    let users = objects(api, "users").await;
    assert_eq!(names(&users), set_of(&["Xena Xu"]));
    assert_eq!(users[0]["id"], xena_id);
}

#[tokio::test]
async fn ad_failover_when_the_active_agent_is_killed() {
    let mut dir = TestOu::create("Failover").await;
    let ou = dir.ou.clone();
    for (name, sam) in [
        ("Yara Young", "yara.adfo"),
        ("Zack Zane", "zack.adfo"),
        ("Abel Ames", "abel.adfo"),
    ] {
        dir.add_user(&ou, name, sam).await;
    }
    let console = Console::start(FAST);
    let api = Api::new(&console, ADMIN);
    let token = console.enrollment_token(2);
    let mut first = Agent::install(&console, &token, "dc-a");
    let mut second = Agent::install(&console, &token, "dc-b");
    for agent in [&first, &second] {
        connect_to_ad(agent, &dir.domain);
    }
    // Each agent binds with an account of its own.
    assert_ne!(
        directory_config(&first, &dir.domain)["service_account"]["bind_dn"],
        directory_config(&second, &dir.domain)["service_account"]["bind_dn"]
    );
    first.start("1s");
    let id = create_configuration(&api, &dir.domain, false).await;
    wait_for("dc-a to lead", WAIT, || async {
        (configuration(&api, &id).await["leader"]["machine_name"] == "dc-a").then_some(())
    })
    .await;
    set_scope(&api, &id, "ous", &[&ou]).await;
    second.start("1s");
    let cycle = cycle_after(&api, &id, "enable").await;
    assert_eq!(cycle["state"], "succeeded", "{cycle}");
    assert_eq!(cycle["agent_id"], first.agent_id().as_str());
    assert_eq!(cycle["created"], 3, "{cycle}");
    // The standby stays standby while the leader runs.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        configuration(&api, &id).await["leader"]["machine_name"],
        "dc-a"
    );

    first.kill();
    let killed_at = Instant::now();
    wait_for("dc-b to take over", WAIT, || async {
        (configuration(&api, &id).await["leader"]["machine_name"] == "dc-b").then_some(())
    })
    .await;
    // Three heartbeat intervals (1 s), plus the time to observe it.
    assert!(
        killed_at.elapsed() < Duration::from_secs(6),
        "took {:?}",
        killed_at.elapsed()
    );
    let c = configuration(&api, &id).await;
    assert_eq!(c["leader"]["lease_current"], true, "{c}");
    let cycle = cycle_after(&api, &id, "sync-now").await;
    assert_eq!(cycle["agent_id"], second.agent_id().as_str());
    assert_eq!(cycle["state"], "succeeded", "{cycle}");
    // dc-b has no state of its own yet: a full cycle, which changes nothing.
    assert_eq!(cycle["kind"], "full", "{cycle}");
    assert_eq!(cycle["created"], 0, "{cycle}");
    assert_eq!(cycle["deleted"], 0, "{cycle}");
    let users = objects(&api, "users").await;
    assert_eq!(
        names(&users),
        set_of(&["Yara Young", "Zack Zane", "Abel Ames"])
    );

    // dc-b carries on: a change in AD reaches the console through it.
    let yara = format!("CN=Yara Young,{ou}");
    dir.modify(&yara, vec![Mod::Replace("title", HashSet::from(["Lead"]))])
        .await;
    let cycle = cycle_after(&api, &id, "sync-now").await;
    assert_eq!(cycle["agent_id"], second.agent_id().as_str());
    assert_eq!(cycle["updated"], 1, "{cycle}");
    assert_eq!(
        find(&objects(&api, "users").await, "display_name", "Yara Young").unwrap()["attributes"]
            ["jobTitle"],
        "Lead"
    );
}
