//! `sequence_logprobs`: agrees with a full-logits log-softmax, and a fresh adapter is the base model.

use candle_core::{DType, IndexOp};
use flywheel_trainer::{sequence_logprobs, Adapter, Sequence};

use crate::{some_adapter, tiny};

#[test]
fn response_logprobs_equal_the_log_softmax_of_full_logits_at_the_response_positions() {
    // Arrange
    let (_dir, model) = tiny(DType::F32);
    model.set_trainable(&some_adapter(&model, 1)).unwrap();
    let seq = Sequence::new(vec![1, 30, 31, 32, 33], vec![40, 41, 2]).unwrap();

    // Act
    let got = sequence_logprobs(&model, &seq, Adapter::Trainable).unwrap();

    // Assert
    let logits = model.logits(&seq.ids(), Adapter::Trainable).unwrap();
    let logp = candle_nn::ops::log_softmax(&logits, 1).unwrap();
    for (k, &token) in seq.response.iter().enumerate() {
        let want: f32 = logp
            .i((seq.prompt.len() - 1 + k, token as usize))
            .unwrap()
            .to_scalar()
            .unwrap();
        assert!((got.per_token[k] - want as f64).abs() < 1e-5, "token {k}");
    }
    let sum: f64 = got.per_token.iter().sum();
    assert_eq!(got.sum, sum);
    assert!(got.sum < 0.0);
}

#[test]
fn a_fresh_adapter_gives_exactly_the_reference_policy_and_a_trained_one_does_not() {
    // Arrange
    let (_dir, model) = tiny(DType::F32);
    let seq = Sequence::new(vec![1, 30, 31], vec![40, 41, 42, 2]).unwrap();

    // Act
    let reference = sequence_logprobs(&model, &seq, Adapter::Off).unwrap();
    let fresh = sequence_logprobs(&model, &seq, Adapter::Trainable).unwrap();
    let other = some_adapter(&model, 2);
    let fixed = sequence_logprobs(&model, &seq, Adapter::Fixed(&other)).unwrap();

    // Assert
    assert_eq!(reference, fresh);
    assert!((reference.sum - fixed.sum).abs() > 1e-3);
}

#[test]
fn an_empty_response_is_a_shape_error() {
    let result = Sequence::new(vec![1, 2], vec![]);
    assert!(matches!(result, Err(flywheel_trainer::Error::Shape(_))));
}
