//! The `flywheel` binary: parse the command line, set up logging, run one subcommand.

use clap::Parser;
use flywheel_server::cli::{self, Cli, Command};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    flywheel_server::telemetry::init();
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => cli::serve::run(*args).await,
            Command::Migrate(args) => cli::migrate::run(args).await,
            Command::Openapi(args) => cli::openapi::run(args),
            Command::Model(args) => cli::model::run(args).await,
            Command::Keys(args) => cli::keys::run(args).await,
            Command::Train(args) => cli::train::run(args).await,
            Command::Export(args) => cli::export::run(args).await,
            Command::Import(args) => cli::import::run(args).await,
            Command::Worker(args) => cli::worker::run(args).await,
            Command::EvalPrompts(args) => cli::eval_prompts::run(args).await,
            Command::Judge(args) => cli::judge::run(*args).await,
            Command::Bench(args) => cli::bench::run(args).await,
        }
    })
}
