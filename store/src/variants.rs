//! Variant groups: one canonical prompt and its paraphrased variants, each sampled alike, stored as
//! a group of kind `variants` (every response naming its variant and the token ids of its own
//! prompt) plus one `variant_groups` row that says what the group is; read back alone, or listed
//! with their groups oldest first.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::types::Json;
use sqlx::FromRow;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::connect::with_pool;
use crate::groups::{
    check_group, group_columns, insert_group_rows, GroupRow, ResponseRow, SELECT_RESPONSE,
};
use crate::text_enum::text_enum;
use crate::timestamp::Timestamp;
use crate::{
    Error, Group, GroupKind, GroupWithResponses, NewGroup, Response, Result, Store, StoredMessage,
    MAX_LIST_LIMIT,
};

/// The longest variant family name, in characters.
pub const MAX_FAMILY_CHARS: usize = 200;

text_enum! {
    /// Who wrote the paraphrases of a variant group's canonical prompt.
    pub enum ParaphraseSource {
        /// The caller sent the variants with the request.
        Caller => "caller",
        /// The served policy paraphrased the canonical prompt itself.
        Policy => "policy",
    }
}

/// A variant group to store: its group (kind `variants`, every response naming its variant and the
/// token ids of its own prompt) and what the group is.
#[derive(Debug, Clone, PartialEq)]
pub struct NewVariantGroup {
    pub group: NewGroup,
    /// The canonical chat messages, as JSON.
    pub canonical: Value,
    /// How many responses each variant has.
    pub samples_per_variant: i32,
    /// How many variants, the canonical prompt (variant 0) included.
    pub variants: i32,
    pub paraphrased_by: ParaphraseSource,
    /// Held out from training: the group measures consistency, and no training query reads it.
    pub held_out: bool,
    /// A caller's name for a family of related intents, to split or report by.
    pub family: Option<String>,
}

/// What a stored `variants` group is beyond its group row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct VariantGroup {
    #[schema(value_type = String, format = Uuid)]
    pub group_id: Uuid,
    /// The canonical chat messages.
    #[schema(value_type = Vec<StoredMessage>)]
    pub canonical: Value,
    /// How many variants, the canonical prompt (variant 0) included.
    pub variants: i32,
    /// How many responses each variant has.
    pub samples_per_variant: i32,
    /// Who wrote the paraphrases.
    pub paraphrased_by: ParaphraseSource,
    /// Held out from training: the group measures consistency and is never trained on.
    pub held_out: bool,
    /// A caller's name for a family of related intents.
    pub family: Option<String>,
}

/// Which variant groups [`variant_groups`](crate::Store::variant_groups) returns: oldest first,
/// filtered, at most `limit`. Every filter that is set must hold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VariantGroupFilter {
    /// The adapter version that served the group.
    pub adapter_version: Option<i64>,
    pub held_out: Option<bool>,
    /// Inclusive lower bound on the group's `created_at`.
    pub since: Option<DateTime<Utc>>,
    /// Exclusive upper bound on the group's `created_at`.
    pub until: Option<DateTime<Utc>>,
    /// How many groups at most, clamped to `1..=MAX_LIST_LIMIT`.
    pub limit: u32,
}

impl Default for VariantGroupFilter {
    fn default() -> Self {
        VariantGroupFilter {
            adapter_version: None,
            held_out: None,
            since: None,
            until: None,
            limit: 100,
        }
    }
}

impl NewVariantGroup {
    /// The checks that need no database, beyond those of every group.
    fn check(&self) -> Result<()> {
        let invalid = |message: String| Err(Error::Invalid(message));
        if self.group.kind != GroupKind::Variants {
            return invalid(format!(
                "`kind` must be `variants` for a variant group. Given: `{}`",
                self.group.kind
            ));
        }
        if self.variants < 1 {
            return invalid(format!(
                "`variants` must be at least 1 (the canonical prompt). Given: {}",
                self.variants
            ));
        }
        if self.samples_per_variant < 1 {
            return invalid(format!(
                "`samples_per_variant` must be at least 1. Given: {}",
                self.samples_per_variant
            ));
        }
        if crate::text::first_nul(&self.canonical).is_some() {
            return crate::text::check("canonical", "\0");
        }
        for r in &self.group.responses {
            let which = format!("response {} (index {})", r.id, r.index);
            match r.variant {
                None => {
                    return invalid(format!(
                        "`variant` must be set on every response of a variant group; {which} \
                         has none"
                    ))
                }
                Some(v) if !(0..self.variants).contains(&v) => {
                    return invalid(format!(
                        "`variant` must be >= 0 and < {} (the group's `variants`); {which} has {v}",
                        self.variants
                    ))
                }
                Some(_) => {}
            }
            if r.prompt_token_ids.as_ref().is_none_or(Vec::is_empty) {
                return invalid(format!(
                    "`prompt_token_ids` must hold the token ids of the variant's own prompt; \
                     {which} has none"
                ));
            }
        }
        if let Some(family) = &self.family {
            let chars = family.chars().count();
            if family.trim().is_empty() {
                return invalid("`family` must not be empty".to_string());
            }
            if chars > MAX_FAMILY_CHARS {
                return invalid(format!(
                    "`family` must be at most {MAX_FAMILY_CHARS} characters. Given: {chars}"
                ));
            }
            crate::text::check("family", family)?;
        }
        Ok(())
    }
}

/// The columns of a [`VariantGroupRow`], of `variant_groups v`.
macro_rules! variant_columns {
    () => {
        "v.group_id, v.canonical, v.variants, v.samples_per_variant, v.paraphrased_by, \
         v.held_out, v.family"
    };
}

const SELECT_VARIANT_GROUP: &str = concat!("SELECT ", variant_columns!(), " FROM variant_groups v");

/// The groups and their variant rows, joined; callers append `WHERE`/`ORDER BY`.
const SELECT_LISTED: &str = concat!(
    "SELECT ",
    group_columns!(),
    ", ",
    variant_columns!(),
    " FROM groups g JOIN variant_groups v ON v.group_id = g.id"
);

impl Store {
    /// Stores a variant group (its group and responses, then its `variant_groups` row) in one
    /// transaction: either all are stored or none.
    ///
    /// # Errors
    /// [`Error::Invalid`], before anything is written, if the group is not of kind `variants`,
    /// `variants` or `samples_per_variant` is below 1, a response has no `variant` or one outside
    /// `0..variants`, or no `prompt_token_ids`, or `family` is empty, longer than
    /// [`MAX_FAMILY_CHARS`] or holds a NUL; otherwise as [`Store::insert_group`].
    pub async fn insert_variant_group(&self, v: &NewVariantGroup) -> Result<()> {
        v.check()?;
        check_group(&v.group)?;
        let g = &v.group;
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            insert_group_rows!(&mut *tx, g);
            sqlx::query(
                "INSERT INTO variant_groups (group_id, canonical, variants, samples_per_variant, \
                 paraphrased_by, held_out, family) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(g.id)
            .bind(Json(&v.canonical))
            .bind(v.variants)
            .bind(v.samples_per_variant)
            .bind(v.paraphrased_by)
            .bind(v.held_out)
            .bind(&v.family)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// What group `group_id` is as a variant group.
    ///
    /// # Errors
    /// [`Error::NotFound`]`("variant group")` if there is no such group, or it is not a variant
    /// group stored by [`Store::insert_variant_group`].
    pub async fn get_variant_group(&self, group_id: Uuid) -> Result<VariantGroup> {
        let sql = format!("{SELECT_VARIANT_GROUP} WHERE v.group_id = $1");
        let row: Option<VariantGroupRow> = with_pool!(self, pool => {
            sqlx::query_as(&sql).bind(group_id).fetch_optional(pool).await?
        });
        Ok(row.ok_or(Error::NotFound("variant group"))?.into())
    }

    /// Up to `limit` variant groups that `f` selects, oldest first (by id, which is creation
    /// order), each with its group and its responses in choice-index order.
    ///
    /// Two queries share one group condition, so a page costs two round trips however many groups
    /// it holds.
    pub async fn variant_groups(
        &self,
        f: &VariantGroupFilter,
    ) -> Result<Vec<(VariantGroup, GroupWithResponses)>> {
        let (groups_sql, responses_sql) = list_sql(f);
        let since = f.since.map(Timestamp);
        let until = f.until.map(Timestamp);
        let limit = i64::from(f.limit.clamp(1, MAX_LIST_LIMIT));
        let (groups, responses) = with_pool!(self, pool => {
            let groups: Vec<ListedRow> = sqlx::query_as(&groups_sql)
                .bind(f.adapter_version)
                .bind(f.held_out)
                .bind(since)
                .bind(until)
                .bind(limit)
                .fetch_all(pool)
                .await?;
            let responses: Vec<ResponseRow> = sqlx::query_as(&responses_sql)
                .bind(f.adapter_version)
                .bind(f.held_out)
                .bind(since)
                .bind(until)
                .bind(limit)
                .fetch_all(pool)
                .await?;
            (groups, responses)
        });
        let mut out: Vec<(VariantGroup, GroupWithResponses)> = groups
            .into_iter()
            .map(|row| {
                let group = GroupWithResponses {
                    group: Group::from(row.group),
                    responses: Vec::new(),
                };
                (VariantGroup::from(row.variant), group)
            })
            .collect();
        // A response of a group the first query did not return (stored between the two) is left
        // out.
        let index: HashMap<Uuid, usize> = out
            .iter()
            .enumerate()
            .map(|(i, (_, g))| (g.group.id, i))
            .collect();
        for r in responses.into_iter().map(Response::from) {
            if let Some(&i) = index.get(&r.group_id) {
                out[i].1.responses.push(r);
            }
        }
        Ok(out)
    }
}

/// The two list queries (groups, then their responses) with a condition for each filter that is
/// set. Every parameter keeps its number whether or not its condition is present, so the bind
/// lists in `variant_groups` never change.
fn list_sql(f: &VariantGroupFilter) -> (String, String) {
    let conditions = [
        (f.adapter_version.is_some(), "g.adapter_version = $1"),
        (f.held_out.is_some(), "v.held_out = $2"),
        (f.since.is_some(), "g.created_at >= $3"),
        (f.until.is_some(), "g.created_at < $4"),
    ];
    let wanted: Vec<&str> = conditions
        .iter()
        .filter(|(set, _)| *set)
        .map(|(_, condition)| *condition)
        .collect();
    let filter = if wanted.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", wanted.join(" AND "))
    };
    let page = format!("{filter} ORDER BY g.id LIMIT $5");
    let groups = format!("{SELECT_LISTED}{page}");
    let ids = format!("SELECT g.id FROM groups g JOIN variant_groups v ON v.group_id = g.id{page}");
    let responses = format!("{SELECT_RESPONSE} WHERE group_id IN ({ids}) ORDER BY group_id, idx");
    (groups, responses)
}

/// A `variant_groups` row as both backends return it.
#[derive(FromRow)]
struct VariantGroupRow {
    group_id: Uuid,
    canonical: Json<Value>,
    variants: i32,
    samples_per_variant: i32,
    paraphrased_by: ParaphraseSource,
    held_out: bool,
    family: Option<String>,
}

impl From<VariantGroupRow> for VariantGroup {
    fn from(row: VariantGroupRow) -> Self {
        VariantGroup {
            group_id: row.group_id,
            canonical: row.canonical.0,
            variants: row.variants,
            samples_per_variant: row.samples_per_variant,
            paraphrased_by: row.paraphrased_by,
            held_out: row.held_out,
            family: row.family,
        }
    }
}

/// A group and its variant row, as the list query returns them.
#[derive(FromRow)]
struct ListedRow {
    #[sqlx(flatten)]
    group: GroupRow,
    #[sqlx(flatten)]
    variant: VariantGroupRow,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::{Endpoint, NewResponse};

    fn variant_group() -> NewVariantGroup {
        let response = |index: i32, variant: i32| NewResponse {
            id: Uuid::now_v7(),
            index,
            prompt: Some(json!([{"role": "user", "content": format!("variant {variant}")}])),
            text: "4".into(),
            token_ids: vec![1, 2],
            logprobs: vec![-0.5, -0.25],
            finish_reason: "stop".into(),
            completion_tokens: 2,
            latency_ms: 10,
            adapter_version: None,
            variant: Some(variant),
            prompt_token_ids: Some(vec![7, 8, 9]),
        };
        NewVariantGroup {
            group: NewGroup {
                id: Uuid::now_v7(),
                kind: GroupKind::Variants,
                endpoint: Endpoint::Chat,
                model: "tiny".into(),
                adapter_version: 0,
                prompt: json!([{"role": "user", "content": "2 + 2?"}]),
                params: json!({}),
                seed: None,
                user: None,
                prompt_tokens: 3,
                prompt_token_ids: Some(vec![7, 8, 9]),
                latency_ms: 10,
                created_at: Utc::now(),
                responses: vec![response(0, 0), response(1, 1)],
            },
            canonical: json!([{"role": "user", "content": "2 + 2?"}]),
            samples_per_variant: 1,
            variants: 2,
            paraphrased_by: ParaphraseSource::Caller,
            held_out: false,
            family: Some("arithmetic".into()),
        }
    }

    fn field_of(v: &NewVariantGroup) -> String {
        let Err(Error::Invalid(message)) = v.check() else {
            panic!("expected Invalid for {v:?}");
        };
        message
    }

    #[test]
    fn a_well_formed_variant_group_passes() {
        variant_group().check().unwrap();
    }

    #[test]
    fn each_broken_rule_is_refused_naming_its_field() {
        type Spoil = fn(&mut NewVariantGroup);
        let cases: [(&str, Spoil); 10] = [
            ("kind", |v| v.group.kind = GroupKind::Samples),
            ("variants", |v| v.variants = 0),
            ("samples_per_variant", |v| v.samples_per_variant = 0),
            ("variant", |v| v.group.responses[1].variant = None),
            ("variant", |v| v.group.responses[1].variant = Some(2)),
            ("variant", |v| v.group.responses[0].variant = Some(-1)),
            ("prompt_token_ids", |v| {
                v.group.responses[0].prompt_token_ids = None
            }),
            ("prompt_token_ids", |v| {
                v.group.responses[0].prompt_token_ids = Some(vec![])
            }),
            ("family", |v| v.family = Some(" ".into())),
            ("family", |v| {
                v.family = Some("x".repeat(MAX_FAMILY_CHARS + 1))
            }),
        ];
        for (field, spoil) in cases {
            let mut v = variant_group();
            spoil(&mut v);

            let message = field_of(&v);

            assert!(message.starts_with(&format!("`{field}`")), "{message}");
        }
    }

    #[test]
    fn a_family_of_the_longest_length_and_no_family_are_accepted() {
        let mut v = variant_group();
        v.family = Some("é".repeat(MAX_FAMILY_CHARS));
        v.check().unwrap();
        v.family = None;
        v.check().unwrap();
    }

    #[test]
    fn a_nul_in_the_family_or_the_canonical_prompt_is_refused() {
        let mut v = variant_group();
        v.family = Some("a\u{0}b".into());
        assert!(field_of(&v).starts_with("`family`"));
        let mut v = variant_group();
        v.canonical = json!([{"role": "user", "content": "a\u{0}b"}]);
        assert!(field_of(&v).starts_with("`canonical`"));
    }

    #[test]
    fn a_list_query_keeps_each_parameter_number_whatever_filters_are_set() {
        let f = VariantGroupFilter {
            held_out: Some(false),
            until: Some(Utc::now()),
            ..VariantGroupFilter::default()
        };

        let (groups, responses) = list_sql(&f);

        assert!(
            groups.ends_with("WHERE v.held_out = $2 AND g.created_at < $4 ORDER BY g.id LIMIT $5"),
            "{groups}"
        );
        assert!(
            responses.ends_with("ORDER BY g.id LIMIT $5) ORDER BY group_id, idx"),
            "{responses}"
        );
    }
}
