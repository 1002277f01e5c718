//! Exporting judged groups as JSONL for other trainers, shared by `flywheel export` and
//! `GET /v1/exports`.
//!
//! Formats:
//! - `dpo`: TRL's preference format, one line per judgment with a clear winner (`a` or `b`):
//!   `prompt` (message list), `chosen` / `rejected` (one assistant message each).
//! - `kto`: TRL's unpaired format, one line per response that won (`label: true`) or lost
//!   (`label: false`) a judgment: `prompt`, `completion` (one assistant message), `label`.
//! - `sppo`: one line per group: `prompt`, the responses' texts and their win-rates
//!   ([`estimate_win_rates`]).
//! - `raw`: one line per group with everything and its provenance: the group, its responses (token
//!   ids, behaviour log-probs, adapter version), its judgments and rewards, and a variant group's
//!   metadata.
//! - `grpo`: one line per *rewarded* group, ready for a GRPO trainer: each response with its own
//!   prompt (a variant's, or the group's) and prompt token ids, its tokens, its behaviour log-probs
//!   (natural log, at the group's `temperature`), its adapter version and its rewards with their
//!   mean.
//!
//! Every export has a [`Manifest`]. Building lines is pure; [`load`] only reads the store.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use flywheel_judge::estimate_win_rates;
use flywheel_store::{
    GroupKind, GroupWithResponses, Judgment, Outcome, Reward, Store, TrainingDataFilter,
    TrainingSelect, VariantGroup,
};
use serde::Serialize;
use serde_json::{json, Value};

/// The export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Dpo,
    Kto,
    Sppo,
    Raw,
    Grpo,
}

impl Format {
    pub const ALL: [Format; 5] = [
        Format::Dpo,
        Format::Kto,
        Format::Sppo,
        Format::Raw,
        Format::Grpo,
    ];

    /// The format's name as flags and query strings spell it.
    pub fn name(self) -> &'static str {
        match self {
            Format::Dpo => "dpo",
            Format::Kto => "kto",
            Format::Sppo => "sppo",
            Format::Raw => "raw",
            Format::Grpo => "grpo",
        }
    }

    /// Parses a format name; `None` for an unknown one.
    pub fn parse(name: &str) -> Option<Format> {
        Format::ALL.into_iter().find(|f| f.name() == name)
    }
}

/// One judged group with everything an export needs.
#[derive(Debug, Clone)]
pub struct ExportGroup {
    pub group: GroupWithResponses,
    /// Oldest first.
    pub judgments: Vec<Judgment>,
    /// Oldest first.
    pub rewards: Vec<Reward>,
    /// A `variants` group's canonical prompt and settings.
    pub variant_group: Option<VariantGroup>,
    /// The token ids the group's prompt was fed as (a variant's response carries its own).
    pub prompt_token_ids: Option<Vec<u32>>,
}

/// What an export holds and how it was selected.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Manifest {
    pub format: &'static str,
    /// The served model names of the exported groups (the base model the adapters sit on).
    pub base_models: Vec<String>,
    /// The adapter versions whose groups the export holds.
    pub adapter_versions: Vec<i64>,
    pub filters: Filters,
    pub groups: usize,
    pub judgments: usize,
    /// JSONL lines written.
    pub records: usize,
    pub created_at: DateTime<Utc>,
}

/// The filters an export was made with.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Filters {
    pub since: Option<DateTime<Utc>>,
    pub adapter: Option<i64>,
}

/// The groups the filters select, oldest first: rewarded groups for `grpo`, judged groups for the
/// other formats.
///
/// # Errors
/// A store error.
pub async fn load(
    store: &Store,
    format: Format,
    filters: &Filters,
) -> anyhow::Result<Vec<ExportGroup>> {
    let filter = TrainingDataFilter {
        adapter_version: filters.adapter,
        since: filters.since,
        until: None,
        select: match format {
            Format::Grpo => TrainingSelect::Rewarded,
            _ => TrainingSelect::Judged,
        },
    };
    let mut out = Vec::new();
    for selected in store.training_groups(&filter).await? {
        let group = store.get_group(selected.id).await?;
        let variant_group = match selected.kind {
            GroupKind::Variants => Some(store.get_variant_group(selected.id).await?),
            _ => None,
        };
        out.push(ExportGroup {
            group,
            judgments: selected.judgments,
            rewards: selected.rewards,
            variant_group,
            prompt_token_ids: selected.prompt_token_ids,
        });
    }
    Ok(out)
}

/// The export's JSONL lines (without newlines) and its manifest.
pub fn export(format: Format, groups: &[ExportGroup], filters: Filters) -> (Vec<String>, Manifest) {
    let records: Vec<Value> = groups
        .iter()
        .flat_map(|g| match format {
            Format::Dpo => dpo(g),
            Format::Kto => kto(g),
            Format::Sppo => sppo(g).into_iter().collect(),
            Format::Raw => vec![raw(g)],
            Format::Grpo => vec![grpo(g)],
        })
        .collect();
    let lines: Vec<String> = records.iter().map(Value::to_string).collect();
    let base_models: BTreeSet<String> =
        groups.iter().map(|g| g.group.group.model.clone()).collect();
    let adapter_versions: BTreeSet<i64> = groups
        .iter()
        .flat_map(|g| {
            std::iter::once(g.group.group.adapter_version)
                .chain(g.group.responses.iter().map(|r| r.adapter_version))
        })
        .collect();
    let manifest = Manifest {
        format: format.name(),
        base_models: base_models.into_iter().collect(),
        adapter_versions: adapter_versions.into_iter().collect(),
        filters,
        groups: groups.len(),
        judgments: groups.iter().map(|g| g.judgments.len()).sum(),
        records: lines.len(),
        created_at: Utc::now(),
    };
    (lines, manifest)
}

/// The group's prompt as a message list: chat prompts are one already, a completion prompt (a
/// string) becomes one user message.
fn prompt_messages(g: &ExportGroup) -> Value {
    match &g.group.group.prompt {
        Value::String(text) => json!([{ "role": "user", "content": text }]),
        other => other.clone(),
    }
}

fn assistant(text: &str) -> Value {
    json!([{ "role": "assistant", "content": text }])
}

/// The text of the group's response `id`.
fn text_of(g: &ExportGroup, id: uuid::Uuid) -> Option<&str> {
    g.group
        .responses
        .iter()
        .find(|r| r.id == id)
        .map(|r| r.text.as_str())
}

/// `(winner, loser)` response ids of a judgment with a clear outcome.
fn winner_loser(j: &Judgment) -> Option<(uuid::Uuid, uuid::Uuid)> {
    match j.outcome {
        Outcome::A => Some((j.response_a, j.response_b)),
        Outcome::B => Some((j.response_b, j.response_a)),
        Outcome::Tie | Outcome::BothBad => None,
    }
}

fn dpo(g: &ExportGroup) -> Vec<Value> {
    let prompt = prompt_messages(g);
    g.judgments
        .iter()
        .filter_map(|j| {
            let (win, lose) = winner_loser(j)?;
            Some(json!({
                "prompt": prompt,
                "chosen": assistant(text_of(g, win)?),
                "rejected": assistant(text_of(g, lose)?),
                "group_id": g.group.group.id,
                "judgment_id": j.id,
            }))
        })
        .collect()
}

fn kto(g: &ExportGroup) -> Vec<Value> {
    let prompt = prompt_messages(g);
    g.judgments
        .iter()
        .filter_map(winner_loser)
        .flat_map(|(win, lose)| [(win, true), (lose, false)])
        .filter_map(|(id, label)| {
            Some(json!({
                "prompt": prompt,
                "completion": assistant(text_of(g, id)?),
                "label": label,
                "group_id": g.group.group.id,
                "response_id": id,
            }))
        })
        .collect()
}

fn sppo(g: &ExportGroup) -> Option<Value> {
    let responses = &g.group.responses;
    let comparisons = crate::judging::comparisons(responses, &g.judgments);
    let (win_rates, _) = estimate_win_rates(responses.len(), &comparisons).ok()?;
    Some(json!({
        "prompt": prompt_messages(g),
        "responses": responses.iter().map(|r| r.text.as_str()).collect::<Vec<_>>(),
        "win_rates": win_rates,
        "group_id": g.group.group.id,
    }))
}

fn raw(g: &ExportGroup) -> Value {
    json!({
        "group": g.group.group,
        "responses": g.group.responses,
        "judgments": g.judgments,
        "rewards": g.rewards,
        "variant_group": g.variant_group,
    })
}

fn grpo(g: &ExportGroup) -> Value {
    let group = &g.group.group;
    let responses: Vec<Value> = g
        .group
        .responses
        .iter()
        .map(|r| {
            let rewards: Vec<&Reward> =
                g.rewards.iter().filter(|w| w.response_id == r.id).collect();
            let mean = (!rewards.is_empty())
                .then(|| rewards.iter().map(|w| w.value).sum::<f64>() / rewards.len() as f64);
            json!({
                "response_id": r.id,
                "variant": r.variant,
                "prompt": r.prompt.clone().unwrap_or_else(|| prompt_messages(g)),
                "prompt_token_ids": r.prompt_token_ids.as_ref().or(g.prompt_token_ids.as_ref()),
                "completion": r.text,
                "completion_token_ids": r.token_ids,
                "behaviour_logprobs": r.logprobs,
                "adapter_version": r.adapter_version,
                "reward": mean,
                "rewards": rewards.iter().map(|w| json!({
                    "value": w.value, "source": w.source, "annotator": w.annotator,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "group_id": group.id,
        "kind": group.kind,
        "model": group.model,
        "temperature": group.params["sampling"]["temperature"],
        "canonical": g.variant_group.as_ref().map(|v| &v.canonical),
        "responses": responses,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_names_round_trip_and_unknown_ones_are_rejected() {
        for f in Format::ALL {
            assert_eq!(Format::parse(f.name()), Some(f));
        }
        assert_eq!(Format::parse("csv"), None);
    }
}
