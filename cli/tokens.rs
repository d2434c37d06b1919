//! `reef token`: mint a tenant's token (shown once), list tokens without their
//! secrets, revoke one.

use crate::output::{self, Format};
use crate::verbs::connect;
use crate::CliResult;
use clap::Subcommand;
use reef_api::identity::{Identity, TenantRole, TokenInfo, TokenRequest};

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Mint a bearer token for a tenant; its secret is printed once.
    Create {
        #[arg(long)]
        tenant: String,
        /// admin (its namespace and tokens), edit (its objects) or view (read only).
        #[arg(long)]
        role: TenantRole,
        /// How long the token works (e.g. 24h); without it, until revoked.
        #[arg(long)]
        ttl: Option<reef_api::quantity::Timeout>,
        #[arg(short, long, default_value = "table")]
        output: Format,
    },
    /// List the tokens you may manage (never their secrets).
    List {
        #[arg(short, long, default_value = "table")]
        output: Format,
    },
    /// Revoke a token by its id (from `reef token list`).
    Revoke { id: String },
}

fn who(identity: &Identity) -> String {
    match identity {
        Identity::Tenant { tenant, role } => format!("tenant/{tenant} {role}"),
        Identity::Node { node } => format!("node/{node}"),
        Identity::Admin => "cluster-admin".into(),
        Identity::Member => "member".into(),
        Identity::Join => "join".into(),
    }
}

fn expires(info: &TokenInfo) -> String {
    match info.expires_at {
        Some(at) => humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(at),
        )
        .to_string(),
        None => "never".into(),
    }
}

pub async fn run(command: TokenCommand) -> CliResult {
    let (client, _) = connect(None)?;
    match command {
        TokenCommand::Create {
            tenant,
            role,
            ttl,
            output,
        } => {
            let issued = client
                .create_token(&TokenRequest { tenant, role, ttl })
                .await?;
            if output == Format::Json {
                output::print_json(&issued);
            } else {
                println!("{}", issued.token);
                eprintln!(
                    "token {} for {} (expires: {}); the secret above is not shown again",
                    issued.info.id,
                    who(&issued.info.identity),
                    expires(&issued.info)
                );
            }
        }
        TokenCommand::List { output } => {
            let tokens = client.list_tokens().await?;
            if output == Format::Json {
                output::print_json(&tokens);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = tokens
                .iter()
                .map(|t| {
                    vec![
                        t.id.clone(),
                        who(&t.identity),
                        t.created_at.clone(),
                        expires(t),
                    ]
                })
                .collect();
            output::print_rows(&["ID", "FOR", "CREATED", "EXPIRES"], &rows);
        }
        TokenCommand::Revoke { id } => {
            let revoked = client.revoke_token(&id).await?;
            println!("token {} ({}) revoked", revoked.id, who(&revoked.identity));
        }
    }
    Ok(())
}
