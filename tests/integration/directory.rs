//! Connecting directories (issue 3): `agent add-directory` / `remove-directory` against a real
//! OpenLDAP and a real Samba AD DC, with real console and agent processes. Also the RFC 4514/4515
//! escaping against a real server.

use crate::directory_support::*;
use crate::support::*;
use hybridsync::directory::conn::Connection;
use hybridsync::directory::escape::{dn_value, filter_value};
use ldap3::Mod;
use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

/// Binds as `who` and reads `base`: what the agent's service account must be able to do.
async fn can_bind_and_read(url: &str, ca: &str, who: &str, password: &str, base: &str) -> bool {
    match Connection::bind_new(&target(url, ca), who, password).await {
        Ok(mut conn) => matches!(conn.read(base, &["1.1"], "read").await, Ok(Some(_))),
        Err(_) => false,
    }
}

/// The agent's `domains` as the console's API shows them.
async fn api_domains(api: &Api, id: &str) -> Vec<String> {
    let agent = api.agent(id).await.expect("agent in the API");
    agent["domains"]
        .as_array()
        .expect("domains array")
        .iter()
        .map(|d| d.as_str().unwrap().to_string())
        .collect()
}

/// Waits until the console shows exactly `expected` for the agent. With the agent running, a
/// heartbeat that read the data dir just before `add-directory` wrote it can land after
/// `add-directory`'s own report; the agent's next beat (within a second) settles it.
async fn wait_domains(api: &Api, id: &str, expected: &[&str]) {
    wait_for(&format!("domains {expected:?}"), WAIT, || async {
        (api_domains(api, id).await == expected).then_some(())
    })
    .await;
}

/// The status of one check the agent reported, once it is there.
async fn check_status(api: &Api, id: &str, name: &str) -> Option<(String, String)> {
    let agent = api.agent(id).await?;
    agent["checks"].as_array()?.iter().find_map(|c| {
        (c["name"] == name).then(|| {
            (
                c["status"].as_str().unwrap_or_default().to_string(),
                c["message"].as_str().unwrap_or_default().to_string(),
            )
        })
    })
}

/// Every file of the console's data dir (SQLite database and WAL included) as bytes.
fn console_bytes(console: &Console) -> Vec<u8> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(console.data_dir()).unwrap().flatten() {
        if entry.path().is_file() {
            all.extend(std::fs::read(entry.path()).unwrap_or_default());
        }
    }
    all
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn openldap_create_and_custom_are_picked_up_by_a_running_agent_and_removed() {
    let slapd = Slapd::start(true);
    let console = Console::start(FAST);
    let api = Api::new(&console, ADMIN);
    let mut agent = Agent::install(&console, &console.enrollment_token(1), "ldap01");
    let id = agent.agent_id();
    agent.start("1s");
    wait_for("the first heartbeat", WAIT, || async {
        check_status(&api, &id, "console").await
    })
    .await;

    // create: the agent makes provAgentSvc, its group, and checks the ACL is in force.
    let out = add_directory(
        &agent,
        &[
            "--domain",
            "example.test",
            "--ldap-url",
            slapd.ldaps_url(),
            "--ca-cert",
            slapd.ca_cert(),
            "--admin",
            slapd.admin_dn(),
            "--service-account",
            "create",
        ],
        slapd.admin_password(),
    );
    assert!(out.status.success(), "{}", all_output(&out));
    let text = all_output(&out);
    assert!(text.contains("OpenLDAP detected"), "{text}");
    assert!(
        text.contains("olcAccess rules for provAgentSvcGroup are in force"),
        "{text}"
    );
    let config = directory_config(&agent, "example.test");
    assert_eq!(config["dialect"], "openldap");
    assert_eq!(config["base_dn"], "dc=example,dc=test");
    let svc_dn = format!("cn=provAgentSvc,{}", slapd.base_dn());
    assert_eq!(config["service_account"]["bind_dn"], svc_dn.as_str());
    let secret_path = agent.dir.path().join("directories/example.test.secret");
    assert_eq!(
        mode(&secret_path),
        0o600,
        "the password file must be private"
    );
    let password = directory_secret(&agent, "example.test");
    assert!(password.len() >= 40, "a long random password");
    assert!(!text.contains(&password) && !text.contains(slapd.admin_password()));
    let stored =
        std::fs::read_to_string(agent.dir.path().join("directories/example.test.json")).unwrap();
    assert!(
        !stored.contains(slapd.admin_password()),
        "the admin password is never stored"
    );
    assert!(
        can_bind_and_read(
            slapd.ldaps_url(),
            slapd.ca_cert(),
            &svc_dn,
            &password,
            slapd.base_dn()
        )
        .await
    );

    // The console shows it, and the running agent checks it (only the agent reports checks).
    wait_domains(&api, &id, &["example.test"]).await;
    let (status, message) = wait_for("the directory check", WAIT, || async {
        check_status(&api, &id, "directory:example.test").await
    })
    .await;
    assert_eq!(status, "pass", "{message}");
    assert!(message.contains(&svc_dn), "{message}");

    // custom: an account the administrator made (here cn=console), for a second domain.
    let console_pw = slapd.var("LDAP_CONSOLE_PASSWORD").to_string();
    let pw_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(pw_file.path(), format!("{console_pw}\n")).unwrap();
    let out = add_directory(
        &agent,
        &[
            "--domain",
            "Custom.Example.Test",
            "--ldap-url",
            slapd.ldaps_url(),
            "--ca-cert",
            slapd.ca_cert(),
            "--base-dn",
            slapd.base_dn(),
            "--admin",
            slapd.admin_dn(),
            "--service-account",
            "custom",
            "--service-account-name",
            slapd.var("LDAP_CONSOLE_DN"),
            "--service-account-password-file",
            pw_file.path().to_str().unwrap(),
        ],
        slapd.admin_password(),
    );
    assert!(out.status.success(), "{}", all_output(&out));
    assert_eq!(directory_secret(&agent, "custom.example.test"), console_pw);
    let (status, message) = wait_for(
        "the running agent to check the new directory",
        WAIT,
        || async { check_status(&api, &id, "directory:custom.example.test").await },
    )
    .await;
    assert_eq!(status, "pass", "{message}");
    // The same process found it: it is still running, nobody restarted it.
    assert!(
        agent.child.as_mut().unwrap().try_wait().unwrap().is_none(),
        "the agent process must still be running"
    );
    wait_domains(&api, &id, &["custom.example.test", "example.test"]).await;

    // The Agents page lists the domains.
    let browser = Browser::new(&console);
    assert_eq!(browser.sign_in(ADMIN, PASSWORD).await, 303);
    let (status, html) = browser.get("/agents").await;
    assert_eq!(status, 200);
    assert!(html.contains("custom.example.test, example.test"), "{html}");

    // No password reached the console's database.
    let db = console_bytes(&console);
    assert!(
        !contains(&db, &password)
            && !contains(&db, &console_pw)
            && !contains(&db, slapd.admin_password())
    );

    // remove-directory undoes both, locally and in the console; the running agent follows.
    for domain in ["custom.example.test", "example.test"] {
        let out = remove_directory(&agent, domain);
        assert!(out.status.success(), "{}", all_output(&out));
    }
    wait_domains(&api, &id, &[]).await;
    assert!(!secret_path.exists());
    assert_eq!(
        std::fs::read_dir(agent.dir.path().join("directories"))
            .unwrap()
            .count(),
        0
    );
    wait_for("the agent to drop the directory checks", WAIT, || async {
        let agent = api.agent(&id).await?;
        let checks = agent["checks"].as_array()?.clone();
        (!checks.is_empty()
            && !checks
                .iter()
                .any(|c| c["name"].as_str().unwrap_or("").starts_with("directory:")))
        .then_some(())
    })
    .await;
    let out = remove_directory(&agent, "example.test");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("has no directory example.test"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn openldap_second_agent_gets_its_own_account_and_rerun_reuses() {
    let slapd = Slapd::start(true);
    let console = Console::start(&[]);
    let api = Api::new(&console, ADMIN);
    let token = console.enrollment_token(2);
    let first = Agent::install(&console, &token, "ldap01");
    let second = Agent::install(&console, &token, "ldap02");
    let args = [
        "--domain",
        "example.test",
        "--ldap-url",
        slapd.ldaps_url(),
        "--ca-cert",
        slapd.ca_cert(),
        "--admin",
        slapd.admin_dn(),
        "--service-account",
        "create",
    ];
    // The agents are not running: add-directory itself tells the console.
    let out = add_directory(&first, &args, slapd.admin_password());
    assert!(out.status.success(), "{}", all_output(&out));
    let out = add_directory(&second, &args, slapd.admin_password());
    assert!(out.status.success(), "{}", all_output(&out));
    assert!(
        all_output(&out).contains("another agent's"),
        "{}",
        all_output(&out)
    );

    let first_dn = directory_config(&first, "example.test")["service_account"]["bind_dn"]
        .as_str()
        .unwrap()
        .to_string();
    let second_dn = directory_config(&second, "example.test")["service_account"]["bind_dn"]
        .as_str()
        .unwrap()
        .to_string();
    let short: String = second
        .agent_id()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(6)
        .collect();
    assert_eq!(first_dn, format!("cn=provAgentSvc,{}", slapd.base_dn()));
    assert_eq!(
        second_dn,
        format!("cn=provAgentSvc-{short},{}", slapd.base_dn())
    );
    // The first agent's password was not touched by the second install.
    for (agent, dn) in [(&first, &first_dn), (&second, &second_dn)] {
        let pw = directory_secret(agent, "example.test");
        assert!(
            can_bind_and_read(slapd.ldaps_url(), slapd.ca_cert(), dn, &pw, slapd.base_dn()).await,
            "{dn}"
        );
    }
    // Both are members of the one group the ACL names.
    let mut admin = Connection::bind_new(
        &target(slapd.ldaps_url(), slapd.ca_cert()),
        slapd.admin_dn(),
        slapd.admin_password(),
    )
    .await
    .unwrap();
    let group = admin
        .read(
            &format!("cn=provAgentSvcGroup,{}", slapd.base_dn()),
            &["member"],
            "read",
        )
        .await
        .unwrap()
        .expect("group");
    let members = &group.attrs["member"];
    assert!(
        members.contains(&first_dn) && members.contains(&second_dn),
        "{members:?}"
    );

    // A re-run on the first agent reuses its account and password.
    let before = directory_secret(&first, "example.test");
    let out = add_directory(&first, &args, slapd.admin_password());
    assert!(out.status.success(), "{}", all_output(&out));
    assert!(
        all_output(&out).contains("reused this agent's service account"),
        "{}",
        all_output(&out)
    );
    assert_eq!(directory_secret(&first, "example.test"), before);

    for agent in [&first, &second] {
        assert_eq!(
            api_domains(&api, &agent.agent_id()).await,
            vec!["example.test"]
        );
    }

    // remove-directory with an administrator deletes the agent's own account only.
    let out = remove_directory_as_admin(
        &second,
        "example.test",
        slapd.admin_dn(),
        slapd.admin_password(),
    );
    assert!(out.status.success(), "{}", all_output(&out));
    assert!(
        stdout(&out).contains("deleted the service account"),
        "{}",
        all_output(&out)
    );
    let gone = admin.read(&second_dn, &["1.1"], "read").await;
    assert!(gone.is_err(), "{gone:?}");
    let group_dn = format!("cn=provAgentSvcGroup,{}", slapd.base_dn());
    let group = admin
        .read(&group_dn, &["member"], "read")
        .await
        .unwrap()
        .expect("group");
    assert_eq!(group.attrs["member"], vec![first_dn.clone()]);
    let first_pw = directory_secret(&first, "example.test");
    assert!(
        can_bind_and_read(
            slapd.ldaps_url(),
            slapd.ca_cert(),
            &first_dn,
            &first_pw,
            slapd.base_dn()
        )
        .await
    );
    assert!(api_domains(&api, &second.agent_id()).await.is_empty());
    // The last agent takes the (then empty) group with it.
    let out = remove_directory_as_admin(
        &first,
        "example.test",
        slapd.admin_dn(),
        slapd.admin_password(),
    );
    assert!(out.status.success(), "{}", all_output(&out));
    assert!(admin.read(&group_dn, &["1.1"], "read").await.is_err());
    assert!(admin.read(&first_dn, &["1.1"], "read").await.is_err());
}

#[tokio::test]
async fn openldap_failures_each_name_their_cause() {
    let slapd = Slapd::start(true);
    let console = Console::start(&[]);
    let agent = Agent::install(&console, &console.enrollment_token(1), "ldap01");
    let base = |url: &str| -> Vec<String> {
        [
            "--domain",
            "example.test",
            "--ldap-url",
            url,
            "--ca-cert",
            slapd.ca_cert(),
            "--admin",
            slapd.admin_dn(),
            "--service-account",
            "create",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let attempt = |args: Vec<String>, pw: &str| {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = add_directory(&agent, &refs, pw);
        assert!(!out.status.success(), "must fail: {}", all_output(&out));
        stderr(&out)
    };

    let wrong = attempt(base(slapd.ldaps_url()), "not-the-password");
    assert!(
        wrong.contains("LDAP result 49") && wrong.contains(slapd.admin_dn()),
        "{wrong}"
    );
    assert!(!wrong.contains("not-the-password"));

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let down = attempt(
        base(&format!("ldap://127.0.0.1:{port}")),
        slapd.admin_password(),
    );
    assert!(
        down.contains("cannot reach") && down.contains("connection refused"),
        "{down}"
    );

    // ldaps with no --ca-cert (the system CAs do not know the test CA), and with another CA.
    let mut no_ca = base(slapd.ldaps_url());
    no_ca.drain(4..6);
    let untrusted = attempt(no_ca, slapd.admin_password());
    assert!(
        untrusted.contains("not trusted") && untrusted.contains("--ca-cert"),
        "{untrusted}"
    );
    let other = Slapd::start(true);
    let mut other_ca = base(slapd.ldaps_url());
    other_ca[5] = other.ca_cert().to_string();
    let untrusted = attempt(other_ca, slapd.admin_password());
    assert!(untrusted.contains("not trusted"), "{untrusted}");

    // A plain user as "administrator": may bind, may not create the account.
    let mut not_admin = base(slapd.ldaps_url());
    not_admin[7] = format!("uid=alice,ou=people,{}", slapd.base_dn());
    let rights = attempt(not_admin, slapd.var("LDAP_USER_PASSWORD"));
    assert!(
        rights.contains("missing rights") && rights.contains("create the service account"),
        "{rights}"
    );

    // custom: wrong password, and an account that cannot read the base DN.
    let pw_file = tempfile::NamedTempFile::new().unwrap();
    let custom = |name: &str| {
        let mut args = base(slapd.ldaps_url());
        args[9] = "custom".into();
        args.extend([
            "--service-account-name".to_string(),
            name.to_string(),
            "--service-account-password-file".to_string(),
            pw_file.path().to_str().unwrap().to_string(),
        ]);
        args
    };
    std::fs::write(pw_file.path(), "wrong").unwrap();
    let wrong = attempt(custom(slapd.var("LDAP_CONSOLE_DN")), slapd.admin_password());
    assert!(
        wrong.contains("LDAP result 49") && wrong.contains("cn=console"),
        "{wrong}"
    );
    std::fs::write(pw_file.path(), slapd.var("LDAP_CONSOLE_PASSWORD")).unwrap();
    let noread = format!("cn=noread,ou=services,{}", slapd.base_dn());
    let rights = attempt(custom(&noread), slapd.admin_password());
    assert!(
        rights.contains("missing rights")
            && rights.contains(&noread)
            && rights.contains("read the base DN"),
        "{rights}"
    );

    // Nothing was written by any failed attempt.
    assert!(!agent
        .dir
        .path()
        .join("directories/example.test.json")
        .exists());

    // A server without the agents' ACL: create says which rules are missing, leaves no account.
    let bare = Slapd::start(false);
    let out = add_directory(
        &agent,
        &[
            "--domain",
            "example.test",
            "--ldap-url",
            bare.ldaps_url(),
            "--ca-cert",
            bare.ca_cert(),
            "--admin",
            bare.admin_dn(),
            "--service-account",
            "create",
        ],
        bare.admin_password(),
    );
    assert!(!out.status.success());
    let message = stderr(&out);
    assert!(
        message.contains("missing rights")
            && message.contains("olcAccess: {0}to attrs=userPassword"),
        "{message}"
    );
    let mut admin = Connection::bind_new(
        &target(bare.ldaps_url(), bare.ca_cert()),
        bare.admin_dn(),
        bare.admin_password(),
    )
    .await
    .unwrap();
    let leftover = admin
        .read(
            &format!("cn=provAgentSvc,{}", bare.base_dn()),
            &["1.1"],
            "read",
        )
        .await;
    assert!(
        leftover.is_err(),
        "the half-made account must be removed: {leftover:?}"
    );
}

/// Names an attacker or an unlucky administrator might choose. NUL is left out here:
/// directoryString values may not hold it (the unit tests cover it).
const HOSTILE: [&str; 10] = [
    "Smith, John",
    "a+b",
    "say \"hi\"",
    "back\\slash",
    "Ærøskøbing 山田",
    " leading space",
    "trailing space ",
    "#hash",
    "*)(uid=*",
    "semi;colon<angle>eq=",
];

/// Creates one entry per hostile name under `container` through [`dn_value`], finds each through
/// [`filter_value`], and checks nothing else matches.
async fn hostile_round_trip(admin: &mut Connection, container: &str, classes: &[&str]) {
    for name in HOSTILE {
        let dn = format!("cn={},{container}", dn_value(name));
        let attrs = vec![
            (
                b"objectClass".to_vec(),
                classes.iter().map(|c| c.as_bytes().to_vec()).collect(),
            ),
            (b"cn".to_vec(), HashSet::from([name.as_bytes().to_vec()])),
            (b"sn".to_vec(), HashSet::from([b"hostile".to_vec()])),
        ];
        admin
            .add(&dn, attrs, "add")
            .await
            .unwrap_or_else(|e| panic!("{name:?}: {e}"));
    }
    for name in HOSTILE {
        let filter = format!("(&(sn=hostile)(cn={}))", filter_value(name));
        let found = admin
            .search(container, &filter, &["cn"], 100, "search")
            .await
            .unwrap();
        assert_eq!(found.len(), 1, "{name:?} matched {found:?}");
        assert_eq!(found[0].attrs["cn"], vec![name.to_string()]);
        // The DN the server returns leads back to the same entry.
        let again = admin
            .read(&found[0].dn, &["cn"], "read")
            .await
            .unwrap()
            .expect("entry");
        assert_eq!(again.attrs["cn"], vec![name.to_string()]);
        // And so does the DN built with dn_value.
        let built = format!("cn={},{container}", dn_value(name));
        let again = admin
            .read(&built, &["cn"], "read")
            .await
            .unwrap()
            .expect("entry");
        assert_eq!(again.attrs["cn"], vec![name.to_string()]);
    }
    // Paged search (RFC 2696) returns every entry across pages of three.
    let paged = admin
        .search_paged(container, "(sn=hostile)", &["cn"], 3, "paged search")
        .await
        .unwrap();
    assert_eq!(paged.len(), HOSTILE.len());
    // An escaped `*` is a literal: no entry is named `*` (unescaped, it would match all ten).
    let star = admin
        .search(
            container,
            &format!("(&(sn=hostile)(cn={}))", filter_value("*")),
            &["cn"],
            100,
            "search",
        )
        .await
        .unwrap();
    assert!(star.is_empty(), "{star:?}");
}

#[tokio::test]
async fn hostile_names_round_trip_through_openldap() {
    let slapd = Slapd::start(true);
    let mut admin = Connection::bind_new(
        &target(slapd.ldaps_url(), slapd.ca_cert()),
        slapd.admin_dn(),
        slapd.admin_password(),
    )
    .await
    .unwrap();
    let people = format!("ou=people,{}", slapd.base_dn());
    hostile_round_trip(&mut admin, &people, &["inetOrgPerson"]).await;
}

#[tokio::test]
async fn hostile_names_round_trip_through_active_directory() {
    let ad = samba();
    let mut admin = Connection::bind_new(
        &target(ad.ldaps_url(), ad.ca_cert()),
        ad.admin(),
        ad.admin_password(),
    )
    .await
    .unwrap();
    let ou = format!("OU=Hostile,{}", ad.base_dn());
    let attrs = vec![(
        b"objectClass".to_vec(),
        HashSet::from([b"organizationalUnit".to_vec()]),
    )];
    admin.add(&ou, attrs, "add the OU").await.unwrap();
    hostile_round_trip(
        &mut admin,
        &ou,
        &["top", "person", "organizationalPerson", "contact"],
    )
    .await;
}

#[tokio::test]
async fn active_directory_create_delegates_rights_and_second_agent_reuses_the_group() {
    let ad = samba();
    let console = Console::start(FAST);
    let api = Api::new(&console, ADMIN);
    let token = console.enrollment_token(2);
    let mut first = Agent::install(&console, &token, "dc01");
    let second = Agent::install(&console, &token, "dc02");
    first.start("1s");
    let args = [
        "--domain",
        "corp.example.test",
        "--ldap-url",
        ad.ldaps_url(),
        "--ca-cert",
        ad.ca_cert(),
        "--admin",
        ad.admin(),
        "--service-account",
        "create",
    ];
    let out = add_directory(&first, &args, ad.admin_password());
    assert!(out.status.success(), "{}", all_output(&out));
    let text = all_output(&out);
    assert!(text.contains("Active Directory detected"), "{text}");
    assert!(
        text.contains("may write lockoutTime and pwdLastSet"),
        "{text}"
    );
    let config = directory_config(&first, "corp.example.test");
    assert_eq!(config["dialect"], "active-directory");
    assert_eq!(config["base_dn"], ad.base_dn());
    let first_dn = config["service_account"]["bind_dn"]
        .as_str()
        .unwrap()
        .to_string();
    let first_pw = directory_secret(&first, "corp.example.test");
    assert!(!text.contains(&first_pw) && !text.contains(ad.admin_password()));

    // The delegation is real: the account resets a password and unlocks a user, but may not
    // change anything else.
    let mut svc = Connection::bind_new(&target(ad.ldaps_url(), ad.ca_cert()), &first_dn, &first_pw)
        .await
        .expect("service account binds");
    let carol = format!("CN=Carol Clark,OU=Staff,{}", ad.base_dn());
    let new_pw: Vec<u8> = "\"Res3t-by-Agent!\""
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect();
    svc.modify(
        &carol,
        vec![Mod::Replace(
            b"unicodePwd".to_vec(),
            HashSet::from([new_pw]),
        )],
        Vec::new(),
        &[],
        "reset",
    )
    .await
    .expect("Reset Password is delegated");
    svc.modify(
        &carol,
        vec![
            Mod::Replace(b"lockoutTime".to_vec(), HashSet::from([b"0".to_vec()])),
            Mod::Replace(b"pwdLastSet".to_vec(), HashSet::from([b"-1".to_vec()])),
        ],
        Vec::new(),
        &[],
        "unlock",
    )
    .await
    .expect("lockoutTime and pwdLastSet are delegated");
    let denied = svc
        .modify(
            &carol,
            vec![Mod::Replace(
                b"description".to_vec(),
                HashSet::from([b"x".to_vec()]),
            )],
            Vec::new(),
            &[],
            "change the description",
        )
        .await
        .expect_err("only the delegated rights");
    assert!(denied.to_string().contains("missing rights"), "{denied}");
    assert!(
        can_bind_and_read(
            ad.ldaps_url(),
            ad.ca_cert(),
            &carol,
            "Res3t-by-Agent!",
            ad.base_dn()
        )
        .await
    );

    // The running agent checks the new directory without a restart.
    let (status, message) = wait_for("the AD directory check", WAIT, || async {
        check_status(&api, &first.agent_id(), "directory:corp.example.test").await
    })
    .await;
    assert_eq!(status, "pass", "{message}");

    // A second agent: its own account in the same group; the first keeps working.
    let out = add_directory(&second, &args, ad.admin_password());
    assert!(out.status.success(), "{}", all_output(&out));
    assert!(
        all_output(&out).contains("already holds its rights"),
        "{}",
        all_output(&out)
    );
    let second_dn = directory_config(&second, "corp.example.test")["service_account"]["bind_dn"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(second_dn, first_dn);
    let second_pw = directory_secret(&second, "corp.example.test");
    assert!(
        can_bind_and_read(
            ad.ldaps_url(),
            ad.ca_cert(),
            &first_dn,
            &first_pw,
            ad.base_dn()
        )
        .await
    );
    assert!(
        can_bind_and_read(
            ad.ldaps_url(),
            ad.ca_cert(),
            &second_dn,
            &second_pw,
            ad.base_dn()
        )
        .await
    );
    for agent in [&first, &second] {
        wait_domains(&api, &agent.agent_id(), &["corp.example.test"]).await;
    }

    // Re-running on the first agent keeps its account and password.
    let out = add_directory(&first, &args, ad.admin_password());
    assert!(out.status.success(), "{}", all_output(&out));
    assert_eq!(directory_secret(&first, "corp.example.test"), first_pw);

    // custom: an existing AD user by UPN.
    let pw_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(pw_file.path(), ad.user_password()).unwrap();
    let mut custom: Vec<&str> = args.to_vec();
    custom[1] = "custom.corp.example.test";
    custom[9] = "custom";
    custom.extend([
        "--base-dn",
        ad.base_dn(),
        "--service-account-name",
        "bob@corp.example.test",
        "--service-account-password-file",
        pw_file.path().to_str().unwrap(),
    ]);
    let out = add_directory(&second, &custom, ad.admin_password());
    assert!(out.status.success(), "{}", all_output(&out));
    assert_eq!(
        api_domains(&api, &second.agent_id()).await,
        vec!["corp.example.test", "custom.corp.example.test"]
    );

    // remove-directory with an administrator deletes this agent's account; the first keeps working.
    let out = remove_directory_as_admin(
        &second,
        "corp.example.test",
        ad.admin(),
        ad.admin_password(),
    );
    assert!(out.status.success(), "{}", all_output(&out));
    assert!(
        stdout(&out).contains("deleted the service account"),
        "{}",
        all_output(&out)
    );
    assert!(
        !can_bind_and_read(
            ad.ldaps_url(),
            ad.ca_cert(),
            &second_dn,
            &second_pw,
            ad.base_dn()
        )
        .await
    );
    assert!(
        can_bind_and_read(
            ad.ldaps_url(),
            ad.ca_cert(),
            &first_dn,
            &first_pw,
            ad.base_dn()
        )
        .await
    );
    assert_eq!(
        api_domains(&api, &second.agent_id()).await,
        vec!["custom.corp.example.test"]
    );
    // The custom account is the administrator's: removing leaves it alone.
    let out = remove_directory_as_admin(
        &second,
        "custom.corp.example.test",
        ad.admin(),
        ad.admin_password(),
    );
    assert!(out.status.success(), "{}", all_output(&out));
    assert!(
        stdout(&out).contains("left as it is"),
        "{}",
        all_output(&out)
    );
    assert!(
        can_bind_and_read(
            ad.ldaps_url(),
            ad.ca_cert(),
            "bob@corp.example.test",
            ad.user_password(),
            ad.base_dn()
        )
        .await
    );
}

#[tokio::test]
async fn active_directory_failures_each_name_their_cause() {
    let ad = samba();
    let console = Console::start(&[]);
    let agent = Agent::install(&console, &console.enrollment_token(1), "dc09");
    let attempt = |args: &[&str], pw: &str| {
        let out = add_directory(&agent, args, pw);
        assert!(!out.status.success(), "must fail: {}", all_output(&out));
        stderr(&out)
    };
    let good = [
        "--domain",
        "corp.example.test",
        "--ldap-url",
        ad.ldaps_url(),
        "--ca-cert",
        ad.ca_cert(),
        "--admin",
        ad.admin(),
        "--service-account",
        "create",
    ];

    let wrong = attempt(&good, "Wr0ng-Passw0rd!");
    assert!(
        wrong.contains("LDAP result 49") && wrong.contains(ad.admin()),
        "{wrong}"
    );

    let mut no_ca = good.to_vec();
    no_ca.drain(4..6);
    let untrusted = attempt(&no_ca, ad.admin_password());
    assert!(
        untrusted.contains("not trusted") && untrusted.contains("--ca-cert"),
        "{untrusted}"
    );

    // Simple binds on plain LDAP are refused by AD's default policy.
    let mut plain = good.to_vec();
    plain[3] = ad.ldap_url();
    plain.drain(4..6);
    let tls = attempt(&plain, ad.admin_password());
    assert!(
        tls.contains("ldaps://") && tls.contains("encrypted"),
        "{tls}"
    );

    // A plain user cannot create the service account.
    let mut user = good.to_vec();
    user[7] = "alice@corp.example.test";
    let rights = attempt(&user, ad.user_password());
    assert!(rights.contains("missing rights"), "{rights}");

    assert!(!agent
        .dir
        .path()
        .join("directories/corp.example.test.json")
        .exists());
}

#[tokio::test]
async fn install_connects_a_directory_in_the_same_step() {
    let slapd = Slapd::start(true);
    let console = Console::start(&[]);
    let api = Api::new(&console, ADMIN);
    let dir = tempfile::tempdir().unwrap();
    let token = console.enrollment_token(1);
    let out = run(
        &[
            "agent",
            "install",
            "--console",
            &console.url,
            "--enrollment-token",
            &token,
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--machine-name",
            "ldap07",
            "--domain",
            "example.test",
            "--ldap-url",
            slapd.ldaps_url(),
            "--ca-cert",
            slapd.ca_cert(),
            "--admin",
            slapd.admin_dn(),
            "--admin-password-file",
            "-",
            "--service-account",
            "create",
        ],
        Some(slapd.admin_password()),
    );
    assert!(out.status.success(), "{}", all_output(&out));
    let agent = Agent {
        dir,
        child: None,
        name: "ldap07".into(),
    };
    assert_eq!(
        directory_config(&agent, "example.test")["dialect"],
        "openldap"
    );
    assert_eq!(
        api_domains(&api, &agent.agent_id()).await,
        vec!["example.test"]
    );

    // Half the directory flags is a usage error, before anything is enrolled.
    let other = tempfile::tempdir().unwrap();
    let out = install_into(
        other.path(),
        &console.url,
        &console.enrollment_token(1),
        "ldap08",
        &["--domain", "example.test"],
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--ldap-url"), "{}", stderr(&out));
    assert!(!other.path().join("agent.json").exists());
}

#[tokio::test]
async fn starttls_upgrades_plain_ldap_urls_on_both_servers() {
    let slapd = Slapd::start(true);
    let ad = samba();
    let console = Console::start(&[]);
    let api = Api::new(&console, ADMIN);
    let agent = Agent::install(&console, &console.enrollment_token(1), "tls01");

    // OpenLDAP: create over ldap:// + StartTLS; the agent keeps using StartTLS for its checks.
    let out = add_directory(
        &agent,
        &[
            "--domain",
            "example.test",
            "--ldap-url",
            slapd.ldap_url(),
            "--starttls",
            "--ca-cert",
            slapd.ca_cert(),
            "--admin",
            slapd.admin_dn(),
            "--service-account",
            "create",
        ],
        slapd.admin_password(),
    );
    assert!(out.status.success(), "{}", all_output(&out));
    assert_eq!(directory_config(&agent, "example.test")["starttls"], true);

    // AD refuses simple binds on plain LDAP (see the failures test); with StartTLS they work.
    let pw_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(pw_file.path(), ad.user_password()).unwrap();
    let out = add_directory(
        &agent,
        &[
            "--domain",
            "corp.example.test",
            "--ldap-url",
            ad.ldap_url(),
            "--starttls",
            "--ca-cert",
            ad.ca_cert(),
            "--admin",
            ad.admin(),
            "--service-account",
            "custom",
            "--service-account-name",
            // Alice's password is never changed by the other tests (Carol's is reset).
            "alice@corp.example.test",
            "--service-account-password-file",
            pw_file.path().to_str().unwrap(),
        ],
        ad.admin_password(),
    );
    assert!(out.status.success(), "{}", all_output(&out));
    assert_eq!(
        api_domains(&api, &agent.agent_id()).await,
        vec!["corp.example.test", "example.test"]
    );

    // StartTLS on an ldaps:// URL is a usage mistake, named as such.
    let out = add_directory(
        &agent,
        &[
            "--domain",
            "other.example.test",
            "--ldap-url",
            slapd.ldaps_url(),
            "--starttls",
            "--admin",
            slapd.admin_dn(),
            "--service-account",
            "create",
        ],
        slapd.admin_password(),
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("StartTLS is for ldap://"),
        "{}",
        stderr(&out)
    );
}
