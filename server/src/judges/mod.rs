//! Automatic judges: `flywheel judge` takes pairs from the annotation queue under its own
//! annotator name and posts judgments, with a rationale, through the public HTTP API.
//!
//! The judge is a client like any other: it knows the server only by its URL and an API key, so it
//! runs anywhere (beside the server, on a GPU box next to a judge model, in CI).
//!
//! # Layout
//! - `worker`: the loop (`--judge-concurrency` pairs at once, stops cleanly) around one unit of
//!   work, [`worker::judge_next`]: take a pair, judge it, post the verdict or abstain.
//! - `queue`: the judge's side of the public API: `GET /v1/annotation/next`, `POST /v1/judgments`.
//! - `verdict`: what a judge returns: a [`Verdict`] to post, or an [`Abstention`] with its reason.
//! - `stats`: the counters (judgments posted, abstentions by reason) and the summary line.
//! - `chat`: a client of any OpenAI-compatible chat endpoint, shared by the two LLM judges.
//! - `llm`: the LLM judge: a rubric, both orders, a verdict line parsed or the pair abstained.
//! - `self_reference`: the judge answers the prompt itself, then compares each response with its
//!   own answer (both orders again).
//! - `program`: any program, run per pair with JSON on stdin and JSON on stdout.
//!
//! Agreement of a judge with people needs no code here: the judge is an annotator, so
//! `GET /v1/annotators` measures it on shared pairs like anyone's.

pub mod chat;
pub mod llm;
pub mod program;
pub mod queue;
pub mod self_reference;
pub mod stats;
pub mod verdict;
pub mod worker;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use uuid::Uuid;

pub use stats::{Counts, Stats};
pub use verdict::{Abstention, Reason, Verdict};
pub use worker::{judge_next, run, run_counting, Step, WorkerConfig};

/// One pair handed out by the annotation queue: the body of `GET /v1/annotation/next`.
///
/// `left` and `right` are in the order the queue chose at random; a verdict's `a` is `left`.
#[derive(Debug, Clone, Deserialize)]
pub struct Pair {
    pub assignment_id: Uuid,
    pub group_id: Uuid,
    pub annotator: String,
    /// The group's prompt: chat messages, or completion text.
    pub prompt: Value,
    pub left: Shown,
    pub right: Shown,
}

/// One response of a pair, as the queue shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Shown {
    pub response_id: Uuid,
    pub text: String,
    /// A variant's own prompt (groups of kind `variants`).
    #[serde(default)]
    pub prompt: Option<Value>,
}

impl Pair {
    /// The prompt as chat messages, to ask a model to answer it: stored messages as they are,
    /// completion text as one user message.
    pub fn prompt_messages(&self) -> Vec<Value> {
        match &self.prompt {
            Value::Array(messages) => messages.clone(),
            Value::String(text) => vec![json!({"role": "user", "content": text})],
            other => vec![json!({"role": "user", "content": other.to_string()})],
        }
    }

    /// The prompt as text, to show a judge: a lone user message is its content; a conversation is
    /// one `role: content` paragraph a message.
    pub fn prompt_text(&self) -> String {
        match &self.prompt {
            Value::String(text) => text.clone(),
            Value::Array(messages) => match messages.as_slice() {
                [only] if only["role"] == "user" => content_text(&only["content"]),
                _ => messages
                    .iter()
                    .map(|m| {
                        let role = m["role"].as_str().unwrap_or("user");
                        format!("{role}: {}", content_text(&m["content"]))
                    })
                    .collect::<Vec<_>>()
                    .join("\n\n"),
            },
            other => other.to_string(),
        }
    }
}

/// A message's content as text: a string, or the `text` of each text part, joined.
fn content_text(content: &Value) -> String {
    match content {
        Value::String(text) => text.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join(""),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The judges `flywheel judge --kind` offers. Each returns a [`Verdict`] on `a` = left, or abstains.
pub enum Judge {
    Llm(llm::LlmJudge),
    SelfReference(self_reference::SelfReferenceJudge),
    Program(program::ProgramJudge),
}

impl Judge {
    /// Judges one pair. Never guesses: anything short of a clear verdict is an [`Abstention`].
    pub async fn judge(&self, pair: &Pair) -> Result<Verdict, Abstention> {
        match self {
            Judge::Llm(judge) => judge.judge(pair).await,
            Judge::SelfReference(judge) => judge.judge(pair).await,
            Judge::Program(judge) => judge.judge(pair).await,
        }
    }

    /// The kind's name, as `--kind` spells it.
    pub fn kind(&self) -> &'static str {
        match self {
            Judge::Llm(_) => "llm",
            Judge::SelfReference(_) => "self-reference",
            Judge::Program(_) => "program",
        }
    }
}
