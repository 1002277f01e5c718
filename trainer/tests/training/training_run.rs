//! Short training runs on the tiny model: the loss falls, runs are deterministic, accumulation equals
//! a larger batch, and objectives that need π_t refuse to run without it.

use candle_core::DType;
use flywheel_trainer::{
    prepare_pairs, sequence_logprobs, Adapter, Dpo, Error, Inpo, Model, OptimConfig, PairExample,
    PreparedPair, Schedule, Sequence, Sppo, TrainConfig, Trainer,
};

use crate::{max_diff, some_adapter, tiny};

fn examples() -> Vec<PairExample> {
    let seq = |p: &[u32], r: &[u32]| Sequence::new(p.to_vec(), r.to_vec()).unwrap();
    vec![
        PairExample {
            chosen: seq(&[1, 100, 101], &[110, 111, 2]),
            rejected: seq(&[1, 100, 101], &[120, 121, 122, 2]),
            win_rates: Some([0.9, 0.2]),
        },
        PairExample {
            chosen: seq(&[1, 130, 131, 132], &[140, 2]),
            rejected: seq(&[1, 130, 131, 132], &[150, 151, 2]),
            win_rates: Some([0.7, 0.35]),
        },
    ]
}

fn config(grad_accumulation: usize) -> TrainConfig {
    TrainConfig {
        optim: OptimConfig {
            lr: 2e-2,
            warmup_steps: 1,
            total_steps: 20,
            schedule: Schedule::Cosine,
            ..OptimConfig::default()
        },
        grad_accumulation,
        checkpoint: true,
        seed: 1,
    }
}

fn train(model: &Model, pairs: &[PreparedPair], steps: usize) -> Vec<f64> {
    let mut trainer = Trainer::new(model, Box::new(Dpo::default()), config(1)).unwrap();
    (0..steps)
        .map(|_| trainer.step(pairs).unwrap().loss)
        .collect()
}

#[test]
fn ten_dpo_steps_lower_the_loss_below_ln_2_and_widen_the_margin() {
    // Arrange
    let (_dir, model) = tiny(DType::F32);
    let pairs = prepare_pairs(&model, &Dpo::default(), examples(), Adapter::Off).unwrap();

    // Act
    let losses = train(&model, &pairs, 10);

    // Assert
    assert!(
        (losses[0] - std::f64::consts::LN_2).abs() < 1e-6,
        "{losses:?}"
    );
    assert!(losses[9] < 0.5 * losses[0], "{losses:?}");
}

#[test]
fn two_runs_with_one_seed_give_bit_identical_adapters() {
    // Arrange
    let (_d1, first) = tiny(DType::F32);
    let (_d2, second) = tiny(DType::F32);
    let pairs = prepare_pairs(&first, &Dpo::default(), examples(), Adapter::Off).unwrap();

    // Act
    train(&first, &pairs, 3);
    train(&second, &pairs, 3);

    // Assert
    let (a, b) = (first.snapshot().unwrap(), second.snapshot().unwrap());
    for i in 0..a.len() {
        let (x, y) = (a.pair(i).unwrap(), b.pair(i).unwrap());
        assert_eq!((max_diff(x.0, y.0), max_diff(x.1, y.1)), (0.0, 0.0));
    }
}

#[test]
fn two_accumulated_micro_batches_equal_one_batch_of_both_pairs() {
    // Arrange
    let (_d1, whole) = tiny(DType::F64);
    let (_d2, split) = tiny(DType::F64);
    let pairs = prepare_pairs(&whole, &Dpo::default(), examples(), Adapter::Off).unwrap();

    // Act
    let mut one = Trainer::new(&whole, Box::new(Dpo::default()), config(1)).unwrap();
    let stepped = one.step(&pairs).unwrap();
    let mut two = Trainer::new(&split, Box::new(Dpo::default()), config(2)).unwrap();
    let first = two.step(&pairs[..1]).unwrap();
    let second = two.step(&pairs[1..]).unwrap();

    // Assert
    assert!(first.grad_norm.is_none() && second.grad_norm.is_some());
    assert!((stepped.grad_norm.unwrap() - second.grad_norm.unwrap()).abs() < 1e-12);
    let (a, b) = (whole.snapshot().unwrap(), split.snapshot().unwrap());
    for i in 0..a.len() {
        let (x, y) = (a.pair(i).unwrap(), b.pair(i).unwrap());
        assert!(max_diff(x.0, y.0) < 1e-12 && max_diff(x.1, y.1) < 1e-12);
    }
}

#[test]
fn pi_t_must_be_frozen_and_inpo_gets_both_pi_ref_and_pi_t_log_probs() {
    // Arrange
    let (_dir, model) = tiny(DType::F32);
    let parent = some_adapter(&model, 8);

    // Act
    let moving = prepare_pairs(&model, &Sppo::default(), examples(), Adapter::Trainable);
    let inpo = prepare_pairs(
        &model,
        &Inpo::default(),
        examples(),
        Adapter::Fixed(&parent),
    )
    .unwrap();
    let sppo = prepare_pairs(
        &model,
        &Sppo::default(),
        examples(),
        Adapter::Fixed(&parent),
    )
    .unwrap();

    // Assert
    assert!(matches!(moving, Err(Error::Setting(_))));
    let chosen = &examples()[0].chosen;
    let base = sequence_logprobs(&model, chosen, Adapter::Off).unwrap().sum;
    let pi_t = sequence_logprobs(&model, chosen, Adapter::Fixed(&parent))
        .unwrap()
        .sum;
    assert_eq!(
        (inpo[0].reference[0], inpo[0].previous.unwrap()[0]),
        (base, pi_t)
    );
    assert_eq!((sppo[0].reference[0], sppo[0].previous), (pi_t, None));
}

#[test]
fn a_snapshot_taken_before_training_keeps_its_values_after_a_step() {
    // Arrange
    let (_dir, model) = tiny(DType::F32);
    let pairs = prepare_pairs(&model, &Dpo::default(), examples(), Adapter::Off).unwrap();
    let before = model.snapshot().unwrap();
    let b0: Vec<f32> = before
        .pair(0)
        .unwrap()
        .1
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();

    // Act
    train(&model, &pairs, 2);

    // Assert: B of module 0 starts at zero and training moved it; the snapshot did not move.
    let after = model.snapshot().unwrap();
    assert!(b0.iter().all(|&v| v == 0.0));
    assert!(max_diff(before.pair(0).unwrap().1, after.pair(0).unwrap().1) > 0.0);
}
