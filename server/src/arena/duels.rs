//! Sampling duels: the candidate and the incumbent answer one held-out evaluation prompt with the
//! same parameters and the same seed, and the pair is stored as a group of kind `duel` (the
//! candidate's response first; the annotation queue shows the sides at random).
//!
//! Duels go in rounds: round `r` gives each evaluation prompt one duel, seeded from the prompt and
//! `r`. A new round starts only when every duel so far has a judgment, and at most
//! `max_unjudged` duels wait for judges at any time, so sampling never runs far ahead of judging.

use std::sync::Arc;

use chrono::Utc;
use flywheel_store::{Endpoint, EvalPrompt, GroupKind, NewDuel, NewGroup, Store};
use serde_json::json;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::api::stream::new_response;
use crate::engine::{ChatMessage, Engine, Event, FinishedSample, Prompt, Route, Sampling};

/// How duels are sampled.
#[derive(Debug, Clone, PartialEq)]
pub struct DuelConfig {
    pub temperature: f64,
    pub top_p: f64,
    pub max_tokens: u32,
    /// Duels sampled per arena tick, at most.
    pub per_tick: u32,
    /// Duels without a judgment allowed to wait at once.
    pub max_unjudged: i64,
}

impl Default for DuelConfig {
    fn default() -> Self {
        DuelConfig {
            temperature: 0.7,
            top_p: 1.0,
            max_tokens: 256,
            per_tick: 4,
            max_unjudged: 32,
        }
    }
}

/// Samples up to `per_tick` new duels of `candidate` against `incumbent`, if both are loaded here
/// and judges are keeping up. Returns how many were stored.
///
/// # Errors
/// A store error, or a sample that failed.
pub async fn sample_some(
    store: &Store,
    engine: &Engine,
    candidate: i64,
    incumbent: i64,
    config: &DuelConfig,
) -> anyhow::Result<usize> {
    if engine.loaded(candidate).is_none() || engine.loaded(incumbent).is_none() {
        return Ok(0);
    }
    let progress = store.duel_progress(candidate, incumbent).await?;
    let room = (config.max_unjudged - progress.unjudged).min(i64::from(config.per_tick));
    if room <= 0 {
        return Ok(0);
    }
    let mut round = progress.last_round.unwrap_or(0);
    let mut prompts = store
        .eval_prompts_without_duel(candidate, incumbent, round, room as u32)
        .await?;
    if prompts.is_empty() && progress.duels > 0 && progress.unjudged == 0 {
        round += 1;
        prompts = store
            .eval_prompts_without_duel(candidate, incumbent, round, room as u32)
            .await?;
    }
    let mut stored = 0;
    for prompt in prompts {
        if sample_duel(store, engine, candidate, incumbent, &prompt, round, config).await? {
            stored += 1;
        }
    }
    Ok(stored)
}

/// Samples and stores one duel; `false` when another replica stored it first.
///
/// # Errors
/// A store error, or a sample that failed (a version no longer loaded included).
pub async fn sample_duel(
    store: &Store,
    engine: &Engine,
    candidate: i64,
    incumbent: i64,
    eval_prompt: &EvalPrompt,
    round: i32,
    config: &DuelConfig,
) -> anyhow::Result<bool> {
    let started = std::time::Instant::now();
    let seed = duel_seed(eval_prompt.id, round);
    let sampling = Sampling {
        n: 1,
        temperature: config.temperature,
        top_p: config.top_p,
        max_tokens: Some(config.max_tokens),
        stop: Vec::new(),
        seed: Some(seed),
        logprobs: false,
        top_logprobs: 0,
        presence_penalty: None,
        frequency_penalty: None,
    };
    let messages: Vec<ChatMessage> = eval_prompt
        .messages
        .iter()
        .map(|m| ChatMessage {
            role: m.role.clone(),
            content: m.content.clone(),
        })
        .collect();
    let prompt = Prompt::Chat(messages.clone());
    let (ours, prompt_ids, max_tokens, name) =
        sample_one(engine, &prompt, sampling.clone(), candidate).await?;
    let (theirs, _, _, _) = sample_one(engine, &prompt, sampling.clone(), incumbent).await?;
    let group = NewGroup {
        id: Uuid::now_v7(),
        kind: GroupKind::Duel,
        endpoint: Endpoint::Chat,
        model: name,
        adapter_version: candidate,
        prompt: serde_json::to_value(&messages)?,
        params: json!({
            "sampling": sampling,
            "max_tokens_effective": max_tokens,
            "duel": { "candidate": candidate, "incumbent": incumbent, "round": round,
                      "eval_prompt_id": eval_prompt.id },
        }),
        seed: Some(seed),
        user: None,
        prompt_tokens: prompt_ids.len() as i64,
        prompt_token_ids: Some(prompt_ids),
        latency_ms: started.elapsed().as_millis() as i64,
        created_at: Utc::now(),
        responses: vec![
            new_response(Uuid::now_v7(), 0, &ours, Some(candidate)),
            new_response(Uuid::now_v7(), 1, &theirs, Some(incumbent)),
        ],
    };
    let stored = store
        .insert_duel(&NewDuel {
            group,
            candidate_version: candidate,
            incumbent_version: incumbent,
            eval_prompt_id: eval_prompt.id,
            round,
        })
        .await?;
    Ok(stored)
}

/// One sample of `prompt` by `version`, with the prompt's token ids, the token budget used, and
/// the served model's name.
async fn sample_one(
    engine: &Engine,
    prompt: &Prompt,
    sampling: Sampling,
    version: i64,
) -> anyhow::Result<(FinishedSample, Vec<u32>, u32, String)> {
    let admitted = Arc::new(
        engine
            .admit(prompt, sampling, Route::Pinned(version))
            .await?,
    );
    let mut events = engine.start(admitted.clone());
    while let Some(event) = events.recv().await {
        match event {
            Event::Delta { .. } => {}
            Event::Finished(sample) => {
                return Ok((
                    sample,
                    admitted.prompt_ids.clone(),
                    admitted.max_tokens,
                    admitted.generation.name.clone(),
                ))
            }
            Event::Failed(e) => anyhow::bail!("version {version} failed to sample a duel: {e}"),
        }
    }
    anyhow::bail!("version {version} stopped before finishing a duel sample")
}

/// The seed of round `round` on `prompt`: the same for both sides, different across prompts and
/// rounds, reproducible.
fn duel_seed(prompt: Uuid, round: i32) -> i64 {
    let digest = Sha256::new()
        .chain_update(prompt.as_bytes())
        .chain_update(round.to_le_bytes())
        .finalize();
    let bytes: [u8; 8] = digest[..8].try_into().expect("8 bytes");
    i64::from_le_bytes(bytes) & i64::MAX
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duel_seeds_are_fixed_per_prompt_and_round_and_differ_across_them() {
        let (p, q) = (Uuid::from_u128(1), Uuid::from_u128(2));
        assert_eq!(duel_seed(p, 0), duel_seed(p, 0));
        assert_ne!(duel_seed(p, 0), duel_seed(p, 1));
        assert_ne!(duel_seed(p, 0), duel_seed(q, 0));
        assert!(duel_seed(q, 7) >= 0);
    }
}
