//! `hybridsync writeback get|set`: the on-premises integration options over the console's JSON
//! API, for scripts (the counterpart of `Set-AADCloudSyncPasswordWritebackConfiguration -Enable`,
//! plus the `get` the original lacks).

use crate::cli::{WritebackClientArgs, WritebackCommand};
use anyhow::{bail, Context, Result};
use std::io::Read;

const PATH: &str = "/api/v1/password-reset/on-premises-integration";

struct Client {
    http: reqwest::Client,
    url: String,
    token: String,
}

impl Client {
    fn new(args: &WritebackClientArgs) -> Result<Self> {
        let token = if args.api_token_stdin {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("cannot read the API token from standard input")?;
            text.trim().to_owned()
        } else {
            std::env::var("HYBRIDSYNC_API_TOKEN").unwrap_or_default()
        };
        if token.is_empty() {
            bail!("no API token: pass --api-token-stdin (and the token on standard input) or set HYBRIDSYNC_API_TOKEN (`hybridsync admin create-api-token` makes one)");
        }
        let mut builder = reqwest::Client::builder().timeout(std::time::Duration::from_secs(30));
        if let Some(ca) = &args.console_ca_cert {
            builder = builder.tls_built_in_root_certs(false);
            for cert in crate::agent::read_console_ca(ca)? {
                builder = builder.add_root_certificate(cert);
            }
        }
        let url = args.console.trim().trim_end_matches('/').to_owned();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            bail!(
                "invalid --console {:?}: expected http://HOST:PORT or https://HOST",
                args.console
            );
        }
        Ok(Client {
            http: builder.build().context("cannot create the HTTP client")?,
            url,
            token,
        })
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<serde_json::Value> {
        let response = request
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| format!("cannot reach the console at {}", self.url))?;
        let status = response.status();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        if !status.is_success() {
            let message = body["error"]["message"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| format!("HTTP {status}"));
            bail!("the console refused: {message}");
        }
        Ok(body)
    }
}

fn print(body: &serde_json::Value) {
    let flag = |name: &str| body[name].as_bool().unwrap_or(false);
    println!(
        "Enable password write back for synced users: {}",
        flag("enable_writeback")
    );
    println!(
        "Write back passwords with cloud sync: {}",
        flag("use_cloud_sync")
    );
    println!(
        "Allow users to unlock accounts without resetting their password: {}",
        flag("allow_unlock_without_reset")
    );
    println!(
        "State: {} {}",
        if flag("ok") { "OK" } else { "ATTENTION" },
        body["message"].as_str().unwrap_or_default()
    );
}

pub async fn run(command: WritebackCommand) -> Result<()> {
    match command {
        WritebackCommand::Get(args) => {
            let client = Client::new(&args)?;
            let body = client
                .send(client.http.get(format!("{}{PATH}", client.url)))
                .await?;
            print(&body);
        }
        WritebackCommand::Set(args) => {
            let client = Client::new(&args.client)?;
            let current = client
                .send(client.http.get(format!("{}{PATH}", client.url)))
                .await?;
            let allow = args.allow_unlock_without_reset.unwrap_or_else(|| {
                current["allow_unlock_without_reset"]
                    .as_bool()
                    .unwrap_or(false)
            });
            let body = serde_json::json!({
                "enable_writeback": args.enable,
                "use_cloud_sync": args.enable,
                "allow_unlock_without_reset": allow,
            });
            let saved = client
                .send(client.http.put(format!("{}{PATH}", client.url)).json(&body))
                .await?;
            print(&saved);
        }
    }
    Ok(())
}
