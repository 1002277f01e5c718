//! `flywheel eval-prompts import FILE`: a JSONL of chat prompts becomes held-out evaluation
//! prompts, which duels are drawn from and training never reads (see [`crate::eval_prompts`]).
//!
//! Each line is `{"messages": [...]}`, checked as the chat API checks messages (the last from the
//! user), or `{"prompt": "text"}`, one user message; a line's own `label` is kept, other fields are
//! ignored. The whole file is checked before anything is written: a bad line stops the import with
//! its number and field, and nothing is stored. A prompt is known by its messages, so importing a
//! file again adds only the new ones.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail};
use clap::{Args, Subcommand};
use flywheel_store::{NewEvalPrompt, Store, StoredMessage, MAX_EVAL_PROMPT_BATCH};
use serde_json::Value;

use super::import::{listed, read_lines};
use super::StoreArgs;
use crate::eval_prompts::{parse_label, parse_messages};

#[derive(Debug, Args)]
pub struct EvalPromptsArgs {
    #[command(subcommand)]
    pub command: EvalPromptsCommand,
}

#[derive(Debug, Subcommand)]
pub enum EvalPromptsCommand {
    /// Import a JSONL file of chat prompts, one `{"messages": [...]}` or `{"prompt": "text"}` a
    /// line; prints how many were new.
    Import(ImportEvalPromptsArgs),
}

#[derive(Debug, Clone, Args)]
pub struct ImportEvalPromptsArgs {
    /// The JSONL file, one prompt per line (`-` reads standard input).
    pub file: PathBuf,
    /// The label of every prompt whose line has none (a subset's name: `math`, `safety`).
    #[arg(long)]
    pub label: Option<String>,
    #[command(flatten)]
    pub store: StoreArgs,
}

/// What an import did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EvalImportReport {
    /// Non-blank lines read.
    pub prompts: usize,
    /// Prompts not stored before.
    pub created: usize,
}

impl std::fmt::Display for EvalImportReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} eval prompts read: {} new, {} already present",
            self.prompts,
            self.created,
            self.prompts - self.created
        )
    }
}

pub async fn run(args: EvalPromptsArgs) -> anyhow::Result<()> {
    match args.command {
        EvalPromptsCommand::Import(args) => {
            let store = args.store.open().await?;
            let report = import_file(&store, &args).await?;
            println!("{report}");
        }
    }
    Ok(())
}

/// Imports `args.file` into `store`.
///
/// # Errors
/// A bad `--label`, an unreadable file, bad lines (nothing is stored then), or a store error (the
/// batches of 1000 before it stay stored; running again resumes).
pub async fn import_file(
    store: &Store,
    args: &ImportEvalPromptsArgs,
) -> anyhow::Result<EvalImportReport> {
    let label = args
        .label
        .as_ref()
        .map(|label| parse_label(&Value::String(label.clone()), "--label"))
        .transpose()
        .map_err(|e| anyhow!(e.message))?;
    let source = if args.file == Path::new("-") {
        "stdin".to_string()
    } else {
        args.file.display().to_string()
    };
    let lines = read_lines(&args.file)?;
    let mut prompts = Vec::with_capacity(lines.len());
    let mut errors = Vec::new();
    for (number, line) in &lines {
        match parse_line(line, label.as_deref(), &source) {
            Ok(prompt) => prompts.push(prompt),
            Err(e) => errors.push(format!("line {number}: {e}")),
        }
    }
    if !errors.is_empty() {
        bail!(
            "{} of {} lines cannot be imported; nothing was stored:\n{}",
            errors.len(),
            lines.len(),
            listed(&errors)
        );
    }
    let mut report = EvalImportReport {
        prompts: prompts.len(),
        created: 0,
    };
    for chunk in prompts.chunks(MAX_EVAL_PROMPT_BATCH) {
        let stored = store.insert_eval_prompts(chunk).await?;
        report.created += stored.iter().filter(|(_, new)| *new).count();
    }
    Ok(report)
}

/// One JSONL line as a prompt; the error names the field at fault.
fn parse_line(line: &str, label: Option<&str>, source: &str) -> Result<NewEvalPrompt, String> {
    let value: Value = serde_json::from_str(line).map_err(|e| format!("not a JSON object: {e}"))?;
    if let Some(field) = flywheel_store::text::first_nul(&value) {
        return Err(format!(
            "`{field}` contains a NUL character (\\u0000), which text fields cannot hold"
        ));
    }
    let Value::Object(object) = value else {
        return Err("not a JSON object".into());
    };
    let messages = match (object.get("messages"), object.get("prompt")) {
        (Some(_), Some(_)) => return Err("give `messages` or `prompt`, not both".into()),
        (Some(messages), None) => parse_messages(messages, "messages").map_err(|e| e.message)?,
        (None, Some(Value::String(text))) if text.trim().is_empty() => {
            return Err("`prompt` is empty".into())
        }
        (None, Some(Value::String(text))) => vec![StoredMessage {
            role: "user".into(),
            content: text.clone(),
        }],
        (None, Some(messages @ Value::Array(_))) => {
            parse_messages(messages, "prompt").map_err(|e| e.message)?
        }
        (None, Some(_)) => return Err("`prompt` must be a string or a list of messages".into()),
        (None, None) => return Err("`messages` is missing (or give `prompt`, a string)".into()),
    };
    let label = match object.get("label") {
        None | Some(Value::Null) => label.map(str::to_string),
        Some(own) => Some(parse_label(own, "label").map_err(|e| e.message)?),
    };
    Ok(NewEvalPrompt {
        messages,
        label,
        source: Some(source.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(value: Value, label: Option<&str>) -> Result<NewEvalPrompt, String> {
        parse_line(&value.to_string(), label, "prompts.jsonl")
    }

    #[test]
    fn a_text_prompt_is_one_user_message() {
        let prompt = parse(json!({"prompt": "Name a prime.", "id": 7}), None).unwrap();
        assert_eq!(
            prompt.messages,
            vec![StoredMessage {
                role: "user".into(),
                content: "Name a prime.".into()
            }]
        );
        assert_eq!(prompt.source.as_deref(), Some("prompts.jsonl"));
    }

    #[test]
    fn a_line_keeps_its_own_label_and_the_flag_labels_the_rest() {
        let own = json!({"messages": [{"role": "user", "content": "x"}], "label": "math"});
        let bare = json!({"messages": [{"role": "user", "content": "x"}]});
        assert_eq!(
            parse(own, Some("all")).unwrap().label.as_deref(),
            Some("math")
        );
        assert_eq!(
            parse(bare, Some("all")).unwrap().label.as_deref(),
            Some("all")
        );
    }

    #[test]
    fn bad_lines_name_the_field() {
        let cases = [
            (json!([1]), "not a JSON object"),
            (json!({"text": "x"}), "`messages` is missing"),
            (json!({"prompt": " "}), "`prompt` is empty"),
            (json!({"prompt": 3}), "`prompt` must be"),
            (
                json!({"messages": [{"role": "user", "content": "x"}], "prompt": "y"}),
                "not both",
            ),
            (
                json!({"messages": [{"role": "wizard", "content": "x"}]}),
                "`messages[0].role` must be one of",
            ),
            (
                json!({"prompt": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}),
                "`prompt[1].role` must be `user`",
            ),
            (json!({"prompt": "a\u{0}"}), "`prompt` contains a NUL"),
            (
                json!({"prompt": "x", "label": ""}),
                "`label` must be 1 to 255",
            ),
        ];
        for (value, expected) in cases {
            let error = parse(value.clone(), None).unwrap_err();
            assert!(error.contains(expected), "{value}: {error}");
        }
        assert!(parse_line("{oops", None, "f")
            .unwrap_err()
            .contains("not a JSON object"));
    }
}
