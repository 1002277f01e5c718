//! Command-line interface: one file per subcommand. Every flag has a `FLYWHEEL_*` environment
//! fallback (or `DATABASE_URL`), shown by `--help`.

pub mod args;
pub mod bench;
pub mod eval_prompts;
pub mod export;
pub mod import;
pub mod judge;
pub mod keys;
pub mod migrate;
pub mod model;
pub mod openapi;
pub mod serve;
pub mod train;
pub mod worker;

use clap::{Parser, Subcommand};

pub use args::{redact, StoreArgs};

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
    Serve(Box<serve::ServeArgs>),
    /// Apply the database migrations and exit.
    Migrate(migrate::MigrateArgs),
    /// Print the OpenAPI document.
    Openapi(openapi::OpenapiArgs),
    /// Obtain, convert and generate model files.
    Model(model::ModelArgs),
    /// Create, list and revoke API keys.
    Keys(keys::KeysArgs),
    /// Train an adapter on stored judgments and register it as a candidate.
    Train(train::TrainArgs),
    /// Write judged groups as JSONL (dpo, kto, sppo, raw or grpo) with a manifest.
    Export(export::ExportArgs),
    /// Read a preference JSONL (TRL's `dpo` format) into judged groups.
    Import(import::ImportArgs),
    /// Run the trainer worker alone: train candidates (or, under `--promotion always`, active
    /// adapters) as new judgments arrive.
    Worker(worker::WorkerArgs),
    /// Held-out evaluation prompts (duels are drawn from them; training never reads them).
    EvalPrompts(eval_prompts::EvalPromptsArgs),
    /// Run an automatic judge: take pairs from a server's annotation queue and post judgments
    /// (an LLM judge, a self-reference judge, or any program).
    Judge(Box<judge::JudgeArgs>),
    /// Measure the bare mistral.rs engine or one DPO step (the benchmarks' baselines).
    Bench(bench::BenchArgs),
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// The README's configuration table promises an environment fallback for every `serve` flag.
    #[test]
    fn every_serve_flag_has_an_environment_fallback() {
        let cli = super::Cli::command();
        let serve = cli.find_subcommand("serve").expect("a serve subcommand");
        let missing: Vec<_> = serve
            .get_arguments()
            .filter(|a| !a.is_positional() && a.get_env().is_none())
            .filter_map(|a| a.get_long())
            .filter(|long| !matches!(*long, "help" | "version"))
            .collect();
        assert!(missing.is_empty(), "serve flags without env: {missing:?}");
    }
}
