//! The raw bytes of one token, for `logprobs` (`bytes`, and `token` as their lossy text).
//!
//! Decoding a single byte-level BPE token that holds part of a UTF-8 character gives U+FFFD, which
//! loses the bytes clients need to reassemble the text. Byte-level vocabularies spell each byte as
//! one printable character (GPT-2's byte map), so the token's own spelling gives its exact bytes.

use std::collections::HashMap;
use std::sync::OnceLock;
use tokenizers::decoders::DecoderWrapper;
use tokenizers::Tokenizer;

/// GPT-2's map from the printable stand-in character to the byte it spells.
fn byte_of_char() -> &'static HashMap<char, u8> {
    static MAP: OnceLock<HashMap<char, u8>> = OnceLock::new();
    MAP.get_or_init(|| {
        let printable =
            |b: u8| (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || b >= 0xAE;
        let mut next = 256u32;
        (0..=255u8)
            .map(|b| {
                let c = if printable(b) {
                    char::from(b)
                } else {
                    next += 1;
                    char::from_u32(next - 1).expect("valid code point")
                };
                (c, b)
            })
            .collect()
    })
}

pub(crate) fn token_bytes(tokenizer: &Tokenizer, id: u32) -> Vec<u8> {
    if matches!(tokenizer.get_decoder(), Some(DecoderWrapper::ByteLevel(_))) {
        if let Some(piece) = tokenizer.id_to_token(id) {
            let map = byte_of_char();
            if let Some(bytes) = piece
                .chars()
                .map(|c| map.get(&c).copied())
                .collect::<Option<Vec<u8>>>()
            {
                return bytes;
            }
        }
    }
    tokenizer
        .decode(&[id], false)
        .unwrap_or_default()
        .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_holding_part_of_a_character_keeps_its_bytes() {
        let dir = tempfile::tempdir().unwrap();
        flywheel_trainer::write_tiny_llama(dir.path(), 0).unwrap();
        let tokenizer = Tokenizer::from_file(dir.path().join("tokenizer.json")).unwrap();
        let ids = tokenizer.encode("é日", false).unwrap().get_ids().to_vec();
        let bytes: Vec<u8> = ids
            .iter()
            .flat_map(|id| token_bytes(&tokenizer, *id))
            .collect();
        assert_eq!(bytes, "é日".as_bytes());
        assert!(
            ids.len() > 1,
            "the tiny vocabulary splits these characters into byte tokens"
        );
    }

    #[test]
    fn the_byte_map_covers_every_byte_once() {
        let map = byte_of_char();
        assert_eq!(map.len(), 256);
        assert_eq!(map[&'Ġ'], b' ');
        assert_eq!(map[&'a'], b'a');
    }
}
