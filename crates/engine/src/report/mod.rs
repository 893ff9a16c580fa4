//! The evaluation report: what `eval` measured, as one type ([`types`]) that the Markdown
//! ([`markdown`]), HTML ([`html`]) and comparison renderings read. Its JSON form is
//! `report.json` (schema [`REPORT_SCHEMA`]).

pub mod html;
pub mod markdown;
pub mod types;

pub use types::{
    CLASS_COLUMNS, CalibrationReport, DataSummary, EvalReport, EvalRow, REPORT_SCHEMA, View,
};
