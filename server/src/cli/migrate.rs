//! `flywheel migrate`: apply the migrations of the configured store and exit.

use clap::Args;

use super::StoreArgs;

#[derive(Debug, Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    pub store: StoreArgs,
}

pub async fn run(args: MigrateArgs) -> anyhow::Result<()> {
    let store = args.store.open().await?;
    tracing::info!(backend = %store.backend(), "migrations applied");
    Ok(())
}
