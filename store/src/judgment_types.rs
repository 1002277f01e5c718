//! The judgment values: the parsed nouns ([`Outcome`], [`JudgmentSource`], [`IdempotencyKey`]), what a
//! caller hands to [`insert_judgments`](crate::Store::insert_judgments), and what it reads back.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::hash::{canonical_json, sha256_hex};
use crate::text_enum::text_enum;
use crate::Error;

/// The most judgments one [`insert_judgments`](crate::Store::insert_judgments) call stores.
pub const MAX_JUDGMENT_BATCH: usize = 1000;

/// The longest idempotency key, and the longest annotator name, in characters.
pub const MAX_KEY_CHARS: usize = 255;

text_enum! {
    /// What the judge preferred, `a` and `b` being the judgment's `response_a` and `response_b`.
    pub enum Outcome {
        A => "a",
        B => "b",
        /// Equally good.
        Tie => "tie",
        /// Neither is acceptable.
        BothBad => "both_bad",
    }
}

/// The same verdict in the judge crate's terms: the one mapping, for the server and the trainer.
impl From<Outcome> for flywheel_judge::Outcome {
    fn from(outcome: Outcome) -> Self {
        match outcome {
            Outcome::A => flywheel_judge::Outcome::A,
            Outcome::B => flywheel_judge::Outcome::B,
            Outcome::Tie => flywheel_judge::Outcome::Tie,
            Outcome::BothBad => flywheel_judge::Outcome::BothBad,
        }
    }
}

impl Outcome {
    /// The same verdict with `a` and `b` exchanged: how it reads for the pair in the other order.
    pub fn swapped(self) -> Outcome {
        match self {
            Outcome::A => Outcome::B,
            Outcome::B => Outcome::A,
            other => other,
        }
    }
}

text_enum! {
    /// Who made a judgment.
    pub enum JudgmentSource {
        /// A person.
        Human => "human",
        /// A judge model.
        Model => "model",
        /// A programmatic check (a test suite, a regex, a verifier).
        Rule => "rule",
    }
}

/// A client's name for one judgment: the same key twice is the same judgment.
///
/// Non-empty, at most [`MAX_KEY_CHARS`] characters; only [`IdempotencyKey::parse`] makes one.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(try_from = "String", into = "String")]
#[schema(value_type = String)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// # Errors
    /// [`Error::Invalid`] naming `idempotency_key` if `key` is empty or too long.
    pub fn parse(key: impl Into<String>) -> Result<IdempotencyKey, Error> {
        let key = key.into();
        let chars = key.chars().count();
        if key.trim().is_empty() {
            return Err(Error::Invalid(
                "`idempotency_key` must not be empty".to_string(),
            ));
        }
        if chars > MAX_KEY_CHARS {
            return Err(Error::Invalid(format!(
                "`idempotency_key` must be at most {MAX_KEY_CHARS} characters. Given: {chars}"
            )));
        }
        crate::text::check("idempotency_key", &key)?;
        Ok(IdempotencyKey(key))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for IdempotencyKey {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        IdempotencyKey::parse(s)
    }
}

impl TryFrom<String> for IdempotencyKey {
    type Error = Error;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        IdempotencyKey::parse(s)
    }
}

impl From<IdempotencyKey> for String {
    fn from(key: IdempotencyKey) -> Self {
        key.0
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A judgment to store; the store gives it its id and creation time.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJudgment {
    pub group_id: Uuid,
    pub response_a: Uuid,
    pub response_b: Uuid,
    pub outcome: Outcome,
    /// The probability that a beats b, in `[0, 1]`.
    pub strength: Option<f64>,
    pub annotator: String,
    pub source: JudgmentSource,
    pub rationale: Option<String>,
    /// Free-form JSON (for example a list of criterion names, or scores per criterion).
    pub criteria: Option<Value>,
    pub idempotency_key: Option<IdempotencyKey>,
}

impl NewJudgment {
    /// The sha256 of the canonical JSON of every field but the idempotency key: two requests with
    /// one key are the same judgment exactly when their hashes are equal.
    pub fn request_hash(&self) -> String {
        let body = json!({
            "group_id": self.group_id,
            "response_a": self.response_a,
            "response_b": self.response_b,
            "outcome": self.outcome,
            "strength": self.strength,
            "annotator": self.annotator,
            "source": self.source,
            "rationale": self.rationale,
            "criteria": self.criteria,
        });
        sha256_hex(canonical_json(&body).as_bytes())
    }

    /// The checks that need no database: `(field, what is wrong)` for the first that fails.
    pub(crate) fn check(&self) -> Result<(), (&'static str, String)> {
        if self.response_a == self.response_b {
            return Err((
                "response_b",
                format!(
                    "must differ from `response_a`: a response cannot be compared with itself ({})",
                    self.response_b
                ),
            ));
        }
        if let Some(strength) = self.strength {
            if !(0.0..=1.0).contains(&strength) {
                return Err((
                    "strength",
                    format!("must be >= 0 and <= 1. Given: {strength}"),
                ));
            }
        }
        check_attribution(
            &self.annotator,
            self.rationale.as_deref(),
            ("criteria", self.criteria.as_ref()),
        )
    }
}

/// The checks every attributed record shares (a judgment, a reward): a non-blank annotator of at
/// most [`MAX_KEY_CHARS`] characters, and no NUL in the annotator, the rationale or the free-form
/// JSON field `json` (named by its first element). `(field, what is wrong)` for the first failure.
pub(crate) fn check_attribution(
    annotator: &str,
    rationale: Option<&str>,
    json: (&'static str, Option<&Value>),
) -> Result<(), (&'static str, String)> {
    let chars = annotator.chars().count();
    if annotator.trim().is_empty() {
        return Err(("annotator", "must not be empty".to_string()));
    }
    if chars > MAX_KEY_CHARS {
        return Err((
            "annotator",
            format!("must be at most {MAX_KEY_CHARS} characters. Given: {chars}"),
        ));
    }
    let nul = "contains a NUL character (\\u0000), which text fields cannot hold".to_string();
    if annotator.contains('\0') {
        return Err(("annotator", nul));
    }
    if rationale.is_some_and(|r| r.contains('\0')) {
        return Err(("rationale", nul));
    }
    if json.1.and_then(crate::text::first_nul).is_some() {
        return Err((json.0, nul));
    }
    Ok(())
}

/// A stored judgment. Immutable once written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Judgment {
    #[schema(value_type = String, format = Uuid)]
    pub id: Uuid,
    #[schema(value_type = String, format = Uuid)]
    pub group_id: Uuid,
    #[schema(value_type = String, format = Uuid)]
    pub response_a: Uuid,
    #[schema(value_type = String, format = Uuid)]
    pub response_b: Uuid,
    pub outcome: Outcome,
    pub strength: Option<f64>,
    pub annotator: String,
    pub source: JudgmentSource,
    pub rationale: Option<String>,
    /// Free-form JSON, as posted.
    #[schema(value_type = Option<Value>)]
    pub criteria: Option<Value>,
    pub idempotency_key: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl Judgment {
    /// The judgment as the judge crate's statistics take it: a verdict on two response ids.
    pub fn judged(&self) -> flywheel_judge::Judged<Uuid> {
        flywheel_judge::Judged {
            a: self.response_a,
            b: self.response_b,
            outcome: self.outcome.into(),
            strength: self.strength,
        }
    }
}

/// Which judgments [`list_judgments`](crate::Store::list_judgments) returns: newest first,
/// filtered, one page. Every filter that is set must hold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JudgmentFilter {
    pub group_id: Option<Uuid>,
    pub annotator: Option<String>,
    pub source: Option<JudgmentSource>,
    /// The adapter version of the judged group (the policy that wrote the responses).
    pub adapter_version: Option<i64>,
    /// Inclusive lower bound on `created_at`.
    pub since: Option<DateTime<Utc>>,
    /// Exclusive upper bound on `created_at`.
    pub until: Option<DateTime<Utc>>,
    /// Keyset cursor: only judgments whose id is below this one (the last id of the previous page).
    pub before: Option<Uuid>,
    /// Page size, clamped to `1..=MAX_LIST_LIMIT`.
    pub limit: u32,
}

impl Default for JudgmentFilter {
    fn default() -> Self {
        JudgmentFilter {
            group_id: None,
            annotator: None,
            source: None,
            adapter_version: None,
            since: None,
            until: None,
            before: None,
            limit: 100,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judgment() -> NewJudgment {
        NewJudgment {
            group_id: Uuid::now_v7(),
            response_a: Uuid::now_v7(),
            response_b: Uuid::now_v7(),
            outcome: Outcome::A,
            strength: Some(0.75),
            annotator: "ann-1".into(),
            source: JudgmentSource::Human,
            rationale: Some("more accurate".into()),
            criteria: Some(json!({"helpful": 1, "harmless": 0})),
            idempotency_key: Some(IdempotencyKey::parse("k-1").unwrap()),
        }
    }

    #[test]
    fn outcomes_and_sources_parse_from_their_stored_names_only() {
        assert_eq!("both_bad".parse::<Outcome>().unwrap(), Outcome::BothBad);
        assert_eq!("tie".parse::<Outcome>().unwrap(), Outcome::Tie);
        assert_eq!(
            "model".parse::<JudgmentSource>().unwrap(),
            JudgmentSource::Model
        );
        assert!(matches!("A".parse::<Outcome>(), Err(Error::Invalid(_))));
        assert!(matches!(
            "judge".parse::<JudgmentSource>(),
            Err(Error::Invalid(_))
        ));
    }

    #[test]
    fn swapping_an_outcome_exchanges_a_and_b_and_keeps_ties() {
        assert_eq!(Outcome::A.swapped(), Outcome::B);
        assert_eq!(Outcome::B.swapped(), Outcome::A);
        assert_eq!(Outcome::Tie.swapped(), Outcome::Tie);
        assert_eq!(Outcome::BothBad.swapped(), Outcome::BothBad);
    }

    #[test]
    fn an_idempotency_key_must_be_non_empty_and_at_most_255_characters() {
        assert!(IdempotencyKey::parse("").is_err());
        assert!(IdempotencyKey::parse("   ").is_err());
        assert!(IdempotencyKey::parse("é".repeat(255)).is_ok());
        let Err(Error::Invalid(message)) = IdempotencyKey::parse("x".repeat(256)) else {
            panic!("a 256-character key was accepted");
        };
        assert!(message.starts_with("`idempotency_key`"), "{message}");
    }

    #[test]
    fn an_idempotency_key_deserializes_only_through_parse() {
        let key: IdempotencyKey = serde_json::from_str(r#""abc""#).unwrap();
        assert_eq!(key.as_str(), "abc");
        assert!(serde_json::from_str::<IdempotencyKey>(r#""""#).is_err());
    }

    #[test]
    fn a_judgment_comparing_a_response_with_itself_is_rejected() {
        let mut j = judgment();
        j.response_b = j.response_a;

        let (field, _) = j.check().unwrap_err();

        assert_eq!(field, "response_b");
    }

    #[test]
    fn a_strength_outside_zero_to_one_is_rejected() {
        for bad in [-0.01, 1.01, f64::NAN, f64::INFINITY] {
            let mut j = judgment();
            j.strength = Some(bad);

            let (field, _) = j.check().unwrap_err();

            assert_eq!(field, "strength", "{bad}");
        }
    }

    #[test]
    fn the_request_hash_ignores_the_key_and_criteria_key_order_but_not_the_verdict() {
        let j = judgment();
        let mut other_key = j.clone();
        other_key.idempotency_key = None;
        let mut reordered = j.clone();
        reordered.criteria =
            Some(serde_json::from_str(r#"{"harmless": 0, "helpful": 1}"#).unwrap());
        let mut other_verdict = j.clone();
        other_verdict.outcome = Outcome::Tie;

        assert_eq!(j.request_hash(), other_key.request_hash());
        assert_eq!(j.request_hash(), reordered.request_hash());
        assert_ne!(j.request_hash(), other_verdict.request_hash());
        assert_eq!(j.request_hash().len(), 64);
    }
}
