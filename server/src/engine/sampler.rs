//! Token sampling, done by Flywheel rather than by mistral.rs.
//!
//! mistral.rs 0.8.1 has one RNG for the whole engine (so `seed` cannot be honoured per request),
//! reports log-probs in base 10, and hides the ids of the tokens it samples
//! (research/mistralrs.md §4). So each sample carries its own `TokenSampler`, installed as a
//! mistral.rs logits processor: it sees the final logits of every step, draws the token with the
//! request's own seeded RNG, records its id and natural log-prob, and hands mistral.rs a one-hot
//! row that its greedy sampler can only follow.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Temperatures below this are greedy decoding.
const GREEDY_BELOW: f64 = 1e-5;

/// How one sample draws its tokens.
#[derive(Debug, Clone)]
pub struct SamplerConfig {
    pub temperature: f64,
    pub top_p: f64,
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
    pub top_logprobs: usize,
    pub seed: u64,
}

/// One chosen token with what the client and the trainer need to know about it.
#[derive(Debug, Clone, PartialEq)]
pub struct SampledToken {
    pub id: u32,
    /// Natural log-probability under the sampling distribution (penalties and temperature
    /// applied; before top-p truncation, which only decides what may be drawn).
    pub logprob: f32,
    /// The `k` most likely tokens under the same distribution, most likely first.
    pub top: Vec<(u32, f32)>,
}

pub struct TokenSampler {
    config: SamplerConfig,
    rng: StdRng,
    /// How often each token has been generated so far, for the OpenAI penalties.
    counts: std::collections::HashMap<u32, u32>,
}

impl TokenSampler {
    pub fn new(config: SamplerConfig) -> Self {
        let rng = StdRng::seed_from_u64(config.seed);
        TokenSampler {
            config,
            rng,
            counts: Default::default(),
        }
    }

    /// Draws the next token from `logits` (one row over the vocabulary).
    pub fn sample(&mut self, logits: &mut [f32]) -> SampledToken {
        self.apply_penalties(logits);
        let greedy = self.config.temperature < GREEDY_BELOW;
        let temperature = if greedy {
            1.0
        } else {
            self.config.temperature as f32
        };
        let logprobs = log_softmax(logits, temperature);
        let id = if greedy {
            argmax(&logprobs)
        } else {
            self.draw(&logprobs)
        };
        *self.counts.entry(id).or_default() += 1;
        SampledToken {
            id,
            logprob: logprobs[id as usize],
            top: top_k(&logprobs, self.config.top_logprobs),
        }
    }

    fn apply_penalties(&self, logits: &mut [f32]) {
        let presence = self.config.presence_penalty.unwrap_or(0.0) as f32;
        let frequency = self.config.frequency_penalty.unwrap_or(0.0) as f32;
        if presence == 0.0 && frequency == 0.0 {
            return;
        }
        for (&token, &count) in &self.counts {
            if let Some(logit) = logits.get_mut(token as usize) {
                *logit -= presence + frequency * count as f32;
            }
        }
    }

    /// Nucleus sampling: the smallest set of most likely tokens whose mass reaches `top_p`.
    fn draw(&mut self, logprobs: &[f32]) -> u32 {
        let mut candidates: Vec<(u32, f32)> = logprobs
            .iter()
            .enumerate()
            .filter(|(_, lp)| lp.is_finite())
            .map(|(i, lp)| (i as u32, lp.exp()))
            .collect();
        if self.config.top_p < 1.0 {
            candidates.sort_unstable_by(|a, b| b.1.total_cmp(&a.1));
            let mut mass = 0.0f64;
            let keep = candidates
                .iter()
                .position(|(_, p)| {
                    mass += *p as f64;
                    mass >= self.config.top_p
                })
                .map_or(candidates.len(), |i| i + 1);
            candidates.truncate(keep);
        }
        let total: f64 = candidates.iter().map(|(_, p)| *p as f64).sum();
        let mut target = self.rng.random::<f64>() * total;
        for (id, p) in &candidates {
            target -= *p as f64;
            if target <= 0.0 {
                return *id;
            }
        }
        candidates.last().map_or(0, |(id, _)| *id)
    }
}

fn log_softmax(logits: &[f32], temperature: f32) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) / temperature;
    let sum: f64 = logits
        .iter()
        .map(|l| ((l / temperature - max) as f64).exp())
        .sum();
    let log_sum = sum.ln() as f32 + max;
    logits.iter().map(|l| l / temperature - log_sum).collect()
}

fn argmax(values: &[f32]) -> u32 {
    let mut best = 0;
    for (i, v) in values.iter().enumerate() {
        if *v > values[best] {
            best = i;
        }
    }
    best as u32
}

fn top_k(logprobs: &[f32], k: usize) -> Vec<(u32, f32)> {
    if k == 0 {
        return Vec::new();
    }
    let mut all: Vec<(u32, f32)> = logprobs
        .iter()
        .enumerate()
        .map(|(i, lp)| (i as u32, *lp))
        .collect();
    let k = k.min(all.len());
    all.select_nth_unstable_by(k - 1, |a, b| b.1.total_cmp(&a.1));
    all.truncate(k);
    all.sort_unstable_by(|a, b| b.1.total_cmp(&a.1));
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(temperature: f64, top_p: f64, seed: u64) -> SamplerConfig {
        SamplerConfig {
            temperature,
            top_p,
            presence_penalty: None,
            frequency_penalty: None,
            top_logprobs: 2,
            seed,
        }
    }

    #[test]
    fn greedy_picks_the_largest_logit_and_reports_its_natural_log_prob() {
        let mut sampler = TokenSampler::new(config(0.0, 1.0, 0));
        let token = sampler.sample(&mut [1.0, 3.0, 2.0]);
        assert_eq!(token.id, 1);
        let expected = 3.0 - (1f32.exp() + 3f32.exp() + 2f32.exp()).ln();
        assert!((token.logprob - expected).abs() < 1e-6);
        assert_eq!(
            token.top.iter().map(|t| t.0).collect::<Vec<_>>(),
            vec![1, 2]
        );
    }

    #[test]
    fn the_same_seed_draws_the_same_tokens() {
        let draw = |seed| {
            let mut s = TokenSampler::new(config(1.0, 1.0, seed));
            (0..32)
                .map(|_| s.sample(&mut [0.0, 0.1, 0.2, 0.3]).id)
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
    }

    #[test]
    fn top_p_never_draws_outside_the_nucleus() {
        // p ≈ [0.64, 0.24, 0.09, 0.03]: top_p 0.7 keeps the first two only.
        let mut s = TokenSampler::new(config(1.0, 0.7, 1));
        for _ in 0..500 {
            assert!(s.sample(&mut [3.0, 2.0, 1.0, 0.0]).id <= 1);
        }
    }

    #[test]
    fn temperature_scales_the_reported_log_prob() {
        let mut s = TokenSampler::new(config(2.0, 1.0, 3));
        let t = s.sample(&mut [2.0, 0.0]);
        let p0 = 1.0 / (1.0 + (-1f32).exp());
        let expected = if t.id == 0 { p0.ln() } else { (1.0 - p0).ln() };
        assert!((t.logprob - expected).abs() < 1e-6);
    }

    #[test]
    fn sampling_follows_the_distribution() {
        let mut s = TokenSampler::new(config(1.0, 1.0, 11));
        let ones = (0..4000)
            .filter(|_| s.sample(&mut [0.0, 1f32.ln() + 1.0]).id == 1)
            .count();
        // p(1) = e/(1+e) ≈ 0.731
        assert!((ones as f64 / 4000.0 - 0.731).abs() < 0.03, "{ones}");
    }

    #[test]
    fn penalties_lower_tokens_already_generated() {
        let mut s = TokenSampler::new(SamplerConfig {
            presence_penalty: Some(2.0),
            ..config(0.0, 1.0, 0)
        });
        assert_eq!(s.sample(&mut [1.0, 0.5]).id, 0);
        assert_eq!(s.sample(&mut [1.0, 0.5]).id, 1);
    }
}
