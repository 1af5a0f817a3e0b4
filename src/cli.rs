//! Command-line interface: every subcommand of the `hybridsync` binary and its flags.
//!
//! Only parsing lives here; each subcommand hands its typed arguments to the module that owns it
//! (`console` for `serve` and `admin`, `agent` for `agent …`).

use crate::protocol::{Environment, Extension};
use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(
    name = "hybridsync",
    version,
    about = "Self-hosted cloud sync: console and provisioning agent"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the console (web UI, JSON API, agent endpoints).
    Serve(ServeArgs),
    /// Administer the console's data directory from a script (works while the console runs).
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Install, run and inspect a provisioning agent.
    #[command(subcommand)]
    Agent(AgentCommand),
    /// Password writeback through cloud sync, via the console's API (the counterpart of
    /// Set-AADCloudSyncPasswordWritebackConfiguration).
    #[command(subcommand)]
    Writeback(WritebackCommand),
    /// Simulate many agents from one process (benchmarks, demos, tests).
    Simulate(crate::simulate::SimulateArgs),
    /// Serve the minimal axum JSON handler that benchmarks compare the console against.
    #[command(hide = true)]
    BenchBaseline {
        #[arg(long, default_value = "127.0.0.1:8799")]
        listen: SocketAddr,
    },
}

/// Parses durations such as `30s`, `90s`, `1h`, `10d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("invalid duration {s:?}: {e} (examples: 30s, 5m, 1h, 10d)"))
}

/// A duration of at least `min`; shorter ones are refused with `advice` after "too short".
fn parse_at_least(s: &str, min: Duration, advice: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < min {
        return Err(format!("{s:?} is too short: {advice}"));
    }
    Ok(d)
}

/// A retention period: a duration of at least an hour (shorter would empty timelines as they fill).
fn parse_retention(s: &str) -> Result<Duration, String> {
    parse_at_least(
        s,
        Duration::from_secs(3600),
        "keep events at least 1h (the default is 30d)",
    )
}

/// An idle timeout: at least a second (shorter would close connections between a browser's
/// requests for one page).
fn parse_idle_timeout(s: &str) -> Result<Duration, String> {
    parse_at_least(
        s,
        Duration::from_secs(1),
        "give idle connections at least 1s (the default is 5s)",
    )
}

/// A connection limit: at least one.
fn parse_max_connections(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("0 would refuse every client: give at least 1, or leave the flag out to derive the limit from the open-file limit".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{s:?} is not a number of connections (example: 10000)")),
    }
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "HYBRIDSYNC_LISTEN", default_value = "127.0.0.1:8720")]
    pub listen: SocketAddr,
    /// Directory holding the SQLite database and the console key.
    #[arg(long, env = "HYBRIDSYNC_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// The URL administrators and agents use to reach this console (defaults to http://LISTEN).
    #[arg(long, env = "HYBRIDSYNC_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Cloud environment this console serves; agents installed for another one are refused.
    #[arg(long, default_value = "public")]
    pub environment: Environment,
    /// An agent with no heartbeat for this long is unhealthy.
    #[arg(long, default_value = "90s", value_parser = parse_duration)]
    pub unhealthy_after: Duration,
    /// An agent with no contact for this long is inactive.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub inactive_after: Duration,
    /// Inactive agents leave the default Agents list after this long (a filter still shows them).
    #[arg(long, default_value = "10d", value_parser = parse_duration)]
    pub hide_inactive_after: Duration,
    /// Agents' timeline events (status, health and lifecycle changes) are kept this long, at
    /// least an hour; older ones are deleted once an hour.
    #[arg(long, default_value = "30d", value_parser = parse_retention)]
    pub event_retention: Duration,
    /// How often the console polls each active agent's health endpoint. After a long round the
    /// next one waits three times its length, so that polls take at most a quarter of the time.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub poll_interval: Duration,
    /// Timeout of one health poll.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub poll_timeout: Duration,
    /// Polls in flight at once.
    #[arg(long, default_value_t = 256)]
    pub poll_concurrency: usize,
    /// Agents whose poll connection stays open between rounds (each costs about 27 KiB); the
    /// others are polled on a new connection every round.
    #[arg(long, default_value_t = 1000)]
    pub poll_keepalive: usize,
    /// A client connection with no request for this long is closed. Agents close theirs after a
    /// heartbeat themselves; this bounds what any other client holds (15–20 KiB and a file
    /// descriptor per connection).
    #[arg(long, env = "HYBRIDSYNC_IDLE_TIMEOUT", default_value = "5s", value_parser = parse_idle_timeout)]
    pub idle_timeout: Duration,
    /// Client connections served at once (each holds 15–20 KiB). When all are taken, open ones
    /// are asked to close after their current request and new ones wait meanwhile. Default: 2048,
    /// or less if the open-file limit (raised to its hard limit at start) leaves less after the
    /// console's calls to agents and its database.
    #[arg(long, env = "HYBRIDSYNC_MAX_CONNECTIONS", value_parser = parse_max_connections)]
    pub max_connections: Option<usize>,
    #[command(flatten)]
    pub identity: IdentityArgs,
    /// PEM certificate chain (leaf first) to serve HTTPS with; needs --tls-key.
    #[arg(long, env = "HYBRIDSYNC_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "HYBRIDSYNC_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Create a console account; the password is read from standard input.
    CreateUser(CreateUserArgs),
    /// Print a new API bearer token acting with a user's role.
    CreateApiToken(CreateApiTokenArgs),
    /// Print a new enrollment token for `hybridsync agent install`.
    CreateEnrollmentToken(CreateEnrollmentTokenArgs),
}

#[derive(Debug, Args)]
pub struct CreateUserArgs {
    #[arg(long, default_value = "./data")]
    pub data_dir: PathBuf,
    #[arg(long)]
    pub username: String,
    /// global-administrator, hybrid-identity-administrator or global-reader.
    #[arg(long)]
    pub role: String,
    /// Read the password from standard input (required: passwords never go on the command line).
    #[arg(long, required = true)]
    pub password_stdin: bool,
}

#[derive(Debug, Args)]
pub struct CreateApiTokenArgs {
    #[arg(long, default_value = "./data")]
    pub data_dir: PathBuf,
    #[arg(long)]
    pub username: String,
    /// A label to recognise the token by.
    #[arg(long, default_value = "cli")]
    pub name: String,
}

#[derive(Debug, Args)]
pub struct CreateEnrollmentTokenArgs {
    #[arg(long, default_value = "./data")]
    pub data_dir: PathBuf,
    /// Lifetime of the token.
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    pub expires: Duration,
    /// How many agents may enroll with it.
    #[arg(long, default_value_t = 1)]
    pub max_uses: u32,
}

#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Register this machine with a console and write the agent's config and credential.
    Install(AgentInstallArgs),
    /// Run the agent service: heartbeats to the console and the agent's HTTP API.
    Run(AgentRunArgs),
    /// Verify the local agent: its identity and whether the console is reachable and knows it.
    Status(AgentStatusArgs),
    /// Connect a directory (AD or OpenLDAP domain): verify the administrator, set up the service account.
    AddDirectory(AgentAddDirectoryArgs),
    /// Disconnect a directory from this agent (its service account stays in the directory).
    RemoveDirectory(AgentRemoveDirectoryArgs),
}

#[derive(Debug, Clone, Args)]
pub struct AgentAddDirectoryArgs {
    #[arg(long)]
    pub data_dir: PathBuf,
    #[command(flatten)]
    pub directory: DirectoryArgs,
}

#[derive(Debug, Clone, Args)]
pub struct AgentRemoveDirectoryArgs {
    #[arg(long)]
    pub data_dir: PathBuf,
    /// The domain to disconnect, as given to add-directory.
    #[arg(long)]
    pub domain: String,
    /// Also delete the service account this agent created (needs an administrator, used once).
    #[arg(long, requires = "admin_password_file")]
    pub admin: Option<String>,
    /// File holding the administrator's password (`-`: standard input).
    #[arg(long, requires = "admin")]
    pub admin_password_file: Option<PathBuf>,
}

/// The install wizard's Configure Service Account and Connect Active Directory screens as flags.
/// Passwords come from files (`-` is standard input), never from the command line.
#[derive(Debug, Clone, Args)]
pub struct DirectoryArgs {
    /// DNS name of the domain, e.g. corp.example.test.
    #[arg(long)]
    pub domain: String,
    /// ldaps://HOST[:PORT] (or ldap://, where the server allows simple binds without TLS).
    #[arg(long)]
    pub ldap_url: String,
    /// PEM file of the CA that issued the server's certificate (default: the system's CAs).
    #[arg(long)]
    pub ca_cert: Option<PathBuf>,
    /// Upgrade an ldap:// connection with StartTLS.
    #[arg(long)]
    pub starttls: bool,
    /// Base DN (default: the rootDSE's defaultNamingContext or single naming context).
    #[arg(long)]
    pub base_dn: Option<String>,
    /// Administrator bind name (DN, or for AD also user@domain); used once, never stored.
    #[arg(long)]
    pub admin: String,
    /// File holding the administrator's password (`-`: standard input).
    #[arg(long)]
    pub admin_password_file: PathBuf,
    /// create: a dedicated account with delegated rights; custom: an account you made.
    #[arg(long, value_enum)]
    pub service_account: ServiceAccountMode,
    /// create: the account's name (default provAgentSvc); custom: its bind DN or user@domain.
    #[arg(long)]
    pub service_account_name: Option<String>,
    /// custom: file holding the account's password (`-`: standard input).
    #[arg(long)]
    pub service_account_password_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ServiceAccountMode {
    Create,
    Custom,
}

#[derive(Debug, Clone, Args)]
pub struct AgentInstallArgs {
    /// The console's URL, e.g. http://127.0.0.1:8720.
    #[arg(long)]
    pub console: String,
    /// An enrollment token from Cloud sync > Agents > Download on-premises agent. Without one, the
    /// install prints a code that an administrator approves in the console (device code sign-in).
    #[arg(long, env = "HYBRIDSYNC_ENROLLMENT_TOKEN")]
    pub enrollment_token: Option<String>,
    /// PEM CA certificate the console's HTTPS certificate must chain to (a private CA); the agent
    /// keeps a copy and trusts only it for this console.
    #[arg(long, env = "HYBRIDSYNC_CONSOLE_CA_CERT")]
    pub console_ca_cert: Option<PathBuf>,
    /// Where the agent keeps its config and credential.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// The name shown in the console (defaults to the host name).
    #[arg(long)]
    pub machine_name: Option<String>,
    /// Address of the agent's HTTP API; port 0 picks a free port at each start.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    #[arg(long, default_value = "cloud-sync")]
    pub extension: Extension,
    #[arg(long, default_value = "public")]
    pub environment: Environment,
    /// Optionally connect a directory right after enrolling (same flags as `agent add-directory`).
    #[command(flatten)]
    pub directory: InstallDirectoryArgs,
}

/// [`DirectoryArgs`] as optional `agent install` flags: all or none (`--domain` requires the rest).
#[derive(Debug, Clone, Args)]
pub struct InstallDirectoryArgs {
    /// Connect this domain after enrolling (see `agent add-directory --help`).
    #[arg(long, requires_all = ["ldap_url", "admin", "admin_password_file", "service_account"])]
    pub domain: Option<String>,
    #[arg(long, requires = "domain")]
    pub ldap_url: Option<String>,
    #[arg(long, requires = "domain")]
    pub ca_cert: Option<PathBuf>,
    #[arg(long, requires = "domain")]
    pub starttls: bool,
    #[arg(long, requires = "domain")]
    pub base_dn: Option<String>,
    #[arg(long, requires = "domain")]
    pub admin: Option<String>,
    #[arg(long, requires = "domain")]
    pub admin_password_file: Option<PathBuf>,
    #[arg(long, value_enum, requires = "domain")]
    pub service_account: Option<ServiceAccountMode>,
    #[arg(long, requires = "domain")]
    pub service_account_name: Option<String>,
    #[arg(long, requires = "domain")]
    pub service_account_password_file: Option<PathBuf>,
}

impl InstallDirectoryArgs {
    /// The add-directory flags, when `--domain` was given (clap has checked the rest are there).
    pub fn into_directory(self) -> Option<DirectoryArgs> {
        Some(DirectoryArgs {
            domain: self.domain?,
            ldap_url: self.ldap_url?,
            ca_cert: self.ca_cert,
            starttls: self.starttls,
            base_dn: self.base_dn,
            admin: self.admin?,
            admin_password_file: self.admin_password_file?,
            service_account: self.service_account?,
            service_account_name: self.service_account_name,
            service_account_password_file: self.service_account_password_file,
        })
    }
}

#[derive(Debug, Clone, Args)]
pub struct AgentRunArgs {
    #[arg(long)]
    pub data_dir: PathBuf,
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub heartbeat_interval: Duration,
    /// After the product's enforceFIPSPolicy: when true, password hashes stored with MD5-based
    /// schemes ({MD5}, {SMD5}) are not synced, and the provisioning log says why.
    #[arg(long, default_value = "false", action = clap::ArgAction::Set)]
    pub enforce_fips_policy: bool,
}

#[derive(Debug, Clone, Args)]
pub struct AgentStatusArgs {
    #[arg(long)]
    pub data_dir: PathBuf,
}

/// `serve` flags for administrator sign-in: OpenID Connect, local accounts, sessions.
#[derive(Debug, Clone, Args)]
pub struct IdentityArgs {
    /// OpenID Connect issuer URL (enables "Sign in with your organization's account").
    #[arg(long, env = "HYBRIDSYNC_OIDC_ISSUER")]
    pub oidc_issuer: Option<String>,
    /// The console's client id at the provider.
    #[arg(long, env = "HYBRIDSYNC_OIDC_CLIENT_ID", requires = "oidc_issuer")]
    pub oidc_client_id: Option<String>,
    /// File holding the client secret (a file, so the secret is not in the process list).
    #[arg(
        long,
        env = "HYBRIDSYNC_OIDC_CLIENT_SECRET_FILE",
        requires = "oidc_issuer"
    )]
    pub oidc_client_secret_file: Option<PathBuf>,
    /// Scopes requested at sign-in.
    #[arg(
        long,
        env = "HYBRIDSYNC_OIDC_SCOPES",
        default_value = "openid email profile groups"
    )]
    pub oidc_scopes: String,
    /// The ID token claim whose values decide the console role.
    #[arg(long, env = "HYBRIDSYNC_OIDC_ROLE_CLAIM", default_value = "groups")]
    pub oidc_role_claim: String,
    /// Claim values to roles: GROUP=ROLE,… (global-administrator, hybrid-identity-administrator, global-reader).
    #[arg(long, env = "HYBRIDSYNC_OIDC_ROLE_MAP", default_value = "")]
    pub oidc_role_map: String,
    /// Refuse password sign-in: administrators sign in through the OpenID Connect provider only.
    #[arg(
        long,
        env = "HYBRIDSYNC_DISABLE_LOCAL_SIGN_IN",
        requires = "oidc_issuer"
    )]
    pub disable_local_sign_in: bool,
    /// Lifetime of a browser session; after it the administrator signs in again.
    #[arg(long, default_value = "12h", value_parser = parse_duration)]
    pub session_lifetime: Duration,
    /// How long an agent's device code (`agent install` without a token) waits for approval.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub device_code_lifetime: Duration,
    /// The least time between an agent's polls for its device code's approval.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub device_poll_interval: Duration,
}

#[derive(Debug, Subcommand)]
pub enum WritebackCommand {
    /// Show Password reset > On-premises integration: the three options and the state.
    Get(WritebackClientArgs),
    /// Turn password writeback with cloud sync on or off (and, optionally, self-service unlock).
    Set(WritebackSetArgs),
}

#[derive(Debug, Clone, Args)]
pub struct WritebackClientArgs {
    /// The console's URL, e.g. https://console.corp.example.test
    #[arg(long, env = "HYBRIDSYNC_CONSOLE")]
    pub console: String,
    /// Read the API token from standard input (else from HYBRIDSYNC_API_TOKEN).
    #[arg(long)]
    pub api_token_stdin: bool,
    /// PEM CA the console's certificate chains to (a private CA).
    #[arg(long)]
    pub console_ca_cert: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct WritebackSetArgs {
    #[command(flatten)]
    pub client: WritebackClientArgs,
    /// "Enable password write back for synced users" and "Write back passwords with cloud sync".
    #[arg(long, action = clap::ArgAction::Set)]
    pub enable: bool,
    /// "Allow users to unlock accounts without resetting their password" (unchanged if absent).
    #[arg(long, action = clap::ArgAction::Set)]
    pub allow_unlock_without_reset: Option<bool>,
}
