//! artemis-engine: training, evaluation, prediction, reports and benchmarks.
//!
//! Library code takes checked config structs (the binary owns the command line) and returns
//! typed errors ([`EngineError`]) that name the file they concern.

pub mod bench;
pub mod bench_infer;
pub mod calibrate;
pub mod compare;
pub mod cv;
pub mod dataset;
pub mod error;
pub mod eval;
pub mod features;
pub mod infer;
pub mod limits;
pub mod metrics;
pub mod notice;
pub mod onnx;
pub mod overlap;
pub mod plot;
pub mod predict;
pub mod prob;
pub mod progress;
pub mod report;
pub mod run;
pub mod shard;
pub mod stats;
pub mod train;

pub use error::{EngineError, Result};
pub use notice::NOTICE;
