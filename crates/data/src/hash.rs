//! Content hashes (exact duplicates) and a perceptual hash (near duplicates).
//!
//! The perceptual hash is a 256-bit DCT hash: the image is turned grey, shrunk to 32x32 with
//! area-averaging, transformed with a 2-D DCT-II, and the 16x16 lowest frequencies (the DC term
//! included, its bit is nearly always 1) are thresholded at their median. Two images whose hashes
//! differ in at most [`DEFAULT_NEAR_THRESHOLD`] bits are treated as the same slice re-encoded,
//! resized or slightly re-windowed. The threshold was chosen on the shared data set (see the
//! README's "Duplicates" section for the measured distance histogram).

use image::RgbImage;
use serde::{Deserialize, Serialize};

/// Hamming distance (of 256 bits) at or below which two images are near duplicates.
pub const DEFAULT_NEAR_THRESHOLD: u32 = 16;

/// BLAKE3 hash of a file's bytes, as lowercase hex.
pub fn content_hash(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

/// A 256-bit perceptual hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PHash(pub [u64; 4]);

impl PHash {
    /// Number of differing bits.
    pub fn distance(&self, other: &PHash) -> u32 {
        self.0
            .iter()
            .zip(other.0.iter())
            .map(|(a, b)| (a ^ b).count_ones())
            .sum()
    }

    /// Computes the hash of an RGB image.
    pub fn of(img: &RgbImage) -> PHash {
        const N: usize = 32;
        const K: usize = 16;
        let (w, h) = img.dimensions();
        let grey: Vec<u8> = img
            .pixels()
            .map(|p| {
                let [r, g, b] = p.0;
                ((u32::from(r) * 299 + u32::from(g) * 587 + u32::from(b) * 114 + 500) / 1000) as u8
            })
            .collect();
        let small = crate::image_io::resize_exact(
            &grey,
            w,
            h,
            N as u32,
            N as u32,
            fast_image_resize::PixelType::U8,
        );
        let pix: Vec<f64> = small.iter().map(|&v| f64::from(v)).collect();
        // cos table: c[u][x] = cos((2x+1) u pi / 2N)
        let mut c = [[0f64; N]; K];
        for (u, row) in c.iter_mut().enumerate() {
            for (x, v) in row.iter_mut().enumerate() {
                *v = ((2 * x + 1) as f64 * u as f64 * std::f64::consts::PI / (2 * N) as f64).cos();
            }
        }
        // Rows first: tmp[y][u] = sum_x pix[y][x] c[u][x]
        let mut tmp = [[0f64; K]; N];
        for y in 0..N {
            for u in 0..K {
                tmp[y][u] = (0..N).map(|x| pix[y * N + x] * c[u][x]).sum();
            }
        }
        let mut coef = [0f64; K * K];
        for v in 0..K {
            for u in 0..K {
                coef[v * K + u] = (0..N).map(|y| tmp[y][u] * c[v][y]).sum();
            }
        }
        let mut ac: Vec<f64> = coef[1..].to_vec();
        ac.sort_by(f64::total_cmp);
        let median = (ac[ac.len() / 2] + ac[(ac.len() - 1) / 2]) / 2.0;
        let mut bits = [0u64; 4];
        for (i, &v) in coef.iter().enumerate() {
            if v > median {
                bits[i / 64] |= 1 << (i % 64);
            }
        }
        PHash(bits)
    }

    pub fn to_hex(&self) -> String {
        self.0.iter().map(|w| format!("{w:016x}")).collect()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use image::Rgb;

    /// A synthetic "slice": a bright ellipse with a blob at a given position.
    pub(crate) fn slice(w: u32, h: u32, blob: (f32, f32)) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            let (fx, fy) = (x as f32 / w as f32, y as f32 / h as f32);
            let e = ((fx - 0.5) / 0.4).powi(2) + ((fy - 0.5) / 0.45).powi(2);
            let b = ((fx - blob.0).powi(2) + (fy - blob.1).powi(2)).sqrt();
            let v = if b < 0.08 {
                250.0
            } else if e < 1.0 {
                90.0 + 60.0 * (fx * 9.0).sin().abs()
            } else {
                5.0
            };
            Rgb([v as u8; 3])
        })
    }

    #[test]
    fn near_copies_are_close_and_different_images_far() {
        let a = slice(256, 256, (0.3, 0.3));
        let a_small = image::imageops::resize(&a, 180, 180, image::imageops::FilterType::Triangle);
        let mut a_jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut a_jpeg, 40)
            .encode_image(&a)
            .unwrap();
        let a_jpeg = image::load_from_memory(&a_jpeg).unwrap().to_rgb8();
        let b = slice(256, 256, (0.7, 0.65));
        let (ha, hs, hj, hb) = (
            PHash::of(&a),
            PHash::of(&a_small),
            PHash::of(&a_jpeg),
            PHash::of(&b),
        );
        assert_eq!(ha.distance(&ha), 0);
        assert!(
            ha.distance(&hs) <= DEFAULT_NEAR_THRESHOLD,
            "{}",
            ha.distance(&hs)
        );
        assert!(
            ha.distance(&hj) <= DEFAULT_NEAR_THRESHOLD,
            "{}",
            ha.distance(&hj)
        );
        assert!(
            ha.distance(&hb) > 2 * DEFAULT_NEAR_THRESHOLD,
            "{}",
            ha.distance(&hb)
        );
    }

    #[test]
    fn content_hash_is_blake3_hex() {
        assert_eq!(content_hash(b"").len(), 64);
        assert_ne!(content_hash(b"a"), content_hash(b"b"));
    }
}
