//! GGUF → Hugging Face import: a llama.cpp `llama` model becomes an F32 `LlamaForCausalLM` directory.
//!
//! Every tensor is dequantized to F32 and renamed (`blk.N.attn_q` → `model.layers.N.self_attn.q_proj`).
//! llama.cpp's `convert_hf_to_gguf.py` permutes the rows of `q_proj` and `k_proj` so its rotary
//! embedding can rotate adjacent pairs; HF Llama rotates the two halves of each head, so the rows are
//! permuted back here. The tokenizer is rebuilt from `tokenizer.ggml.*` (see `gguf_tokenizer`).
//!
//! The output is staged in a hidden sibling directory and renamed into place at the end. An existing
//! `out_dir` is replaced only if it is empty or holds [`IMPORT_MARKER`], i.e. was written by an earlier
//! import; anything else is refused, so a typo cannot wipe a directory of other files.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use candle_core::quantized::gguf_file::Content;
use candle_core::{Device, Tensor};
use serde::Serialize;
use serde_json::json;

use super::byte_level::{build_tokenizer, tokenizer_error};
use super::gguf_meta::{self as meta, Metadata};
use super::gguf_tokenizer::GgufVocab;
use super::hf_dir::{tensor_specs, write_json, LlamaDims, Staging};
use super::safetensors_out::{write_f32_safetensors, TensorSpec};
use super::{ModelFileError, Result};

/// The file that marks a directory as written by [`import_gguf`] (and so safe to replace). It records
/// the source file and the [`ImportSummary`].
pub const IMPORT_MARKER: &str = "flywheel_import.json";

/// What [`import_gguf`] wrote.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImportSummary {
    /// `general.architecture` of the source (always `llama` today).
    pub architecture: String,
    /// Tensors written to `model.safetensors`.
    pub tensors: usize,
    /// Total number of weights.
    pub parameters: u64,
    pub vocab_size: usize,
    pub context_length: usize,
    pub num_hidden_layers: usize,
    pub hidden_size: usize,
    /// True when the GGUF has no `output.weight`, so the output head reuses the embeddings.
    pub tie_word_embeddings: bool,
    /// Whether `tokenizer.chat_template` was present; without it chat requests fail in mistral.rs.
    pub has_chat_template: bool,
    /// How many source tensors had each GGML type (`Q4_1`, `F32`, …).
    pub source_dtypes: BTreeMap<String, usize>,
}

/// The weights of the llama GGUF at `gguf` under their HF names, dequantized to F32 in memory, and
/// the HF `config.json` they form: how the trainer loads a GGUF base without an import on disk.
///
/// # Errors
/// As [`import_gguf`], except that nothing is written.
pub fn read_gguf_weights(gguf: &Path) -> Result<(serde_json::Value, HashMap<String, Tensor>)> {
    let mut opened = Opened::read(gguf)?;
    let device = Device::Cpu;
    let mut weights = HashMap::with_capacity(opened.specs.len());
    for i in 0..opened.specs.len() {
        let tensor = opened.tensor(i, &device)?;
        let shape = opened.specs[i].shape.clone();
        weights.insert(opened.specs[i].name.clone(), tensor.reshape(shape)?);
    }
    let config = opened
        .dims
        .clone()
        .into_config(opened.tied, opened.vocab.bos, opened.vocab.eos);
    let config = serde_json::to_value(&config).map_err(|e| {
        ModelFileError::Unsupported(format!("the model config does not serialize: {e}"))
    })?;
    Ok((config, weights))
}

/// A llama GGUF whose metadata and tensor list were checked, ready to dequantize tensor by tensor.
struct Opened {
    content: Content,
    reader: BufReader<File>,
    architecture: String,
    vocab: GgufVocab,
    dims: LlamaDims,
    tied: bool,
    specs: Vec<TensorSpec>,
    sources: Vec<Source>,
}

impl Opened {
    fn read(gguf: &Path) -> Result<Opened> {
        let file = File::open(gguf).map_err(ModelFileError::io(gguf))?;
        let mut reader = BufReader::new(file);
        let content = Content::read(&mut reader)?;
        let md = &content.metadata;
        let architecture = meta::string(md, "general.architecture")?.to_owned();
        if architecture != "llama" {
            return Err(ModelFileError::Unsupported(format!(
                "general.architecture is `{architecture}`; only `llama` can be imported"
            )));
        }
        let vocab = GgufVocab::read(md)?;
        let dims = read_dims(md, vocab.spec.tokens.len())?;
        let tied = !content.tensor_infos.contains_key("output.weight");
        let mut specs = tensor_specs(&dims);
        if !tied {
            specs.push(TensorSpec::new(
                "lm_head.weight",
                &[dims.vocab_size, dims.hidden_size],
            ));
        }
        let sources = specs
            .iter()
            .map(|spec| source_of(&spec.name, &dims))
            .collect::<Vec<_>>();
        check_tensors(&content, &specs, &sources)?;
        Ok(Opened {
            content,
            reader,
            architecture,
            vocab,
            dims,
            tied,
            specs,
            sources,
        })
    }

    /// The `i`-th HF tensor, dequantized, q/k rows un-permuted.
    fn tensor(&mut self, i: usize, device: &Device) -> Result<Tensor> {
        let source = &self.sources[i];
        let tensor = self
            .content
            .tensor(&mut self.reader, &source.gguf_name, device)?
            .dequantize(device)?;
        Ok(match source.unpermute_heads {
            Some(heads) => unpermute_rows(&tensor, heads)?,
            None => tensor,
        })
    }
}

/// Where an HF tensor comes from in the GGUF, and whether its rows need un-permuting.
#[derive(Debug, Clone, PartialEq)]
struct Source {
    gguf_name: String,
    /// The head count `convert_hf_to_gguf.py` permuted with (query heads for q, kv heads for k).
    unpermute_heads: Option<usize>,
}

/// HF Llama layer tensor suffix → GGUF suffix.
const LAYER_NAMES: [(&str, &str); 9] = [
    ("self_attn.q_proj.weight", "attn_q.weight"),
    ("self_attn.k_proj.weight", "attn_k.weight"),
    ("self_attn.v_proj.weight", "attn_v.weight"),
    ("self_attn.o_proj.weight", "attn_output.weight"),
    ("mlp.gate_proj.weight", "ffn_gate.weight"),
    ("mlp.up_proj.weight", "ffn_up.weight"),
    ("mlp.down_proj.weight", "ffn_down.weight"),
    ("input_layernorm.weight", "attn_norm.weight"),
    ("post_attention_layernorm.weight", "ffn_norm.weight"),
];

/// Converts the llama-architecture GGUF at `gguf` into a Hugging Face directory at `out_dir`.
///
/// Writes `config.json`, `model.safetensors` (F32), `tokenizer.json`, `tokenizer_config.json`,
/// `generation_config.json` and [`IMPORT_MARKER`]. Memory use is about one dequantized tensor at a time.
///
/// # Errors
/// - `OutDirInUse` if `out_dir` is a non-empty directory that an earlier import did not write.
/// - `Unsupported` for another architecture, a non-`gpt2` tokenizer, rope scaling, or tensors with no
///   HF Llama counterpart (biases, `rope_freqs`).
/// - `MissingMetadata`/`BadMetadata`/`MissingTensor`/`Shape` for an inconsistent file; `Gguf`/`Io`.
pub fn import_gguf(gguf: &Path, out_dir: &Path) -> Result<ImportSummary> {
    let mut opened = Opened::read(gguf)?;
    // Everything that can be refused cheaply is checked before the slow part starts.
    let tokenizer = build_tokenizer(&opened.vocab.spec)?;

    let staging = Staging::create(out_dir, IMPORT_MARKER)?;
    let device = Device::Cpu;
    let weights = staging.path().join("model.safetensors");
    let specs = opened.specs.clone();
    let parameters = write_f32_safetensors(&weights, &specs, |i| {
        Ok(opened.tensor(i, &device)?.flatten_all()?.to_vec1::<f32>()?)
    })?;
    let Opened {
        content,
        vocab,
        dims,
        tied,
        architecture,
        ..
    } = opened;
    let path = staging.path().join("tokenizer.json");
    tokenizer.save(&path, false).map_err(tokenizer_error)?;

    let mut source_dtypes = BTreeMap::new();
    for info in content.tensor_infos.values() {
        *source_dtypes
            .entry(format!("{:?}", info.ggml_dtype))
            .or_default() += 1;
    }
    let summary = ImportSummary {
        architecture,
        tensors: specs.len(),
        parameters,
        vocab_size: dims.vocab_size,
        context_length: dims.max_position_embeddings,
        num_hidden_layers: dims.num_hidden_layers,
        hidden_size: dims.hidden_size,
        tie_word_embeddings: tied,
        has_chat_template: vocab.chat_template.is_some(),
        source_dtypes,
    };
    let dir = staging.path();
    let config = dims.clone().into_config(tied, vocab.bos, vocab.eos);
    write_json(dir, "config.json", &config)?;
    let tokenizer_config = vocab.tokenizer_config(dims.max_position_embeddings);
    write_json(dir, "tokenizer_config.json", &tokenizer_config)?;
    write_json(dir, "generation_config.json", &vocab.generation_config())?;
    let marker = json!({ "source": gguf.display().to_string(), "summary": summary });
    write_json(dir, IMPORT_MARKER, &marker)?;
    staging.commit()?;
    Ok(summary)
}

/// Reads the model shape from `llama.*` metadata and refuses what HF Llama cannot express.
fn read_dims(md: &Metadata, vocab_size: usize) -> Result<LlamaDims> {
    let hidden = meta::usize(md, "llama.embedding_length")?;
    let heads = meta::usize(md, "llama.attention.head_count")?;
    let kv_heads = meta::opt_usize(md, "llama.attention.head_count_kv")?.unwrap_or(heads);
    if heads == 0 || kv_heads == 0 || hidden % heads != 0 || heads % kv_heads != 0 {
        return Err(ModelFileError::bad(
            "llama.attention.head_count",
            format!("{heads} query / {kv_heads} kv heads do not divide hidden size {hidden}"),
        ));
    }
    let head_dim = hidden / heads;
    for key in [
        "llama.attention.key_length",
        "llama.attention.value_length",
        "llama.rope.dimension_count",
    ] {
        match meta::opt_usize(md, key)? {
            Some(n) if n != head_dim => {
                return Err(ModelFileError::Unsupported(format!(
                    "{key} is {n}, but HF Llama needs hidden_size / heads = {head_dim}"
                )))
            }
            _ => {}
        }
    }
    if head_dim % 2 != 0 {
        return Err(ModelFileError::bad(
            "llama.embedding_length",
            "odd head dimension",
        ));
    }
    if let Some(kind) = meta::opt_string(md, "llama.rope.scaling.type")? {
        if kind != "none" {
            return Err(ModelFileError::Unsupported(format!(
                "rope scaling `{kind}`"
            )));
        }
    }
    if let Some(n) = meta::opt_usize(md, "llama.vocab_size")? {
        if n != vocab_size {
            return Err(ModelFileError::bad(
                "llama.vocab_size",
                format!("{n}, but tokenizer.ggml.tokens has {vocab_size} tokens"),
            ));
        }
    }
    let eps_key = "llama.attention.layer_norm_rms_epsilon";
    Ok(LlamaDims {
        hidden_size: hidden,
        intermediate_size: meta::usize(md, "llama.feed_forward_length")?,
        num_hidden_layers: meta::usize(md, "llama.block_count")?,
        num_attention_heads: heads,
        num_key_value_heads: kv_heads,
        max_position_embeddings: meta::usize(md, "llama.context_length")?,
        rms_norm_eps: meta::opt_f64(md, eps_key)?
            .ok_or_else(|| ModelFileError::MissingMetadata(eps_key.to_owned()))?,
        // llama.cpp's default when the key is absent.
        rope_theta: meta::opt_f64(md, "llama.rope.freq_base")?.unwrap_or(10_000.0),
        vocab_size,
    })
}

/// The GGUF tensor an HF tensor name (from `tensor_specs`) is read from.
fn source_of(hf_name: &str, dims: &LlamaDims) -> Source {
    let plain = |name: &str| Source {
        gguf_name: name.to_owned(),
        unpermute_heads: None,
    };
    match hf_name {
        "model.embed_tokens.weight" => return plain("token_embd.weight"),
        "model.norm.weight" => return plain("output_norm.weight"),
        "lm_head.weight" => return plain("output.weight"),
        _ => {}
    }
    let (layer, suffix) = hf_name
        .strip_prefix("model.layers.")
        .and_then(|rest| rest.split_once('.'))
        .expect("tensor_specs names layer tensors model.layers.N.*");
    let (_, gguf_suffix) = LAYER_NAMES
        .iter()
        .find(|(hf, _)| *hf == suffix)
        .expect("LAYER_NAMES covers every layer tensor of tensor_specs");
    Source {
        gguf_name: format!("blk.{layer}.{gguf_suffix}"),
        unpermute_heads: match *gguf_suffix {
            "attn_q.weight" => Some(dims.num_attention_heads),
            "attn_k.weight" => Some(dims.num_key_value_heads),
            _ => None,
        },
    }
}

/// Checks that every expected tensor is present with its HF shape, and that nothing is left over.
fn check_tensors(content: &Content, specs: &[TensorSpec], sources: &[Source]) -> Result<()> {
    for (spec, source) in specs.iter().zip(sources) {
        let info = content
            .tensor_infos
            .get(&source.gguf_name)
            .ok_or_else(|| ModelFileError::MissingTensor(source.gguf_name.clone()))?;
        if info.shape.dims() != spec.shape.as_slice() {
            return Err(ModelFileError::Shape {
                name: source.gguf_name.clone(),
                expected: spec.shape.clone(),
                actual: info.shape.dims().to_vec(),
            });
        }
    }
    let used: HashSet<&str> = sources.iter().map(|s| s.gguf_name.as_str()).collect();
    let mut extra: Vec<&str> = content
        .tensor_infos
        .keys()
        .map(String::as_str)
        .filter(|name| !used.contains(name))
        .collect();
    extra.sort_unstable();
    match extra.first() {
        None => Ok(()),
        Some(name) => Err(ModelFileError::Unsupported(format!(
            "tensor `{name}` has no HF Llama counterpart ({} unmatched in all)",
            extra.len()
        ))),
    }
}

/// Undoes `convert_hf_to_gguf.py`'s `permute`, which for each head interleaves the two halves of its
/// rows (`w.reshape(n_head, 2, head_dim / 2, in).swapaxes(1, 2)`); this is the inverse reshape.
fn unpermute_rows(w: &Tensor, heads: usize) -> candle_core::Result<Tensor> {
    let (rows, cols) = w.dims2()?;
    w.reshape((heads, rows / heads / 2, 2, cols))?
        .transpose(1, 2)?
        .reshape((rows, cols))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `convert_hf_to_gguf.py`'s `permute`, to check that `unpermute_rows` inverts it.
    fn permute_rows(w: &Tensor, heads: usize) -> Tensor {
        let (rows, cols) = w.dims2().unwrap();
        w.reshape((heads, 2, rows / heads / 2, cols))
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .reshape((rows, cols))
            .unwrap()
    }

    #[test]
    fn unpermuting_inverts_the_llama_cpp_permutation() {
        let w = Tensor::arange(0f32, 48., &Device::Cpu)
            .unwrap()
            .reshape((12, 4))
            .unwrap();
        let back = unpermute_rows(&permute_rows(&w, 3), 3).unwrap();
        assert_eq!(back.to_vec2::<f32>().unwrap(), w.to_vec2::<f32>().unwrap());
        // Head 0 has rows 0..4: halves (0, 1) and (2, 3) interleave to 0, 2, 1, 3.
        let permuted = permute_rows(&w, 3).to_vec2::<f32>().unwrap();
        let first_col: Vec<f32> = permuted.iter().take(4).map(|r| r[0]).collect();
        assert_eq!(first_col, vec![0., 8., 4., 12.]);
    }

    #[test]
    fn query_and_key_sources_are_unpermuted_with_their_own_head_counts() {
        let dims = LlamaDims {
            hidden_size: 8,
            intermediate_size: 16,
            num_hidden_layers: 1,
            num_attention_heads: 4,
            num_key_value_heads: 2,
            max_position_embeddings: 32,
            rms_norm_eps: 1e-5,
            rope_theta: 1e4,
            vocab_size: 10,
        };
        let q = source_of("model.layers.0.self_attn.q_proj.weight", &dims);
        let k = source_of("model.layers.0.self_attn.k_proj.weight", &dims);
        let down = source_of("model.layers.0.mlp.down_proj.weight", &dims);
        assert_eq!(
            (q.gguf_name.as_str(), q.unpermute_heads),
            ("blk.0.attn_q.weight", Some(4))
        );
        assert_eq!(k.unpermute_heads, Some(2));
        assert_eq!(
            (down.gguf_name.as_str(), down.unpermute_heads),
            ("blk.0.ffn_down.weight", None)
        );
    }
}
