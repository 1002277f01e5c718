//! Sampling parameters shared by `/v1/chat/completions` and `/v1/completions`, and their validation.

use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::{PartialSchema, ToSchema};

use crate::api::error::ApiError;
use crate::engine::Sampling;

pub const MAX_N: u32 = 16;
pub const MAX_STOP_SEQUENCES: usize = 4;
pub const MAX_TOP_LOGPROBS: u32 = 20;

/// `stop`: one string or up to four.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum StopParam {
    One(String),
    Many(Vec<String>),
}

/// Written by hand: the bounds [`validate`] enforces (non-empty strings, at most
/// [`MAX_STOP_SEQUENCES`]) sit on the variants, where the derive cannot put them.
impl PartialSchema for StopParam {
    fn schema() -> RefOr<Schema> {
        let sequence = || {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
        };
        OneOfBuilder::new()
            .item(sequence())
            .item(
                ArrayBuilder::new()
                    .items(sequence())
                    .max_items(Some(MAX_STOP_SEQUENCES)),
            )
            .description(Some(
                "Where to stop: one non-empty string, or a list of at most 4.",
            ))
            .into()
    }
}

impl ToSchema for StopParam {}

impl StopParam {
    fn into_vec(self) -> Vec<String> {
        match self {
            StopParam::One(s) => vec![s],
            StopParam::Many(v) => v,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, ToSchema)]
pub struct StreamOptions {
    /// Send one last chunk with `usage` (and empty `choices`) before `data: [DONE]`.
    #[serde(default)]
    pub include_usage: bool,
}

/// The raw values as the client sent them, before validation.
pub struct SamplingInput {
    pub n: Option<u32>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub max_tokens: Option<u32>,
    pub stop: Option<StopParam>,
    pub seed: Option<i64>,
    /// Whether the request carried a non-empty `logit_bias`, which is refused.
    pub logit_bias: bool,
    pub logprobs: bool,
    pub top_logprobs: Option<u32>,
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
}

/// Checks every field against OpenAI's documented range; the error names the field.
pub fn validate(input: SamplingInput, max_tokens_param: &str) -> Result<Sampling, ApiError> {
    if input.logit_bias {
        return Err(ApiError::invalid(
            "logit_bias",
            "`logit_bias` is not supported",
        ));
    }
    let n = input.n.unwrap_or(1);
    if !(1..=MAX_N).contains(&n) {
        return Err(ApiError::invalid(
            "n",
            format!("`n` must be >= 1 and <= {MAX_N}. Given: {n}"),
        ));
    }
    let temperature = input.temperature.unwrap_or(1.0);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(ApiError::invalid(
            "temperature",
            format!("`temperature` must be >= 0 and <= 2. Given: {temperature}"),
        ));
    }
    let top_p = input.top_p.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(ApiError::invalid(
            "top_p",
            format!("`top_p` must be > 0 and <= 1. Given: {top_p}"),
        ));
    }
    if input.max_tokens == Some(0) {
        return Err(ApiError::invalid(
            max_tokens_param,
            format!("`{max_tokens_param}` must be >= 1. Given: 0"),
        ));
    }
    let stop = input.stop.map(StopParam::into_vec).unwrap_or_default();
    if stop.len() > MAX_STOP_SEQUENCES {
        return Err(ApiError::invalid(
            "stop",
            format!(
                "`stop` may hold at most {MAX_STOP_SEQUENCES} sequences. Given: {}",
                stop.len()
            ),
        ));
    }
    if stop.iter().any(String::is_empty) {
        return Err(ApiError::invalid(
            "stop",
            "`stop` sequences must not be empty",
        ));
    }
    let top_logprobs = input.top_logprobs.unwrap_or(0);
    if top_logprobs > MAX_TOP_LOGPROBS {
        return Err(ApiError::invalid(
            "top_logprobs",
            format!("`top_logprobs` must be >= 0 and <= {MAX_TOP_LOGPROBS}. Given: {top_logprobs}"),
        ));
    }
    let penalty = |name: &str, v: Option<f64>| match v {
        Some(p) if !(-2.0..=2.0).contains(&p) => Err(ApiError::invalid(
            name,
            format!("`{name}` must be >= -2 and <= 2. Given: {p}"),
        )),
        other => Ok(other.filter(|p| *p != 0.0)),
    };
    Ok(Sampling {
        n,
        temperature,
        top_p,
        max_tokens: input.max_tokens,
        stop,
        seed: input.seed,
        logprobs: input.logprobs,
        top_logprobs: top_logprobs as usize,
        presence_penalty: penalty("presence_penalty", input.presence_penalty)?,
        frequency_penalty: penalty("frequency_penalty", input.frequency_penalty)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> SamplingInput {
        SamplingInput {
            n: None,
            temperature: None,
            top_p: None,
            max_tokens: None,
            stop: None,
            seed: None,
            logit_bias: false,
            logprobs: false,
            top_logprobs: None,
            presence_penalty: None,
            frequency_penalty: None,
        }
    }

    fn param_of(r: Result<Sampling, ApiError>) -> Option<String> {
        match r {
            Err(ApiError::Invalid { param, .. }) => param,
            other => panic!("expected an invalid-parameter error, got {other:?}"),
        }
    }

    #[test]
    fn defaults_follow_openai() {
        let s = validate(input(), "max_tokens").unwrap();
        assert_eq!(
            (s.n, s.temperature, s.top_p, s.top_logprobs),
            (1, 1.0, 1.0, 0)
        );
        assert!(s.stop.is_empty() && s.max_tokens.is_none());
    }

    #[test]
    fn each_out_of_range_field_is_named_in_the_error() {
        let cases: Vec<(SamplingInput, &str)> = vec![
            (
                SamplingInput {
                    n: Some(0),
                    ..input()
                },
                "n",
            ),
            (
                SamplingInput {
                    n: Some(17),
                    ..input()
                },
                "n",
            ),
            (
                SamplingInput {
                    temperature: Some(2.5),
                    ..input()
                },
                "temperature",
            ),
            (
                SamplingInput {
                    top_p: Some(0.0),
                    ..input()
                },
                "top_p",
            ),
            (
                SamplingInput {
                    max_tokens: Some(0),
                    ..input()
                },
                "max_completion_tokens",
            ),
            (
                SamplingInput {
                    top_logprobs: Some(21),
                    ..input()
                },
                "top_logprobs",
            ),
            (
                SamplingInput {
                    presence_penalty: Some(3.0),
                    ..input()
                },
                "presence_penalty",
            ),
            (
                SamplingInput {
                    stop: Some(StopParam::Many(vec!["a".into(); 5])),
                    ..input()
                },
                "stop",
            ),
            (
                SamplingInput {
                    stop: Some(StopParam::One(String::new())),
                    ..input()
                },
                "stop",
            ),
        ];
        for (case, field) in cases {
            assert_eq!(
                param_of(validate(case, "max_completion_tokens")).as_deref(),
                Some(field)
            );
        }
    }

    #[test]
    fn a_single_stop_string_becomes_a_list() {
        let s = validate(
            SamplingInput {
                stop: Some(StopParam::One("\n".into())),
                ..input()
            },
            "max_tokens",
        );
        assert_eq!(s.unwrap().stop, vec!["\n".to_string()]);
    }
}
