//! Real directories for the directory tests: a throw-away OpenLDAP per test (any free port) and
//! one Samba AD DC per test binary (its ports are fixed), both from `tests/testbeds/`, bound to
//! loopback and stopped by PID.

#![allow(dead_code)]

use crate::support::*;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

fn testbed(script: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/testbeds")
        .join(script)
}

/// Runs a testbed's `start`, returning its instance dir and the exports of `$DIR/env`.
fn start_testbed(
    script: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> (PathBuf, HashMap<String, String>) {
    let output = Command::new("bash")
        .arg(testbed(script))
        .arg("start")
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run testbed");
    assert!(
        output.status.success(),
        "{script} start failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let dir = PathBuf::from(stdout.lines().last().expect("instance dir").trim());
    let env = std::fs::read_to_string(dir.join("env"))
        .expect("env file")
        .lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('\'').to_string()))
        .collect();
    (dir, env)
}

fn stop_testbed(script: &str, dir: &Path) {
    let _ = Command::new("bash")
        .arg(testbed(script))
        .arg("stop")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// A throw-away OpenLDAP with LDAPS (its own CA), ppolicy and memberOf.
pub struct Slapd {
    pub dir: PathBuf,
    pub env: HashMap<String, String>,
}

impl Slapd {
    /// `agent_acl`: whether the database ACL holds the rules the README gives for the agents.
    pub fn start(agent_acl: bool) -> Slapd {
        Self::start_with(agent_acl, &[])
    }

    /// With more testbed knobs, e.g. `("SLAPD_MIN_LENGTH", "8")`.
    pub fn start_with(agent_acl: bool, extra: &[(&'static str, &'static str)]) -> Slapd {
        // Distinctive passwords, so "it is not in the console's database" means something.
        let mut env = vec![
            ("SLAPD_ADMIN_PW", "slapd-Adm1n-pw-7Qx"),
            ("SLAPD_CONSOLE_PW", "slapd-C0nsole-pw-9Zk"),
        ];
        if !agent_acl {
            env.push(("SLAPD_NO_AGENT_ACL", "1"));
        }
        env.extend_from_slice(extra);
        // Free ports picked here rather than by the script (which would need python3).
        let ports = [free_port().to_string(), free_port().to_string()];
        let (dir, env) = start_testbed("slapd.sh", &[&ports[0], &ports[1]], &env);
        Slapd { dir, env }
    }
    pub fn var(&self, name: &str) -> &str {
        self.env
            .get(name)
            .unwrap_or_else(|| panic!("{name} not in slapd env"))
    }
    pub fn ldaps_url(&self) -> &str {
        self.var("LDAPS_URI")
    }
    pub fn ldap_url(&self) -> &str {
        self.var("LDAP_URI")
    }
    pub fn ca_cert(&self) -> &str {
        self.var("LDAP_CA_CERT")
    }
    pub fn base_dn(&self) -> &str {
        self.var("LDAP_BASE_DN")
    }
    pub fn admin_dn(&self) -> &str {
        self.var("LDAP_ADMIN_DN")
    }
    pub fn admin_password(&self) -> &str {
        self.var("LDAP_ADMIN_PASSWORD")
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        stop_testbed("slapd.sh", &self.dir);
    }
}

/// The test binary's Samba AD DC on 127.0.0.1.
pub struct SambaAd {
    pub dir: PathBuf,
    pub env: HashMap<String, String>,
}

impl SambaAd {
    pub fn var(&self, name: &str) -> &str {
        self.env
            .get(name)
            .unwrap_or_else(|| panic!("{name} not in samba env"))
    }
    pub fn ldaps_url(&self) -> &str {
        self.var("AD_LDAPS_URI")
    }
    pub fn ldap_url(&self) -> &str {
        self.var("AD_LDAP_URI")
    }
    pub fn ca_cert(&self) -> &str {
        self.var("AD_CA_CERT")
    }
    pub fn base_dn(&self) -> &str {
        self.var("AD_BASE_DN")
    }
    pub fn admin(&self) -> &str {
        self.var("AD_ADMIN_UPN")
    }
    pub fn admin_password(&self) -> &str {
        self.var("AD_ADMIN_PASSWORD")
    }
    pub fn user_password(&self) -> &str {
        self.var("AD_USER_PASSWORD")
    }
}

/// Started on first use and shared by every test of this binary. A static is never dropped, so a
/// detached watcher stops the DC (by PID, via the script) once this test process has exited,
/// however it exits.
pub fn samba() -> &'static SambaAd {
    static SAMBA: OnceLock<SambaAd> = OnceLock::new();
    SAMBA.get_or_init(|| {
        let ip = free_loopback_for_ldap();
        let (dir, env) = start_testbed("samba-ad.sh", &[], &[("AD_IP", &ip)]);
        let watcher = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; bash '{script}' stop '{dir}'",
            pid = std::process::id(),
            script = testbed("samba-ad.sh").display(),
            dir = dir.display()
        );
        // `setsid -f` forks the watcher off and returns at once, so there is nothing to reap.
        let forked = Command::new("setsid")
            .args(["-f", "bash", "-c", &watcher])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("spawn the samba watcher");
        assert!(forked.success(), "setsid failed");
        SambaAd { dir, env }
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// A loopback address whose LDAP ports are free: another test run (or a developer's own DC) may
/// hold 127.0.0.1's, and Samba's ports cannot be changed.
fn free_loopback_for_ldap() -> String {
    (2..=254)
        .map(|n| format!("127.0.0.{n}"))
        .find(|ip| {
            [389, 636, 3268, 3269]
                .iter()
                .all(|port| std::net::TcpListener::bind((ip.as_str(), *port)).is_ok())
        })
        .expect("no loopback address with free LDAP ports")
}

/// `hybridsync agent add-directory --data-dir DIR ARGS`, the administrator's password on stdin.
pub fn add_directory(agent: &Agent, args: &[&str], admin_password: &str) -> Output {
    let data_dir = agent.data_dir_str();
    let mut all = vec!["agent", "add-directory", "--data-dir", &data_dir];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--admin-password-file", "-"]);
    run(&all, Some(admin_password))
}

pub fn remove_directory(agent: &Agent, domain: &str) -> Output {
    run(
        &[
            "agent",
            "remove-directory",
            "--data-dir",
            &agent.data_dir_str(),
            "--domain",
            domain,
        ],
        None,
    )
}

/// The agent's stored config for a domain.
pub fn directory_config(agent: &Agent, domain: &str) -> serde_json::Value {
    let path = agent
        .dir
        .path()
        .join("directories")
        .join(format!("{domain}.json"));
    serde_json::from_str(&std::fs::read_to_string(&path).expect("directory config")).unwrap()
}

/// The service account password the agent keeps for a domain.
pub fn directory_secret(agent: &Agent, domain: &str) -> String {
    std::fs::read_to_string(
        agent
            .dir
            .path()
            .join("directories")
            .join(format!("{domain}.secret")),
    )
    .expect("directory secret")
}

/// Both output streams, for messages and for "the password is not in here" checks.
pub fn all_output(o: &Output) -> String {
    format!("{}{}", stdout(o), stderr(o))
}

/// `agent remove-directory … --admin ADMIN --admin-password-file -`: also deletes the account.
pub fn remove_directory_as_admin(
    agent: &Agent,
    domain: &str,
    admin: &str,
    password: &str,
) -> Output {
    run(
        &[
            "agent",
            "remove-directory",
            "--data-dir",
            &agent.data_dir_str(),
            "--domain",
            domain,
            "--admin",
            admin,
            "--admin-password-file",
            "-",
        ],
        Some(password),
    )
}

/// A directory target for `url` trusting the testbed's CA.
pub fn target(url: &str, ca: &str) -> hybridsync::directory::Target {
    hybridsync::directory::Target::new(url, Some(Path::new(ca))).expect("target")
}

/// Whether `dn` binds with `password` (the proof that a writeback reached the directory).
pub async fn binds(url: &str, ca: &str, dn: &str, password: &str) -> bool {
    match hybridsync::directory::conn::Connection::bind_new(&target(url, ca), dn, password).await {
        Ok(conn) => {
            conn.close().await;
            true
        }
        Err(_) => false,
    }
}

/// `add-directory --service-account create`; panics with the output if it fails.
pub fn connect_created(
    agent: &Agent,
    domain: &str,
    url: &str,
    ca: &str,
    admin: &str,
    password: &str,
) {
    let out = add_directory(
        agent,
        &[
            "--domain",
            domain,
            "--ldap-url",
            url,
            "--ca-cert",
            ca,
            "--admin",
            admin,
            "--service-account",
            "create",
        ],
        password,
    );
    assert!(out.status.success(), "{}", all_output(&out));
}

/// Runs a configuration operation that starts a cycle and waits until a new cycle succeeded.
pub async fn run_cycle(api: &Api, id: &str, op: &str) {
    let (_, c) = api.get(&format!("/configurations/{id}")).await;
    let before = c["last_cycle"]["id"].clone();
    let (status, body) = api
        .send(
            reqwest::Method::POST,
            &format!("/configurations/{id}/{op}"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    wait_for("a cycle", std::time::Duration::from_secs(40), || async {
        let (_, c) = api.get(&format!("/configurations/{id}")).await;
        let last = &c["last_cycle"];
        (!last.is_null() && last["id"] != before && last["state"] == "succeeded").then_some(())
    })
    .await;
}
