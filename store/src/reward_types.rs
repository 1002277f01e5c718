//! The reward values: [`RewardSource`], what a caller hands to
//! [`insert_rewards`](crate::Store::insert_rewards), and what it reads back.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::hash::{canonical_json, sha256_hex};
use crate::text_enum::text_enum;
use crate::{IdempotencyKey, MAX_JUDGMENT_BATCH};

/// The most rewards one [`insert_rewards`](crate::Store::insert_rewards) call stores: as many as
/// judgments.
pub const MAX_REWARD_BATCH: usize = MAX_JUDGMENT_BATCH;

/// The largest magnitude a reward may have. Rewards are scores, not sums: a bound this loose only
/// refuses values no scorer means, before they swamp a group's statistics.
pub const MAX_REWARD_MAGNITUDE: f64 = 1e6;

text_enum! {
    /// Who, or what, gave a reward.
    pub enum RewardSource {
        /// A person.
        Human => "human",
        /// A judge or reward model.
        Model => "model",
        /// A programmatic check (a test suite, a regex, a verifier).
        Rule => "rule",
        /// Agreement of a response with the others of its variant group.
        Consistency => "consistency",
        /// How often the response won the judgments it took part in.
        WinRate => "win_rate",
    }
}

/// A reward to store: a scalar score of one response. The store gives it its id and creation time,
/// and takes its group from the response.
#[derive(Debug, Clone, PartialEq)]
pub struct NewReward {
    pub response_id: Uuid,
    /// Finite, at most [`MAX_REWARD_MAGNITUDE`] either side of 0; higher is better.
    pub value: f64,
    pub source: RewardSource,
    pub annotator: String,
    pub rationale: Option<String>,
    /// Free-form JSON (for example the scorer's inputs, or scores per criterion).
    pub details: Option<Value>,
    pub idempotency_key: Option<IdempotencyKey>,
}

impl NewReward {
    /// The sha256 of the canonical JSON of every field but the idempotency key: two requests with
    /// one key are the same reward exactly when their hashes are equal.
    pub fn request_hash(&self) -> String {
        let body = json!({
            "response_id": self.response_id,
            "value": self.value,
            "source": self.source,
            "annotator": self.annotator,
            "rationale": self.rationale,
            "details": self.details,
        });
        sha256_hex(canonical_json(&body).as_bytes())
    }

    /// The checks that need no database: `(field, what is wrong)` for the first that fails.
    pub(crate) fn check(&self) -> Result<(), (&'static str, String)> {
        if !self.value.is_finite() {
            return Err((
                "value",
                format!("must be a finite number. Given: {}", self.value),
            ));
        }
        if self.value.abs() > MAX_REWARD_MAGNITUDE {
            return Err((
                "value",
                format!(
                    "must be >= -{MAX_REWARD_MAGNITUDE} and <= {MAX_REWARD_MAGNITUDE}. Given: {}",
                    self.value
                ),
            ));
        }
        crate::judgment_types::check_attribution(
            &self.annotator,
            self.rationale.as_deref(),
            ("details", self.details.as_ref()),
        )
    }
}

/// A stored reward. Immutable once written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Reward {
    #[schema(value_type = String, format = Uuid)]
    pub id: Uuid,
    /// The group of the rewarded response.
    #[schema(value_type = String, format = Uuid)]
    pub group_id: Uuid,
    #[schema(value_type = String, format = Uuid)]
    pub response_id: Uuid,
    /// The score; higher is better.
    pub value: f64,
    /// Who, or what, gave it.
    pub source: RewardSource,
    /// The person, model or program that gave it, by name.
    pub annotator: String,
    /// Why, in words.
    pub rationale: Option<String>,
    /// Free-form JSON, as posted.
    #[schema(value_type = Option<Value>)]
    pub details: Option<Value>,
    /// The client's name for this reward, if it gave one.
    pub idempotency_key: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// Which rewards [`list_rewards`](crate::Store::list_rewards) returns: newest first, filtered, one
/// page. Every filter that is set must hold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RewardFilter {
    pub group_id: Option<Uuid>,
    pub response_id: Option<Uuid>,
    pub source: Option<RewardSource>,
    /// Keyset cursor: only rewards whose id is below this one (the last id of the previous page).
    pub before: Option<Uuid>,
    /// Page size, clamped to `1..=MAX_LIST_LIMIT`.
    pub limit: u32,
}

impl Default for RewardFilter {
    fn default() -> Self {
        RewardFilter {
            group_id: None,
            response_id: None,
            source: None,
            before: None,
            limit: 100,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MAX_KEY_CHARS;

    fn reward() -> NewReward {
        NewReward {
            response_id: Uuid::now_v7(),
            value: 0.5,
            source: RewardSource::Rule,
            annotator: "unit-tests".into(),
            rationale: Some("3 of 4 pass".into()),
            details: Some(json!({"passed": 3, "failed": 1})),
            idempotency_key: Some(IdempotencyKey::parse("r-1").unwrap()),
        }
    }

    #[test]
    fn sources_parse_from_their_stored_names_only() {
        assert_eq!(
            "win_rate".parse::<RewardSource>().unwrap(),
            RewardSource::WinRate
        );
        assert_eq!(
            serde_json::to_value(RewardSource::Consistency).unwrap(),
            json!("consistency")
        );
        assert!("WinRate".parse::<RewardSource>().is_err());
    }

    #[test]
    fn a_value_must_be_finite_and_within_the_bound() {
        for bad in [
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            1.000_001e6,
            -2e6,
        ] {
            let mut r = reward();
            r.value = bad;

            let (field, _) = r.check().unwrap_err();

            assert_eq!(field, "value", "{bad}");
        }
        for good in [
            MAX_REWARD_MAGNITUDE,
            -MAX_REWARD_MAGNITUDE,
            0.0,
            -0.0,
            1e-300,
        ] {
            let mut r = reward();
            r.value = good;
            r.check().unwrap();
        }
    }

    #[test]
    fn the_annotator_rationale_and_details_are_checked() {
        type Spoil = fn(&mut NewReward);
        let cases: [(&str, Spoil); 5] = [
            ("annotator", |r| r.annotator = " ".into()),
            ("annotator", |r| r.annotator = "x".repeat(MAX_KEY_CHARS + 1)),
            ("annotator", |r| r.annotator = "a\u{0}".into()),
            ("rationale", |r| r.rationale = Some("\u{0}".into())),
            ("details", |r| r.details = Some(json!({"note": "\u{0}"}))),
        ];
        for (field, spoil) in cases {
            let mut r = reward();
            spoil(&mut r);

            let (got, _) = r.check().unwrap_err();

            assert_eq!(got, field);
        }
    }

    #[test]
    fn the_request_hash_ignores_the_key_and_details_key_order_but_not_the_value() {
        let r = reward();
        let mut other_key = r.clone();
        other_key.idempotency_key = None;
        let mut reordered = r.clone();
        reordered.details = Some(serde_json::from_str(r#"{"failed": 1, "passed": 3}"#).unwrap());
        let mut other_value = r.clone();
        other_value.value = 0.25;

        assert_eq!(r.request_hash(), other_key.request_hash());
        assert_eq!(r.request_hash(), reordered.request_hash());
        assert_ne!(r.request_hash(), other_value.request_hash());
        assert_eq!(r.request_hash().len(), 64);
    }
}
