//! Random-weight Llamas in Hugging Face layout: the fixture for tests, and full-size shapes for
//! benchmarks on machines with no network (the GPU check).
//!
//! The tiny shape follows SmolLM2-Instruct in miniature (GQA, tied embeddings, ChatML with the special
//! tokens at ids 0–2), so the server and trainer exercise the same paths as with the real model, in
//! milliseconds. The named shapes ([`RandomShape`]) have a real model's dimensions and vocabulary
//! size (the tokenizer is padded with filler tokens), so speed and memory are a real model's.

use std::fs;
use std::path::Path;

use rand::rngs::StdRng;
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};

use super::byte_level::{build_tokenizer, byte_symbol, tokenizer_error, BpeSpec, PreSplit};
use super::hf_dir::{tensor_specs, write_json, GenerationConfig, LlamaDims, TokenizerConfig};
use super::safetensors_out::write_f32_safetensors;
use super::{ModelFileError, Result};

/// The special tokens, in id order from 0: end of text, then ChatML's turn delimiters.
pub const TINY_SPECIAL_TOKENS: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];

/// ChatML without a default system prompt, as SmolLM2-Instruct renders each message.
const CHAT_TEMPLATE: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + \
'\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ \
'<|im_start|>assistant\\n' }}{% endif %}";

/// Merges for frequent English pairs, in priority order (`Ġ` is a space, `Ċ` a newline).
const MERGES: &[&str] = &[
    "Ġ t", "Ġ a", "h e", "i n", "r e", "o n", "Ġt he", "e r", "Ġ s", "a t", "Ġ w", "Ġ o", "e n",
    "Ġ c", "i t", "i s", "a n", "o r", "e s", "Ġ b", "e d", "Ġ f", "in g", "Ġ p", "o u", "Ġa n",
    "a l", "a r", "Ġt o", "Ġ m", "Ġo f", "Ġ in", "Ġ d", "Ġ h", "Ġan d", "l l", "Ġ he", "l e",
    "Ġ re", "Ġ is", "Ġ l", "o m", "Ġ y", "Ġy ou", "Ġ I", "Ġ n", "Ġ e", "Ġ g", "Ġ T", "ĠT he",
    "Ċ Ċ", "Ġ Ġ",
];

/// Embeddings are unit-scale and projections 0.2 (above `1/sqrt(fan_in)`), so each layer visibly changes
/// the residual stream and greedy decoding wanders; at the usual 0.02 the tied head makes every seed
/// repeat one token. Special-token embeddings are 10× smaller, so their logits stay near zero and
/// generation rarely ends on its own: output lengths in tests follow `max_tokens`.
const EMBED_STD: f64 = 1.0;
const SPECIAL_EMBED_STD: f64 = 0.1;
const PROJ_STD: f64 = 0.2;

const TINY_DIMS: LlamaDims = LlamaDims {
    hidden_size: 64,
    intermediate_size: 128,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    max_position_embeddings: 512,
    rms_norm_eps: 1e-5,
    rope_theta: 10_000.0,
    vocab_size: 0, // set from the tokenizer
};

/// The shapes `flywheel model tiny --shape` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RandomShape {
    /// 2 layers, hidden 64, a 311-token vocabulary: the test fixture.
    Tiny,
    /// SmolLM2-135M-Instruct's dimensions (30 layers, hidden 576, GQA 9/3, vocabulary 49,152).
    Smollm2_135m,
    /// Llama-3.2-1B's dimensions (16 layers, hidden 2048, GQA 32/8, vocabulary 128,256; 1.24 B
    /// parameters, 5 GB in f32).
    Llama1b,
}

impl RandomShape {
    pub const NAMES: [&'static str; 3] = ["tiny", "smollm2-135m", "llama-1b"];

    fn dims(self) -> LlamaDims {
        match self {
            Self::Tiny => TINY_DIMS,
            Self::Smollm2_135m => LlamaDims {
                hidden_size: 576,
                intermediate_size: 1536,
                num_hidden_layers: 30,
                num_attention_heads: 9,
                num_key_value_heads: 3,
                max_position_embeddings: 8192,
                rms_norm_eps: 1e-5,
                rope_theta: 100_000.0,
                vocab_size: 49_152,
            },
            Self::Llama1b => LlamaDims {
                hidden_size: 2048,
                intermediate_size: 8192,
                num_hidden_layers: 16,
                num_attention_heads: 32,
                num_key_value_heads: 8,
                max_position_embeddings: 8192,
                rms_norm_eps: 1e-5,
                rope_theta: 500_000.0,
                vocab_size: 128_256,
            },
        }
    }
}

impl std::str::FromStr for RandomShape {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "tiny" => Ok(Self::Tiny),
            "smollm2-135m" => Ok(Self::Smollm2_135m),
            "llama-1b" => Ok(Self::Llama1b),
            _ => Err(format!(
                "unknown shape `{s}`: expected one of {}",
                Self::NAMES.join(", ")
            )),
        }
    }
}

/// Writes the tiny test fixture: [`write_random_llama`] with [`RandomShape::Tiny`].
///
/// # Errors
/// As [`write_random_llama`].
pub fn write_tiny_llama(dir: &Path, seed: u64) -> Result<()> {
    write_random_llama(dir, RandomShape::Tiny, seed)
}

/// Writes a seeded random-weight `LlamaForCausalLM` directory of `shape` that mistral.rs 0.8.1
/// loads.
///
/// `dir` is created if needed and the five files in it are overwritten; the same `seed` always gives
/// byte-identical files (for this build's `rand`). Norm weights are 1, embeddings N(0, 1) (special
/// tokens N(0, 0.1)) and projections N(0, 0.2·√(64/hidden)), i.e. 0.2 for the tiny shape;
/// `EMBED_STD`'s comment says why so large.
///
/// # Errors
/// I/O errors, and tokenizer errors (which would be a bug here).
pub fn write_random_llama(dir: &Path, shape: RandomShape, seed: u64) -> Result<()> {
    fs::create_dir_all(dir).map_err(ModelFileError::io(dir))?;
    let dims = shape.dims();
    let mut spec = tokenizer_spec();
    // A full-size vocabulary: filler tokens no merge produces, so they decode but never encode.
    let fillers = dims.vocab_size.saturating_sub(spec.tokens.len());
    let first = spec.tokens.len();
    spec.tokens
        .extend((first..first + fillers).map(|i| format!("[{i}]")));
    let tokenizer = build_tokenizer(&spec)?;
    let path = dir.join("tokenizer.json");
    tokenizer.save(&path, true).map_err(tokenizer_error)?;

    let dims = LlamaDims {
        vocab_size: spec.tokens.len(),
        ..dims
    };
    let proj_std = PROJ_STD * (TINY_DIMS.hidden_size as f64 / dims.hidden_size as f64).sqrt();
    let specs = tensor_specs(&dims);
    let mut rng = StdRng::seed_from_u64(seed);
    let special_values = TINY_SPECIAL_TOKENS.len() * dims.hidden_size;
    write_f32_safetensors(&dir.join("model.safetensors"), &specs, |i| {
        let spec = &specs[i];
        let n = spec.elem_count();
        if spec.name.ends_with("norm.weight") {
            return Ok(vec![1.0; n]);
        }
        let embeddings = spec.name == "model.embed_tokens.weight";
        let (special, std) = if embeddings {
            (special_values, EMBED_STD)
        } else {
            (0, proj_std)
        };
        let normal = Normal::new(0.0, std).expect("std is positive");
        let mut values: Vec<f32> = (0..n).map(|_| normal.sample(&mut rng) as f32).collect();
        // The special tokens are the first rows of the embedding matrix.
        let shrink = (SPECIAL_EMBED_STD / EMBED_STD) as f32;
        values[..special].iter_mut().for_each(|v| *v *= shrink);
        Ok(values)
    })?;

    let (bos, eos) = (1, 2);
    let max_length = dims.max_position_embeddings;
    write_json(
        dir,
        "config.json",
        &dims.into_config(true, Some(bos), Some(eos)),
    )?;
    let tokenizer_config = TokenizerConfig {
        chat_template: Some(CHAT_TEMPLATE.to_owned()),
        bos_token: Some(TINY_SPECIAL_TOKENS[1].to_owned()),
        eos_token: Some(TINY_SPECIAL_TOKENS[2].to_owned()),
        unk_token: Some(TINY_SPECIAL_TOKENS[0].to_owned()),
        pad_token: Some(TINY_SPECIAL_TOKENS[2].to_owned()),
        add_bos_token: false,
        add_eos_token: false,
        model_max_length: max_length,
        clean_up_tokenization_spaces: false,
        tokenizer_class: "PreTrainedTokenizerFast".to_owned(),
    };
    write_json(dir, "tokenizer_config.json", &tokenizer_config)?;
    let generation = GenerationConfig {
        bos_token_id: Some(bos),
        eos_token_id: vec![eos],
        pad_token_id: Some(eos),
    };
    write_json(dir, "generation_config.json", &generation)
}

/// Special tokens at ids 0–2, the 256 byte symbols at 3–258 (in byte order), then one token per merge.
fn tokenizer_spec() -> BpeSpec {
    let mut tokens: Vec<String> = TINY_SPECIAL_TOKENS.iter().map(|t| t.to_string()).collect();
    tokens.extend((0..=255u8).map(|b| byte_symbol(b).to_string()));
    let merges: Vec<(String, String)> = MERGES
        .iter()
        .map(|m| {
            let (a, b) = m.split_once(' ').expect("merges are `left right`");
            (a.to_owned(), b.to_owned())
        })
        .collect();
    tokens.extend(merges.iter().map(|(a, b)| format!("{a}{b}")));
    BpeSpec {
        tokens,
        merges,
        special: vec![0, 1, 2],
        user_defined: vec![],
        pre_split: PreSplit::Gpt2,
        prepend_bos: None,
    }
}
