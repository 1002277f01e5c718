//! `flywheel import`: a preference JSONL in TRL's `dpo` format (see [`crate::import`]) becomes
//! judged groups in the store, one group of two responses and one judgment per record.
//!
//! Texts are tokenized by the model the server serves, exactly as a served request is (chat
//! template and all), so the trainer learns from imported pairs as from its own samples. The whole
//! file is read and tokenized before anything is written: a bad record stops the import with its
//! line number and nothing stored (unless `--skip-invalid`). Records are keyed by their content,
//! so importing a file again adds only what is new.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use chrono::Utc;
use clap::Args;
use flywheel_store::{
    Endpoint, GroupKind, IdempotencyKey, ImportedGroup, JudgmentSource, NewGroup, NewJudgment,
    NewResponse, Outcome, Store,
};
use serde_json::{json, Value};
use uuid::Uuid;

use super::StoreArgs;
use crate::engine::{Generation, Prompt};
use crate::import::{parse_record, PreferenceRecord};
use crate::model_source;

#[derive(Debug, Clone, Args)]
pub struct ImportArgs {
    /// The JSONL file, one pair per line (`-` reads standard input).
    pub file: PathBuf,
    /// The model whose tokenizer and chat template turn texts into token ids: the one the server
    /// serves (the same values as `serve --model`). Default: SmolLM2-135M-Instruct.
    #[arg(long, env = "FLYWHEEL_MODEL")]
    pub model: Option<String>,
    /// The model name the groups are recorded under (default: derived from --model).
    #[arg(long, env = "FLYWHEEL_SERVED_MODEL_NAME")]
    pub served_model_name: Option<String>,
    /// Recorded as the annotator of every imported judgment.
    #[arg(long, default_value = "import")]
    pub annotator: String,
    /// Who made the judgments: `human`, `model` (an LLM judge, as in UltraFeedback) or `rule`.
    #[arg(long, default_value = "human")]
    pub source: JudgmentSource,
    /// The adapter version the responses are attributed to; `flywheel train --parent` of that
    /// version learns from them without `--all-versions`.
    #[arg(long, default_value_t = 0)]
    pub adapter_version: i64,
    /// Skip records that cannot be imported (each is reported) instead of refusing the file.
    #[arg(long)]
    pub skip_invalid: bool,
    /// Records stored per transaction.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub batch: u32,
    #[command(flatten)]
    pub store: StoreArgs,
}

/// What an import did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ImportReport {
    /// Non-blank lines read.
    pub records: usize,
    pub imported: usize,
    /// Records stored by an earlier import.
    pub already_present: usize,
    /// Records skipped under `--skip-invalid`.
    pub invalid: usize,
}

impl std::fmt::Display for ImportReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} records read: {} imported, {} already present, {} invalid (skipped)",
            self.records, self.imported, self.already_present, self.invalid
        )
    }
}

/// The most bad records an error lists before saying how many more there are.
const LISTED_ERRORS: usize = 10;

pub async fn run(args: ImportArgs) -> anyhow::Result<()> {
    let store = args.store.open().await?;
    let (source, name) = model_source::resolve(args.model.as_deref()).await?;
    let name = args.served_model_name.clone().unwrap_or(name);
    let generation = Arc::new(
        Generation::load(&source, None, name, 0, None)
            .await
            .context("cannot load the model to tokenize with")?,
    );
    let report = import_file(&store, &generation, &args).await?;
    println!("{report}");
    Ok(())
}

/// Imports `args.file` into `store`, tokenizing with `generation`.
///
/// # Errors
/// An unreadable file, an unknown adapter version, bad records (without `--skip-invalid`; nothing
/// is stored then), or a store error (the batches before it stay stored; running again resumes).
pub async fn import_file(
    store: &Store,
    generation: &Arc<Generation>,
    args: &ImportArgs,
) -> anyhow::Result<ImportReport> {
    store
        .get_adapter(args.adapter_version)
        .await
        .with_context(|| {
            format!(
                "`--adapter-version {}` is not a known adapter",
                args.adapter_version
            )
        })?;
    let lines = read_lines(&args.file)?;
    let mut report = ImportReport::default();
    let mut groups = Vec::new();
    let mut errors = Vec::new();
    for (number, line) in lines {
        report.records += 1;
        let group = match parse_record(&line) {
            Ok(record) => imported_group(generation, args, &record, number).await,
            Err(e) => Err(e),
        };
        match group {
            Ok(group) => groups.push(group),
            Err(e) => errors.push(format!("line {number}: {e}")),
        }
    }
    if !errors.is_empty() {
        if !args.skip_invalid {
            bail!(
                "{} of {} records cannot be imported; nothing was stored (fix them, or pass \
                 --skip-invalid):\n{}",
                errors.len(),
                report.records,
                listed(&errors)
            );
        }
        eprintln!(
            "skipping {} invalid records:\n{}",
            errors.len(),
            listed(&errors)
        );
        report.invalid = errors.len();
    }
    for chunk in groups.chunks(args.batch as usize) {
        report.imported += store.import_groups(chunk).await?;
        eprintln!("{} of {} records stored", report.imported, groups.len());
    }
    report.already_present = groups.len() - report.imported;
    Ok(report)
}

pub(super) fn listed(errors: &[String]) -> String {
    let mut text = errors[..errors.len().min(LISTED_ERRORS)].join("\n");
    if errors.len() > LISTED_ERRORS {
        text.push_str(&format!("\n… and {} more", errors.len() - LISTED_ERRORS));
    }
    text
}

/// The non-blank lines of `path` (or standard input for `-`), numbered from 1.
pub(super) fn read_lines(path: &std::path::Path) -> anyhow::Result<Vec<(usize, String)>> {
    let reader: Box<dyn BufRead> = if path == std::path::Path::new("-") {
        Box::new(BufReader::new(std::io::stdin()))
    } else {
        let file =
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        Box::new(BufReader::new(file))
    };
    let mut lines = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line =
            line.with_context(|| format!("cannot read line {} of {}", i + 1, path.display()))?;
        if !line.trim().is_empty() {
            lines.push((i + 1, line));
        }
    }
    Ok(lines)
}

/// The record as a group of two responses (chosen first) and the judgment that the first wins.
async fn imported_group(
    generation: &Arc<Generation>,
    args: &ImportArgs,
    record: &PreferenceRecord,
    line: usize,
) -> Result<ImportedGroup, String> {
    // The checks a served request's prompt gets at admission.
    let prompt_ids = generation
        .prompt_ids(&record.prompt)
        .await
        .map_err(|e| format!("`prompt`: {e}"))?;
    let chosen = answer_ids(generation, &record.chosen, "chosen")?;
    let rejected = answer_ids(generation, &record.rejected, "rejected")?;
    let longest = prompt_ids.len() + chosen.len().max(rejected.len());
    if longest > generation.max_context {
        return Err(format!(
            "prompt and answer take {longest} tokens, over the model's context of {}",
            generation.max_context
        ));
    }
    let (endpoint, prompt) = match &record.prompt {
        Prompt::Chat(messages) => (Endpoint::Chat, json!(messages)),
        Prompt::Text(text) => (Endpoint::Completion, Value::String(text.clone())),
    };
    let response = |index: i32, text: &str, token_ids: Vec<u32>| NewResponse {
        id: Uuid::now_v7(),
        index,
        prompt: None,
        text: text.to_string(),
        completion_tokens: token_ids.len() as i64,
        token_ids,
        logprobs: vec![],
        finish_reason: "stop".into(),
        latency_ms: 0,
        adapter_version: None,
        variant: None,
        prompt_token_ids: None,
    };
    let group = NewGroup {
        id: Uuid::now_v7(),
        kind: GroupKind::Samples,
        endpoint,
        model: generation.name.clone(),
        adapter_version: args.adapter_version,
        prompt,
        params: json!({ "import": {
            "file": args.file.display().to_string(),
            "line": line,
            "metadata": record.metadata,
        }}),
        seed: None,
        user: None,
        prompt_tokens: prompt_ids.len() as i64,
        prompt_token_ids: Some(prompt_ids),
        latency_ms: 0,
        created_at: Utc::now(),
        responses: vec![
            response(0, &record.chosen, chosen),
            response(1, &record.rejected, rejected),
        ],
    };
    let judgment = NewJudgment {
        group_id: group.id,
        response_a: group.responses[0].id,
        response_b: group.responses[1].id,
        outcome: Outcome::A,
        strength: None,
        annotator: args.annotator.clone(),
        source: args.source,
        rationale: None,
        criteria: None,
        idempotency_key: Some(
            IdempotencyKey::parse(record.key.clone()).map_err(|e| e.to_string())?,
        ),
    };
    Ok(ImportedGroup {
        group,
        judgments: vec![judgment],
    })
}

/// An answer's token ids as the server would have sampled them: the text, then end-of-sequence.
fn answer_ids(generation: &Generation, text: &str, field: &str) -> Result<Vec<u32>, String> {
    let encoding = generation
        .tokenizer()
        .encode(text, false)
        .map_err(|e| format!("cannot tokenize `{field}`: {e}"))?;
    let mut ids = encoding.get_ids().to_vec();
    ids.push(generation.eos()[0]);
    Ok(ids)
}
