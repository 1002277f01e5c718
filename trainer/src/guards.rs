//! Guards against candle's silent autograd failures (`research/trainer.md` §7): every LoRA tensor
//! gets a gradient, base weights stay bit-identical, per-layer recomputation changes nothing, and
//! whole-model gradients match finite differences (f64) for every objective.

use candle_core::{DType, Device, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::files::write_tiny_llama;
use crate::learning::{
    accumulate_gradients, prepare_pairs, recompute_backward, Dpo, GradOptions, Inpo, Ipo,
    LoraGrads, Objective, OptimConfig, PairExample, Reference, Rpo, Sppo, TrainConfig, Trainer,
};
use crate::model::{
    packed_logprobs, Adapter, LoraConfig, LoraTargets, LoraWeights, Model, Pack, Sequence,
};

fn all_modules() -> Vec<String> {
    LoraTargets::AllLinear.modules()
}

/// The tiny model with LoRA r = 4 on all seven projections.
fn tiny_model(dtype: DType, dropout: f64) -> (tempfile::TempDir, Model) {
    tiny_model_adapting(all_modules(), dtype, dropout)
}

fn tiny_model_adapting(
    target_modules: Vec<String>,
    dtype: DType,
    dropout: f64,
) -> (tempfile::TempDir, Model) {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_llama(dir.path(), 7).unwrap();
    let lora = LoraConfig {
        rank: 4,
        alpha: 8.0,
        dropout,
        target_modules,
        seed: 3,
    };
    let model = Model::load(dir.path(), lora, dtype, &Device::Cpu).unwrap();
    (dir, model)
}

/// Random LoRA values with B ≠ 0 (a fresh adapter's B = 0 gives A no gradient).
fn random_adapter(model: &Model, seed: u64) -> LoraWeights {
    let mut rng = StdRng::seed_from_u64(seed);
    let pairs = model
        .lora_modules()
        .iter()
        .map(|m| {
            let mut t = |r: usize, c: usize| {
                let v: Vec<f64> = (0..r * c).map(|_| rng.random_range(-0.1..0.1)).collect();
                Tensor::from_vec(v, (r, c), &Device::Cpu)
                    .unwrap()
                    .to_dtype(model.lora_dtype())
                    .unwrap()
            };
            let rank = model.lora_config().rank;
            (t(rank, m.in_dim), t(m.out_dim, rank))
        })
        .collect();
    LoraWeights { pairs }
}

/// Every base tensor's bits, as f32 (exact from bf16 too).
fn base_bits(model: &Model) -> Vec<Vec<u32>> {
    model
        .llama
        .base_tensors()
        .iter()
        .map(|t| {
            let v = t.to_dtype(DType::F32).unwrap().flatten_all().unwrap();
            v.to_vec1::<f32>()
                .unwrap()
                .iter()
                .map(|x| x.to_bits())
                .collect()
        })
        .collect()
}

/// AdamW at 1e-2 with no warm-up: a few steps visibly move the tiny model.
fn fast_config(checkpoint: bool) -> TrainConfig {
    TrainConfig {
        optim: OptimConfig {
            lr: 1e-2,
            warmup_steps: 0,
            ..OptimConfig::default()
        },
        checkpoint,
        ..TrainConfig::default()
    }
}

fn examples() -> Vec<PairExample> {
    let seq = |p: &[u32], r: &[u32]| Sequence::new(p.to_vec(), r.to_vec()).unwrap();
    vec![
        PairExample {
            chosen: seq(&[1, 40, 41, 42], &[50, 51, 2]),
            rejected: seq(&[1, 40, 41, 42], &[60, 61, 62, 2]),
            win_rates: Some([0.8, 0.3]),
        },
        PairExample {
            chosen: seq(&[1, 70, 71], &[80, 2]),
            rejected: seq(&[1, 70, 71], &[90, 91, 2]),
            win_rates: Some([0.6, 0.4]),
        },
    ]
}

fn gradients(model: &Model, objective: &dyn Objective, checkpoint: bool) -> (f64, LoraGrads) {
    let previous = model.snapshot().unwrap();
    let pairs = prepare_pairs(model, objective, examples(), Adapter::Fixed(&previous)).unwrap();
    let mut grads = LoraGrads::new(model);
    let options = GradOptions {
        scale: 1.0,
        dropout_seed: Some(11),
        checkpoint,
    };
    let (loss, _) = accumulate_gradients(model, objective, &pairs, options, &mut grads).unwrap();
    (loss, grads)
}

fn values(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

#[test]
fn every_lora_tensor_gets_a_nonzero_gradient_after_one_step() {
    // Arrange: one optimiser step makes B nonzero, as in a real run.
    let (_dir, model) = tiny_model(DType::F32, 0.1);
    let objective = Dpo::default();
    let pairs = prepare_pairs(&model, &objective, examples(), Adapter::Off).unwrap();
    let config = fast_config(false);
    Trainer::new(&model, Box::new(objective), config)
        .unwrap()
        .step(&pairs)
        .unwrap();

    // Act
    let (_, grads) = gradients(&model, &objective, false);

    // Assert: 2 layers × 7 projections × (A, B).
    assert_eq!(grads.grads.len(), 28);
    for (i, g) in grads.grads.iter().enumerate() {
        let g = g
            .as_ref()
            .unwrap_or_else(|| panic!("LoRA tensor {i} got no gradient"));
        let max = values(g).iter().fold(0.0f64, |m, v| m.max(v.abs()));
        assert!(max > 0.0, "LoRA tensor {i} got an all-zero gradient");
    }
}

#[test]
fn base_weights_are_bit_identical_after_three_training_steps() {
    // Arrange
    let (_dir, model) = tiny_model(DType::F32, 0.0);
    let before = base_bits(&model);
    let objective = Dpo::default();
    let pairs = prepare_pairs(&model, &objective, examples(), Adapter::Off).unwrap();
    let config = fast_config(false);
    let mut trainer = Trainer::new(&model, Box::new(objective), config).unwrap();

    // Act
    let losses: Vec<f64> = (0..3).map(|_| trainer.step(&pairs).unwrap().loss).collect();

    // Assert
    assert!(losses[2] < losses[0], "DPO loss should fall: {losses:?}");
    let after = base_bits(&model);
    assert_eq!(before.len(), after.len());
    assert!(before == after, "a base weight changed");
    assert!(model.llama.base_tensors().iter().all(|t| !t.is_variable()));
}

#[test]
fn per_layer_recomputation_gives_the_full_graph_gradients() {
    // With every projection adapted, and with the attention ones only (the default), where the
    // recomputation skips the frozen down projection's forward.
    let attention = LoraTargets::Attention.modules();
    for modules in [all_modules(), attention] {
        // Arrange
        let (_dir, model) = tiny_model_adapting(modules.clone(), DType::F64, 0.1);
        model.set_trainable(&random_adapter(&model, 5)).unwrap();

        // Act
        let (loss_full, full) = gradients(&model, &Dpo::default(), false);
        let (loss_ckpt, ckpt) = gradients(&model, &Dpo::default(), true);

        // Assert
        assert_eq!(loss_full, loss_ckpt, "{modules:?}");
        assert_eq!(full.grads.len(), 2 * model.lora_modules().len());
        for (a, b) in full.grads.iter().zip(&ckpt.grads) {
            let (a, b) = (values(a.as_ref().unwrap()), values(b.as_ref().unwrap()));
            for (x, y) in a.iter().zip(&b) {
                assert!(
                    (x - y).abs() <= 1e-12 * x.abs().max(1.0),
                    "{modules:?}: {x} vs {y}"
                );
            }
        }
    }
}

/// Directional derivative along a random direction: autograd vs central differences (f64).
fn assert_model_gradient_matches_finite_differences(objective: &dyn Objective) {
    let (_dir, model) = tiny_model(DType::F64, 0.0);
    let start = random_adapter(&model, 9);
    model.set_trainable(&start).unwrap();
    let (_, grads) = gradients(&model, objective, false);
    let direction = random_adapter(&model, 10);
    let mut analytic = 0.0;
    for (k, g) in grads.grads.iter().enumerate() {
        let (a, b) = &direction.pairs[k / 2];
        let d = if k % 2 == 0 { a } else { b };
        let g = values(g.as_ref().unwrap());
        analytic += g.iter().zip(values(d)).map(|(x, y)| x * y).sum::<f64>();
    }
    let h = 1e-5;
    let shifted = |s: f64| {
        let pairs = start
            .pairs
            .iter()
            .zip(&direction.pairs)
            .map(|((a, b), (da, db))| {
                (
                    (a + (da * s).unwrap()).unwrap(),
                    (b + (db * s).unwrap()).unwrap(),
                )
            })
            .collect();
        LoraWeights { pairs }
    };
    let loss_at = |s: f64| {
        model.set_trainable(&shifted(s)).unwrap();
        // The frozen inputs stay those of `start` (π_t = the start adapter).
        let pairs = prepare_pairs(&model, objective, examples(), Adapter::Fixed(&start)).unwrap();
        let mut sink = LoraGrads::new(&model);
        let options = GradOptions {
            scale: 1.0,
            dropout_seed: None,
            checkpoint: false,
        };
        accumulate_gradients(&model, objective, &pairs, options, &mut sink)
            .unwrap()
            .0
    };
    let numeric = (loss_at(h) - loss_at(-h)) / (2.0 * h);
    let error = (analytic - numeric).abs() / numeric.abs().max(1e-6);
    assert!(
        error < 1e-5,
        "{}: autograd {analytic} vs finite difference {numeric}",
        objective.name()
    );
}

#[test]
fn whole_model_gradients_match_finite_differences_for_every_objective() {
    let objectives: Vec<Box<dyn Objective>> = vec![
        Box::new(Sppo {
            eta: 2.0,
            ..Sppo::default()
        }),
        Box::new(Inpo {
            eta: 0.5,
            tau: 0.5 / 3.0,
        }),
        Box::new(Dpo {
            beta: 0.5,
            reference: Reference::Previous,
            ..Dpo::default()
        }),
        Box::new(Ipo::default()),
        Box::new(Rpo::default()),
    ];
    for objective in &objectives {
        assert_model_gradient_matches_finite_differences(objective.as_ref());
    }
}

#[test]
fn no_frozen_weight_gradient_is_kept_by_the_backward_pass() {
    // Arrange: the smallest frozen projection is k_proj, 32 × 64 = 2048 values.
    let (_dir, model) = tiny_model(DType::F32, 0.0);
    model.set_trainable(&random_adapter(&model, 1)).unwrap();
    let seq = Sequence::new(vec![1, 40, 41, 42], vec![50, 51, 2]).unwrap();
    let pack = Pack::new(&[&seq]).unwrap();
    let pass = model.pass(Adapter::Trainable, true, None);

    // Act
    let sum = packed_logprobs(&model, &pack, &pass)
        .unwrap()
        .sum_all()
        .unwrap();
    let store = sum.backward().unwrap();

    // Assert: besides the LoRA vars, only small constants (norm weights, RoPE tables, the mask as
    // broadcast for one 7-token sequence) hold gradients; a kept `xᵀ·grad` would be ≥ 2048 values.
    let vars: Vec<_> = model
        .trainable_vars()
        .iter()
        .map(|v| v.as_tensor().id())
        .collect();
    let held: Vec<usize> = store
        .get_ids()
        .filter(|id| !vars.contains(id))
        .map(|id| store.get_id(*id).unwrap().elem_count())
        .collect();
    assert!(!held.is_empty());
    assert!(held.iter().all(|&n| n < 2048), "{held:?}");
}

#[test]
fn per_layer_recomputation_with_a_chunked_head_matches_for_a_300_token_response() {
    // Arrange: 300 response tokens span two head blocks (at most 256 rows each, `ops::head`).
    let (_dir, model) = tiny_model(DType::F64, 0.0);
    model.set_trainable(&random_adapter(&model, 6)).unwrap();
    let response: Vec<u32> = (0..300).map(|i| 3 + (i * 7 % 300) as u32).collect();
    let seq = Sequence::new(vec![1, 40, 41], response).unwrap();
    let pack = Pack::new(&[&seq]).unwrap();
    let half_sum = |logprobs: &Tensor| -> crate::Result<(Tensor, f64)> {
        let sum = logprobs.sum_all()?;
        let value = sum.to_scalar::<f64>()?;
        Ok(((sum * 0.5)?, value))
    };
    let (mut full, mut ckpt) = (LoraGrads::new(&model), LoraGrads::new(&model));

    // Act
    let pass = model.pass(Adapter::Trainable, true, None);
    let (scaled, a) = half_sum(&packed_logprobs(&model, &pack, &pass).unwrap()).unwrap();
    full.add_from(&model.trainable_vars(), &scaled.backward().unwrap())
        .unwrap();
    let b = recompute_backward(&model, &pack, None, &mut ckpt, half_sum).unwrap();

    // Assert
    let whole = crate::model::sequence_logprobs(&model, &seq, Adapter::Trainable).unwrap();
    assert_eq!(whole.per_token.len(), 300);
    assert!((a - whole.sum).abs() < 1e-9 && (b - whole.sum).abs() < 1e-9);
    for (x, y) in full.grads.iter().zip(&ckpt.grads) {
        for (x, y) in values(x.as_ref().unwrap())
            .iter()
            .zip(values(y.as_ref().unwrap()))
        {
            assert!((x - y).abs() <= 1e-10 * x.abs().max(1.0), "{x} vs {y}");
        }
    }
}

#[test]
fn the_fused_cpu_ops_give_the_primitive_ops_values_and_gradients() {
    let (_dir, model) = tiny_model(DType::F64, 0.0);
    assert_fused_ops_match_the_primitive_ops(&model);
}

#[test]
fn the_fused_attention_keeps_a_sliding_window_as_the_primitive_mask_does() {
    let (dir, _) = tiny_model(DType::F64, 0.0);
    let mut config = crate::model::Config::from_dir(dir.path()).unwrap();
    config.model_type = Some("mistral".into());
    config.sliding_window = Some(3);
    let files = crate::files::weight_files(dir.path()).unwrap();
    // SAFETY: the files are the test's own, written above and not changed while mapped.
    let vb = unsafe {
        candle_nn::VarBuilder::from_mmaped_safetensors(&files, DType::F64, &Device::Cpu).unwrap()
    };
    let lora = LoraConfig {
        rank: 4,
        alpha: 8.0,
        target_modules: all_modules(),
        ..LoraConfig::default()
    };
    let model = Model::new(config, lora, vb).unwrap();
    assert_fused_ops_match_the_primitive_ops(&model);
}

/// Log-probs and LoRA gradients of two packed sequences, fused ops against primitive ops.
fn assert_fused_ops_match_the_primitive_ops(model: &Model) {
    // Arrange: two packed sequences of different lengths, so attention must keep them apart.
    model.set_trainable(&random_adapter(model, 4)).unwrap();
    let (a, b) = (
        Sequence::new(vec![1, 40, 41, 42, 43], vec![50, 51, 52, 2]).unwrap(),
        Sequence::new(vec![1, 70], vec![80, 81, 2]).unwrap(),
    );
    let pack = Pack::new(&[&a, &b]).unwrap();
    let pass = model.pass(Adapter::Trainable, true, None);
    let run = |frame: crate::model::Frame| {
        let hidden = model.hidden(&pack.ids, &frame, &pass).unwrap();
        let logprobs = crate::model::head_logprobs(model, &hidden, &pack, &frame, true).unwrap();
        // Unequal weights per token, so every token's gradient counts.
        let n = logprobs.dim(0).unwrap();
        let w: Vec<f64> = (0..n).map(|i| 1.0 + i as f64 / n as f64).collect();
        let w = Tensor::from_vec(w, n, &Device::Cpu).unwrap();
        let store = (&logprobs * w)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let mut grads = LoraGrads::new(model);
        grads.add_from(&model.trainable_vars(), &store).unwrap();
        (values(&logprobs), grads)
    };

    // Act
    let (fused, fused_grads) = run(model.llama.frame(&pack.lengths).unwrap());
    let (primitive, primitive_grads) = run(model.llama.primitive_frame(&pack.lengths).unwrap());

    // Assert
    assert_eq!(fused.len(), 7);
    for (x, y) in fused.iter().zip(&primitive) {
        assert!((x - y).abs() < 1e-10, "{x} vs {y}");
    }
    for (x, y) in fused_grads.grads.iter().zip(&primitive_grads.grads) {
        for (x, y) in values(x.as_ref().unwrap())
            .iter()
            .zip(values(y.as_ref().unwrap()))
        {
            assert!((x - y).abs() <= 1e-10 * x.abs().max(1.0), "{x} vs {y}");
        }
    }
}

/// The path a GPU takes (primitive ops, a bf16 base), run on the CPU: LoRA weights stay f32 and the
/// gradients follow f32's within bf16's precision.
#[test]
fn a_bf16_base_trains_f32_lora_weights_with_gradients_close_to_f32s() {
    // Arrange: the same weights and adapter in both precisions.
    let (_d32, f32_model) = tiny_model(DType::F32, 0.0);
    let (_d16, bf16_model) = tiny_model(DType::BF16, 0.0);
    let adapter = random_adapter(&f32_model, 6);
    f32_model.set_trainable(&adapter).unwrap();
    bf16_model.set_trainable(&adapter).unwrap();
    assert_eq!(bf16_model.dtype(), DType::BF16);
    assert_eq!(bf16_model.lora_dtype(), DType::F32);
    assert!(bf16_model
        .trainable_vars()
        .iter()
        .all(|v| v.dtype() == DType::F32));

    // Act
    let (loss32, grads32) = gradients(&f32_model, &Dpo::default(), false);
    let (loss16, grads16) = gradients(&bf16_model, &Dpo::default(), false);
    let (loss16_ckpt, grads16_ckpt) = gradients(&bf16_model, &Dpo::default(), true);

    // Assert: each LoRA tensor's gradient points the same way (cosine) at a similar size.
    assert!((loss32 - loss16).abs() < 0.02, "{loss32} vs {loss16}");
    assert_eq!(loss16, loss16_ckpt);
    for (i, (g32, g16)) in grads32.grads.iter().zip(&grads16.grads).enumerate() {
        let (x, y) = (values(g32.as_ref().unwrap()), values(g16.as_ref().unwrap()));
        assert_eq!(g16.as_ref().unwrap().dtype(), DType::F32);
        let dot: f64 = x.iter().zip(&y).map(|(a, b)| a * b).sum();
        let norm = |v: &[f64]| v.iter().map(|a| a * a).sum::<f64>().sqrt();
        let cosine = dot / (norm(&x) * norm(&y));
        let ratio = norm(&y) / norm(&x);
        assert!(cosine > 0.98, "LoRA tensor {i}: cosine {cosine}");
        assert!(
            (ratio - 1.0).abs() < 0.1,
            "LoRA tensor {i}: norm ratio {ratio}"
        );
    }
    for (a, b) in grads16.grads.iter().zip(&grads16_ckpt.grads) {
        assert_eq!(values(a.as_ref().unwrap()), values(b.as_ref().unwrap()));
    }
}

#[test]
fn a_bf16_base_learns_and_stays_bit_identical() {
    // Arrange
    let (_dir, model) = tiny_model(DType::BF16, 0.0);
    assert!(model
        .llama
        .base_tensors()
        .iter()
        .all(|t| t.dtype() == DType::BF16));
    let before = base_bits(&model);
    let objective = Dpo::default();
    let pairs = prepare_pairs(&model, &objective, examples(), Adapter::Off).unwrap();
    let config = fast_config(true);
    let mut trainer = Trainer::new(&model, Box::new(objective), config).unwrap();

    // Act
    let steps: Vec<_> = (0..4).map(|_| trainer.step(&pairs).unwrap()).collect();

    // Assert
    assert!(
        steps[3].loss < steps[0].loss && steps[3].margin > steps[0].margin,
        "DPO should learn in bf16: {steps:?}"
    );
    assert!(before == base_bits(&model), "a base weight changed");
}
