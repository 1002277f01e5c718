//! Reading preference datasets in TRL's `dpo` format (what `flywheel export --format dpo` writes,
//! and what binarized UltraFeedback dumps hold) into judged groups.
//!
//! One JSONL record is one pair. TRL's shapes are all accepted:
//! - standard: `prompt`, `chosen`, `rejected` are strings (a text-completion group);
//! - conversational: `prompt` is a message list, `chosen` / `rejected` one assistant message each;
//! - implicit prompt: no `prompt`; `chosen` and `rejected` are whole conversations sharing every
//!   message but the last (the answer);
//! - UltraFeedback's mix: `prompt` a string, `chosen` / `rejected` whole conversations that start
//!   with it as the user message.
//!
//! Other scalar fields (`prompt_id`, `score_chosen`, …) are kept as metadata; nested ones (a
//! duplicate `messages` list) are dropped.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::engine::{ChatMessage, Prompt};

/// The roles a message of an imported prompt may have: those the chat API accepts.
const ROLES: [&str; 5] = ["system", "developer", "user", "assistant", "tool"];

/// One pair of a preference dataset: a prompt and the answer preferred over the other.
#[derive(Debug, Clone, PartialEq)]
pub struct PreferenceRecord {
    pub prompt: Prompt,
    pub chosen: String,
    pub rejected: String,
    /// The record's other scalar fields.
    pub metadata: Map<String, Value>,
    /// Identifies the record by its content, so importing it twice stores it once.
    pub key: String,
}

/// Parses one JSONL line; the error says what is wrong with it, naming the field.
pub fn parse_record(line: &str) -> Result<PreferenceRecord, String> {
    let value: Value = serde_json::from_str(line).map_err(|e| format!("not a JSON object: {e}"))?;
    if let Some(field) = flywheel_store::text::first_nul(&value) {
        return Err(format!(
            "`{field}` contains a NUL character (\\u0000), which text fields cannot hold"
        ));
    }
    let Value::Object(mut object) = value else {
        return Err("not a JSON object".into());
    };
    let chosen = object.remove("chosen").ok_or("`chosen` is missing")?;
    let rejected = object.remove("rejected").ok_or("`rejected` is missing")?;
    let prompt = match object.remove("prompt") {
        Some(Value::String(text)) if text.is_empty() => return Err("`prompt` is empty".into()),
        Some(Value::String(text)) if chosen.is_string() && rejected.is_string() => {
            Prompt::Text(text)
        }
        Some(Value::String(text)) => Prompt::Chat(vec![ChatMessage {
            role: "user".into(),
            content: text,
        }]),
        Some(messages @ Value::Array(_)) => Prompt::Chat(parse_messages(&messages, "prompt")?),
        Some(_) => return Err("`prompt` must be a string or a list of messages".into()),
        None => implicit_prompt(&chosen, &rejected)?,
    };
    if let Prompt::Chat(messages) = &prompt {
        if messages.is_empty() {
            return Err("`prompt` holds no message".into());
        }
    }
    let chosen = answer(&chosen, &prompt, "chosen")?;
    let rejected = answer(&rejected, &prompt, "rejected")?;
    if chosen == rejected {
        return Err("`chosen` and `rejected` are the same text: no preference to learn".into());
    }
    let metadata = object
        .into_iter()
        .filter(|(_, v)| !v.is_array() && !v.is_object())
        .collect();
    let key = record_key(&prompt, &chosen, &rejected);
    Ok(PreferenceRecord {
        prompt,
        chosen,
        rejected,
        metadata,
        key,
    })
}

/// The shared messages before the answers of two whole conversations.
fn implicit_prompt(chosen: &Value, rejected: &Value) -> Result<Prompt, String> {
    let chosen = parse_messages(chosen, "chosen")
        .map_err(|e| format!("without `prompt`, {e} (a whole conversation)"))?;
    let rejected = parse_messages(rejected, "rejected")
        .map_err(|e| format!("without `prompt`, {e} (a whole conversation)"))?;
    let (Some((_, shared)), Some((_, other))) = (chosen.split_last(), rejected.split_last()) else {
        return Err("without `prompt`, `chosen` and `rejected` must hold messages".into());
    };
    if shared.is_empty() || shared != other {
        return Err(
            "without `prompt`, `chosen` and `rejected` must share every message but the \
                    last"
                .into(),
        );
    }
    Ok(Prompt::Chat(shared.to_vec()))
}

/// The answer text of `chosen` or `rejected`: a string, or one assistant message, optionally
/// after a repeat of the prompt's messages.
fn answer(value: &Value, prompt: &Prompt, field: &str) -> Result<String, String> {
    if let Value::String(text) = value {
        return Ok(text.clone());
    }
    let messages = parse_messages(value, field)?;
    let rest = match prompt {
        Prompt::Chat(p) if messages.starts_with(p) => &messages[p.len()..],
        _ => &messages[..],
    };
    match rest {
        [m] if m.role == "assistant" => Ok(m.content.clone()),
        _ => Err(format!(
            "`{field}` must be one assistant message (after the prompt's messages, if it repeats \
             them). Given: {} message(s) there",
            rest.len()
        )),
    }
}

fn parse_messages(value: &Value, field: &str) -> Result<Vec<ChatMessage>, String> {
    let Value::Array(items) = value else {
        return Err(format!("`{field}` must be a string or a list of messages"));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let role = item.get("role").and_then(Value::as_str);
            let content = item.get("content").and_then(Value::as_str);
            match (role, content) {
                (Some(role), Some(content)) if ROLES.contains(&role) => Ok(ChatMessage {
                    role: role.into(),
                    content: content.into(),
                }),
                (Some(role), Some(_)) => Err(format!(
                    "`{field}[{i}].role` must be one of {}. Given: {role}",
                    ROLES.join(", ")
                )),
                _ => Err(format!(
                    "`{field}[{i}]` must be a message with a string `role` and `content`"
                )),
            }
        })
        .collect()
}

/// `import:` and the sha256 of the pair's content, independent of key order and metadata.
fn record_key(prompt: &Prompt, chosen: &str, rejected: &str) -> String {
    let prompt = match prompt {
        Prompt::Text(text) => Value::String(text.clone()),
        Prompt::Chat(messages) => serde_json::to_value(messages).unwrap_or_default(),
    };
    let canonical = serde_json::json!([prompt, chosen, rejected]).to_string();
    let digest = Sha256::digest(canonical.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("import:{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chat(pairs: &[(&str, &str)]) -> Prompt {
        Prompt::Chat(
            pairs
                .iter()
                .map(|(role, content)| ChatMessage {
                    role: (*role).into(),
                    content: (*content).into(),
                })
                .collect(),
        )
    }

    fn parse(value: Value) -> Result<PreferenceRecord, String> {
        parse_record(&value.to_string())
    }

    #[test]
    fn the_standard_format_is_a_text_prompt() {
        let r = parse(json!({"prompt": "2+2=", "chosen": "4", "rejected": "5"})).unwrap();
        assert_eq!(r.prompt, Prompt::Text("2+2=".into()));
        assert_eq!((r.chosen.as_str(), r.rejected.as_str()), ("4", "5"));
    }

    #[test]
    fn the_conversational_format_is_a_chat_prompt() {
        let r = parse(json!({
            "prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
            "chosen": [{"role": "assistant", "content": "Hello!"}],
            "rejected": [{"role": "assistant", "content": "Go away."}],
        }))
        .unwrap();
        assert_eq!(r.prompt, chat(&[("system", "Be brief."), ("user", "Hi")]));
        assert_eq!(r.chosen, "Hello!");
        assert_eq!(r.rejected, "Go away.");
    }

    #[test]
    fn an_implicit_prompt_is_the_shared_part_of_both_conversations() {
        let r = parse(json!({
            "chosen": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}],
            "rejected": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "No."}],
        }))
        .unwrap();
        assert_eq!(r.prompt, chat(&[("user", "Hi")]));
        assert_eq!(r.chosen, "Hello!");
    }

    #[test]
    fn ultrafeedback_records_drop_the_repeated_prompt_and_keep_scalar_metadata() {
        let r = parse(json!({
            "prompt": "Name a prime.",
            "prompt_id": "abc",
            "chosen": [{"role": "user", "content": "Name a prime."}, {"role": "assistant", "content": "7"}],
            "rejected": [{"role": "user", "content": "Name a prime."}, {"role": "assistant", "content": "8"}],
            "messages": [{"role": "user", "content": "Name a prime."}],
            "score_chosen": 9.0,
            "score_rejected": 2.5,
        }))
        .unwrap();
        assert_eq!(r.prompt, chat(&[("user", "Name a prime.")]));
        assert_eq!((r.chosen.as_str(), r.rejected.as_str()), ("7", "8"));
        assert_eq!(
            Value::Object(r.metadata),
            json!({"prompt_id": "abc", "score_chosen": 9.0, "score_rejected": 2.5})
        );
    }

    #[test]
    fn the_key_depends_on_the_pair_only() {
        let a = parse(json!({"prompt": "p", "chosen": "x", "rejected": "y", "id": 1})).unwrap();
        let b = parse(json!({"rejected": "y", "id": 2, "chosen": "x", "prompt": "p"})).unwrap();
        let c = parse(json!({"prompt": "p", "chosen": "y", "rejected": "x"})).unwrap();
        assert_eq!(a.key, b.key);
        assert_ne!(a.key, c.key);
        assert!(a.key.starts_with("import:") && a.key.len() == 7 + 64);
    }

    #[test]
    fn a_nul_character_names_its_field() {
        let err = parse(json!({"prompt": "hi", "chosen": "a\u{0}", "rejected": "b"})).unwrap_err();
        assert!(err.contains("`chosen`"), "{err}");
    }

    #[test]
    fn bad_records_name_the_field() {
        let cases = [
            (json!([1, 2]), "not a JSON object"),
            (
                json!({"prompt": "p", "rejected": "y"}),
                "`chosen` is missing",
            ),
            (
                json!({"prompt": "p", "chosen": "x"}),
                "`rejected` is missing",
            ),
            (
                json!({"prompt": 3, "chosen": "x", "rejected": "y"}),
                "`prompt` must be",
            ),
            (
                json!({"prompt": "", "chosen": "x", "rejected": "y"}),
                "`prompt` is empty",
            ),
            (
                json!({"prompt": "p", "chosen": "x", "rejected": "x"}),
                "the same text",
            ),
            (
                json!({"prompt": "p", "chosen": [{"role": "user", "content": "x"}], "rejected": "y"}),
                "`chosen` must be one assistant message",
            ),
            (
                json!({"prompt": [{"role": "wizard", "content": "x"}], "chosen": "a", "rejected": "b"}),
                "`prompt[0].role` must be one of",
            ),
            (
                json!({"prompt": [{"role": "user"}], "chosen": "a", "rejected": "b"}),
                "`prompt[0]` must be a message",
            ),
            (
                json!({"chosen": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
                       "rejected": [{"role": "user", "content": "z"}, {"role": "assistant", "content": "c"}]}),
                "share every message but the last",
            ),
            (json!({"chosen": "a", "rejected": "b"}), "without `prompt`"),
        ];
        for (value, expected) in cases {
            let error = parse(value.clone()).unwrap_err();
            assert!(error.contains(expected), "{value}: {error}");
        }
        assert!(parse_record("{not json")
            .unwrap_err()
            .contains("not a JSON object"));
    }
}
