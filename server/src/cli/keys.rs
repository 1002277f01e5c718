//! `flywheel keys`: create, list and revoke API keys. A key's secret is printed once, at
//! creation; the store keeps only its sha256.

use anyhow::Context;
use clap::{Args, Subcommand};
use flywheel_store::{hash_api_key, Scope};
use uuid::Uuid;

use super::StoreArgs;
use crate::api::auth::generate_secret;

#[derive(Debug, Args)]
pub struct KeysArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(subcommand)]
    pub command: KeysCommand,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key and print its secret (once; only its hash is stored).
    Create {
        /// A name to recognize the key by (who or what uses it).
        #[arg(long)]
        name: String,
        /// `inference`, `annotate` or `admin` (repeat, or separate with commas). `admin` may
        /// call every route.
        #[arg(long = "scope", required = true, value_delimiter = ',')]
        scopes: Vec<String>,
    },
    /// List every key (never the secrets), revoked ones included.
    List,
    /// Revoke a key by id: it stops working at once.
    Revoke { id: Uuid },
}

pub async fn run(args: KeysArgs) -> anyhow::Result<()> {
    let store = args.store.open().await?;
    match args.command {
        KeysCommand::Create { name, scopes } => {
            let scopes = scopes
                .iter()
                .map(|s| s.trim().parse::<Scope>())
                .collect::<Result<Vec<_>, _>>()?;
            let secret = generate_secret();
            let key = store
                .create_api_key(&name, &scopes, &hash_api_key(&secret))
                .await
                .context("cannot create the key")?;
            eprintln!(
                "created key {} ({}) with scopes {}; it is shown only now:",
                key.id,
                key.name,
                scope_names(&key.scopes)
            );
            println!("{secret}");
        }
        KeysCommand::List => {
            println!("id\tname\tscopes\tcreated\tlast used\trevoked");
            for key in store.list_api_keys().await? {
                let time = |t: Option<chrono::DateTime<chrono::Utc>>| {
                    t.map_or("-".to_string(), |t| t.to_rfc3339())
                };
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}",
                    key.id,
                    key.name,
                    scope_names(&key.scopes),
                    key.created_at.to_rfc3339(),
                    time(key.last_used_at),
                    time(key.revoked_at)
                );
            }
        }
        KeysCommand::Revoke { id } => {
            let key = store.revoke_api_key(id).await?;
            eprintln!("revoked key {} ({})", key.id, key.name);
        }
    }
    Ok(())
}

fn scope_names(scopes: &[Scope]) -> String {
    scopes
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(",")
}
