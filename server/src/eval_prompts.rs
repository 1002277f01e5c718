//! Evaluation prompts as callers write them: chat messages checked as `POST /v1/chat/completions`
//! checks them (known roles, string or text-part content, a `tool_call_id` on tool messages), at
//! least one, the last from the user. `POST /v1/eval-prompts` and `flywheel eval-prompts import`
//! both parse with these, so a prompt the one accepts the other accepts too.
//!
//! Each error names its parameter from the root of what was parsed (`messages[0].role`); callers
//! put their own prefix before it (`eval_prompts[2].`, or a line number).

use flywheel_store::{StoredMessage, MAX_EVAL_LABEL_CHARS};
use serde_json::Value;

/// The roles the chat API accepts.
const ROLES: [&str; 5] = ["system", "developer", "user", "assistant", "tool"];

/// Why a prompt cannot be stored: the parameter at fault and a message that starts with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub param: String,
    pub message: String,
}

impl Invalid {
    /// An error for `param` whose message is `` `param` `` followed by `detail`.
    pub fn new(param: impl Into<String>, detail: impl std::fmt::Display) -> Invalid {
        let param = param.into();
        Invalid {
            message: format!("`{param}` {detail}"),
            param,
        }
    }
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// The messages of a prompt, content flattened to text; `param` names `value` in errors.
///
/// # Errors
/// [`Invalid`] naming the first faulty part: `messages`, `messages[1].role`,
/// `messages[0].content[2]`, `messages[3].tool_call_id`.
pub fn parse_messages(value: &Value, param: &str) -> Result<Vec<StoredMessage>, Invalid> {
    let Value::Array(items) = value else {
        return Err(Invalid::new(param, "must be a list of messages"));
    };
    if items.is_empty() {
        return Err(Invalid::new(param, "must hold at least one message"));
    }
    let messages = items
        .iter()
        .enumerate()
        .map(|(i, item)| parse_message(item, &format!("{param}[{i}]")))
        .collect::<Result<Vec<_>, _>>()?;
    let last = messages.len() - 1;
    if messages[last].role != "user" {
        return Err(Invalid::new(
            format!("{param}[{last}].role"),
            format!(
                "must be `user`: the last message of an evaluation prompt is the one the model \
                 answers. Given: {}",
                messages[last].role
            ),
        ));
    }
    Ok(messages)
}

fn parse_message(value: &Value, param: &str) -> Result<StoredMessage, Invalid> {
    let Value::Object(message) = value else {
        return Err(Invalid::new(
            param,
            "must be a message: an object with `role` and `content`",
        ));
    };
    let role_param = format!("{param}.role");
    let role = match message.get("role") {
        Some(Value::String(role)) if ROLES.contains(&role.as_str()) => role.clone(),
        Some(Value::String(role)) => {
            return Err(Invalid::new(
                role_param,
                format!("must be one of {}. Given: {role}", ROLES.join(", ")),
            ))
        }
        Some(_) => return Err(Invalid::new(role_param, "must be a string")),
        None => return Err(Invalid::new(role_param, "is missing")),
    };
    if role == "tool"
        && message
            .get("tool_call_id")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
    {
        return Err(Invalid::new(
            format!("{param}.tool_call_id"),
            "is missing: a `tool` message must carry the `tool_call_id` it answers",
        ));
    }
    let content_param = format!("{param}.content");
    let content = match content_text(message.get("content")) {
        Ok(Some(text)) => text,
        Ok(None) => return Err(Invalid::new(content_param, "is missing")),
        Err(ContentError::Part(j)) => {
            return Err(Invalid::new(
                format!("{content_param}[{j}]"),
                "must be a text part `{\"type\": \"text\", \"text\": ...}`; only text parts \
                 are supported",
            ))
        }
        Err(ContentError::NotText) => {
            return Err(Invalid::new(
                content_param,
                "must be a string or a list of text parts",
            ))
        }
    };
    Ok(StoredMessage { role, content })
}

/// Why a message's `content` is not text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentError {
    /// Neither a string nor a list of parts.
    NotText,
    /// Part `j` of the list is not a `{"type": "text", "text": ...}` part.
    Part(usize),
}

/// A message's `content` as one text, the way the chat API reads it: a string, or its text parts
/// joined; `None` when it is absent or null. Chat requests and evaluation prompts both use it.
///
/// # Errors
/// [`ContentError`] for anything but text.
pub fn content_text(content: Option<&Value>) -> Result<Option<String>, ContentError> {
    match content {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(Value::Array(parts)) => parts
            .iter()
            .enumerate()
            .map(|(j, part)| match (part.get("type"), part.get("text")) {
                (Some(Value::String(kind)), Some(Value::String(text))) if kind == "text" => {
                    Ok(text.as_str())
                }
                _ => Err(ContentError::Part(j)),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|texts| Some(texts.concat())),
        Some(_) => Err(ContentError::NotText),
    }
}

/// A label: a string of 1 to [`MAX_EVAL_LABEL_CHARS`] characters, not all blank.
///
/// # Errors
/// [`Invalid`] naming `param`.
pub fn parse_label(value: &Value, param: &str) -> Result<String, Invalid> {
    let Value::String(label) = value else {
        return Err(Invalid::new(param, "must be a string"));
    };
    let chars = label.chars().count();
    if label.trim().is_empty() || chars > MAX_EVAL_LABEL_CHARS {
        return Err(Invalid::new(
            param,
            format!(
                "must be 1 to {MAX_EVAL_LABEL_CHARS} characters, not all blank. Given: {chars} \
                 characters"
            ),
        ));
    }
    Ok(label.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn param_of(value: Value) -> String {
        parse_messages(&value, "messages").unwrap_err().param
    }

    #[test]
    fn text_parts_are_joined_like_chat_content() {
        let messages = parse_messages(
            &json!([
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Name "}, {"type": "text", "text": "a prime."}], "name": "bob"},
            ]),
            "messages",
        )
        .unwrap();
        assert_eq!(messages[1].content, "Name a prime.");
        assert_eq!(messages[0].role, "system");
    }

    #[test]
    fn each_faulty_part_is_named_by_its_path() {
        let cases = [
            (json!("hi"), "messages"),
            (json!([]), "messages"),
            (json!([3]), "messages[0]"),
            (json!([{"content": "x"}]), "messages[0].role"),
            (
                json!([{"role": "wizard", "content": "x"}]),
                "messages[0].role",
            ),
            (json!([{"role": 1, "content": "x"}]), "messages[0].role"),
            (json!([{"role": "user"}]), "messages[0].content"),
            (
                json!([{"role": "user", "content": 5}]),
                "messages[0].content",
            ),
            (
                json!([{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]),
                "messages[0].content[0]",
            ),
            (
                json!([{"role": "tool", "content": "42"}, {"role": "user", "content": "x"}]),
                "messages[0].tool_call_id",
            ),
            (
                json!([{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]),
                "messages[1].role",
            ),
        ];
        for (value, param) in cases {
            assert_eq!(param_of(value.clone()), param, "{value}");
        }
    }

    #[test]
    fn a_message_names_its_field_first() {
        let error =
            parse_messages(&json!([{"role": "wizard", "content": "x"}]), "messages").unwrap_err();
        assert!(
            error
                .message
                .starts_with("`messages[0].role` must be one of"),
            "{error}"
        );
    }

    #[test]
    fn a_label_is_a_non_blank_string_of_bounded_length() {
        assert_eq!(parse_label(&json!("math"), "label").unwrap(), "math");
        for bad in [json!(""), json!("  "), json!(3), json!("x".repeat(256))] {
            assert_eq!(parse_label(&bad, "label").unwrap_err().param, "label");
        }
    }
}
