//! The tokenizer stored in GGUF metadata (`tokenizer.ggml.*`), read back into a Hugging Face tokenizer.
//!
//! Only `tokenizer.ggml.model == "gpt2"` (byte-level BPE) is supported: its tokens and merges are the
//! strings of the original `tokenizer.json`, so the vocabulary carries over exactly. The word-splitting
//! regex is not stored, only its llama.cpp name in `tokenizer.ggml.pre`, mapped here to the
//! pre-tokenizer the original used (llama.cpp's `llama-vocab.cpp` lists which regex each name means).

use super::byte_level::{BpeSpec, PreSplit};
use super::gguf_meta::{self as meta, Metadata};
use super::hf_dir::{GenerationConfig, TokenizerConfig};
use super::{ModelFileError, Result};

/// llama.cpp's `LLAMA_TOKEN_TYPE_*` values that become added tokens.
const TYPE_UNKNOWN: i64 = 2;
const TYPE_CONTROL: i64 = 3;
const TYPE_USER_DEFINED: i64 = 4;

/// The vocabulary and special tokens of a GGUF model.
#[derive(Debug, Clone)]
pub(crate) struct GgufVocab {
    pub spec: BpeSpec,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    /// End of turn (`<|eot_id|>` in Llama 3), also a stop token when present.
    pub eot: Option<u32>,
    pub unk: Option<u32>,
    pub pad: Option<u32>,
    pub chat_template: Option<String>,
}

impl GgufVocab {
    /// Reads the vocabulary from `tokenizer.ggml.*` and `tokenizer.chat_template`.
    ///
    /// # Errors
    /// `Unsupported` for a tokenizer model other than `gpt2` or an unknown pre-tokenizer name;
    /// `MissingMetadata`/`BadMetadata` for absent or inconsistent keys.
    pub fn read(md: &Metadata) -> Result<Self> {
        let model = meta::string(md, "tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(ModelFileError::Unsupported(format!(
                "tokenizer.ggml.model is `{model}`; only `gpt2` (byte-level BPE) can be converted \
                 (`llama` is SentencePiece, used by Llama 2 and Mistral v0.1)"
            )));
        }
        let tokens = meta::string_array(md, "tokenizer.ggml.tokens")?;
        let types = meta::opt_int_array(md, "tokenizer.ggml.token_type")?
            .unwrap_or_else(|| vec![1; tokens.len()]);
        if types.len() != tokens.len() {
            return Err(ModelFileError::bad(
                "tokenizer.ggml.token_type",
                format!("{} types for {} tokens", types.len(), tokens.len()),
            ));
        }
        let merges = meta::string_array(md, "tokenizer.ggml.merges")?
            .iter()
            .map(|m| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_owned(), b.to_owned()))
                    .ok_or_else(|| {
                        ModelFileError::bad("tokenizer.ggml.merges", format!("`{m}` is not a pair"))
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        let ids_of = |wanted: &[i64]| -> Vec<u32> {
            (0..tokens.len() as u32)
                .filter(|&id| wanted.contains(&types[id as usize]))
                .collect()
        };
        let special = ids_of(&[TYPE_UNKNOWN, TYPE_CONTROL]);
        let user_defined = ids_of(&[TYPE_USER_DEFINED]);

        let id = |key: &str| -> Result<Option<u32>> {
            match meta::opt_u32(md, key)? {
                Some(id) if id as usize >= tokens.len() => Err(ModelFileError::bad(
                    key,
                    format!("id {id} is past the vocabulary ({} tokens)", tokens.len()),
                )),
                id => Ok(id),
            }
        };
        let bos = id("tokenizer.ggml.bos_token_id")?;
        let eos = id("tokenizer.ggml.eos_token_id")?;
        let eot = id("tokenizer.ggml.eot_token_id")?;
        let unk = id("tokenizer.ggml.unknown_token_id")?;
        let pad = id("tokenizer.ggml.padding_token_id")?;
        let add_bos = meta::opt_bool(md, "tokenizer.ggml.add_bos_token")?.unwrap_or(false);
        let pre_split = pre_split(meta::opt_string(md, "tokenizer.ggml.pre")?)?;
        Ok(Self {
            spec: BpeSpec {
                tokens,
                merges,
                special,
                user_defined,
                pre_split,
                prepend_bos: bos.filter(|_| add_bos),
            },
            bos,
            eos,
            eot,
            unk,
            pad,
            chat_template: meta::opt_string(md, "tokenizer.chat_template")?.map(str::to_owned),
        })
    }

    fn token(&self, id: Option<u32>) -> Option<String> {
        id.map(|id| self.spec.tokens[id as usize].clone())
    }

    pub fn tokenizer_config(&self, model_max_length: usize) -> TokenizerConfig {
        TokenizerConfig {
            chat_template: self.chat_template.clone(),
            bos_token: self.token(self.bos),
            eos_token: self.token(self.eos),
            unk_token: self.token(self.unk),
            pad_token: self.token(self.pad),
            add_bos_token: self.spec.prepend_bos.is_some(),
            add_eos_token: false,
            model_max_length,
            clean_up_tokenization_spaces: false,
            tokenizer_class: "PreTrainedTokenizerFast".to_owned(),
        }
    }

    pub fn generation_config(&self) -> GenerationConfig {
        let mut eos: Vec<u32> = self.eos.into_iter().collect();
        eos.extend(self.eot.filter(|t| !eos.contains(t)));
        GenerationConfig {
            bos_token_id: self.bos,
            eos_token_id: eos,
            pad_token_id: self.pad,
        }
    }
}

/// Maps llama.cpp's pre-tokenizer name to the splitting the original `tokenizer.json` did.
fn pre_split(name: Option<&str>) -> Result<PreSplit> {
    Ok(match name.unwrap_or("default") {
        "default" | "gpt-2" | "gpt2" | "mpt" | "olmo" | "jais" | "trillion" => PreSplit::Gpt2,
        "smollm" | "starcoder" | "refact" | "codeshell" | "command-r" | "exaone" | "minerva-7b" => {
            PreSplit::Gpt2IndividualDigits
        }
        "llama-bpe" | "llama3" => PreSplit::Llama3,
        other => {
            return Err(ModelFileError::Unsupported(format!(
                "tokenizer.ggml.pre is `{other}`; supported: default, gpt-2, smollm, starcoder, \
                 llama-bpe and their aliases"
            )))
        }
    })
}

/// The tokenizer of a GGUF file and its end-of-sequence ids (eos, and eot when present), as a
/// server that serves the GGUF directly needs them for detokenizing and stopping.
///
/// # Errors
/// `Unsupported` for a tokenizer model other than `gpt2` or an unknown pre-tokenizer name;
/// `MissingMetadata`/`BadMetadata` for absent or inconsistent keys; `Io`/`Gguf` when the file
/// cannot be read.
pub fn gguf_tokenizer(path: &std::path::Path) -> Result<(tokenizers::Tokenizer, Vec<u32>)> {
    let mut reader =
        std::io::BufReader::new(std::fs::File::open(path).map_err(ModelFileError::io(path))?);
    let content = candle_core::quantized::gguf_file::Content::read(&mut reader)
        .map_err(ModelFileError::Gguf)?;
    let vocab = GgufVocab::read(&content.metadata)?;
    let tokenizer = super::byte_level::build_tokenizer(&vocab.spec)?;
    Ok((tokenizer, vocab.generation_config().eos_token_id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::gguf_file::Value;

    fn strings(items: &[&str]) -> Value {
        Value::Array(items.iter().map(|s| Value::String(s.to_string())).collect())
    }

    fn metadata(model: &str, pre: &str) -> Metadata {
        [
            ("tokenizer.ggml.model", Value::String(model.into())),
            ("tokenizer.ggml.pre", Value::String(pre.into())),
            ("tokenizer.ggml.tokens", strings(&["<s>", "a", "b", "ab"])),
            ("tokenizer.ggml.merges", strings(&["a b"])),
            (
                "tokenizer.ggml.token_type",
                Value::Array([3, 1, 1, 1].map(Value::I32).to_vec()),
            ),
            ("tokenizer.ggml.eos_token_id", Value::U32(0)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    #[test]
    fn control_tokens_become_special_and_ids_become_strings() {
        let vocab = GgufVocab::read(&metadata("gpt2", "smollm")).unwrap();
        assert_eq!(vocab.spec.special, vec![0]);
        assert_eq!(vocab.spec.pre_split, PreSplit::Gpt2IndividualDigits);
        let config = vocab.tokenizer_config(64);
        assert_eq!(config.eos_token.as_deref(), Some("<s>"));
        assert_eq!(vocab.generation_config().eos_token_id, vec![0]);
    }

    #[test]
    fn a_sentencepiece_vocabulary_is_refused_with_a_reason() {
        let err = GgufVocab::read(&metadata("llama", "default")).unwrap_err();
        assert!(err.to_string().contains("only `gpt2`"), "{err}");
    }

    #[test]
    fn an_unknown_pre_tokenizer_is_refused() {
        let err = GgufVocab::read(&metadata("gpt2", "qwen2")).unwrap_err();
        assert!(matches!(err, ModelFileError::Unsupported(_)));
    }

    #[test]
    fn an_eos_id_past_the_vocabulary_is_invalid() {
        let mut md = metadata("gpt2", "gpt-2");
        md.insert("tokenizer.ggml.eos_token_id".into(), Value::U32(9));
        let err = GgufVocab::read(&md).unwrap_err();
        assert!(matches!(err, ModelFileError::BadMetadata { .. }));
    }
}
