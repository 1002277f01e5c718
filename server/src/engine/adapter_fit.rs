//! Whether a PEFT LoRA adapter fits a base model, from the safetensors headers alone.
//!
//! mistral.rs reports a mismatch as an opaque load error, indistinguishable from a replica's own
//! trouble; this check names the adapter as the culprit before any weight is read, so that only a
//! real fault of the adapter marks it `failed`.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use flywheel_store::{PEFT_CONFIG_FILE, PEFT_WEIGHTS_FILE};

/// PEFT prefixes every LoRA tensor name with this, before the base model's module path.
const PEFT_PREFIX: &str = "base_model.model.";

/// `Ok` when every LoRA pair of the adapter in `adapter_dir` names a linear layer of the base model
/// in `base_dir` and has its shapes: `lora_A` is `[r, in]`, `lora_B` is `[out, r]`, with the
/// config's rank `r`.
///
/// # Errors
/// A message saying what does not fit ("does not fit the base model: …"), or what cannot be read.
pub fn check_fits_base(adapter_dir: &Path, base_dir: &Path) -> Result<(), String> {
    let config_path = adapter_dir.join(PEFT_CONFIG_FILE);
    let config: serde_json::Value = std::fs::read(&config_path)
        .map_err(|e| e.to_string())
        .and_then(|bytes| serde_json::from_slice(&bytes).map_err(|e| e.to_string()))
        .map_err(|e| format!("has an unreadable {PEFT_CONFIG_FILE}: {e}"))?;
    let rank = config["r"]
        .as_u64()
        .filter(|r| *r > 0)
        .ok_or_else(|| format!("has no positive rank `r` in {PEFT_CONFIG_FILE}"))?
        as usize;
    let adapter = header_shapes(&adapter_dir.join(PEFT_WEIGHTS_FILE))
        .map_err(|e| format!("has unreadable weights: {e}"))?;
    let mut base = HashMap::new();
    for file in std::fs::read_dir(base_dir)
        .map_err(|e| format!("cannot be checked: {}: {e}", base_dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
    {
        base.extend(header_shapes(&file).map_err(|e| format!("cannot be checked: {e}"))?);
    }
    let misfit = |detail: String| format!("does not fit the base model: {detail}");
    let mut pairs = 0;
    for (name, a_shape) in &adapter {
        let Some(module) = name
            .strip_prefix(PEFT_PREFIX)
            .and_then(|n| n.strip_suffix(".lora_A.weight"))
        else {
            continue;
        };
        pairs += 1;
        let b_name = format!("{PEFT_PREFIX}{module}.lora_B.weight");
        let b_shape = adapter
            .get(&b_name)
            .ok_or_else(|| misfit(format!("`{name}` has no `{b_name}`")))?;
        let base_shape = base
            .get(&format!("{module}.weight"))
            .ok_or_else(|| misfit(format!("the base model has no layer `{module}`")))?;
        let [out, inp] = base_shape[..] else {
            return Err(misfit(format!("`{module}` is not a linear layer")));
        };
        if a_shape[..] != [rank, inp] || b_shape[..] != [out, rank] {
            return Err(misfit(format!(
                "`{module}` is [{out}, {inp}], so rank {rank} needs lora_A [{rank}, {inp}] and \
                 lora_B [{out}, {rank}]; given {a_shape:?} and {b_shape:?}"
            )));
        }
    }
    if pairs == 0 {
        return Err(misfit("it holds no LoRA weights".into()));
    }
    Ok(())
}

/// The tensor shapes listed in a safetensors file's header (the file's first 8 + N bytes).
fn header_shapes(path: &Path) -> Result<HashMap<String, Vec<usize>>, String> {
    let at = |e: std::io::Error| format!("{}: {e}", path.display());
    let mut file = std::fs::File::open(path).map_err(at)?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len).map_err(at)?;
    let len = u64::from_le_bytes(len);
    if len > 100 * 1024 * 1024 {
        return Err(format!("{}: not a safetensors file", path.display()));
    }
    let mut header = vec![0u8; len as usize];
    file.read_exact(&mut header).map_err(at)?;
    let header: HashMap<String, serde_json::Value> = serde_json::from_slice(&header)
        .map_err(|e| format!("{}: bad safetensors header: {e}", path.display()))?;
    Ok(header
        .into_iter()
        .filter(|(name, _)| name != "__metadata__")
        .filter_map(|(name, info)| {
            let shape = info["shape"]
                .as_array()?
                .iter()
                .map(|d| d.as_u64().map(|d| d as usize))
                .collect::<Option<Vec<_>>>()?;
            Some((name, shape))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    fn save(path: &Path, tensors: &[(&str, (usize, usize))]) {
        let map: HashMap<String, Tensor> = tensors
            .iter()
            .map(|(name, shape)| {
                let t = Tensor::zeros(*shape, candle_core::DType::F32, &Device::Cpu).unwrap();
                (name.to_string(), t)
            })
            .collect();
        candle_core::safetensors::save(&map, path).unwrap();
    }

    fn fixture(a: (usize, usize), b: (usize, usize), module: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("base")).unwrap();
        std::fs::create_dir_all(dir.path().join("lora")).unwrap();
        save(
            &dir.path().join("base/model.safetensors"),
            &[("model.layers.0.self_attn.q_proj.weight", (64, 32))],
        );
        let a_name = format!("base_model.model.model.layers.0.self_attn.{module}.lora_A.weight");
        let b_name = format!("base_model.model.model.layers.0.self_attn.{module}.lora_B.weight");
        save(
            &dir.path().join("lora").join(PEFT_WEIGHTS_FILE),
            &[(&a_name, a), (&b_name, b)],
        );
        std::fs::write(
            dir.path().join("lora").join(PEFT_CONFIG_FILE),
            r#"{"r": 4}"#,
        )
        .unwrap();
        dir
    }

    #[test]
    fn matching_shapes_fit() {
        let dir = fixture((4, 32), (64, 4), "q_proj");
        check_fits_base(&dir.path().join("lora"), &dir.path().join("base")).unwrap();
    }

    #[test]
    fn a_shape_or_a_module_the_base_lacks_does_not_fit() {
        for (a, b, module) in [
            ((4, 48), (64, 4), "q_proj"),
            ((4, 32), (32, 4), "q_proj"),
            ((8, 32), (64, 8), "q_proj"),
            ((4, 32), (64, 4), "k_proj"),
        ] {
            let dir = fixture(a, b, module);
            let err =
                check_fits_base(&dir.path().join("lora"), &dir.path().join("base")).unwrap_err();
            assert!(err.starts_with("does not fit the base model"), "{err}");
        }
    }
}
