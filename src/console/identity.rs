//! Builds the console's [`Identity`] from `serve`'s flags (discovering the OpenID Connect provider)
//! and keeps the accounts of administrators who sign in through it.

use crate::auth::device::DeviceFlows;
use crate::auth::identity::Identity;
use crate::auth::oidc::{parse_role_map, Oidc, OidcSettings, SignedIn};
use crate::cli::IdentityArgs;
use crate::console::accounts::validate_username;
use crate::db::{self, audit::NewAuditEntry};
use anyhow::{bail, Context};
use serde_json::json;
use sqlx::SqlitePool;

/// The redirect URI registered at the provider, relative to the console's public URL.
pub const OIDC_CALLBACK_PATH: &str = "/auth/oidc/callback";

/// Reads the flags; with `--oidc-issuer`, reads the client secret file and discovers the provider.
pub async fn build(args: &IdentityArgs, public_url: &str) -> anyhow::Result<Identity> {
    let secure_cookies = public_url.starts_with("https://");
    let device = DeviceFlows::new(args.device_code_lifetime, args.device_poll_interval);
    let Some(issuer) = args.oidc_issuer.clone() else {
        return Ok(Identity::new(None, true, secure_cookies, device));
    };
    let Some(client_id) = args.oidc_client_id.clone() else {
        bail!("--oidc-issuer needs --oidc-client-id (the console's client id at the provider)");
    };
    let Some(secret_file) = &args.oidc_client_secret_file else {
        bail!("--oidc-issuer needs --oidc-client-secret-file (a file holding the client secret)");
    };
    let client_secret = std::fs::read_to_string(secret_file)
        .with_context(|| {
            format!(
                "cannot read the client secret file {}",
                secret_file.display()
            )
        })?
        .trim()
        .to_string();
    if client_secret.is_empty() {
        bail!("the client secret file {} is empty", secret_file.display());
    }
    let role_map =
        parse_role_map(&args.oidc_role_map).map_err(|e| anyhow::anyhow!("--oidc-role-map: {e}"))?;
    if role_map.is_empty() {
        bail!("--oidc-issuer needs --oidc-role-map (e.g. admins=global-administrator): without it nobody could sign in");
    }
    let scopes: Vec<String> = args
        .oidc_scopes
        .split_whitespace()
        .map(str::to_string)
        .collect();
    if !scopes.iter().any(|s| s == "openid") {
        bail!("--oidc-scopes must include openid");
    }
    let settings = OidcSettings {
        issuer: issuer.clone(),
        client_id,
        client_secret,
        scopes,
        role_claim: args.oidc_role_claim.clone(),
        role_map,
        redirect_url: format!("{public_url}{OIDC_CALLBACK_PATH}"),
    };
    let oidc = Oidc::discover(settings)
        .await
        .with_context(|| format!("cannot set up OpenID Connect sign-in with {issuer}"))?;
    tracing::info!(issuer = %oidc.issuer(), "OpenID Connect sign-in enabled");
    Ok(Identity::new(
        Some(oidc),
        !args.disable_local_sign_in,
        secure_cookies,
        device,
    ))
}

/// The console account of a provider user: created at first sign-in, its role updated from the
/// provider at every sign-in (the provider is the source of truth). Audited when either happens.
pub async fn account_for(db: &SqlitePool, issuer: &str, who: &SignedIn) -> anyhow::Result<i64> {
    let now = db::now_ms();
    let mut tx = db.begin().await?;
    let role = who.role.as_str();
    let (account_id, before) = match db::oidc_accounts::get(&mut tx, issuer, &who.subject).await? {
        Some((id, old)) if old == role => return Ok(id),
        Some((id, old)) => {
            db::oidc_accounts::set_role(&mut tx, id, role).await?;
            (id, Some(json!({ "role": old })))
        }
        None => {
            let id = insert_with_free_name(&mut tx, issuer, who, now).await?;
            (id, None)
        }
    };
    db::audit::insert(
        &mut tx,
        &NewAuditEntry {
            at: now,
            actor: "oidc",
            action: if before.is_some() {
                "account.role_change"
            } else {
                "account.create"
            },
            target_type: "account",
            target_id: &who.username,
            before,
            after: Some(json!({ "username": who.username, "role": role, "issuer": issuer })),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(account_id)
}

/// Usernames are display names here; when the provider's name is taken (by a local account or a
/// user of another provider) or not a valid console username, a suffix from the subject is used.
async fn insert_with_free_name(
    tx: &mut sqlx::SqliteConnection,
    issuer: &str,
    who: &SignedIn,
    now: i64,
) -> anyhow::Result<i64> {
    let base: String = who
        .username
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, '.' | '-' | '_' | '@'))
        .take(48)
        .collect();
    let base = if base.is_empty() {
        "oidc-user".into()
    } else {
        base
    };
    let suffix = &crate::auth::tokens::hex_digest(&format!("{issuer}\n{}", who.subject))[..8];
    for candidate in [base.clone(), format!("{base}.{suffix}")] {
        if validate_username(&candidate).is_err() {
            continue;
        }
        match db::oidc_accounts::insert(
            tx,
            &candidate,
            who.role.as_str(),
            issuer,
            &who.subject,
            now,
        )
        .await
        {
            Ok(id) => return Ok(id),
            Err(e) if db::accounts::is_unique_violation(&e) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    bail!("no free console username for {:?}", who.username)
}
