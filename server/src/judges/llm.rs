//! The LLM judge: a rubric (the system message) and the pair, asked twice, left first and then
//! right first. It posts only a verdict both orders give (`source: "model"`); orders that disagree
//! show position bias, and a reply without a readable verdict line is a parse failure. Neither is
//! ever guessed.
//!
//! The rubric says what "better" means and may be replaced (`--rubric FILE`); how to answer (the
//! closing `Verdict:` line) is fixed here, so any rubric parses the same way.

use flywheel_store::{JudgmentSource, Outcome};
use serde_json::{json, Value};

use super::chat::ChatClient;
use super::verdict::{clip, Abstention, Reason, Verdict};
use super::Pair;

/// The rubric shipped for `--kind llm`.
pub const DEFAULT_RUBRIC: &str = include_str!("rubrics/llm.md");

/// How long each order's explanation may be in the posted rationale, in characters.
const RATIONALE_CHARS: usize = 2000;

const ANSWER_FORMAT: &str = "Explain your reasoning briefly, then end with exactly one line: \
\"Verdict: A\", \"Verdict: B\", \"Verdict: tie\" or \"Verdict: both_bad\".";

pub struct LlmJudge {
    chat: ChatClient,
    rubric: String,
}

impl LlmJudge {
    pub fn new(chat: ChatClient, rubric: Option<String>) -> Self {
        LlmJudge {
            chat,
            rubric: rubric.unwrap_or_else(|| DEFAULT_RUBRIC.to_string()),
        }
    }

    pub async fn judge(&self, pair: &Pair) -> Result<Verdict, Abstention> {
        let (outcome, rationale) =
            compare_both_orders(&self.chat, &self.rubric, pair, None).await?;
        Ok(Verdict {
            outcome,
            strength: None,
            rationale: Some(rationale),
            criteria: None,
            source: JudgmentSource::Model,
        })
    }
}

/// One order's reading of a reply: the verdict on (A, B) as asked, and the explanation before it.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub outcome: Outcome,
    pub explanation: String,
}

/// Asks for a verdict with the left response as A, then with the right one as A, and returns the
/// verdict on (left, right) and a rationale holding both explanations, if the orders agree.
///
/// # Errors
/// The first failing request's abstention (a parse failure stops before the second order), or
/// [`Reason::Disagreement`].
pub(crate) async fn compare_both_orders(
    chat: &ChatClient,
    rubric: &str,
    pair: &Pair,
    reference: Option<&str>,
) -> Result<(Outcome, String), Abstention> {
    let prompt = pair.prompt_text();
    let ask = |a: &str, b: &str| {
        let messages = comparison_messages(rubric, &prompt, reference, a, b);
        async move {
            let reply = chat.reply(messages).await?;
            parse_verdict(&reply).ok_or_else(|| {
                Abstention::new(
                    Reason::ParseFailure,
                    format!("no verdict line in the reply: {:?}", clip(&reply, 200)),
                )
            })
        }
    };
    let left_first = ask(&pair.left.text, &pair.right.text).await?;
    let right_first = ask(&pair.right.text, &pair.left.text).await?;
    let (first, second) = (left_first.outcome, right_first.outcome.swapped());
    if first != second {
        return Err(Abstention::new(
            Reason::Disagreement,
            format!("`{first}` with the left response first, `{second}` with the right first"),
        ));
    }
    let rationale = format!(
        "{}\n\n[sides swapped] {}",
        clip(&left_first.explanation, RATIONALE_CHARS),
        clip(&right_first.explanation, RATIONALE_CHARS)
    );
    Ok((first, rationale))
}

/// The two messages of one comparison: the rubric as the system message, the pair (and the
/// judge's own reference answer, if any) in tagged sections, and the answer format.
pub fn comparison_messages(
    rubric: &str,
    prompt: &str,
    reference: Option<&str>,
    response_a: &str,
    response_b: &str,
) -> Vec<Value> {
    let mut user = format!("<prompt>\n{prompt}\n</prompt>\n\n");
    if let Some(reference) = reference {
        user.push_str(&format!(
            "<reference_answer>\n{reference}\n</reference_answer>\n\n"
        ));
    }
    user.push_str(&format!(
        "<response_a>\n{response_a}\n</response_a>\n\n<response_b>\n{response_b}\n</response_b>\n\n\
         {ANSWER_FORMAT}"
    ));
    vec![
        json!({"role": "system", "content": rubric}),
        json!({"role": "user", "content": user}),
    ]
}

/// Reads the last line that mentions a verdict: `Verdict: A`, `**Verdict:** b`, `verdict - Tie.`,
/// `Verdict: Response B`, `Verdict: both bad`. Anything else is `None`, never a guess.
pub fn parse_verdict(reply: &str) -> Option<Reading> {
    let lines: Vec<&str> = reply.lines().collect();
    let at = lines
        .iter()
        .rposition(|line| line.to_lowercase().contains("verdict"))?;
    let line = lines[at].to_lowercase();
    let after = &line[line.rfind("verdict")? + "verdict".len()..];
    let word = after
        .trim_start_matches(|c: char| c.is_whitespace() || ":*-=\"'`[(".contains(c))
        .trim_start_matches("response ")
        .trim_end_matches(|c: char| c.is_whitespace() || ".!*\"'`])".contains(c));
    let outcome = match word {
        "a" => Outcome::A,
        "b" => Outcome::B,
        "tie" => Outcome::Tie,
        "both_bad" | "both bad" | "both-bad" => Outcome::BothBad,
        _ => return None,
    };
    let mut explanation = lines[..at].join("\n").trim().to_string();
    if explanation.is_empty() {
        explanation = "(no explanation given)".into();
    }
    Some(Reading {
        outcome,
        explanation,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(reply: &str) -> Option<Outcome> {
        parse_verdict(reply).map(|r| r.outcome)
    }

    #[test]
    fn a_verdict_line_is_read_in_the_usual_spellings() {
        assert_eq!(outcome("A is right.\nVerdict: A"), Some(Outcome::A));
        assert_eq!(outcome("**Verdict:** b"), Some(Outcome::B));
        assert_eq!(outcome("verdict - Tie."), Some(Outcome::Tie));
        assert_eq!(outcome("Verdict: Response B"), Some(Outcome::B));
        assert_eq!(outcome("Verdict: both bad"), Some(Outcome::BothBad));
        assert_eq!(outcome("Verdict: `both_bad`"), Some(Outcome::BothBad));
        assert_eq!(outcome("Verdict: [A]\n"), Some(Outcome::A));
    }

    #[test]
    fn the_last_verdict_line_counts_and_its_explanation_is_what_precedes_it() {
        let reading = parse_verdict("B is vague.\nA cites the source.\nVerdict: B\nVerdict: A")
            .expect("a verdict");

        assert_eq!(reading.outcome, Outcome::A);
        assert_eq!(
            reading.explanation,
            "B is vague.\nA cites the source.\nVerdict: B"
        );
    }

    #[test]
    fn a_reply_without_a_clear_verdict_is_not_guessed() {
        assert_eq!(outcome("A is better."), None);
        assert_eq!(outcome("Verdict: A or B, hard to say"), None);
        assert_eq!(outcome("The verdict depends on taste"), None);
        assert_eq!(outcome("Verdict:"), None);
        assert_eq!(outcome(""), None);
        assert_eq!(outcome("xq Verdict zz ab"), None);
    }

    #[test]
    fn the_comparison_shows_the_reference_only_when_given() {
        let plain = comparison_messages("rubric", "2+2?", None, "4", "5");
        let with_reference = comparison_messages("rubric", "2+2?", Some("4"), "4", "5");

        assert_eq!(plain[0]["role"], "system");
        let user = plain[1]["content"].as_str().unwrap();
        assert!(user.contains("<response_a>\n4\n</response_a>"), "{user}");
        assert!(user.contains("<response_b>\n5\n</response_b>"), "{user}");
        assert!(!user.contains("reference_answer"));
        let user = with_reference[1]["content"].as_str().unwrap();
        assert!(user.contains("<reference_answer>\n4\n</reference_answer>"));
    }
}
