//! Consistency rewards for consistency-GRPO (`research/algorithms.md` §5): pure data → numbers.
//!
//! **These are our precise formulas (§5.2, marked PROPOSAL there), not the paper's.** Prabhune,
//! Padmanabhan and Dutta (arXiv 2512.12858) adapt GRPO to keep the information content of answers
//! stable across paraphrased prompts, with "entropy-based helpfulness and stability rewards"; only
//! their abstract and secondary summaries could be retrieved, so the exact formulas, weights and
//! hyperparameters are unknown (§5.1). §5.2 is a faithful reading of that description, made precise.
//!
//! - `units`: the deterministic, versioned information-unit extractor ([`UnitExtractor`]: an item
//!   table with aliases and regular expressions from a JSON file, canonicalised).
//! - `rewards`: helpfulness, stability (pairwise Jaccard, leave-one-out agreement, or the entropy
//!   share), the group
//!   consistency entropy, and the weighted, optionally quality-gated reward
//!   ([`consistency_rewards`]; w_h = 0.3, w_s = 0.7, N_max = 7 by default).
//!
//! A group is every response to one canonical intent: M paraphrased variants, each rendered in a
//! fresh context and sampled n times, G = M·n. The rewards feed [`crate::Grpo`] as one group, so the
//! baseline is shared across the variants.

mod rewards;
mod units;

pub use rewards::{
    consistency_entropy, consistency_rewards, entropy_share, helpfulness, jaccard, loo_agreement,
    stability, top_unit_share, ConsistencyConfig, ConsistencyRewards, StabilityMeasure,
};
pub use units::{
    canonical_unit, ExtractorSpec, ItemSpec, PatternSpec, UnitExtractor, UnitSet,
    EXTRACTOR_CODE_VERSION,
};
