//! Variant groups (consistency-GRPO's data): `POST /v1/variant-groups` samples a canonical prompt
//! and its paraphrases in fresh contexts and stores them as one group; `GET
//! /v1/variant-groups/{id}` reads one back with its variant metadata.

use axum::extract::State;
use axum::http::StatusCode;
use flywheel_store::{GroupWithResponses, VariantGroup};
use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::{PartialSchema, ToSchema};
use uuid::Uuid;

use super::error::{ApiError, AppJson, AppPath, ErrorBody};
use super::sampling::{self, SamplingInput, StopParam};
use super::AppState;
use crate::variants::{sample_variant_group, Paraphrases, VariantError, VariantRequest};

/// Most paraphrases per group (the canonical prompt is one more variant).
pub const MAX_PARAPHRASES: usize = 8;
/// Most samples in one group, all variants together.
pub const MAX_GROUP_SAMPLES: u32 = 64;
const MAX_PROMPT_CHARS: usize = 8_000;

/// The paraphrases of a variant group: the caller's own, or how many the policy should write.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum ParaphraseParam {
    Given(Vec<String>),
    Generate(u32),
}

/// Written by hand: the bounds the handler enforces sit on the variants, where the derive cannot
/// put them.
impl PartialSchema for ParaphraseParam {
    fn schema() -> RefOr<Schema> {
        let text = ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
            .max_length(Some(MAX_PROMPT_CHARS))
            .pattern(Some(r"\S"));
        OneOfBuilder::new()
            .item(
                ArrayBuilder::new()
                    .items(text)
                    .min_items(Some(1))
                    .max_items(Some(MAX_PARAPHRASES)),
            )
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(1))
                    .maximum(Some(MAX_PARAPHRASES as u32)),
            )
            .description(Some(
                "The paraphrases of `prompt`: 1 to 8 non-blank strings, or how many (1 to 8) the \
                 served policy should write.",
            ))
            .into()
    }
}

impl ToSchema for ParaphraseParam {}

/// A canonical prompt and its paraphrases, each to be sampled `n` times in a fresh context.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VariantGroupRequest {
    /// A served model name, `name@version` or a loaded adapter's name; default: the active version.
    pub model: Option<String>,
    /// The system prompt every variant is sampled under.
    pub system: Option<String>,
    /// The canonical prompt (variant 0), a user message.
    #[schema(min_length = 1, max_length = 8000)]
    pub prompt: String,
    pub paraphrases: ParaphraseParam,
    /// Samples per variant, 1–16 (default 4); at most 64 samples per group.
    #[schema(minimum = 1, maximum = 16)]
    pub n: Option<u32>,
    #[schema(minimum = 0, maximum = 2)]
    pub temperature: Option<f64>,
    #[schema(exclusive_minimum = 0, maximum = 1)]
    pub top_p: Option<f64>,
    #[schema(minimum = 1)]
    pub max_tokens: Option<u32>,
    pub stop: Option<StopParam>,
    /// Variant m is sampled with `seed + m`.
    pub seed: Option<i64>,
    /// Keep the group out of training: it measures consistency (`GET /v1/consistency`).
    #[serde(default)]
    pub held_out: bool,
    /// A label for the prompt family (e.g. the task it belongs to).
    #[schema(min_length = 1, max_length = 200)]
    pub family: Option<String>,
}

/// A stored variant group: the group with its responses, and what makes it a variant group.
#[derive(Debug, Serialize, ToSchema)]
pub struct VariantGroupView {
    #[serde(flatten)]
    pub group: GroupWithResponses,
    pub variant_group: VariantGroup,
}

/// Samples a canonical prompt and its paraphrases and stores them as one group of kind `variants`.
#[utoipa::path(post, path = "/v1/variant-groups", tag = "variant groups",
    request_body = VariantGroupRequest,
    security(("bearer" = ["inference"])),
    responses(
        (status = 201, description = "Sampled and stored", body = VariantGroupView),
        (status = 400, description = "Malformed JSON or an invalid field, named in `param`", body = ErrorBody),
        (status = 401, description = "Missing, unknown or revoked API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `inference` scope", body = ErrorBody),
        (status = 404, description = "Unknown model", body = ErrorBody),
        (status = 413, description = "Body over the size limit (`--max-body-bytes`)", body = ErrorBody),
        (status = 422, description = "The policy wrote no usable paraphrase", body = ErrorBody),
        (status = 503, description = "The admission queue is full (see `Retry-After`)", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
#[tracing::instrument(skip_all)]
pub async fn create_variant_group(
    State(state): State<AppState>,
    AppJson(body): AppJson<VariantGroupRequest>,
) -> Result<(StatusCode, AppJson<VariantGroupView>), ApiError> {
    let route = super::resolve_model(&state, body.model.as_deref())?;
    let prompt = non_blank("prompt", body.prompt)?;
    let system = body.system.map(|s| non_blank("system", s)).transpose()?;
    let paraphrases = match body.paraphrases {
        ParaphraseParam::Given(list) => {
            if list.is_empty() || list.len() > MAX_PARAPHRASES {
                return Err(ApiError::invalid(
                    "paraphrases",
                    format!(
                        "`paraphrases` must hold 1 to {MAX_PARAPHRASES} strings, or be a count. \
                         Given: {} strings",
                        list.len()
                    ),
                ));
            }
            let list = list
                .into_iter()
                .enumerate()
                .map(|(i, p)| non_blank(&format!("paraphrases[{i}]"), p))
                .collect::<Result<Vec<_>, _>>()?;
            Paraphrases::Given(list)
        }
        ParaphraseParam::Generate(k) => {
            if k == 0 || k as usize > MAX_PARAPHRASES {
                return Err(ApiError::invalid(
                    "paraphrases",
                    format!("`paraphrases` must be from 1 to {MAX_PARAPHRASES}. Given: {k}"),
                ));
            }
            Paraphrases::Generate(k)
        }
    };
    let variants = 1 + match &paraphrases {
        Paraphrases::Given(list) => list.len() as u32,
        Paraphrases::Generate(k) => *k,
    };
    let n = body.n.unwrap_or(4);
    let sampling = sampling::validate(
        SamplingInput {
            n: Some(n),
            temperature: body.temperature,
            top_p: body.top_p,
            max_tokens: body.max_tokens,
            stop: body.stop,
            seed: body.seed,
            logit_bias: false,
            logprobs: false,
            top_logprobs: None,
            presence_penalty: None,
            frequency_penalty: None,
        },
        "max_tokens",
    )?;
    if n * variants > MAX_GROUP_SAMPLES {
        return Err(ApiError::invalid(
            "n",
            format!(
                "a group holds at most {MAX_GROUP_SAMPLES} samples: {variants} variants × `n` = {n} \
                 is {}",
                n * variants
            ),
        ));
    }
    if let Some(family) = &body.family {
        if family.trim().is_empty() || family.chars().count() > 200 {
            return Err(ApiError::invalid(
                "family",
                "`family` must be 1 to 200 characters, not blank",
            ));
        }
    }
    let request = VariantRequest {
        system,
        canonical: prompt,
        paraphrases,
        sampling,
        route,
        held_out: body.held_out,
        family: body.family,
    };
    let id = sample_variant_group(&state.store, &state.engine, request, n)
        .await
        .map_err(|e| match e {
            VariantError::Admission(e) => ApiError::admission(e, "prompt", "max_tokens"),
            VariantError::NoParaphrase { .. } => ApiError::Unprocessable(e.to_string()),
            VariantError::Other(e) => ApiError::Internal(e),
        })?;
    Ok((StatusCode::CREATED, AppJson(view(&state, id).await?)))
}

/// A variant group with its responses (each with its variant index and prompt).
#[utoipa::path(get, path = "/v1/variant-groups/{id}", tag = "variant groups",
    params(("id" = String, Path, format = Uuid, description = "The group id")),
    security(("bearer" = ["annotate"])),
    responses(
        (status = 200, body = VariantGroupView),
        (status = 400, description = "A malformed id", body = ErrorBody),
        (status = 401, description = "Missing, unknown or revoked API key", body = ErrorBody),
        (status = 403, description = "The key lacks the `annotate` scope", body = ErrorBody),
        (status = 404, description = "No such variant group", body = ErrorBody),
    ))]
pub async fn get_variant_group(
    State(state): State<AppState>,
    AppPath(id): AppPath<String>,
) -> Result<AppJson<VariantGroupView>, ApiError> {
    let id = super::groups::parse_id("id", &id)?;
    Ok(AppJson(view(&state, id).await?))
}

async fn view(state: &AppState, id: Uuid) -> Result<VariantGroupView, ApiError> {
    let variant_group = state.store.get_variant_group(id).await?;
    let group = state.store.get_group(id).await?;
    Ok(VariantGroupView {
        group,
        variant_group,
    })
}

fn non_blank(param: &str, value: String) -> Result<String, ApiError> {
    if value.trim().is_empty() {
        return Err(ApiError::invalid(
            param,
            format!("`{param}` must not be blank"),
        ));
    }
    if value.chars().count() > MAX_PROMPT_CHARS {
        return Err(ApiError::invalid(
            param,
            format!("`{param}` must be at most {MAX_PROMPT_CHARS} characters"),
        ));
    }
    Ok(value)
}
