//! The engine's error type: every failure names the file or input it concerns and what is wrong.

use std::path::PathBuf;

/// Everything that can go wrong in the engine. Messages are written for the researcher who gave
/// the file or the prompt, so they name it and say what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a model: {reason}")]
    NotAModel { path: PathBuf, reason: String },
    #[error("{path}: missing {what}")]
    Missing { path: PathBuf, what: String },
    #[error("{path}: invalid config: {reason}")]
    BadConfig { path: PathBuf, reason: String },
    #[error(
        "{path}: model_type '{model_type}' is not supported; supported: {}",
        supported.join(", ")
    )]
    UnsupportedModelType {
        path: PathBuf,
        model_type: String,
        supported: Vec<&'static str>,
    },
    #[error("{path}: corrupt or truncated weights: {reason}")]
    BadWeights { path: PathBuf, reason: String },
    #[error("{path}: tensor '{name}': {reason}")]
    BadTensor {
        path: PathBuf,
        name: String,
        reason: String,
    },
    #[error("{path}: tokenizer: {reason}")]
    Tokenizer { path: PathBuf, reason: String },
    #[error("{path}: {reason}")]
    BadImage { path: PathBuf, reason: String },
    #[error("input {index}: {reason}")]
    BadInput { index: usize, reason: String },
    #[error("{path}: session file: {reason}")]
    BadSession { path: PathBuf, reason: String },
    #[error("device: {0}")]
    Device(String),
    #[error("model '{name}': {reason}")]
    Fetch { name: String, reason: String },
    #[error("compute: {0}")]
    Compute(String),
    #[error("projection: {0}")]
    Projection(String),
    #[error("cancelled")]
    Cancelled,
    #[error(
        "input {input}, layer {layer}: the session has no value norms (vnorm/{input}/{layer}); \
         it was made before headwise captured them: trace it again"
    )]
    NoValueNorms { input: usize, layer: usize },
    #[error("edit '{edit}': {reason}")]
    BadEdit { edit: String, reason: String },
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

impl EngineError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}
