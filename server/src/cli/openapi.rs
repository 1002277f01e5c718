//! `flywheel openapi`: print the OpenAPI document (the committed copy is `openapi/openapi.json`).

use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct OpenapiArgs {
    /// Write to this file instead of standard output.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn run(args: OpenapiArgs) -> anyhow::Result<()> {
    let json = crate::api::openapi_json();
    match args.out {
        Some(path) => std::fs::write(path, json)?,
        None => println!("{json}"),
    }
    Ok(())
}
