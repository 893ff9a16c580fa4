//! Reliability (one test binary, to link burn once): the bad-input corpus through every
//! command (`hostile`), damaged run folders and unbounded flags (`damaged`), and training
//! killed with SIGKILL and resumed (`crash`).

#![allow(clippy::unwrap_used)] // tests may panic on broken fixtures

#[path = "../common/mod.rs"]
mod common;

mod crash;
mod damaged;
mod hostile;
