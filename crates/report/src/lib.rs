//! artemis-report: what a classifier's outputs measure, and how artemis shows it.
//!
//! Data flows one way through it: probabilities and labels in ([`prob`], [`metrics`],
//! [`stats`]), one [`EvalReport`] ([`types`], serialised as `report.json`), and its renderings
//! out: Markdown ([`markdown`]), one self-contained HTML page ([`html`]) and PNG figures
//! ([`plot`]). It reads no image and runs no network: the engine hands it numbers.

pub mod error;
pub mod html;
pub mod markdown;
pub mod metrics;
pub mod notice;
pub mod paired;
pub mod plot;
pub mod prob;
pub mod stats;
pub mod types;

pub use error::{ReportError, Result};
pub use notice::NOTICE;
pub use types::{
    CLASS_COLUMNS, CalibrationReport, DataSummary, EpochMetrics, EvalReport, EvalRow, Overlap,
    OverlapReport, REPORT_SCHEMA, View,
};
