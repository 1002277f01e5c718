//! Command-line interface: one file per subcommand. Every flag has a `FLYWHEEL_*` environment
//! fallback (or `DATABASE_URL`), shown by `--help`.

pub mod export;
pub mod import;
pub mod keys;
pub mod migrate;
pub mod model;
pub mod openapi;
pub mod serve;
pub mod train;
pub mod worker;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "flywheel",
    version,
    about = "Serve an LLM, log every sample, learn from preferences"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the policy model behind an OpenAI-compatible API.
    Serve(serve::ServeArgs),
    /// Apply the database migrations and exit.
    Migrate(migrate::MigrateArgs),
    /// Print the OpenAPI document.
    Openapi(openapi::OpenapiArgs),
    /// Obtain, convert and generate model files.
    Model(model::ModelArgs),
    /// Create, list and revoke API keys.
    Keys(keys::KeysArgs),
    /// Train an adapter on stored judgments and register it as `ready`.
    Train(train::TrainArgs),
    /// Write judged groups as JSONL (dpo, kto, sppo or raw) with a manifest.
    Export(export::ExportArgs),
    /// Read a preference JSONL (TRL's `dpo` format) into judged groups.
    Import(import::ImportArgs),
    /// Run the trainer worker alone: train and activate adapters as new judgments arrive.
    Worker(worker::WorkerArgs),
}

/// Where the store lives; shared by every subcommand that needs it.
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// `postgres://user@host/db`, or `sqlite://path/to/file.db`. Default: an embedded SQLite file.
    #[arg(long, env = "DATABASE_URL", default_value = flywheel_store::DEFAULT_SQLITE_URL)]
    pub database_url: String,
    /// Most database connections open at once. Raise it towards the number of concurrent writers
    /// (for example judgment ingestion at high concurrency on Postgres).
    #[arg(long, env = "FLYWHEEL_DB_MAX_CONNECTIONS", default_value_t = 10)]
    pub db_max_connections: u32,
}

impl StoreArgs {
    pub async fn open(&self) -> anyhow::Result<flywheel_store::Store> {
        use anyhow::Context;
        let pool = flywheel_store::PoolConfig {
            max_connections: self.db_max_connections,
        };
        let store = flywheel_store::Store::connect_with(&self.database_url, &pool)
            .await
            .with_context(|| format!("cannot open the store at {}", redact(&self.database_url)))?;
        store.migrate().await.context("cannot apply migrations")?;
        Ok(store)
    }
}

/// A database URL without its password, for logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let credentials = &url[scheme_end + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{}:***{}", &url[..scheme_end + 3], user, &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn the_pool_size_flag_reaches_the_store_and_zero_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let args = |n| super::StoreArgs {
            database_url: format!("sqlite://{}", dir.path().join("f.db").display()),
            db_max_connections: n,
        };
        assert!(args(0).open().await.is_err());
        assert!(args(4).open().await.is_ok());
    }

    #[test]
    fn passwords_never_reach_the_logs() {
        assert_eq!(
            super::redact("postgres://u:secret@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(super::redact("sqlite://x.db"), "sqlite://x.db");
    }
}
