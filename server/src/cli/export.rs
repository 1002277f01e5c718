//! `flywheel export`: write the judged groups of the store as JSONL in a trainer's format, with a
//! manifest beside it (`FILE.manifest.json`). See [`crate::export`] for the formats.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::Args;
use flywheel_store::Store;

use super::StoreArgs;
use crate::export::{export, load, Filters, Format, Manifest};

#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    /// The output format.
    #[arg(long, value_enum)]
    pub format: Format,
    /// Only groups created at or after this time (RFC 3339, e.g. 2025-01-31T00:00:00Z).
    #[arg(long)]
    pub since: Option<DateTime<Utc>>,
    /// Only groups served by this adapter version.
    #[arg(long)]
    pub adapter: Option<i64>,
    /// The JSONL file to write; the manifest goes to `<out>.manifest.json`.
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub store: StoreArgs,
}

/// The manifest's path beside the export file `out`.
pub fn manifest_path(out: &std::path::Path) -> PathBuf {
    let mut name = out.as_os_str().to_owned();
    name.push(".manifest.json");
    PathBuf::from(name)
}

pub async fn run(args: ExportArgs) -> anyhow::Result<()> {
    let store = args.store.open().await?;
    let manifest = write_export(&store, &args).await?;
    tracing::info!(records = manifest.records, out = %args.out.display(), "export written");
    Ok(())
}

/// Writes the export `args` asks for from `store`: the JSONL file and its manifest beside it.
///
/// # Errors
/// A store error, or a file that cannot be written.
pub async fn write_export(store: &Store, args: &ExportArgs) -> anyhow::Result<Manifest> {
    let filters = Filters {
        since: args.since,
        adapter: args.adapter,
    };
    let groups = load(store, args.format, &filters).await?;
    let (lines, manifest) = export(args.format, &groups, filters);
    let mut file = std::io::BufWriter::new(
        std::fs::File::create(&args.out)
            .with_context(|| format!("cannot create {}", args.out.display()))?,
    );
    for line in &lines {
        writeln!(file, "{line}")?;
    }
    file.flush()?;
    let manifest_out = manifest_path(&args.out);
    std::fs::write(&manifest_out, serde_json::to_vec_pretty(&manifest)?)
        .with_context(|| format!("cannot write {}", manifest_out.display()))?;
    Ok(manifest)
}
