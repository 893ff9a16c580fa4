//! artemis-engine: training, evaluation, prediction and benchmarks (what the reports measure
//! and how they look is artemis-report).
//!
//! Library code takes checked config structs (the binary owns the command line) and returns
//! typed errors ([`EngineError`]) that name the file they concern.

pub mod bench;
pub mod bench_infer;
pub mod calibrate;
pub mod compare;
pub mod cv;
pub mod dataset;
pub mod device;
pub mod device_check;
pub mod ensemble;
pub mod ensemble_export;
pub mod error;
pub mod eval;
pub mod features;
pub mod infer;
pub mod limits;
pub mod members;
pub mod onnx;
pub mod overlap;
pub mod paired;
pub mod predict;
pub mod progress;
pub mod quantize;
mod replicas;
pub mod run;
pub mod shard;
mod step;
pub mod train;

pub use error::{EngineError, Result};
