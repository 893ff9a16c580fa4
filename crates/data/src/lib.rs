//! artemis-data: everything between a folder of MRI slices and a batch of tensors.
//!
//! - [`labels`]: tumor type, plane, and the task that maps them to classes;
//! - [`scan`]: finding images and labels in the two supported folder layouts;
//! - [`image_io`]: safe decoding (pixel limit before decode) and resizing;
//! - [`input`]: one way in for a picture to classify, a file or an upload's bytes (JPEG, PNG,
//!   DICOM via [`dicom`], NIfTI via [`volume`]), with its metadata;
//! - [`hash`], [`dedup`]: content and perceptual hashes, duplicate groups;
//! - [`check`]: the `data check` report;
//! - [`manifest`], [`split`]: seeded split manifests under the reference, clean and official
//!   protocols;
//! - [`transform`]: preprocessing and augmentation saved with each run.

pub mod check;
pub mod dedup;
pub mod dicom;
pub mod error;
pub mod framing;
pub mod fsutil;
pub mod guard;
pub mod hash;
pub mod image_io;
pub mod input;
mod jpeg;
pub mod labels;
pub mod manifest;
pub mod scan;
pub mod split;
pub mod transform;
pub mod volume;

pub use error::{DataError, Result};
