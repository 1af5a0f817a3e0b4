//! Synchronization (issue 3) end to end: real console and agent processes, a real OpenLDAP and the
//! real Samba AD DC, driven through the JSON API: configurations, full and delta cycles, scoping,
//! renames and moves, deletions against the threshold, preview, provision on demand, password hash
//! sync with and without the FIPS policy, quarantine, and failover between agents.

use crate::directory_support::*;
use crate::support::*;
use hybridsync::directory::conn::Connection;
use hybridsync::directory::escape::dn_value;
use ldap3::Mod;
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(40);

/// Creates the domain's configuration once a running agent has reported the domain.
pub(crate) async fn create_configuration(api: &Api, domain: &str, phs: bool) -> String {
    wait_for("the agent to report its domain", WAIT, || async {
        let (status, body) = api
            .send(
                Method::POST,
                "/configurations",
                Some(json!({"domain": domain, "password_hash_sync": phs})),
            )
            .await;
        (status == 201).then(|| body["id"].as_str().unwrap().to_string())
    })
    .await
}

pub(crate) async fn configuration(api: &Api, id: &str) -> Value {
    let (status, body) = api.get(&format!("/configurations/{id}")).await;
    assert_eq!(status, 200, "{body}");
    body
}

pub(crate) async fn operate(api: &Api, id: &str, op: &str) -> Value {
    let (status, body) = api
        .send(Method::POST, &format!("/configurations/{id}/{op}"), None)
        .await;
    assert_eq!(status, 200, "{op}: {body}");
    body
}

pub(crate) async fn patch(api: &Api, id: &str, body: Value) -> (u16, Value) {
    api.send(Method::PATCH, &format!("/configurations/{id}"), Some(body))
        .await
}

/// Runs `op` (enable, sync-now, restart, clear-quarantine) and waits for the cycle it starts to
/// end; returns that cycle.
pub(crate) async fn cycle_after(api: &Api, id: &str, op: &str) -> Value {
    let before = configuration(api, id).await["last_cycle"]["id"].clone();
    operate(api, id, op).await;
    wait_for(&format!("a cycle after {op}"), WAIT, || async {
        let c = configuration(api, id).await;
        let last = c["last_cycle"].clone();
        (last["id"] != before && last["state"] != "running" && !last.is_null()).then_some(last)
    })
    .await
}

pub(crate) async fn objects(api: &Api, kind: &str) -> Vec<Value> {
    let (status, body) = api.get(&format!("/{kind}?limit=500")).await;
    assert_eq!(status, 200, "{body}");
    body["items"].as_array().unwrap().clone()
}

pub(crate) fn find<'a>(items: &'a [Value], field: &str, value: &str) -> Option<&'a Value> {
    items.iter().find(|i| {
        i[field].as_str() == Some(value) || i["attributes"][field].as_str() == Some(value)
    })
}

pub(crate) fn names(items: &[Value]) -> HashSet<String> {
    items
        .iter()
        .filter_map(|i| i["display_name"].as_str().map(str::to_owned))
        .collect()
}

pub(crate) async fn logs(api: &Api, query: &str) -> Vec<Value> {
    let (status, body) = api
        .get(&format!("/provisioning-logs?limit=500&{query}"))
        .await;
    assert_eq!(status, 200, "{body}");
    body["items"].as_array().unwrap().clone()
}

pub(crate) fn attr(name: &str, values: &[&str]) -> (Vec<u8>, HashSet<Vec<u8>>) {
    (
        name.as_bytes().to_vec(),
        values.iter().map(|v| v.as_bytes().to_vec()).collect(),
    )
}

pub(crate) async fn add_person(
    conn: &mut Connection,
    dn: &str,
    uid: &str,
    cn: &str,
    extra: &[(&str, &str)],
) {
    let mut attrs = vec![
        attr("objectClass", &["inetOrgPerson"]),
        attr("uid", &[uid]),
        attr("cn", &[cn]),
        attr("sn", &["Test"]),
        attr("displayName", &[cn]),
    ];
    for (k, v) in extra {
        attrs.push(attr(k, &[v]));
    }
    conn.add(dn, attrs, "add a user").await.unwrap();
}

#[tokio::test]
async fn openldap_sync_end_to_end() {
    let slapd = Slapd::start(true);
    let base = slapd.base_dn().to_string();
    let console = Console::start(FAST);
    let api = Api::new(&console, ADMIN);
    let mut admin = Connection::bind_new(
        &target(slapd.ldaps_url(), slapd.ca_cert()),
        slapd.admin_dn(),
        slapd.admin_password(),
    )
    .await
    .unwrap();
    // A user whose hash is MD5: not synced while the FIPS policy is enforced.
    let md5_dn = format!("uid=md5user,ou=people,{base}");
    add_person(
        &mut admin,
        &md5_dn,
        "md5user",
        "Md5 User",
        &[("userPassword", "{MD5}X03MO1qnZdYdgyfeuILPmQ==")],
    )
    .await;

    let mut agent = Agent::install(&console, &console.enrollment_token(1), "ldap01");
    connect_created(
        &agent,
        "example.test",
        slapd.ldaps_url(),
        slapd.ca_cert(),
        slapd.admin_dn(),
        slapd.admin_password(),
    );
    agent.start_with("1s", &["--enforce-fips-policy", "true"]);
    let id = create_configuration(&api, "example.test", true).await;

    // Created disabled, with the defaults of the admin center.
    let c = configuration(&api, &id).await;
    assert_eq!(c["enabled"], false);
    assert_eq!(c["status"]["code"], "NotRun");
    assert_eq!(c["prevent_accidental_deletes"], true);
    assert_eq!(c["delete_threshold"], 500);
    assert_eq!(c["interval_seconds"], 120);
    assert_eq!(c["mappings"]["users"][0]["target"], "sourceAnchor");
    // A second configuration for the same domain is refused; an unknown domain is explained.
    let (status, body) = api
        .send(
            Method::POST,
            "/configurations",
            Some(json!({"domain": "example.test"})),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    let (status, body) = api
        .send(
            Method::POST,
            "/configurations",
            Some(json!({"domain": "nowhere.test"})),
        )
        .await;
    assert_eq!(status, 422);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("add-directory"),
        "{body}"
    );

    // The agent holds the domain.
    let c = wait_for("the agent to take the lease", WAIT, || async {
        let c = configuration(&api, &id).await;
        (c["leader"]["machine_name"] == "ldap01").then_some(c)
    })
    .await;
    assert_eq!(c["leader"]["lease_current"], true);

    // Enable: the first (full) cycle.
    let cycle = cycle_after(&api, &id, "enable").await;
    assert_eq!(cycle["kind"], "full", "{cycle}");
    assert_eq!(
        cycle["state"],
        "succeeded",
        "{cycle}\n{}",
        console.drain_output().join("\n")
    );
    let users = objects(&api, "users").await;
    let expected: HashSet<String> = ["Alice Anderson", "Bob Brown", "Carol Clark", "Md5 User"]
        .map(String::from)
        .into();
    assert_eq!(names(&users), expected);
    let alice = find(&users, "userPrincipalName", "alice@example.test").expect("alice by UPN");
    assert_eq!(alice["attributes"]["givenName"], "Alice");
    assert_eq!(alice["attributes"]["onPremisesSamAccountName"], "alice");
    assert_eq!(alice["account_enabled"], true);
    assert_eq!(alice["password_hash_synced"], true, "{{SSHA}} is synced");
    let md5 = find(&users, "display_name", "Md5 User").unwrap();
    assert_eq!(
        md5["password_hash_synced"], false,
        "MD5 is not synced under FIPS"
    );
    let md5_log = logs(&api, &format!("q={}", md5["anchor"].as_str().unwrap())).await;
    assert_eq!(md5_log[0]["status"], "warning");
    assert!(
        md5_log[0]["error"].as_str().unwrap().contains("FIPS"),
        "{}",
        md5_log[0]
    );
    // The console never holds a password, only hashes; and the MD5 hash is not in the database.
    let db_bytes = std::fs::read(console.data_dir().join("hybridsync.sqlite3")).unwrap();
    let db_text = String::from_utf8_lossy(&db_bytes);
    assert!(!db_text.contains("X03MO1qnZdYdgyfeuILPmQ=="));

    let groups = objects(&api, "groups").await;
    let developers = find(&groups, "display_name", "developers").expect("developers group");
    let (_, detail) = api
        .get(&format!("/groups/{}", developers["id"].as_str().unwrap()))
        .await;
    assert_eq!(
        names(detail["related"].as_array().unwrap()),
        ["Alice Anderson", "Bob Brown"].map(String::from).into()
    );
    let creates = logs(
        &api,
        &format!(
            "action=create&configuration={id}&cycle={}",
            cycle["id"].as_str().unwrap()
        ),
    )
    .await;
    assert_eq!(creates.len() as i64, cycle["created"].as_i64().unwrap());
    let alice_log = creates
        .iter()
        .find(|l| l["source"]["dn"].as_str() == Some(&format!("uid=alice,ou=people,{base}")))
        .expect("alice's create log");
    let steps: Vec<&str> = alice_log["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        steps,
        ["Import", "Determine if in scope", "Match", "Perform action"]
    );
    assert!(alice_log["modified_properties"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["name"] == "mail" && m["new"] == "alice@example.test" && m["old"].is_null()));
    // A second cycle with nothing changed logs nothing new and is a delta.
    let quiet = cycle_after(&api, &id, "sync-now").await;
    assert_eq!(quiet["kind"], "delta", "{quiet}");
    assert_eq!(
        (
            quiet["created"].as_i64(),
            quiet["updated"].as_i64(),
            quiet["deleted"].as_i64()
        ),
        (Some(0), Some(0), Some(0)),
        "{quiet}"
    );

    // Modify, rename + move, hostile names: seen after Sync now, as updates of the same objects.
    let bob_dn = format!("uid=bob,ou=people,{base}");
    admin
        .modify(
            &bob_dn,
            vec![Mod::Replace("title", HashSet::from(["Engineer"]))],
            vec![],
            &[],
            "modify",
        )
        .await
        .unwrap();
    let staff = format!("ou=staff,{base}");
    admin
        .add(
            &staff,
            vec![
                attr("objectClass", &["organizationalUnit"]),
                attr("ou", &["staff"]),
            ],
            "add ou",
        )
        .await
        .unwrap();
    let carol_before = find(&users, "display_name", "Carol Clark").unwrap().clone();
    admin
        .rename(
            &format!("uid=carol,ou=people,{base}"),
            "uid=caroline",
            Some(&staff),
            "move",
        )
        .await
        .unwrap();
    let hostile_cn = "Zoë, \"Q\" + Co <Ærø>";
    let hostile_dn = format!("cn={},{staff}", dn_value(hostile_cn));
    add_person(
        &mut admin,
        &hostile_dn,
        "zoe",
        hostile_cn,
        &[("mail", "zoe@example.test")],
    )
    .await;
    let cycle = cycle_after(&api, &id, "sync-now").await;
    assert_eq!(cycle["state"], "succeeded", "{cycle}");
    assert_eq!(cycle["created"], 1, "{cycle}");
    assert!(cycle["updated"].as_i64().unwrap() >= 2, "{cycle}");
    let users = objects(&api, "users").await;
    let bob = find(&users, "display_name", "Bob Brown").unwrap();
    assert_eq!(bob["attributes"]["jobTitle"], "Engineer");
    let bob_logs = logs(
        &api,
        &format!("q={}&action=update", bob["anchor"].as_str().unwrap()),
    )
    .await;
    assert!(bob_logs[0]["modified_properties"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["name"] == "jobTitle" && m["old"].is_null() && m["new"] == "Engineer"));
    let carol = find(&users, "display_name", "Carol Clark").unwrap();
    assert_eq!(
        carol["id"], carol_before["id"],
        "a rename/move is an update, not a new object"
    );
    assert_eq!(carol["dn"], format!("uid=caroline,{staff}").as_str());
    let zoe = find(&users, "display_name", hostile_cn).expect("hostile name synced");
    // The server writes the DN with hex escapes; it names the same entry.
    let dn = zoe["dn"].as_str().unwrap();
    let (rdn, parent) = dn.split_once(",ou=").expect("rdn");
    assert_eq!(parent, format!("staff,{base}"));
    assert_eq!(
        hybridsync::directory::escape::unescape_dn_value(rdn.strip_prefix("cn=").unwrap()).unwrap(),
        hostile_cn
    );

    // Preview: what the next cycle would do, without doing it.
    let dave_dn = format!("uid=dave,ou=people,{base}");
    add_person(&mut admin, &dave_dn, "dave", "Dave Doe", &[]).await;
    let (status, preview) = api
        .send(Method::POST, &format!("/configurations/{id}/preview"), None)
        .await;
    assert_eq!(status, 200, "{preview}");
    assert_eq!(preview["would_create"], 1, "{preview}");
    assert!(preview["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|i| i["action"] == "create" && i["dn"] == dave_dn.as_str()));
    assert!(find(&objects(&api, "users").await, "display_name", "Dave Doe").is_none());

    // Provision on demand: the four steps, and the object is synced.
    let (status, pod) = api
        .send(
            Method::POST,
            &format!("/configurations/{id}/provision-on-demand"),
            Some(json!({"dn": dave_dn})),
        )
        .await;
    assert_eq!(status, 200, "{pod}");
    assert_eq!(pod["outcome"]["action"], "create");
    assert_eq!(
        pod["outcome"]["steps"].as_array().unwrap().len(),
        4,
        "{pod}"
    );
    assert!(find(&objects(&api, "users").await, "display_name", "Dave Doe").is_some());
    let (status, body) = api
        .send(
            Method::POST,
            &format!("/configurations/{id}/provision-on-demand"),
            Some(json!({"dn": format!("uid=nobody,ou=people,{base}")})),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("No object"),
        "{body}"
    );

    // Accidental deletion prevention: two deletions against a threshold of 2 are staged.
    let (status, body) = patch(&api, &id, json!({"delete_threshold": 2})).await;
    assert_eq!(status, 200, "{body}");
    admin.delete(&dave_dn, "delete").await.unwrap();
    admin.delete(&hostile_dn, "delete").await.unwrap();
    let cycle = cycle_after(&api, &id, "sync-now").await;
    assert_eq!(cycle["state"], "threshold", "{cycle}");
    let c = configuration(&api, &id).await;
    assert_eq!(c["status"]["text"], "Delete threshold exceeded");
    assert_eq!(c["staged"].as_array().unwrap().len(), 2, "{c}");
    assert!(
        find(&objects(&api, "users").await, "display_name", "Dave Doe").is_some(),
        "nothing deleted yet"
    );
    assert_eq!(logs(&api, "action=stagedDelete").await.len(), 2);
    let allowed = operate(&api, &id, "allow-deletes").await;
    assert_eq!(allowed["deleted"], 2, "{allowed}");
    let users = objects(&api, "users").await;
    assert!(find(&users, "display_name", "Dave Doe").is_none());
    assert!(find(&users, "display_name", hostile_cn).is_none());
    assert_eq!(configuration(&api, &id).await["status"]["text"], "Healthy");

    // Scoping by OU: a DN that is not there is refused; ou=staff keeps only Carol.
    let (status, body) = patch(
        &api,
        &id,
        json!({"scope": {"mode": "ous", "entries": [{"dn": format!("ou=nowhere,{base}")}]}}),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("does not exist"),
        "{body}"
    );
    assert_eq!(
        patch(&api, &id, json!({"delete_threshold": 500})).await.0,
        200
    );
    let (status, body) = patch(&api, &id, json!({"scope": {"mode": "ous", "entries": [{"dn": format!("uid=alice,ou=people,{base}")}]}})).await;
    assert_eq!(status, 422, "a user is not an OU: {body}");
    let (status, body) = patch(
        &api,
        &id,
        json!({"scope": {"mode": "ous", "entries": [{"dn": staff}]}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let cycle = cycle_after(&api, &id, "restart").await;
    assert_eq!(cycle["kind"], "full", "{cycle}");
    assert_eq!(
        names(&objects(&api, "users").await),
        ["Carol Clark".to_string()].into()
    );

    // Scoping by group: the members of developers (alice, bob), and the group itself.
    let (status, body) = patch(
        &api,
        &id,
        json!({"scope": {"mode": "groups", "entries": [{"dn": format!("cn=developers,ou=groups,{base}")}]}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["scope"]["entries"][0]["anchor"].is_string(),
        "the group's anchor was found: {body}"
    );
    cycle_after(&api, &id, "restart").await;
    assert_eq!(
        names(&objects(&api, "users").await),
        ["Alice Anderson", "Bob Brown"].map(String::from).into()
    );
    assert_eq!(
        names(&objects(&api, "groups").await),
        ["developers".to_string()].into()
    );

    // Quarantine: the service account's password no longer works.
    let secret = agent.dir.path().join("directories/example.test.secret");
    let good = std::fs::read_to_string(&secret).unwrap();
    std::fs::write(&secret, "wrong-password-123").unwrap();
    for _ in 0..3 {
        let failed = cycle_after(&api, &id, "sync-now").await;
        assert_eq!(failed["state"], "failed", "{failed}");
    }
    let c = configuration(&api, &id).await;
    assert_eq!(c["status"]["code"], "Quarantine", "{c}");
    assert!(
        c["quarantine"]["reason"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("credentials"),
        "{c}"
    );
    assert!(c["quarantine"]["next_attempt"].is_string());
    std::fs::write(&secret, good).unwrap();
    // Three bad binds also locked the account (the testbed's password policy): unlock it, as an
    // administrator would, before clearing the quarantine.
    admin
        .modify(
            &format!("cn=provAgentSvc,{base}"),
            vec![Mod::Delete("pwdAccountLockedTime", HashSet::new())],
            vec![],
            &[16],
            "unlock",
        )
        .await
        .unwrap();
    let cycle = cycle_after(&api, &id, "clear-quarantine").await;
    assert_eq!(cycle["state"], "succeeded", "{cycle}");
    assert_eq!(configuration(&api, &id).await["status"]["code"], "Active");

    // Attribute mapping: a bad expression is refused with its position; a new mapping applies to
    // every object at the next cycle, changed or not.
    let mut mappings = configuration(&api, &id).await["mappings"].clone();
    let department = mappings["users"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|m| m["target"] == "department")
        .unwrap();
    *department =
        json!({"target": "department", "type": "expression", "expression": "Join(\"-\", \"Dept\""});
    let (status, body) = patch(&api, &id, json!({"mappings": mappings})).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("department"),
        "{body}"
    );
    let department = mappings["users"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|m| m["target"] == "department")
        .unwrap();
    *department = json!({"target": "department", "type": "expression", "expression": "ToUpper(Join(\"-\", \"dept\", [uid]))"});
    let (status, body) = patch(&api, &id, json!({"mappings": mappings})).await;
    assert_eq!(status, 200, "{body}");
    cycle_after(&api, &id, "sync-now").await;
    let users = objects(&api, "users").await;
    assert_eq!(
        find(&users, "display_name", "Alice Anderson").unwrap()["attributes"]["department"],
        "DEPT-ALICE"
    );
    // Test expression.
    let (status, out) = api
        .send(
            Method::POST,
            "/expressions/test",
            Some(json!({"expression": "Left([givenName], 1)", "sample": {"givenName": "Zoë"}})),
        )
        .await;
    assert_eq!((status, out["output"].as_str()), (200, Some("Z")), "{out}");

    // FIPS off: after a restart of the agent and Restart sync, the MD5 hash is synced too.
    let (status, _) = patch(&api, &id, json!({"scope": {"mode": "all_users"}})).await;
    assert_eq!(status, 200);
    agent.kill();
    agent.start_with("1s", &["--enforce-fips-policy", "false"]);
    cycle_after(&api, &id, "restart").await;
    let users = objects(&api, "users").await;
    assert_eq!(
        find(&users, "display_name", "Md5 User").unwrap()["password_hash_synced"],
        true
    );

    // Readers see everything and change nothing.
    let reader = Api::new(&console, READER);
    assert_eq!(reader.get(&format!("/configurations/{id}")).await.0, 200);
    let (status, body) = reader
        .send(
            Method::POST,
            &format!("/configurations/{id}/sync-now"),
            None,
        )
        .await;
    assert_eq!(status, 403, "{body}");

    // Delete configuration: synced objects stay.
    let (status, body) = api
        .send(Method::DELETE, &format!("/configurations/{id}"), None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["message"].as_str().unwrap().contains("stay"), "{body}");
    assert!(!objects(&api, "users").await.is_empty());
}

#[tokio::test]
async fn failover_when_the_active_agent_is_killed() {
    let slapd = Slapd::start(true);
    let console = Console::start(FAST);
    let api = Api::new(&console, ADMIN);
    let token = console.enrollment_token(2);
    let mut first = Agent::install(&console, &token, "ldap-a");
    let mut second = Agent::install(&console, &token, "ldap-b");
    for agent in [&first, &second] {
        connect_created(
            agent,
            "example.test",
            slapd.ldaps_url(),
            slapd.ca_cert(),
            slapd.admin_dn(),
            slapd.admin_password(),
        );
    }
    first.start("1s");
    let id = create_configuration(&api, "example.test", false).await;
    wait_for("ldap-a to lead", WAIT, || async {
        (configuration(&api, &id).await["leader"]["machine_name"] == "ldap-a").then_some(())
    })
    .await;
    second.start("1s");
    let cycle = cycle_after(&api, &id, "enable").await;
    assert_eq!(cycle["agent_id"], first.agent_id().as_str());
    // The standby stays standby while the leader runs.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        configuration(&api, &id).await["leader"]["machine_name"],
        "ldap-a"
    );

    first.kill();
    let killed_at = std::time::Instant::now();
    wait_for("ldap-b to take over", WAIT, || async {
        (configuration(&api, &id).await["leader"]["machine_name"] == "ldap-b").then_some(())
    })
    .await;
    // Three heartbeat intervals (1 s), plus the time to observe it.
    assert!(
        killed_at.elapsed() < Duration::from_secs(6),
        "took {:?}",
        killed_at.elapsed()
    );
    let cycle = cycle_after(&api, &id, "sync-now").await;
    assert_eq!(cycle["agent_id"], second.agent_id().as_str());
    assert_eq!(cycle["state"], "succeeded", "{cycle}");
    // ldap-b has no state of its own yet: a full cycle, which changes nothing.
    assert_eq!(cycle["kind"], "full");
    assert_eq!(cycle["created"], 0);
    assert_eq!(cycle["deleted"], 0);
    assert_eq!(objects(&api, "users").await.len(), 3);
}

#[tokio::test]
async fn active_directory_sync_with_ou_scope_deltas_and_deletions() {
    let ad = samba();
    let base = ad.base_dn().to_string();
    let mut admin = Connection::bind_new(
        &target(ad.ldaps_url(), ad.ca_cert()),
        ad.admin(),
        ad.admin_password(),
    )
    .await
    .unwrap();
    // An OU of its own: other tests share this DC.
    let ou = format!("OU=Sync{},{base}", std::process::id());
    admin
        .add(
            &ou,
            vec![attr("objectClass", &["organizationalUnit"])],
            "add the OU",
        )
        .await
        .unwrap();
    let person = |cn: &str, sam: &str, uac: &str| {
        vec![
            attr(
                "objectClass",
                &["top", "person", "organizationalPerson", "user"],
            ),
            attr("sAMAccountName", &[sam]),
            attr("userPrincipalName", &[&format!("{sam}@corp.example.test")]),
            attr("displayName", &[cn]),
            attr("givenName", &[cn.split(' ').next().unwrap()]),
            attr("userAccountControl", &[uac]),
        ]
    };
    let erin = format!("CN=Erin Evans,{ou}");
    let frank = format!("CN=Frank Fu\\, Jr.,{ou}");
    admin
        .add(&erin, person("Erin Evans", "erin.sync", "546"), "add")
        .await
        .unwrap();
    admin
        .add(&frank, person("Frank Fu, Jr.", "frank.sync", "514"), "add")
        .await
        .unwrap();
    let group = format!("CN=Sync Team,{ou}");
    admin
        .add(
            &group,
            vec![
                attr("objectClass", &["top", "group"]),
                attr("sAMAccountName", &["syncteam"]),
                attr("member", &[&erin, &frank]),
            ],
            "add the group",
        )
        .await
        .unwrap();

    let console = Console::start(FAST);
    let api = Api::new(&console, ADMIN);
    let mut agent = Agent::install(&console, &console.enrollment_token(1), "dc-agent");
    let domain = ad.var("AD_REALM").to_lowercase();
    connect_created(
        &agent,
        &domain,
        ad.ldaps_url(),
        ad.ca_cert(),
        ad.admin(),
        ad.admin_password(),
    );
    agent.start("1s");
    let id = create_configuration(&api, &domain, true).await;
    let c = configuration(&api, &id).await;
    assert_eq!(c["dialect"], "active-directory");
    assert!(
        c["password_hash_sync_note"]
            .as_str()
            .unwrap()
            .contains("not"),
        "AD hashes are not readable: {c}"
    );
    assert_eq!(c["mappings"]["users"][0]["source"], "objectGUID");
    // The DN is checked through the agent, which may still be starting.
    let mut last = (0, Value::Null);
    for _ in 0..40 {
        last = patch(
            &api,
            &id,
            json!({"scope": {"mode": "ous", "entries": [{"dn": ou}]}}),
        )
        .await;
        if last.0 == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(last.0, 200, "{}", last.1);

    let cycle = cycle_after(&api, &id, "enable").await;
    let full_imported = cycle["imported"].as_i64().unwrap();
    assert_eq!(cycle["state"], "succeeded", "{cycle}");
    let users = objects(&api, "users").await;
    assert_eq!(
        names(&users),
        ["Erin Evans", "Frank Fu, Jr."].map(String::from).into()
    );
    let erin_user = find(&users, "display_name", "Erin Evans").unwrap().clone();
    assert_eq!(
        erin_user["user_principal_name"],
        "erin.sync@corp.example.test"
    );
    // userAccountControl 546 and 514 both carry ACCOUNTDISABLE (2); enable Erin below.
    assert_eq!(erin_user["account_enabled"], false);
    assert_eq!(
        erin_user["anchor"].as_str().unwrap().len(),
        36,
        "objectGUID as a GUID string"
    );
    assert_eq!(erin_user["password_hash_synced"], false);
    let groups = objects(&api, "groups").await;
    let team = find(&groups, "display_name", "Sync Team").expect("group in the OU");
    let (_, detail) = api
        .get(&format!("/groups/{}", team["id"].as_str().unwrap()))
        .await;
    assert_eq!(detail["related"].as_array().unwrap().len(), 2);
    // Nothing outside the OU, and never the critical system objects.
    assert!(find(&users, "display_name", "Alice Anderson").is_none());
    assert!(find(&users, "user_principal_name", "Administrator").is_none());

    // Delta: enabling Erin changes uSNChanged; only that travels.
    admin
        .modify(
            &erin,
            vec![Mod::Replace("userAccountControl", HashSet::from(["512"]))],
            vec![],
            &[],
            "enable",
        )
        .await
        .unwrap();
    let cycle = cycle_after(&api, &id, "sync-now").await;
    assert_eq!(cycle["kind"], "delta", "{cycle}");
    // Only what changed travels: Erin, and whatever other tests sharing this DC changed meanwhile
    // (out of scope here), never the whole directory again.
    let imported = cycle["imported"].as_i64().unwrap();
    assert!(
        (1..full_imported).contains(&imported) && full_imported > 10,
        "only changes travel: {imported} of {full_imported}: {cycle}"
    );
    assert_eq!(cycle["created"], 0, "{cycle}");
    assert_eq!(cycle["updated"], 1, "{cycle}");
    let users = objects(&api, "users").await;
    assert_eq!(
        find(&users, "display_name", "Erin Evans").unwrap()["account_enabled"],
        true
    );

    // Deletion in AD is seen by the next delta.
    admin.delete(&frank, "delete").await.unwrap();
    let cycle = cycle_after(&api, &id, "sync-now").await;
    assert_eq!(cycle["deleted"], 1, "{cycle}");
    let users = objects(&api, "users").await;
    assert_eq!(names(&users), ["Erin Evans".to_string()].into());
    let (_, detail) = api
        .get(&format!("/groups/{}", team["id"].as_str().unwrap()))
        .await;
    assert_eq!(detail["related"].as_array().unwrap().len(), 1);
}
