//! The trainer's error type: one enum its callers (the worker, the CLI, the server) can match.

use std::path::PathBuf;

/// What can go wrong while building a model, computing log-probs, training or writing an adapter.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Tensors or inputs whose sizes do not fit together (a caller's bug or inconsistent data).
    #[error("shape mismatch: {0}")]
    Shape(String),
    /// Nothing to train on, or nothing to estimate from.
    #[error("no usable data: {0}")]
    NoData(String),
    /// Reading or writing an adapter directory failed.
    #[error("adapter I/O error at `{path}`")]
    AdapterIo {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// An adapter directory that does not describe this model's LoRA.
    #[error("invalid adapter: {0}")]
    BadAdapter(String),
    /// A `config.json` we cannot read, or an architecture feature we do not implement.
    #[error("unsupported model config: {0}")]
    Config(String),
    /// A hyperparameter outside its domain (e.g. a negative learning rate).
    #[error("invalid setting: {0}")]
    Setting(String),
    /// A tensor operation failed inside candle.
    #[error("tensor error")]
    Candle(#[from] candle_core::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The judge crate's causes map one to one onto the trainer's (same variants, same messages).
impl From<flywheel_judge::Error> for Error {
    fn from(e: flywheel_judge::Error) -> Self {
        match e {
            flywheel_judge::Error::Shape(m) => Self::Shape(m),
            flywheel_judge::Error::NoData(m) => Self::NoData(m),
            flywheel_judge::Error::Setting(m) => Self::Setting(m),
        }
    }
}

impl Error {
    pub(crate) fn adapter_io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::AdapterIo { path, source }
    }
}
