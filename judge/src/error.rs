//! The judge crate's error type: the causes a caller can match on.

/// What can go wrong while estimating from judgments.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// A judgment that does not fit its group: an index out of range, a response compared with
    /// itself, a strength outside `[0, 1]`.
    #[error("shape mismatch: {0}")]
    Shape(String),
    /// Nothing to estimate from, or no estimate exists (a Bradley–Terry MLE without one).
    #[error("no usable data: {0}")]
    NoData(String),
    /// A setting outside its domain (e.g. a confidence level of 1).
    #[error("invalid setting: {0}")]
    Setting(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
