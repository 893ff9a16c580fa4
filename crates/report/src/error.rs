//! The one error type of the report crate.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// A figure could not be written (the data crate's error names the file).
    #[error(transparent)]
    Data(#[from] artemis_data::DataError),
    /// A picture could not be drawn or encoded (`path` names the figure or the file).
    #[error("{path}: cannot draw plot: {reason}")]
    Plot { path: PathBuf, reason: String },
}

pub type Result<T> = std::result::Result<T, ReportError>;
