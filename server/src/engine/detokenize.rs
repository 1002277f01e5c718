//! Incremental detokenization: token ids in, text deltas out, never splitting a UTF-8 character.
//!
//! Decoding one token at a time is wrong for byte-level BPE (a character may span tokens) and for
//! tokenizers that drop a leading space per piece; so each step decodes a short window of recent
//! tokens and emits only what the new token added, once it no longer ends in a replacement char.

use tokenizers::Tokenizer;

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
            let delta = full[prefix.len()..].to_string();
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
        Ok(full.get(prefix.len()..).unwrap_or_default().to_string())
    }
}
