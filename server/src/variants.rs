//! Variant groups for consistency-GRPO: one canonical prompt and its paraphrases, each sampled `n`
//! times in a fresh context (the system prompt and that variant alone, no history), stored as one
//! group of kind `variants` whose responses carry their variant index, their own prompt and the
//! token ids it was fed as (`research/algorithms.md` §5.2).
//!
//! Paraphrases come from the caller, or from the served policy itself when the caller only says how
//! many it wants: each is one sample of a fixed rewriting instruction, kept when it is non-empty
//! and differs from the canonical prompt and the others.

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::Utc;
use flywheel_store::{
    Endpoint, GroupKind, NewGroup, NewResponse, NewVariantGroup, ParaphraseSource, Store,
};
use serde_json::json;
use uuid::Uuid;

use crate::api::stream::new_response;
use crate::engine::{ChatMessage, Engine, Event, FinishedSample, Prompt, Route, Sampling};

/// The instruction the policy paraphrases with; part of each paraphrase's provenance.
pub const PARAPHRASE_INSTRUCTION: &str = "Rewrite the request below in different words. Keep its \
    meaning and every detail it asks for. Reply with the rewritten request only, nothing else.";

/// Sampling attempts per wanted paraphrase before giving up on distinct ones.
const ATTEMPTS_PER_PARAPHRASE: u32 = 3;

/// Tokens a paraphrase may take.
const PARAPHRASE_MAX_TOKENS: u32 = 96;

/// Where the paraphrases come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Paraphrases {
    Given(Vec<String>),
    /// This many, written by the policy.
    Generate(u32),
}

/// A variant group to sample.
#[derive(Debug, Clone, PartialEq)]
pub struct VariantRequest {
    pub system: Option<String>,
    pub canonical: String,
    pub paraphrases: Paraphrases,
    /// Samples per variant, with `n` ignored; `seed` (if any) is variant 0's, variant m uses
    /// `seed + m`.
    pub sampling: Sampling,
    pub route: Route,
    pub held_out: bool,
    pub family: Option<String>,
}

/// Why a variant group could not be made.
#[derive(Debug, thiserror::Error)]
pub enum VariantError {
    #[error(transparent)]
    Admission(#[from] crate::engine::AdmitError),
    #[error("the policy wrote no usable paraphrase in {attempts} attempts")]
    NoParaphrase { attempts: u32 },
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// Paraphrases (if asked), samples every variant `n` times, stores the group; returns its id.
///
/// # Errors
/// A variant the engine does not admit (too long, queue full, version not loaded), a policy that
/// writes no usable paraphrase, a failed sample, or a store error.
pub async fn sample_variant_group(
    store: &Store,
    engine: &Engine,
    request: VariantRequest,
    n: u32,
) -> Result<Uuid, VariantError> {
    let started = std::time::Instant::now();
    let (paraphrases, paraphrased_by) = match &request.paraphrases {
        Paraphrases::Given(list) => (list.clone(), ParaphraseSource::Caller),
        Paraphrases::Generate(k) => (
            paraphrase(engine, &request, *k).await?,
            ParaphraseSource::Policy,
        ),
    };
    let variants: Vec<String> = std::iter::once(request.canonical.clone())
        .chain(paraphrases)
        .collect();
    let mut responses: Vec<NewResponse> = Vec::new();
    let mut version = None;
    let mut model = String::new();
    let mut canonical_ids = Vec::new();
    for (m, variant) in variants.iter().enumerate() {
        let messages = fresh_context(request.system.as_deref(), variant);
        let sampling = Sampling {
            n,
            seed: request.sampling.seed.map(|s| s.wrapping_add(m as i64)),
            ..request.sampling.clone()
        };
        let run = sample(
            engine,
            &Prompt::Chat(messages.clone()),
            sampling,
            request.route,
        )
        .await?;
        // Every variant must come from the same version, or the group is not one policy's.
        if *version.get_or_insert(run.version) != run.version {
            return Err(anyhow::anyhow!(
                "the active version changed from {} to {} while the group was sampled; retry",
                version.unwrap_or_default(),
                run.version
            )
            .into());
        }
        if m == 0 {
            canonical_ids = run.prompt_ids.clone();
            model = run.name.clone();
        }
        for sample in &run.samples {
            let mut response = new_response(Uuid::now_v7(), responses.len() as i32, sample, None);
            response.prompt = Some(serde_json::to_value(&messages).map_err(anyhow::Error::from)?);
            response.variant = Some(m as i32);
            response.prompt_token_ids = Some(run.prompt_ids.clone());
            responses.push(response);
        }
    }
    let canonical = fresh_context(request.system.as_deref(), &request.canonical);
    let id = Uuid::now_v7();
    let group = NewGroup {
        id,
        kind: GroupKind::Variants,
        endpoint: Endpoint::Chat,
        model,
        adapter_version: version.unwrap_or_default(),
        prompt: serde_json::to_value(&canonical).map_err(anyhow::Error::from)?,
        params: json!({
            "sampling": Sampling { n, ..request.sampling.clone() },
            "paraphrase_instruction": matches!(request.paraphrases, Paraphrases::Generate(_))
                .then_some(PARAPHRASE_INSTRUCTION),
        }),
        seed: request.sampling.seed,
        user: None,
        prompt_tokens: canonical_ids.len() as i64,
        prompt_token_ids: Some(canonical_ids),
        latency_ms: started.elapsed().as_millis() as i64,
        created_at: Utc::now(),
        responses,
    };
    store
        .insert_variant_group(&NewVariantGroup {
            group,
            canonical: serde_json::to_value(&canonical).map_err(anyhow::Error::from)?,
            samples_per_variant: n as i32,
            variants: variants.len() as i32,
            paraphrased_by,
            held_out: request.held_out,
            family: request.family,
        })
        .await
        .map_err(anyhow::Error::from)?;
    Ok(id)
}

/// The system prompt (if any) and one user message: no history, so only the phrasing differs.
fn fresh_context(system: Option<&str>, variant: &str) -> Vec<ChatMessage> {
    system
        .map(|s| ChatMessage {
            role: "system".into(),
            content: s.into(),
        })
        .into_iter()
        .chain(std::iter::once(ChatMessage {
            role: "user".into(),
            content: variant.into(),
        }))
        .collect()
}

/// Up to `k` distinct paraphrases of the canonical prompt, written by the policy.
async fn paraphrase(
    engine: &Engine,
    request: &VariantRequest,
    k: u32,
) -> Result<Vec<String>, VariantError> {
    let prompt = Prompt::Chat(vec![
        ChatMessage {
            role: "system".into(),
            content: PARAPHRASE_INSTRUCTION.into(),
        },
        ChatMessage {
            role: "user".into(),
            content: request.canonical.clone(),
        },
    ]);
    let mut seen: BTreeSet<String> = BTreeSet::from([normalise(&request.canonical)]);
    let mut out = Vec::new();
    let attempts = k * ATTEMPTS_PER_PARAPHRASE;
    let mut tried = 0;
    while (out.len() as u32) < k && tried < attempts {
        let wanted = (k - out.len() as u32).min(attempts - tried);
        let sampling = Sampling {
            n: wanted,
            temperature: 1.0,
            top_p: 0.95,
            max_tokens: Some(PARAPHRASE_MAX_TOKENS),
            stop: vec!["\n\n".into()],
            seed: request
                .sampling
                .seed
                .map(|s| s.wrapping_add(10_000 + i64::from(tried))),
            logprobs: false,
            top_logprobs: 0,
            presence_penalty: None,
            frequency_penalty: None,
        };
        tried += wanted;
        for sample in sample(engine, &prompt, sampling, request.route)
            .await?
            .samples
        {
            let text = clean(&sample.text);
            if !text.is_empty() && seen.insert(normalise(&text)) && (out.len() as u32) < k {
                out.push(text);
            }
        }
    }
    if out.is_empty() {
        return Err(VariantError::NoParaphrase { attempts: tried });
    }
    Ok(out)
}

/// A paraphrase as the policy wrote it, without surrounding quotes, labels or blank space.
fn clean(text: &str) -> String {
    let text = text.trim();
    let text = text
        .strip_prefix("Rewritten request:")
        .or_else(|| text.strip_prefix("Request:"))
        .unwrap_or(text)
        .trim();
    text.trim_matches(|c| c == '"' || c == '\u{201c}' || c == '\u{201d}')
        .trim()
        .to_string()
}

fn normalise(text: &str) -> String {
    flywheel_trainer::canonical_unit(text)
}

/// One admitted request's finished samples, in index order.
struct Sampled {
    samples: Vec<FinishedSample>,
    prompt_ids: Vec<u32>,
    version: i64,
    name: String,
}

async fn sample(
    engine: &Engine,
    prompt: &Prompt,
    sampling: Sampling,
    route: Route,
) -> Result<Sampled, VariantError> {
    let admitted = Arc::new(engine.admit(prompt, sampling, route).await?);
    let mut events = engine.start(admitted.clone());
    let mut samples = Vec::new();
    while let Some(event) = events.recv().await {
        match event {
            Event::Delta { .. } => {}
            Event::Finished(sample) => samples.push(sample),
            Event::Failed(e) => return Err(anyhow::anyhow!("a variant sample failed: {e}").into()),
        }
    }
    if samples.len() != admitted.sampling.n as usize {
        return Err(anyhow::anyhow!(
            "{} of {} samples finished",
            samples.len(),
            admitted.sampling.n
        )
        .into());
    }
    samples.sort_by_key(|s| s.index);
    Ok(Sampled {
        samples,
        prompt_ids: admitted.prompt_ids.clone(),
        version: admitted.generation.version,
        name: admitted.generation.name.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_context_is_the_system_prompt_and_the_variant_alone() {
        let messages = fresh_context(Some("Be brief."), "Which funds?");
        assert_eq!(messages.len(), 2);
        assert_eq!(
            (messages[0].role.as_str(), messages[1].role.as_str()),
            ("system", "user")
        );
        assert_eq!(fresh_context(None, "Which funds?").len(), 1);
    }

    #[test]
    fn paraphrases_lose_quotes_and_labels() {
        assert_eq!(clean("  \"Name three funds.\" "), "Name three funds.");
        assert_eq!(
            clean("Rewritten request: Name three funds."),
            "Name three funds."
        );
        assert_eq!(
            normalise("Name THREE funds!"),
            normalise("name three funds")
        );
    }
}
