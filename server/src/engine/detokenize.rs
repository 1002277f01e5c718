//! Incremental detokenization: token ids in, text deltas out, never splitting a UTF-8 character.
//!
//! Decoding one token at a time is wrong for byte-level BPE (a character may span tokens) and for
//! tokenizers that drop a leading space per piece; so each step decodes a short window of recent
//! tokens and emits only what the new token added, once it no longer ends in a replacement char.

use tokenizers::Tokenizer;

/// The text as served and stored: a NUL (a byte-level model can emit one) becomes U+FFFD, since
/// Postgres cannot store it (see `flywheel_store::text`); the token ids keep the exact output.
fn without_nul(text: &str) -> String {
    if text.contains('\0') {
        text.replace('\0', "\u{FFFD}")
    } else {
        text.to_string()
    }
}

pub struct Detokenizer<'a> {
    tokenizer: &'a Tokenizer,
    ids: Vec<u32>,
    /// Start of the window decoded for context.
    prefix_offset: usize,
    /// End of the text already emitted, as a token index.
    read_offset: usize,
}

impl<'a> Detokenizer<'a> {
    pub fn new(tokenizer: &'a Tokenizer) -> Self {
        Detokenizer {
            tokenizer,
            ids: Vec::new(),
            prefix_offset: 0,
            read_offset: 0,
        }
    }

    /// Adds one token; returns the text it completes (possibly empty).
    pub fn push(&mut self, id: u32) -> tokenizers::Result<String> {
        self.ids.push(id);
        let prefix = self
            .tokenizer
            .decode(&self.ids[self.prefix_offset..self.read_offset], true)?;
        let full = self
            .tokenizer
            .decode(&self.ids[self.prefix_offset..], true)?;
        if full.len() > prefix.len()
            && !full.ends_with('\u{FFFD}')
            && full.is_char_boundary(prefix.len())
        {
            let delta = without_nul(&full[prefix.len()..]);
            self.prefix_offset = self.read_offset;
            self.read_offset = self.ids.len();
            return Ok(delta);
        }
        Ok(String::new())
    }

    /// Text of tokens that never completed a character (a truncated multi-byte sequence).
    pub fn flush(&mut self) -> tokenizers::Result<String> {
        let prefix = self
            .tokenizer
            .decode(&self.ids[self.prefix_offset..self.read_offset], true)?;
        let full = self
            .tokenizer
            .decode(&self.ids[self.prefix_offset..], true)?;
        self.prefix_offset = self.ids.len();
        self.read_offset = self.ids.len();
        Ok(without_nul(full.get(prefix.len()..).unwrap_or_default()))
    }
}

#[cfg(test)]
mod tests {
    use super::without_nul;

    #[test]
    fn a_generated_nul_is_served_and_stored_as_a_replacement_character() {
        assert_eq!(without_nul("a\0b\0"), "a\u{FFFD}b\u{FFFD}");
        assert_eq!(without_nul("tab\tok"), "tab\tok");
    }
}
