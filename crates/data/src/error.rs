//! The one error type of the data crate. Every variant names the file it concerns.

use std::path::PathBuf;

/// Errors raised while reading, checking, splitting or preprocessing a data set.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file or folder could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file could not be decoded as an image.
    #[error("{path}: cannot decode image: {reason}")]
    Decode { path: PathBuf, reason: String },
    /// An image is larger than the configured pixel limit (checked before decoding).
    #[error("{path}: image is {width}x{height} = {pixels} pixels, over the limit of {limit}")]
    TooLarge {
        path: PathBuf,
        width: u32,
        height: u32,
        pixels: u64,
        limit: u64,
    },
    /// The folder layout is not one artemis understands.
    #[error("{path}: {reason}")]
    Layout { path: PathBuf, reason: String },
    /// A split manifest is malformed.
    #[error("{path}:{line}: bad manifest: {reason}")]
    Manifest {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    /// A configuration value is out of range.
    #[error("invalid configuration: {0}")]
    Config(String),
}

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.into(),
            source,
        }
    }
}

/// Result alias of the data crate.
pub type Result<T> = std::result::Result<T, DataError>;
