//! How a delta cycle against OpenLDAP finds what changed and what was deleted: from syncprov's
//! session log through RFC 4533 content sync (no listing of every object), falling back to listing
//! anchors when the log is too short (a present phase) or the directory has no syncprov at all.
//! Real slapd, console and agent processes; slapd's own access log tells which searches ran.

use crate::directory_support::*;
use crate::support::*;
use crate::sync::{add_person, configuration, create_configuration, cycle_after, names, objects};
use hybridsync::directory::conn::Connection;
use ldap3::Mod;
use std::collections::HashSet;

/// The search an agent makes when it lists anchors to find deletions, as slapd logs it.
const LISTING: &str = "SRCH attr=entryuuid";

async fn deltas_find_changes_and_deletions(knobs: &[(&'static str, &'static str)]) -> bool {
    let mut env = vec![("SLAPD_DEBUG", "256")];
    env.extend_from_slice(knobs);
    let slapd = Slapd::start_with(true, &env);
    let base = slapd.base_dn().to_string();
    let log = slapd.dir.join("slapd.log");
    let console = Console::start(FAST);
    let api = Api::new(&console, ADMIN);
    let mut admin = Connection::bind_new(
        &target(slapd.ldaps_url(), slapd.ca_cert()),
        slapd.admin_dn(),
        slapd.admin_password(),
    )
    .await
    .unwrap();
    let mut agent = Agent::install(&console, &console.enrollment_token(1), "delta-agent");
    connect_created(
        &agent,
        "example.test",
        slapd.ldaps_url(),
        slapd.ca_cert(),
        slapd.admin_dn(),
        slapd.admin_password(),
    );
    agent.start("1s");
    let id = create_configuration(&api, "example.test", false).await;
    let full = cycle_after(&api, &id, "enable").await;
    assert_eq!(full["state"], "succeeded", "{full}");
    assert_eq!(full["kind"], "full", "{full}");
    let users_before = names(&objects(&api, "users").await);
    assert_eq!(users_before.len(), 3, "{users_before:?}");
    let groups_before = names(&objects(&api, "groups").await);
    assert!(groups_before.contains("developers"), "{groups_before:?}");

    // One of each: a new user, a changed one, two deleted users and a deleted group.
    add_person(
        &mut admin,
        &format!("uid=gina,ou=people,{base}"),
        "gina",
        "Gina Garcia",
        &[],
    )
    .await;
    let alice = format!("uid=alice,ou=people,{base}");
    admin
        .modify(
            &alice,
            vec![Mod::Replace(
                "displayName",
                HashSet::from(["Alice Renamed"]),
            )],
            vec![],
            &[],
            "rename",
        )
        .await
        .unwrap();
    for dn in [
        format!("uid=bob,ou=people,{base}"),
        format!("uid=carol,ou=people,{base}"),
        format!("cn=developers,ou=groups,{base}"),
    ] {
        admin.delete(&dn, "delete").await.unwrap();
    }

    let log_before = std::fs::read_to_string(&log).unwrap().len();
    let delta = cycle_after(&api, &id, "sync-now").await;
    let delta_log = std::fs::read_to_string(&log).unwrap()[log_before..].to_string();
    assert_eq!(delta["state"], "succeeded", "{delta}");
    assert_eq!(delta["kind"], "delta", "{delta}");
    assert_eq!(delta["created"], 1, "Gina: {delta}");
    assert_eq!(delta["deleted"], 3, "Bob, Carol and developers: {delta}");
    // Only what changed travelled: Gina, Alice, and the entries the memberOf overlay touched.
    assert!(delta["imported"].as_i64().unwrap() < 6, "{delta}");
    assert_eq!(
        names(&objects(&api, "users").await),
        ["Alice Renamed", "Gina Garcia"].map(String::from).into()
    );
    let groups = names(&objects(&api, "groups").await);
    assert!(!groups.contains("developers"), "{groups:?}");
    assert_eq!(groups.len(), groups_before.len() - 1, "{groups:?}");
    assert_eq!(configuration(&api, &id).await["status"]["code"], "Active");

    // A quiet delta changes nothing.
    let quiet = cycle_after(&api, &id, "sync-now").await;
    assert_eq!(quiet["kind"], "delta", "{quiet}");
    assert_eq!(quiet["created"], 0, "{quiet}");
    assert_eq!(quiet["updated"], 0, "{quiet}");
    assert_eq!(quiet["deleted"], 0, "{quiet}");
    let listed = delta_log.lines().any(|l| l.ends_with(LISTING));
    if !knobs.iter().any(|(k, _)| *k == "SLAPD_NO_SYNCPROV") {
        // From a cookie nothing at all travels (modifyTimestamp, at one-second resolution,
        // re-reads the last second's entries).
        assert_eq!(quiet["imported"], 0, "{quiet}");
    }
    if knobs.is_empty() {
        // Content-sync deltas still list anchors once an hour: age the agent's record of its last
        // listing (the state is saved just after the console accepted the cycle).
        let state_file = agent.dir.path().join("sync/example.test.state.json");
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let mut state: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&state_file).unwrap()).unwrap();
        assert!(state["listed_at_ms"].as_i64().unwrap() > 0, "{state}");
        state["listed_at_ms"] = 1.into();
        std::fs::write(&state_file, state.to_string()).unwrap();
        let log_before = std::fs::read_to_string(&log).unwrap().len();
        let hourly = cycle_after(&api, &id, "sync-now").await;
        let hourly_log = std::fs::read_to_string(&log).unwrap()[log_before..].to_string();
        assert_eq!(hourly["kind"], "delta", "{hourly}");
        assert_eq!(hourly["deleted"], 0, "{hourly}");
        assert!(
            hourly_log.lines().any(|l| l.ends_with(LISTING)),
            "an hour after the last listing a delta lists anchors again"
        );
    }
    listed
}

#[tokio::test]
async fn openldap_deltas_take_deletions_from_the_syncprov_session_log() {
    let listed = deltas_find_changes_and_deletions(&[]).await;
    assert!(
        !listed,
        "with syncprov and a long enough session log the delta must not list every anchor"
    );
}

#[tokio::test]
async fn openldap_deltas_list_anchors_when_the_session_log_is_too_short() {
    // Three deletions do not fit a log of one: slapd answers with a present phase.
    let listed = deltas_find_changes_and_deletions(&[("SLAPD_SESSIONLOG", "1")]).await;
    assert!(listed, "a present phase falls back to listing anchors");
}

#[tokio::test]
async fn openldap_deltas_without_syncprov_list_anchors() {
    let listed = deltas_find_changes_and_deletions(&[("SLAPD_NO_SYNCPROV", "1")]).await;
    assert!(
        listed,
        "without syncprov deletions are found by listing anchors"
    );
}
