//! The Hugging Face Llama directory layout: tensor names and shapes, the JSON files, and a staging
//! directory that is renamed into place.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::safetensors_out::TensorSpec;
use super::{ModelFileError, Result};

/// `config.json` for `LlamaForCausalLM`, with the field names transformers and mistral.rs read.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct LlamaConfig {
    pub architectures: Vec<String>,
    pub model_type: String,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub max_position_embeddings: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub vocab_size: usize,
    pub tie_word_embeddings: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bos_token_id: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eos_token_id: Option<u32>,
    pub hidden_act: String,
    pub attention_bias: bool,
    pub mlp_bias: bool,
    pub torch_dtype: String,
}

/// The architecture-independent part of a Llama config; [`LlamaDims::into_config`] fills in the rest.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LlamaDims {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub max_position_embeddings: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub vocab_size: usize,
}

impl LlamaDims {
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    pub fn into_config(self, tied: bool, bos: Option<u32>, eos: Option<u32>) -> LlamaConfig {
        LlamaConfig {
            architectures: vec!["LlamaForCausalLM".into()],
            model_type: "llama".into(),
            head_dim: self.head_dim(),
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_hidden_layers: self.num_hidden_layers,
            num_attention_heads: self.num_attention_heads,
            num_key_value_heads: self.num_key_value_heads,
            max_position_embeddings: self.max_position_embeddings,
            rms_norm_eps: self.rms_norm_eps,
            rope_theta: self.rope_theta,
            vocab_size: self.vocab_size,
            tie_word_embeddings: tied,
            bos_token_id: bos,
            eos_token_id: eos,
            hidden_act: "silu".into(),
            attention_bias: false,
            mlp_bias: false,
            torch_dtype: "float32".into(),
        }
    }
}

/// The HF Llama tensor names and shapes (`[out, in]` for projections), embeddings first.
pub(crate) fn tensor_specs(d: &LlamaDims) -> Vec<TensorSpec> {
    let (h, i) = (d.hidden_size, d.intermediate_size);
    let kv = d.num_key_value_heads * d.head_dim();
    let mut specs = vec![TensorSpec::new(
        "model.embed_tokens.weight",
        &[d.vocab_size, h],
    )];
    for layer in 0..d.num_hidden_layers {
        let p = format!("model.layers.{layer}");
        specs.extend([
            TensorSpec::new(format!("{p}.self_attn.q_proj.weight"), &[h, h]),
            TensorSpec::new(format!("{p}.self_attn.k_proj.weight"), &[kv, h]),
            TensorSpec::new(format!("{p}.self_attn.v_proj.weight"), &[kv, h]),
            TensorSpec::new(format!("{p}.self_attn.o_proj.weight"), &[h, h]),
            TensorSpec::new(format!("{p}.mlp.gate_proj.weight"), &[i, h]),
            TensorSpec::new(format!("{p}.mlp.up_proj.weight"), &[i, h]),
            TensorSpec::new(format!("{p}.mlp.down_proj.weight"), &[h, i]),
            TensorSpec::new(format!("{p}.input_layernorm.weight"), &[h]),
            TensorSpec::new(format!("{p}.post_attention_layernorm.weight"), &[h]),
        ]);
    }
    specs.push(TensorSpec::new("model.norm.weight", &[h]));
    specs
}

/// `tokenizer_config.json`: mistral.rs takes the chat template and the bos/eos strings from here.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct TokenizerConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chat_template: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bos_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eos_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unk_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pad_token: Option<String>,
    pub add_bos_token: bool,
    pub add_eos_token: bool,
    pub model_max_length: usize,
    pub clean_up_tokenization_spaces: bool,
    pub tokenizer_class: String,
}

/// `generation_config.json`; every id in `eos_token_id` becomes a stop token in mistral.rs.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct GenerationConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Vec<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pad_token_id: Option<u32>,
}

/// Writes `value` as pretty JSON to `dir/file`.
pub(crate) fn write_json(dir: &Path, file: &'static str, value: &impl Serialize) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value)
        .map_err(|source| ModelFileError::Json { file, source })?;
    text.push('\n');
    let path = dir.join(file);
    fs::write(&path, text).map_err(ModelFileError::io(path))
}

/// A hidden sibling of the output directory that becomes the output directory on [`Staging::commit`].
///
/// Until then the output directory is untouched, and dropping the staging directory removes it, so an
/// error (or a crash, which leaves only a hidden `.NAME.tmp-*` sibling) never leaves a half directory.
/// Replacing a previous directory takes two renames; a crash between them leaves the old one in the
/// hidden `.NAME.tmp-*-old` sibling and no `NAME` at all, never a mix of the two.
pub(crate) struct Staging {
    dir: PathBuf,
    out_dir: PathBuf,
    committed: bool,
}

impl Staging {
    /// Creates the staging directory after checking that `out_dir` may be replaced.
    ///
    /// # Errors
    /// `OutDirInUse` if `out_dir` is a non-empty directory without a `marker` file, or not a directory.
    pub fn create(out_dir: &Path, marker: &str) -> Result<Self> {
        check_replaceable(out_dir, marker)?;
        let name = out_dir
            .file_name()
            .ok_or_else(|| ModelFileError::OutDirInUse(out_dir.to_owned()))?
            .to_string_lossy();
        let parent = match out_dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        fs::create_dir_all(&parent).map_err(ModelFileError::io(&parent))?;
        let dir = parent.join(format!(".{name}.tmp-{}-{}", std::process::id(), nanos()));
        fs::create_dir(&dir).map_err(ModelFileError::io(&dir))?;
        Ok(Self {
            dir,
            out_dir: out_dir.to_owned(),
            committed: false,
        })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Moves the staged files to the output directory, replacing a previous one.
    pub fn commit(mut self) -> Result<()> {
        let io = ModelFileError::io;
        if self.out_dir.exists() {
            // rename(2) cannot replace a non-empty directory: move the old one aside first.
            let mut old = self.dir.clone().into_os_string();
            old.push("-old");
            let old = PathBuf::from(old);
            fs::rename(&self.out_dir, &old).map_err(io(&self.out_dir))?;
            fs::rename(&self.dir, &self.out_dir).map_err(io(&self.dir))?;
            fs::remove_dir_all(&old).map_err(io(&old))?;
        } else {
            fs::rename(&self.dir, &self.out_dir).map_err(io(&self.dir))?;
        }
        self.committed = true;
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            // Best effort: the directory is hidden, and a leftover one is only wasted space.
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

fn check_replaceable(out_dir: &Path, marker: &str) -> Result<()> {
    if !out_dir.exists() {
        return Ok(());
    }
    if !out_dir.is_dir() {
        return Err(ModelFileError::OutDirInUse(out_dir.to_owned()));
    }
    let mut entries = fs::read_dir(out_dir).map_err(ModelFileError::io(out_dir))?;
    if entries.next().is_none() || out_dir.join(marker).is_file() {
        Ok(())
    } else {
        Err(ModelFileError::OutDirInUse(out_dir.to_owned()))
    }
}

fn nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stage_one_file(out: &Path, contents: &str) -> Result<()> {
        let staging = Staging::create(out, "MARK")?;
        fs::write(staging.path().join("MARK"), contents).unwrap();
        staging.commit()
    }

    #[test]
    fn a_committed_staging_directory_replaces_a_previous_import() {
        let root = tempfile::tempdir().unwrap();
        let out = root.path().join("model");
        stage_one_file(&out, "one").unwrap();
        stage_one_file(&out, "two").unwrap();
        assert_eq!(fs::read_to_string(out.join("MARK")).unwrap(), "two");
        assert_eq!(fs::read_dir(root.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_foreign_non_empty_directory_is_not_replaced() {
        let root = tempfile::tempdir().unwrap();
        fs::write(root.path().join("precious.txt"), "x").unwrap();
        let err = stage_one_file(root.path(), "one");
        assert!(matches!(err, Err(ModelFileError::OutDirInUse(_))));
        assert!(root.path().join("precious.txt").exists());
    }

    #[test]
    fn a_dropped_staging_directory_leaves_nothing_behind() {
        let root = tempfile::tempdir().unwrap();
        let out = root.path().join("model");
        let staging = Staging::create(&out, "MARK").unwrap();
        fs::write(staging.path().join("half"), "x").unwrap();
        drop(staging);
        assert_eq!(fs::read_dir(root.path()).unwrap().count(), 0);
    }
}
