//! Whether a PEFT LoRA adapter fits a base model, from its config and the safetensors headers alone.
//!
//! mistral.rs reports a mismatch as an opaque load error, indistinguishable from a replica's own
//! trouble, and silently skips what it cannot apply; this check names the adapter as the culprit
//! before any weight is read, so that only a real fault of the adapter marks it `failed`, and an
//! adapter trained elsewhere is refused before it is registered.
//!
//! It follows how mistral.rs 0.8.1 merges a LoRA at load (mistralrs-quant `merge_lora_weights`):
//! the config's `r`, `lora_alpha` and `target_modules` (a list) are all it reads; the targets are
//! joined into a regex matched against each linear layer's path, and every layer matched gets
//! `lora_alpha / r · B·A`, so each one needs its `lora_A` [r, in] and `lora_B` [out, r]. Any other
//! tensor, and any PEFT option that changes the update (DoRA, rsLoRA, per-layer patterns), would be
//! ignored, serving something other than what was trained: those are refused.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::Path;

use flywheel_store::{PEFT_CONFIG_FILE, PEFT_WEIGHTS_FILE};
use serde_json::Value;

/// PEFT prefixes every LoRA tensor name with this, before the base model's module path.
const PEFT_PREFIX: &str = "base_model.model.";

/// PEFT options that change the update in ways mistral.rs 0.8.1 does not apply, and what each asks
/// for. Any value but `null`, `false` or an empty list or map counts as set.
const UNSUPPORTED: [(&str, &str); 5] = [
    ("use_dora", "DoRA"),
    ("use_rslora", "rsLoRA scaling (lora_alpha / √r)"),
    ("rank_pattern", "per-layer ranks"),
    ("alpha_pattern", "per-layer alphas"),
    ("layers_to_transform", "a subset of the layers"),
];

/// What an adapter that fits declares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoraFit {
    /// The LoRA rank `r`.
    pub rank: usize,
    pub target_modules: Vec<String>,
    /// How many linear layers of the base model it changes.
    pub layers: usize,
}

/// Why an adapter does not fit, by whose fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FitError {
    /// The adapter's own: unreadable files, a config mistral.rs cannot apply, weights that do not
    /// match the base model. The message reads after "adapter …" ("does not fit the base model: …").
    #[error("{0}")]
    Adapter(String),
    /// The base model's files could not be read here; this says nothing about the adapter.
    #[error("cannot be checked against the base model: {0}")]
    Base(String),
}

/// `Ok` when the adapter in `adapter_dir` is a plain LoRA whose config mistral.rs can apply, each
/// of its `target_modules` names linear layers of the base model in `base_dir`, every layer a
/// target matches has its `lora_A` [r, in] and `lora_B` [out, r] with the config's rank `r`, and the
/// weights file holds nothing else.
///
/// # Errors
/// [`FitError::Adapter`] saying what does not fit or cannot be read ("does not fit the base model:
/// …"); [`FitError::Base`] when the base model's headers cannot be read.
pub fn check_fits_base(adapter_dir: &Path, base_dir: &Path) -> Result<LoraFit, FitError> {
    let (rank, target_modules) = read_config(&adapter_dir.join(PEFT_CONFIG_FILE))?;
    let adapter = header_shapes(&adapter_dir.join(PEFT_WEIGHTS_FILE))
        .map_err(|e| FitError::Adapter(format!("has unreadable weights: {e}")))?;
    let base = linear_layers(base_dir).map_err(FitError::Base)?;
    let misfit =
        |detail: String| FitError::Adapter(format!("does not fit the base model: {detail}"));
    if let Some(unknown) = target_modules.iter().find(|t| {
        !base
            .keys()
            .any(|m| m.rsplit('.').next() == Some(t.as_str()))
    }) {
        return Err(misfit(format!(
            "`target_modules` names `{unknown}`, which is no linear layer of the base model"
        )));
    }
    // Targets are plain names, so mistral.rs's regex match is a substring match.
    let targeted: BTreeMap<&str, (usize, usize)> = base
        .iter()
        .filter(|(module, _)| target_modules.iter().any(|t| module.contains(t.as_str())))
        .map(|(module, shape)| (module.as_str(), *shape))
        .collect();
    for (module, &(out, inp)) in &targeted {
        let half = |h: &str| adapter.get(&format!("{PEFT_PREFIX}{module}.lora_{h}.weight"));
        let (Some(a_shape), Some(b_shape)) = (half("A"), half("B")) else {
            return Err(misfit(format!(
                "`{module}` matches `target_modules` but has no lora_A/lora_B pair; mistral.rs \
                 merges into every layer a target matches"
            )));
        };
        if a_shape[..] != [rank, inp] || b_shape[..] != [out, rank] {
            return Err(misfit(format!(
                "`{module}` is [{out}, {inp}], so rank {rank} needs lora_A [{rank}, {inp}] and \
                 lora_B [{out}, {rank}]; given {a_shape:?} and {b_shape:?}"
            )));
        }
    }
    for name in adapter.keys() {
        let module = name.strip_prefix(PEFT_PREFIX).and_then(|n| {
            n.strip_suffix(".lora_A.weight")
                .or_else(|| n.strip_suffix(".lora_B.weight"))
        });
        match module {
            Some(module) if targeted.contains_key(module) => {}
            Some(module) if !base.contains_key(module) => {
                return Err(misfit(format!("the base model has no layer `{module}`")));
            }
            Some(module) => {
                return Err(misfit(format!(
                    "`{name}` is for `{module}`, which `target_modules` does not match; mistral.rs \
                     would ignore it"
                )));
            }
            None => {
                return Err(misfit(format!(
                    "`{name}` is not a LoRA matrix (`{PEFT_PREFIX}<layer>.lora_A.weight` or \
                     `.lora_B.weight`); mistral.rs would ignore it"
                )));
            }
        }
    }
    Ok(LoraFit {
        rank,
        target_modules,
        layers: targeted.len(),
    })
}

/// The rank and target modules of a PEFT config that mistral.rs 0.8.1 applies as it was trained.
fn read_config(path: &Path) -> Result<(usize, Vec<String>), FitError> {
    let config: Value = std::fs::read(path)
        .map_err(|e| e.to_string())
        .and_then(|bytes| serde_json::from_slice(&bytes).map_err(|e| e.to_string()))
        .map_err(|e| FitError::Adapter(format!("has an unreadable {PEFT_CONFIG_FILE}: {e}")))?;
    let unusable =
        |detail: String| FitError::Adapter(format!("has an unusable {PEFT_CONFIG_FILE}: {detail}"));
    if !config.is_object() {
        return Err(unusable("it is not a JSON object".into()));
    }
    match &config["peft_type"] {
        Value::Null => {}
        Value::String(kind) if kind.eq_ignore_ascii_case("LORA") => {}
        other => {
            return Err(unusable(format!(
                "`peft_type` is {other}; only LORA adapters can be served"
            )))
        }
    }
    let rank = config["r"].as_u64().filter(|r| *r > 0).ok_or_else(|| {
        unusable(format!(
            "`r` (the rank) must be a positive integer; given {}",
            config["r"]
        ))
    })? as usize;
    if !config["lora_alpha"].is_number() {
        return Err(unusable(format!(
            "`lora_alpha` must be a number (the update is scaled by lora_alpha / r); given {}",
            config["lora_alpha"]
        )));
    }
    let targets = match &config["target_modules"] {
        Value::Array(items) if !items.is_empty() => items,
        other => {
            return Err(unusable(format!(
                "`target_modules` must be a non-empty list of module names such as \
                 [\"q_proj\", \"v_proj\"] (mistral.rs 0.8.1 reads no regex or `all-linear`); \
                 given {other}"
            )))
        }
    };
    let target_modules = targets
        .iter()
        .map(|t| match t.as_str() {
            Some(name) if is_module_name(name) => Ok(name.to_string()),
            _ => Err(unusable(format!(
                "`target_modules` holds {t}, which is not a module name such as \"q_proj\""
            ))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    if let Some((field, what)) = UNSUPPORTED
        .iter()
        .find(|(field, _)| is_set(&config[*field]))
    {
        return Err(unusable(format!(
            "`{field}` asks for {what}, which mistral.rs 0.8.1 does not apply"
        )));
    }
    Ok((rank, target_modules))
}

/// A layer's last path component, as PEFT users write targets: letters, digits and `_`.
fn is_module_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn is_set(value: &Value) -> bool {
    match value {
        Value::Null | Value::Bool(false) => false,
        Value::Array(items) => !items.is_empty(),
        Value::Object(fields) => !fields.is_empty(),
        _ => true,
    }
}

/// The base model's linear layers (two-dimensional `<module>.weight` tensors) and their
/// `[out, in]` shapes, from the headers of every safetensors file in `base_dir`.
fn linear_layers(base_dir: &Path) -> Result<BTreeMap<String, (usize, usize)>, String> {
    let mut layers = BTreeMap::new();
    for file in std::fs::read_dir(base_dir)
        .map_err(|e| format!("{}: {e}", base_dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
    {
        for (name, shape) in header_shapes(&file)? {
            if let (Some(module), &[out, inp]) = (name.strip_suffix(".weight"), shape.as_slice()) {
                layers.insert(module.to_string(), (out, inp));
            }
        }
    }
    Ok(layers)
}

/// The tensor shapes listed in a safetensors file's header (the file's first 8 + N bytes), by name
/// in order, so the first misfit reported is always the same one.
fn header_shapes(path: &Path) -> Result<BTreeMap<String, Vec<usize>>, String> {
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
    let header: HashMap<String, Value> = serde_json::from_slice(&header)
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
    use serde_json::json;

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

    /// A base with one linear layer `q_proj` [64, 32] and a rank-4 adapter on `module`.
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
        write_config(
            dir.path(),
            json!({"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": [module]}),
        );
        dir
    }

    fn write_config(dir: &Path, config: Value) {
        std::fs::write(dir.join("lora").join(PEFT_CONFIG_FILE), config.to_string()).unwrap();
    }

    fn check(dir: &tempfile::TempDir) -> Result<LoraFit, FitError> {
        check_fits_base(&dir.path().join("lora"), &dir.path().join("base"))
    }

    #[test]
    fn matching_shapes_fit() {
        let dir = fixture((4, 32), (64, 4), "q_proj");
        let fit = check(&dir).unwrap();
        assert_eq!(fit.rank, 4);
        assert_eq!(fit.layers, 1);
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
            let Err(FitError::Adapter(err)) = check(&dir) else {
                panic!("{module} {a:?} {b:?} fits")
            };
            assert!(err.starts_with("does not fit the base model"), "{err}");
        }
    }

    #[test]
    fn a_config_mistral_rs_would_not_apply_as_trained_is_refused() {
        let base =
            json!({"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj"]});
        let with = |field: &str, value: Value| {
            let mut config = base.clone();
            config[field] = value;
            config
        };
        for (config, named) in [
            (with("peft_type", json!("IA3")), "peft_type"),
            (with("r", json!(0)), "`r`"),
            (with("lora_alpha", Value::Null), "lora_alpha"),
            (
                with("target_modules", json!("all-linear")),
                "target_modules",
            ),
            (
                with("target_modules", json!([".*q_proj"])),
                "target_modules",
            ),
            (with("use_dora", json!(true)), "use_dora"),
            (with("use_rslora", json!(true)), "use_rslora"),
            (with("rank_pattern", json!({"q_proj": 8})), "rank_pattern"),
            (json!([1, 2]), "JSON object"),
        ] {
            let dir = fixture((4, 32), (64, 4), "q_proj");
            write_config(dir.path(), config.clone());
            let Err(FitError::Adapter(err)) = check(&dir) else {
                panic!("{config} is accepted")
            };
            assert!(err.contains("unusable") && err.contains(named), "{err}");
        }
        let dir = fixture((4, 32), (64, 4), "q_proj");
        write_config(dir.path(), with("use_dora", json!(false)));
        check(&dir).unwrap();
    }

    #[test]
    fn a_target_the_weights_lack_or_a_tensor_that_is_no_lora_matrix_does_not_fit() {
        let dir = fixture((4, 32), (64, 4), "q_proj");
        save(
            &dir.path().join("lora").join(PEFT_WEIGHTS_FILE),
            &[(
                "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight",
                (4, 32),
            )],
        );
        assert!(matches!(check(&dir), Err(FitError::Adapter(e)) if e.contains("no lora_A/lora_B")));

        save(
            &dir.path().join("lora").join(PEFT_WEIGHTS_FILE),
            &[
                (
                    "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight",
                    (4, 32),
                ),
                (
                    "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight",
                    (64, 4),
                ),
                (
                    "base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector",
                    (1, 64),
                ),
            ],
        );
        assert!(
            matches!(check(&dir), Err(FitError::Adapter(e)) if e.contains("not a LoRA matrix"))
        );
    }

    #[test]
    fn an_unreadable_base_is_not_the_adapters_fault() {
        let dir = fixture((4, 32), (64, 4), "q_proj");
        let err = check_fits_base(&dir.path().join("lora"), &dir.path().join("nowhere"));
        assert!(matches!(err, Err(FitError::Base(_))), "{err:?}");
    }
}
