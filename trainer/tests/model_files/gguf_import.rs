//! `import_gguf`: a GGUF written here with candle's writer, and the real SmolLM2 GGUF when present.

use std::fs::File;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use flywheel_trainer::{
    import_gguf, sequence_logprobs, Adapter, LoraConfig, Model, ModelFileError, Sequence,
    IMPORT_MARKER,
};
use tokenizers::Tokenizer;

use crate::{load_weights, read_json};

const HIDDEN: usize = 64;
const HEADS: usize = 4;
const KV_HEADS: usize = 2;
const FFN: usize = 128;
const LAYERS: usize = 2;
const TOKENS: [&str; 17] = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "h",
    "e",
    "l",
    "o",
    "Ġ",
    "w",
    "r",
    "d",
    "he",
    "ll",
    "llo",
    "hello",
    "Ġw",
    "<tool>",
];
const MERGES: [&str; 5] = ["h e", "l l", "ll o", "he llo", "Ġ w"];
const TEMPLATE: &str = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}";

/// `convert_hf_to_gguf.py`'s `permute`: `w.reshape(n_head, 2, rows/n_head/2, cols).swapaxes(1, 2)`.
fn llama_cpp_permute(w: &Tensor, heads: usize) -> Tensor {
    let (rows, cols) = w.dims2().unwrap();
    w.reshape((heads, 2, rows / heads / 2, cols))
        .and_then(|t| t.transpose(1, 2))
        .and_then(|t| t.reshape((rows, cols)))
        .unwrap()
}

/// A deterministic HF-layout weight whose every entry is distinct.
fn weight(rows: usize, cols: usize, salt: f32) -> Tensor {
    let n = (rows * cols) as f32;
    let t = Tensor::arange(0f32, n, &Device::Cpu).unwrap();
    ((t / f64::from(n)).unwrap().sin().unwrap() + f64::from(salt))
        .unwrap()
        .reshape((rows, cols))
        .unwrap()
}

/// The HF tensors a test GGUF is made from, kept to compare with what the import writes.
struct Fixture {
    hf: Vec<(String, Tensor)>,
}

/// Writes a two-layer llama GGUF: q/k/o and norms F32, everything else Q8_0, q/k rows permuted as
/// llama.cpp does. `with_output` adds a separate `output.weight` (untied head).
fn write_gguf(path: &Path, tokenizer_model: &str, with_output: bool) -> Fixture {
    let vocab = TOKENS.len();
    let kv = KV_HEADS * HIDDEN / HEADS;
    let mut hf = vec![(
        "model.embed_tokens.weight".to_owned(),
        weight(vocab, HIDDEN, 0.0),
    )];
    let mut gguf: Vec<(String, QTensor)> = vec![];
    let quant = |t: &Tensor, dtype| QTensor::quantize(t, dtype).unwrap();
    gguf.push(("token_embd.weight".into(), quant(&hf[0].1, GgmlDType::Q8_0)));
    for l in 0..LAYERS {
        let s = l as f32;
        let layer = [
            (
                "self_attn.q_proj",
                "attn_q",
                weight(HIDDEN, HIDDEN, s + 0.1),
                Some(HEADS),
            ),
            (
                "self_attn.k_proj",
                "attn_k",
                weight(kv, HIDDEN, s + 0.2),
                Some(KV_HEADS),
            ),
            (
                "self_attn.v_proj",
                "attn_v",
                weight(kv, HIDDEN, s + 0.3),
                None,
            ),
            (
                "self_attn.o_proj",
                "attn_output",
                weight(HIDDEN, HIDDEN, s + 0.4),
                None,
            ),
            (
                "mlp.gate_proj",
                "ffn_gate",
                weight(FFN, HIDDEN, s + 0.5),
                None,
            ),
            ("mlp.up_proj", "ffn_up", weight(FFN, HIDDEN, s + 0.6), None),
            (
                "mlp.down_proj",
                "ffn_down",
                weight(HIDDEN, FFN, s + 0.7),
                None,
            ),
        ];
        for (hf_name, gguf_name, w, permute_heads) in layer {
            let stored = match permute_heads {
                Some(heads) => quant(&llama_cpp_permute(&w, heads), GgmlDType::F32),
                None if gguf_name == "attn_output" => quant(&w, GgmlDType::F32),
                None => quant(&w, GgmlDType::Q8_0),
            };
            gguf.push((format!("blk.{l}.{gguf_name}.weight"), stored));
            hf.push((format!("model.layers.{l}.{hf_name}.weight"), w));
        }
        for (hf_name, gguf_name) in [
            ("input_layernorm", "attn_norm"),
            ("post_attention_layernorm", "ffn_norm"),
        ] {
            let w = (weight(1, HIDDEN, s).squeeze(0).unwrap() + 1.0).unwrap();
            gguf.push((
                format!("blk.{l}.{gguf_name}.weight"),
                quant(&w, GgmlDType::F32),
            ));
            hf.push((format!("model.layers.{l}.{hf_name}.weight"), w));
        }
    }
    let norm = (weight(1, HIDDEN, 0.9).squeeze(0).unwrap() + 1.0).unwrap();
    gguf.push(("output_norm.weight".into(), quant(&norm, GgmlDType::F32)));
    hf.push(("model.norm.weight".into(), norm));
    if with_output {
        let head = weight(vocab, HIDDEN, 2.0);
        gguf.push(("output.weight".into(), quant(&head, GgmlDType::F32)));
        hf.push(("lm_head.weight".into(), head));
    }

    let strings =
        |items: &[&str]| Value::Array(items.iter().map(|s| Value::String(s.to_string())).collect());
    let mut types = vec![Value::I32(1); vocab];
    types[..3].fill(Value::I32(3));
    types[vocab - 1] = Value::I32(4);
    let metadata: Vec<(&str, Value)> = vec![
        ("general.architecture", Value::String("llama".into())),
        ("llama.block_count", Value::U32(LAYERS as u32)),
        ("llama.context_length", Value::U32(256)),
        ("llama.embedding_length", Value::U32(HIDDEN as u32)),
        ("llama.feed_forward_length", Value::U32(FFN as u32)),
        ("llama.attention.head_count", Value::U32(HEADS as u32)),
        ("llama.attention.head_count_kv", Value::U32(KV_HEADS as u32)),
        ("llama.rope.freq_base", Value::F32(100_000.0)),
        ("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5)),
        (
            "tokenizer.ggml.model",
            Value::String(tokenizer_model.into()),
        ),
        ("tokenizer.ggml.pre", Value::String("smollm".into())),
        ("tokenizer.ggml.tokens", strings(&TOKENS)),
        ("tokenizer.ggml.token_type", Value::Array(types)),
        ("tokenizer.ggml.merges", strings(&MERGES)),
        ("tokenizer.ggml.bos_token_id", Value::U32(1)),
        ("tokenizer.ggml.eos_token_id", Value::U32(2)),
        ("tokenizer.chat_template", Value::String(TEMPLATE.into())),
    ];
    let metadata: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
    let tensors: Vec<(&str, &QTensor)> = gguf.iter().map(|(k, v)| (k.as_str(), v)).collect();
    gguf_file::write(&mut File::create(path).unwrap(), &metadata, &tensors).unwrap();
    Fixture { hf }
}

#[test]
fn an_imported_gguf_has_hf_names_shapes_and_unpermuted_weights() {
    // Arrange
    let root = tempfile::tempdir().unwrap();
    let gguf = root.path().join("tiny.gguf");
    let fixture = write_gguf(&gguf, "gpt2", true);
    let out = root.path().join("imported");

    // Act
    let summary = import_gguf(&gguf, &out).unwrap();

    // Assert
    assert_eq!(summary.tensors, 2 + LAYERS * 9 + 1);
    assert_eq!(
        (summary.vocab_size, summary.context_length),
        (TOKENS.len(), 256)
    );
    assert!(!summary.tie_word_embeddings);
    assert_eq!(summary.source_dtypes["Q8_0"], 1 + LAYERS * 4);
    let weights = load_weights(&out);
    assert_eq!(weights.len(), fixture.hf.len());
    let mut parameters = 0;
    for (name, expected) in &fixture.hf {
        let got = &weights[name];
        assert_eq!(got.dims(), expected.dims(), "{name}");
        let diff = (got - expected)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap();
        let max = diff.max(0).unwrap().to_scalar::<f32>().unwrap();
        // F32 tensors (q, k, o, norms, head) must be exact; Q8_0 ones within its rounding.
        let exact = ["q_proj", "k_proj", "o_proj", "norm", "lm_head"]
            .iter()
            .any(|p| name.contains(p));
        let tolerance = if exact { 0.0 } else { 0.02 };
        assert!(max <= tolerance, "{name}: max difference {max}");
        parameters += expected.elem_count() as u64;
    }
    assert_eq!(summary.parameters, parameters);

    let config = read_json(&out, "config.json");
    assert_eq!(config["num_hidden_layers"], LAYERS);
    assert_eq!(config["num_attention_heads"], HEADS);
    assert_eq!(config["num_key_value_heads"], KV_HEADS);
    assert_eq!(config["intermediate_size"], FFN);
    assert_eq!(config["rope_theta"], 100000.0);
    assert_eq!(config["rms_norm_eps"], 1e-5);
    assert_eq!(config["tie_word_embeddings"], false);
    assert_eq!(
        (
            config["bos_token_id"].as_u64(),
            config["eos_token_id"].as_u64()
        ),
        (Some(1), Some(2))
    );
}

#[test]
fn an_imported_tokenizer_applies_merges_and_keeps_special_tokens_and_the_chat_template() {
    // Arrange
    let root = tempfile::tempdir().unwrap();
    let gguf = root.path().join("tiny.gguf");
    write_gguf(&gguf, "gpt2", false);
    let out = root.path().join("imported");

    // Act
    let summary = import_gguf(&gguf, &out).unwrap();

    // Assert
    assert!(summary.tie_word_embeddings && summary.has_chat_template);
    assert!(!load_weights(&out).contains_key("lm_head.weight"));
    assert_eq!(read_json(&out, "config.json")["tie_word_embeddings"], true);
    let tokenizer = Tokenizer::from_file(out.join("tokenizer.json")).unwrap();
    let encoding = tokenizer
        .encode("<|im_start|>hello world<tool><|im_end|>", false)
        .unwrap();
    let id = |t: &str| TOKENS.iter().position(|x| *x == t).unwrap() as u32;
    let expected = [
        "<|im_start|>",
        "hello",
        "Ġw",
        "o",
        "r",
        "l",
        "d",
        "<tool>",
        "<|im_end|>",
    ]
    .map(id);
    assert_eq!(encoding.get_ids(), expected.as_slice());
    // Control tokens are skipped when decoding; the user-defined one is text.
    assert_eq!(
        tokenizer.decode(encoding.get_ids(), true).unwrap(),
        "hello world<tool>"
    );
    let tc = read_json(&out, "tokenizer_config.json");
    assert_eq!(tc["chat_template"], TEMPLATE);
    assert_eq!(
        (tc["bos_token"].as_str(), tc["eos_token"].as_str()),
        (Some("<|im_start|>"), Some("<|im_end|>"))
    );
    assert_eq!(
        read_json(&out, "generation_config.json")["eos_token_id"][0],
        2
    );
    assert!(out.join(IMPORT_MARKER).is_file());
}

#[test]
fn importing_again_replaces_a_previous_import_but_not_a_foreign_directory() {
    // Arrange
    let root = tempfile::tempdir().unwrap();
    let gguf = root.path().join("tiny.gguf");
    write_gguf(&gguf, "gpt2", false);
    let out = root.path().join("imported");
    import_gguf(&gguf, &out).unwrap();
    let foreign = root.path().join("foreign");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("notes.txt"), "keep me").unwrap();

    // Act
    let again = import_gguf(&gguf, &out);
    let refused = import_gguf(&gguf, &foreign);

    // Assert
    assert!(again.is_ok(), "{again:?}");
    assert!(
        matches!(refused, Err(ModelFileError::OutDirInUse(_))),
        "{refused:?}"
    );
    assert_eq!(
        std::fs::read_to_string(foreign.join("notes.txt")).unwrap(),
        "keep me"
    );
    let mut names: Vec<_> = std::fs::read_dir(root.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["foreign", "imported", "tiny.gguf"],
        "no staging directory is left behind"
    );
}

#[test]
fn a_sentencepiece_gguf_is_refused_without_writing_anything() {
    // Arrange
    let root = tempfile::tempdir().unwrap();
    let gguf = root.path().join("spm.gguf");
    write_gguf(&gguf, "llama", false);
    let out = root.path().join("imported");

    // Act
    let err = import_gguf(&gguf, &out).unwrap_err();

    // Assert
    assert!(matches!(err, ModelFileError::Unsupported(_)), "{err:?}");
    assert!(!out.exists());
}

#[test]
fn the_trainer_loads_a_gguf_directly_as_it_loads_the_imported_directory() {
    // Arrange
    let root = tempfile::tempdir().unwrap();
    let gguf = root.path().join("tiny.gguf");
    write_gguf(&gguf, "gpt2", true);
    let out = root.path().join("imported");
    import_gguf(&gguf, &out).unwrap();
    let load =
        |path: &Path| Model::load(path, LoraConfig::default(), DType::F32, &Device::Cpu).unwrap();
    let seq = Sequence::new(vec![1, 3, 4, 5], vec![6, 7, 8, 2]).unwrap();

    // Act
    let direct = sequence_logprobs(&load(&gguf), &seq, Adapter::Off).unwrap();
    let imported = sequence_logprobs(&load(&out), &seq, Adapter::Off).unwrap();

    // Assert
    assert_eq!(direct.per_token, imported.per_token);
    assert!(direct.sum.is_finite());
}

/// `FLYWHEEL_SMOLLM2_GGUF`, else the first `.gguf` in `~/.cache/flywheel/models/smollm2-135m-instruct/`.
fn smollm2_gguf() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("FLYWHEEL_SMOLLM2_GGUF") {
        return Some(PathBuf::from(path)).filter(|p| p.is_file());
    }
    let dir = PathBuf::from(std::env::var_os("HOME")?)
        .join(".cache/flywheel/models/smollm2-135m-instruct");
    let mut ggufs: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "gguf"))
        .collect();
    ggufs.sort();
    ggufs.into_iter().next()
}

#[test]
fn the_real_smollm2_gguf_imports_with_its_shape_and_tokenizer() {
    // Arrange
    let Some(gguf) = smollm2_gguf() else {
        eprintln!("skipped: no SmolLM2 GGUF (set FLYWHEEL_SMOLLM2_GGUF or see the test's doc)");
        return;
    };
    let mut file = File::open(&gguf).unwrap();
    let content = gguf_file::Content::read(&mut file).unwrap();
    let tokens = content.metadata["tokenizer.ggml.tokens"].to_vec().unwrap();
    let id = |t: &str| {
        tokens
            .iter()
            .position(|v| v.to_string().unwrap() == t)
            .unwrap() as u32
    };
    let out = tempfile::tempdir().unwrap();
    let out = out.path().join("smollm2");

    // Act
    let summary = import_gguf(&gguf, &out).unwrap();

    // Assert
    let config = read_json(&out, "config.json");
    assert_eq!(config["num_hidden_layers"], 30);
    assert_eq!(config["hidden_size"], 576);
    assert_eq!(config["num_attention_heads"], 9);
    assert_eq!(config["num_key_value_heads"], 3);
    assert_eq!(summary.vocab_size, tokens.len());
    let tokenizer = Tokenizer::from_file(out.join("tokenizer.json")).unwrap();
    let ids = tokenizer
        .encode("Hello, world!", false)
        .unwrap()
        .get_ids()
        .to_vec();
    assert_eq!(ids, ["Hello", ",", "Ġworld", "!"].map(id));
    // SmolLM splits digits one by one before BPE.
    let ids = tokenizer.encode("2024", false).unwrap().get_ids().to_vec();
    assert_eq!(ids, ["2", "0", "2", "4"].map(id));
    let text = "<|im_start|>user\nhéllo 日本 🦀<|im_end|>\n";
    let ids = tokenizer.encode(text, false).unwrap().get_ids().to_vec();
    assert_eq!(ids[0], id("<|im_start|>"));
    assert_eq!(tokenizer.decode(&ids, false).unwrap(), text);
    eprintln!("imported {}: {summary:?}", gguf.display());
}
