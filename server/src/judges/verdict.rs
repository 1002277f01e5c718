//! What a judge returns for one pair: a [`Verdict`] to post, or an [`Abstention`] that posts
//! nothing and is counted under its [`Reason`].

use flywheel_store::{JudgmentSource, Outcome};
use serde_json::Value;

/// A judge's answer on a pair, `a` being the response shown on the left.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub outcome: Outcome,
    /// P(left beats right), 0–1, when the judge gives one.
    pub strength: Option<f64>,
    pub rationale: Option<String>,
    /// Free-form JSON posted as the judgment's `criteria`.
    pub criteria: Option<Value>,
    /// `model` for the LLM judges, `rule` for programs.
    pub source: JudgmentSource,
}

/// Why a judge posted nothing on a pair: the label of `abstentions` in the summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The two orders (left first, right first) gave different verdicts: position bias.
    Disagreement,
    /// An LLM's reply held no verdict line that reads unambiguously.
    ParseFailure,
    /// A program or a judge request ran past `--judge-timeout-secs`.
    Timeout,
    /// A program exited with a nonzero status, was killed, or could not start.
    Crash,
    /// A program's stdout broke the JSON contract, or a judge endpoint's reply was no chat
    /// completion (or an empty answer).
    BadOutput,
    /// A request to the judge endpoint failed, or the server refused the judgment.
    HttpError,
}

impl Reason {
    pub const ALL: [Reason; 6] = [
        Reason::Disagreement,
        Reason::ParseFailure,
        Reason::Timeout,
        Reason::Crash,
        Reason::BadOutput,
        Reason::HttpError,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Disagreement => "disagreement",
            Reason::ParseFailure => "parse_failure",
            Reason::Timeout => "timeout",
            Reason::Crash => "crash",
            Reason::BadOutput => "bad_output",
            Reason::HttpError => "http_error",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A pair the judge will not rule on, with what happened (for the log).
#[derive(Debug, Clone, PartialEq)]
pub struct Abstention {
    pub reason: Reason,
    pub detail: String,
}

impl Abstention {
    pub fn new(reason: Reason, detail: impl Into<String>) -> Self {
        Abstention {
            reason,
            detail: detail.into(),
        }
    }
}

/// At most `max` characters of `text`, with `…` when cut: for rationales and log lines.
pub fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_string(),
    }
}
