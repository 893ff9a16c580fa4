//! Images in memory, resized once, and batches made from them.
//!
//! Memory bounds:
//! - Training ([`load`]) decodes each file once, resizes it to the network's input size and
//!   keeps the 8-bit result: `n x side x side x 3` bytes (150 px: 66 kB an image, the 12-class
//!   training split of ~2600 images about 175 MB; 224 px: 150 kB, about 390 MB). Augmentation
//!   and value scaling happen per batch, on all cores. While a file is decoded its full-size
//!   picture is held too: at most one per core, each under the pixel limit.
//! - Evaluation, calibration and prediction ([`stream`]) hold one chunk of files at a time
//!   (decoded at input size) plus one row of probabilities per image: flat in the folder size.

use crate::error::{EngineError, Result};
use artemis_data::image_io::read_rgb;
use artemis_data::transform::{Augment, Preprocess};
use burn::prelude::*;
use image::RgbImage;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use std::path::PathBuf;

/// An input file and, when known, its class.
#[derive(Debug, Clone)]
pub struct Item {
    pub path: PathBuf,
    pub class: Option<usize>,
    /// BLAKE3 of the file's bytes when the split was made (manifest items): a file whose bytes
    /// differ is refused, since the manifest no longer describes it.
    pub content_hash: Option<String>,
}

/// The files of one split of a manifest with their class under `task`.
pub fn manifest_items(
    manifest: &artemis_data::manifest::Manifest,
    root: &std::path::Path,
    split: artemis_data::manifest::Split,
    task: artemis_data::labels::Task,
) -> Vec<Item> {
    manifest
        .split(split)
        .filter_map(|e| {
            task.class_of(&e.label).map(|class| Item {
                path: manifest.path_of(root, e),
                class: Some(class),
                content_hash: (!e.content_hash.is_empty()).then(|| e.content_hash.clone()),
            })
        })
        .collect()
}

/// What turns a decoded picture into a model's input picture: a run's [`Preprocess`] (framed
/// and resized), or a classifier, whose ensemble may hand its members the decoded picture to
/// prepare their own.
pub trait Prepare: Sync {
    fn prepare(&self, img: &RgbImage) -> RgbImage;
}

impl Prepare for Preprocess {
    fn prepare(&self, img: &RgbImage) -> RgbImage {
        self.resize(img)
    }
}

/// Decoded, resized images with their classes; files that failed are in `failed`.
pub struct Loaded {
    pub items: Vec<Item>,
    pub images: Vec<RgbImage>,
    /// `(path, reason)` of every file that could not be read or decoded.
    pub failed: Vec<(PathBuf, String)>,
}

/// Decodes and resizes `items` on all cores with a progress bar; unreadable files and files
/// over `max_pixels` are reported in [`Loaded::failed`] and skipped.
pub fn load(items: Vec<Item>, pre: &impl Prepare, what: &str, max_pixels: u64) -> Loaded {
    let pb = crate::progress::bar(items.len() as u64, what);
    let out = decode_all(items, pre, max_pixels, &pb);
    pb.finish_and_clear();
    out
}

/// Files decoded at once by [`stream`]: enough to keep every core busy and to fill batches.
pub const STREAM_CHUNK: usize = 64;

/// Decodes `items` [`STREAM_CHUNK`] files at a time (in parallel within a chunk) and hands each
/// chunk's readable items and pictures (at input size) to `f`, so memory holds one chunk, not
/// the folder. Returns the files that could not be read or decoded, with the reason.
pub fn stream(
    items: Vec<Item>,
    pre: &impl Prepare,
    what: &str,
    max_pixels: u64,
    mut f: impl FnMut(&[Item], &[RgbImage]) -> Result<()>,
) -> Result<Vec<(PathBuf, String)>> {
    let pb = crate::progress::bar(items.len() as u64, what);
    let mut failed = Vec::new();
    let mut rest = items.into_iter();
    loop {
        let chunk: Vec<Item> = rest.by_ref().take(STREAM_CHUNK).collect();
        if chunk.is_empty() {
            break;
        }
        let mut loaded = decode_all(chunk, pre, max_pixels, &pb);
        failed.append(&mut loaded.failed);
        if !loaded.items.is_empty() {
            f(&loaded.items, &loaded.images)?;
        }
    }
    pb.finish_and_clear();
    Ok(failed)
}

/// "N files failed; first: PATH: REASON", for errors when no file at all could be read.
pub fn describe_failures(failed: &[(PathBuf, String)]) -> String {
    match failed.first() {
        Some((p, why)) => format!(
            "{} files failed; first: {}: {why}",
            failed.len(),
            p.display()
        ),
        None => "no files".into(),
    }
}

/// Decodes and resizes one file as [`load`] and [`stream`] do (for re-reading a few files).
pub fn read_resized(
    path: &std::path::Path,
    pre: &impl Prepare,
    max_pixels: u64,
) -> std::result::Result<RgbImage, String> {
    read_rgb(path, max_pixels)
        .map(|img| pre.prepare(&img))
        .map_err(|e| e.to_string())
}

/// [`read_resized`] for an item, checking its content hash first when it has one.
fn read_item(
    it: &Item,
    pre: &impl Prepare,
    max_pixels: u64,
) -> std::result::Result<RgbImage, String> {
    let Some(expected) = &it.content_hash else {
        return read_resized(&it.path, pre, max_pixels);
    };
    let limit = artemis_data::image_io::max_file_bytes(max_pixels);
    let bytes = artemis_data::image_io::read_limited(&it.path, limit).map_err(|e| e.to_string())?;
    if artemis_data::hash::content_hash(&bytes) != *expected {
        return Err(format!(
            "{}: contents changed since the split was made (its BLAKE3 differs from the \
             manifest's); skipped, as the manifest no longer describes this file",
            it.path.display()
        ));
    }
    artemis_data::image_io::decode_rgb(&bytes, &it.path, max_pixels)
        .map(|img| pre.prepare(&img))
        .map_err(|e| e.to_string())
}

fn decode_all(
    items: Vec<Item>,
    pre: &impl Prepare,
    max_pixels: u64,
    pb: &indicatif::ProgressBar,
) -> Loaded {
    let results: Vec<std::result::Result<RgbImage, String>> = items
        .par_iter()
        .map(|it| {
            let r = read_item(it, pre, max_pixels);
            pb.inc(1);
            r
        })
        .collect();
    let mut out = Loaded {
        items: Vec::new(),
        images: Vec::new(),
        failed: Vec::new(),
    };
    for (it, r) in items.into_iter().zip(results) {
        match r {
            Ok(img) => {
                out.items.push(it);
                out.images.push(img);
            }
            Err(e) => {
                tracing::warn!("{e}");
                out.failed.push((it.path, e));
            }
        }
    }
    out
}

/// Makes an input tensor from images at the input size, augmenting each with its own seeded
/// generator (`seeds[i]`) when `augment` is given.
///
/// # Shapes
/// -> `[images.len(), 3, height, width]`
pub fn batch_tensor(
    images: &[&RgbImage],
    pre: &Preprocess,
    augment: Option<(&Augment, &[u64])>,
    device: &Device,
) -> Tensor<4> {
    let data = batch_values(images, pre, augment);
    let shape = [images.len(), 3, pre.height as usize, pre.width as usize];
    Tensor::from_data(TensorData::new(data, shape), device)
}

/// The values of [`batch_tensor`] without augmentation, as a flat `[b, 3, h, w]` vector
/// (ONNX Runtime's input). On the calling thread: prediction decodes the next chunk on the
/// rayon pool meanwhile, and waiting behind those jobs would stall inference.
pub fn batch_data(images: &[&RgbImage], pre: &Preprocess) -> Vec<f32> {
    let len = pre.tensor_len();
    let mut data = vec![0f32; len * images.len()];
    for (out, img) in data.chunks_mut(len).zip(images) {
        pre.write_chw(img, out);
    }
    data
}

/// The values of [`batch_tensor`] as a flat `[b, 3, h, w]` vector, made on the rayon pool
/// (ONNX Runtime's input for feature extraction).
pub fn batch_values(
    images: &[&RgbImage],
    pre: &Preprocess,
    augment: Option<(&Augment, &[u64])>,
) -> Vec<f32> {
    let len = pre.tensor_len();
    let mut data = vec![0f32; len * images.len()];
    data.par_chunks_mut(len)
        .zip(images.par_iter())
        .enumerate()
        .for_each(|(i, (out, img))| match augment {
            Some((aug, seeds)) if !aug.is_identity() => {
                let mut rng = ChaCha8Rng::seed_from_u64(seeds[i]);
                pre.write_chw(&aug.apply(img, &mut rng), out);
            }
            _ => pre.write_chw(img, out),
        });
    data
}

/// A training batch, from the data side to the training step: inputs and class targets on one
/// device, the targets also on the host (to count correct predictions without a read-back).
pub struct Batch {
    /// `[b, 3, h, w]` images after preprocessing (and augmentation), or `[b, c, h, w]` cached
    /// activations of the frozen stages.
    pub x: Tensor<4>,
    /// `[b]` class indices.
    pub y: Tensor<1, Int>,
    /// The class indices of `y`.
    pub classes: Vec<usize>,
}

impl Batch {
    pub fn new(x: Tensor<4>, classes: Vec<usize>, device: &Device) -> Batch {
        Batch {
            y: target_tensor(&classes, device),
            x,
            classes,
        }
    }
}

/// Class targets as an integer tensor. `[n]`.
pub fn target_tensor(classes: &[usize], device: &Device) -> Tensor<1, Int> {
    let v: Vec<i64> = classes.iter().map(|&c| c as i64).collect();
    let n = v.len();
    Tensor::from_data(TensorData::new(v, [n]), device)
}

/// Reads a float tensor back as a flat vector.
pub fn to_vec_f32<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| EngineError::Tensor(format!("{e:?}")))
}
