//! Byte-level BPE tokenizers (the GPT-2 scheme SmolLM, Llama 3 and Qwen use), built with `tokenizers`.
//!
//! Every byte maps to one printable symbol (`bytes_to_unicode` in GPT-2's `encoder.py`), so a vocabulary
//! holding all 256 symbols encodes any UTF-8 text and decodes it back unchanged.

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{
    AddedToken, PostProcessorWrapper, PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer,
};

use super::{ModelFileError, Result};

/// Llama 3's split regex, as in its `tokenizer.json` and llama.cpp's `LLAMA_VOCAB_PRE_TYPE_LLAMA3`.
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// How text is split into words before BPE runs on each word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PreSplit {
    /// GPT-2's regex (`'s|'t|… ?\p{L}+| ?\p{N}+|…`), applied by the `ByteLevel` pre-tokenizer itself.
    Gpt2,
    /// Each digit on its own, then GPT-2's regex: SmolLM and StarCoder.
    Gpt2IndividualDigits,
    /// Llama 3's regex (digits in groups of up to three); merges are skipped for whole-word tokens.
    Llama3,
}

/// Everything needed to build a byte-level BPE tokenizer. Token ids are indices into `tokens`.
#[derive(Debug, Clone)]
pub(crate) struct BpeSpec {
    /// Byte-level token strings (`Ġworld`), special tokens included at their ids.
    pub tokens: Vec<String>,
    /// Merge rules in priority order, as pairs of token strings.
    pub merges: Vec<(String, String)>,
    /// Ids of control tokens: matched whole before BPE and skipped by `decode(.., true)`.
    pub special: Vec<u32>,
    /// Ids of user-defined added tokens: matched whole, but kept when decoding.
    pub user_defined: Vec<u32>,
    pub pre_split: PreSplit,
    /// A token prepended to every encoding (Llama 3's `<|begin_of_text|>`), if the model wants one.
    pub prepend_bos: Option<u32>,
}

/// The printable symbol GPT-2's byte-level scheme gives to a byte.
pub(crate) fn byte_symbol(byte: u8) -> char {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    if printable(byte) {
        return char::from(byte);
    }
    // Non-printable bytes take the code points from 256 up, in byte order.
    let rank = (0..byte).filter(|&b| !printable(b)).count() as u32;
    char::from_u32(256 + rank).expect("256..=323 are valid code points")
}

/// Builds the tokenizer a [`BpeSpec`] describes.
pub(crate) fn build_tokenizer(spec: &BpeSpec) -> Result<Tokenizer> {
    let mut vocab = Vocab::with_capacity(spec.tokens.len());
    for (id, token) in spec.tokens.iter().enumerate() {
        if let Some(first) = vocab.insert(token.clone(), id as u32) {
            return Err(ModelFileError::Tokenizer(format!(
                "token `{token}` appears twice, at ids {first} and {id}"
            )));
        }
    }
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, spec.merges.clone())
        .ignore_merges(spec.pre_split == PreSplit::Llama3)
        .build()
        .map_err(tokenizer_error)?;

    let mut tokenizer = Tokenizer::new(bpe);
    tokenizer.with_pre_tokenizer(Some(pre_tokenizer(spec.pre_split)?));
    tokenizer.with_decoder(Some(ByteLevelDecoder::new(false, true, true)));
    tokenizer.with_post_processor(Some(post_processor(spec)?));

    let token = |id: &u32| -> Result<&str> {
        spec.tokens
            .get(*id as usize)
            .map(String::as_str)
            .ok_or_else(|| {
                ModelFileError::Tokenizer(format!("added token id {id} is outside the vocabulary"))
            })
    };
    let special = spec
        .special
        .iter()
        .map(|id| Ok(AddedToken::from(token(id)?, true)))
        .collect::<Result<Vec<_>>>()?;
    let user_defined = spec
        .user_defined
        .iter()
        .map(|id| Ok(AddedToken::from(token(id)?, false)))
        .collect::<Result<Vec<_>>>()?;
    tokenizer.add_special_tokens(&special);
    tokenizer.add_tokens(&user_defined);

    // An added token that is not already in the BPE vocabulary would get a new id past the end.
    let with_added = tokenizer.get_vocab_size(true);
    if with_added != spec.tokens.len() {
        return Err(ModelFileError::Tokenizer(format!(
            "the tokenizer has {with_added} tokens, expected {}",
            spec.tokens.len()
        )));
    }
    Ok(tokenizer)
}

pub(crate) fn tokenizer_error(e: tokenizers::Error) -> ModelFileError {
    ModelFileError::Tokenizer(e.to_string())
}

fn pre_tokenizer(pre_split: PreSplit) -> Result<PreTokenizerWrapper> {
    Ok(match pre_split {
        PreSplit::Gpt2 => ByteLevel::new(false, true, true).into(),
        PreSplit::Gpt2IndividualDigits => Sequence::new(vec![
            Digits::new(true).into(),
            ByteLevel::new(false, true, true).into(),
        ])
        .into(),
        PreSplit::Llama3 => {
            let pattern = SplitPattern::Regex(LLAMA3_SPLIT.to_owned());
            let split = Split::new(pattern, SplitDelimiterBehavior::Isolated, false)
                .map_err(tokenizer_error)?;
            Sequence::new(vec![
                split.into(),
                ByteLevel::new(false, true, false).into(),
            ])
            .into()
        }
    })
}

fn post_processor(spec: &BpeSpec) -> Result<PostProcessorWrapper> {
    let Some(bos) = spec.prepend_bos else {
        return Ok(ByteLevel::new(false, true, true).into());
    };
    let bos_token = spec.tokens.get(bos as usize).ok_or_else(|| {
        ModelFileError::Tokenizer(format!("bos id {bos} is outside the vocabulary"))
    })?;
    let build = || -> std::result::Result<TemplateProcessing, String> {
        TemplateProcessing::builder()
            .try_single(format!("{bos_token}:0 $A:0"))?
            .try_pair(format!("{bos_token}:0 $A:0 {bos_token}:1 $B:1"))?
            .special_tokens(vec![(bos_token.clone(), bos)])
            .build()
            .map_err(|e| e.to_string())
    };
    Ok(build().map_err(ModelFileError::Tokenizer)?.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn byte_vocab() -> Vec<String> {
        (0..=255u8).map(|b| byte_symbol(b).to_string()).collect()
    }

    #[test]
    fn byte_symbols_match_gpt2_for_space_newline_and_printable_bytes() {
        assert_eq!(byte_symbol(b' '), 'Ġ');
        assert_eq!(byte_symbol(b'\n'), 'Ċ');
        assert_eq!(byte_symbol(b'a'), 'a');
        assert_eq!(byte_symbol(0xAD), 'Ń');
        let distinct: std::collections::HashSet<char> = (0..=255u8).map(byte_symbol).collect();
        assert_eq!(distinct.len(), 256);
    }

    #[test]
    fn a_tokenizer_with_all_bytes_round_trips_any_text() {
        let mut tokens = byte_vocab();
        tokens.push("Ġw".into());
        tokens.push("<|x|>".into());
        let spec = BpeSpec {
            tokens,
            merges: vec![("Ġ".into(), "w".into())],
            special: vec![257],
            user_defined: vec![],
            pre_split: PreSplit::Gpt2IndividualDigits,
            prepend_bos: None,
        };
        let tokenizer = build_tokenizer(&spec).unwrap();
        for text in ["a wow 123\n\ttabs  ", "héllo 日本 🦀", ""] {
            let ids = tokenizer.encode(text, false).unwrap().get_ids().to_vec();
            assert_eq!(tokenizer.decode(&ids, false).unwrap(), text);
        }
        let ids = tokenizer
            .encode("a w<|x|>", false)
            .unwrap()
            .get_ids()
            .to_vec();
        assert_eq!(ids, vec![u32::from(b'a'), 256, 257]);
    }

    #[test]
    fn a_duplicated_token_is_rejected() {
        let mut tokens = byte_vocab();
        tokens.push("a".into());
        let spec = BpeSpec {
            tokens,
            merges: vec![],
            special: vec![],
            user_defined: vec![],
            pre_split: PreSplit::Gpt2,
            prepend_bos: None,
        };
        assert!(matches!(
            build_tokenizer(&spec),
            Err(ModelFileError::Tokenizer(_))
        ));
    }

    #[test]
    fn llama3_splitting_prepends_bos_and_groups_digits_by_three() {
        let mut tokens = byte_vocab();
        tokens.push("12".into());
        tokens.push("123".into());
        tokens.push("<s>".into());
        let spec = BpeSpec {
            tokens,
            merges: vec![("1".into(), "2".into()), ("12".into(), "3".into())],
            special: vec![258],
            user_defined: vec![],
            pre_split: PreSplit::Llama3,
            prepend_bos: Some(258),
        };
        let tokenizer = build_tokenizer(&spec).unwrap();
        let ids = tokenizer.encode("1234", true).unwrap().get_ids().to_vec();
        assert_eq!(ids, vec![258, 257, u32::from(b'4')]);
    }
}
