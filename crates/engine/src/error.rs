//! The one error type of the engine crate. Variants carry the path they concern.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Data(#[from] artemis_data::DataError),
    #[error(transparent)]
    Model(#[from] artemis_models::ModelError),
    /// A checkpoint could not be written or read.
    #[error("{path}: checkpoint: {reason}")]
    Checkpoint { path: PathBuf, reason: String },
    /// A JSON file (run config, state, report) is malformed or unwritable.
    #[error("{path}: {reason}")]
    Json { path: PathBuf, reason: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Report(#[from] artemis_report::ReportError),
    /// Settings that cannot work together.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// ONNX Runtime could not load or run a graph.
    #[error("{path}: ONNX Runtime: {reason}")]
    Onnx { path: PathBuf, reason: String },
    /// A network computed NaN or infinite outputs (damaged or diverged weights).
    #[error("{path}: {reason}")]
    NonFinite { path: PathBuf, reason: String },
    /// A compute device that this binary or this machine cannot open.
    #[error("--device {device}: {reason}")]
    Device { device: String, reason: String },
    /// A tensor operation failed (shape or dtype mismatch inside the backend).
    #[error("tensor error: {0}")]
    Tensor(String),
}

impl EngineError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        EngineError::Io {
            path: path.into(),
            source,
        }
    }
}

pub type Result<T> = std::result::Result<T, EngineError>;
