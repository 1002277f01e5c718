//! What text the store can hold: everything but the NUL character.
//!
//! Postgres refuses 0x00 in `text` columns and `\u0000` in `jsonb`, while SQLite stores both, so
//! the two backends would disagree (one stores the sample, the other loses it). Callers therefore
//! refuse NUL at the edge, before any work is done, naming the field; every other control
//! character is stored faithfully on both backends.

use serde_json::Value;

/// The path (`messages[0].content`, `judgments[2].criteria.note`) of the first string, or object
/// key, in `value` that holds a NUL character; `None` when the value can be stored.
pub fn first_nul(value: &Value) -> Option<String> {
    first_nul_at(value, "")
}

fn first_nul_at(value: &Value, path: &str) -> Option<String> {
    match value {
        Value::String(s) if s.contains('\0') => Some(root_or(path)),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| first_nul_at(item, &format!("{path}[{i}]"))),
        Value::Object(map) => map.iter().find_map(|(key, item)| {
            let here = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            if key.contains('\0') {
                Some(root_or(path))
            } else {
                first_nul_at(item, &here)
            }
        }),
        _ => None,
    }
}

fn root_or(path: &str) -> String {
    if path.is_empty() {
        "body".to_string()
    } else {
        path.to_string()
    }
}

/// `Err` naming `field` when `text` holds a NUL character.
///
/// # Errors
/// [`crate::Error::Invalid`], whose message starts with the field in backticks.
pub fn check(field: &str, text: &str) -> crate::Result<()> {
    if text.contains('\0') {
        return Err(crate::Error::Invalid(format!(
            "`{field}` contains a NUL character (\\u0000), which text fields cannot hold"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_nul_is_found_by_its_path() {
        let body = json!({"messages": [{"role": "user", "content": "ok"}, {"content": "a\u{0}b"}]});
        assert_eq!(first_nul(&body).as_deref(), Some("messages[1].content"));
        let nested = json!({"judgments": [{"criteria": {"note": ["x", "\u{0}"]}}]});
        assert_eq!(
            first_nul(&nested).as_deref(),
            Some("judgments[0].criteria.note[1]")
        );
        assert_eq!(first_nul(&json!({"a\u{0}": 1})).as_deref(), Some("body"));
        assert_eq!(first_nul(&json!("\u{0}")).as_deref(), Some("body"));
    }

    #[test]
    fn other_control_characters_are_storable() {
        let body = json!({"content": "tab\tbell\u{7}esc\u{1b}del\u{7f}"});
        assert_eq!(first_nul(&body), None);
        assert!(check("content", "\u{1}\u{1f}").is_ok());
        let err = check("annotator", "al\u{0}ice").unwrap_err();
        assert!(err.to_string().contains("`annotator`"), "{err}");
    }
}
