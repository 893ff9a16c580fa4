//! Images in memory, resized once, and batches made from them.
//!
//! Training and evaluation decode each file once, resize it to the network's input size and
//! keep the 8-bit result (150x150x3 = 66 kB an image: the 12-class set is about 220 MB).
//! Augmentation and value scaling happen per batch, on all cores.

use crate::error::{EngineError, Result};
use artemis_data::image_io::{DEFAULT_MAX_PIXELS, read_rgb};
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
}

/// Decoded, resized images with their classes; files that failed are in `failed`.
pub struct Loaded {
    pub items: Vec<Item>,
    pub images: Vec<RgbImage>,
    /// `(path, reason)` of every file that could not be read or decoded.
    pub failed: Vec<(PathBuf, String)>,
}

/// Decodes and resizes `items` on all cores with a progress bar; unreadable files are
/// reported in [`Loaded::failed`] and skipped.
pub fn load(items: Vec<Item>, pre: &Preprocess, what: &str) -> Loaded {
    let pb = crate::progress::bar(items.len() as u64, what);
    let results: Vec<std::result::Result<RgbImage, String>> = items
        .par_iter()
        .map(|it| {
            let r = read_rgb(&it.path, DEFAULT_MAX_PIXELS)
                .map(|img| pre.resize(&img))
                .map_err(|e| e.to_string());
            pb.inc(1);
            r
        })
        .collect();
    pb.finish_and_clear();
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
    let shape = [images.len(), 3, pre.height as usize, pre.width as usize];
    Tensor::from_data(TensorData::new(data, shape), device)
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
