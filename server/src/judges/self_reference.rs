//! The self-reference judge: the judge model first answers the prompt itself, then decides which
//! response agrees better with its own answer, asked in both orders like the LLM judge. The
//! reference answer opens the posted rationale, so a reader sees what the judge compared against.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use flywheel_store::JudgmentSource;
use uuid::Uuid;

use super::chat::ChatClient;
use super::llm::compare_both_orders;
use super::verdict::{clip, Abstention, Reason, Verdict};
use super::Pair;

/// The rubric shipped for `--kind self-reference`.
pub const DEFAULT_RUBRIC: &str = include_str!("rubrics/self_reference.md");

/// Reference answers kept, by group: a group of n responses has n(n-1)/2 pairs, and at
/// temperature 0 the judge would answer its prompt the same way each time.
const CACHED_REFERENCES: usize = 256;

/// How much of the reference answer the rationale quotes, in characters.
const REFERENCE_CHARS: usize = 2000;

pub struct SelfReferenceJudge {
    chat: ChatClient,
    rubric: String,
    /// Reference answers by group. A std `Mutex`: held only to read or insert, never across an
    /// `.await`. Cleared when full; two pairs of a group judged at once may both ask, harmlessly.
    references: Mutex<HashMap<Uuid, Arc<str>>>,
}

impl SelfReferenceJudge {
    pub fn new(chat: ChatClient, rubric: Option<String>) -> Self {
        SelfReferenceJudge {
            chat,
            rubric: rubric.unwrap_or_else(|| DEFAULT_RUBRIC.to_string()),
            references: Mutex::new(HashMap::new()),
        }
    }

    pub async fn judge(&self, pair: &Pair) -> Result<Verdict, Abstention> {
        let reference = self.reference_answer(pair).await?;
        let (outcome, comparison) =
            compare_both_orders(&self.chat, &self.rubric, pair, Some(&reference)).await?;
        Ok(Verdict {
            outcome,
            strength: None,
            rationale: Some(format!(
                "Reference answer: {}\n\n{comparison}",
                clip(&reference, REFERENCE_CHARS)
            )),
            criteria: None,
            source: JudgmentSource::Model,
        })
    }

    /// The judge's own answer to the pair's prompt.
    async fn reference_answer(&self, pair: &Pair) -> Result<Arc<str>, Abstention> {
        let cached = self.lock().get(&pair.group_id).cloned();
        if let Some(reference) = cached {
            return Ok(reference);
        }
        let answer = self.chat.reply(pair.prompt_messages()).await?;
        let answer = answer.trim();
        if answer.is_empty() {
            return Err(Abstention::new(
                Reason::BadOutput,
                "the judge model gave an empty reference answer",
            ));
        }
        let reference: Arc<str> = Arc::from(answer);
        let mut references = self.lock();
        if references.len() >= CACHED_REFERENCES {
            references.clear();
        }
        references.insert(pair.group_id, reference.clone());
        Ok(reference)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Arc<str>>> {
        // A panic while holding it cannot leave the map inconsistent: each use is one call.
        self.references
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
