//! Decoding raster images (JPEG, PNG) safely, and resizing them.
//!
//! The pixel count is checked from the header before any pixel is decoded, so a
//! decompression bomb (a small file claiming a huge image) is refused cheaply.

use crate::error::{DataError, Result};
use fast_image_resize as fr;
use image::{ImageReader, RgbImage};
use std::io::Cursor;
use std::path::Path;

/// Default pixel-count limit: 64 megapixels, far above any MRI slice.
pub const DEFAULT_MAX_PIXELS: u64 = 64 * 1024 * 1024;

/// Reads and decodes an image file to 8-bit RGB (grey images are replicated to 3 channels,
/// alpha is dropped, 16-bit samples are scaled to 8 bits).
pub fn read_rgb(path: &Path, max_pixels: u64) -> Result<RgbImage> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    decode_rgb(&bytes, path, max_pixels)
}

/// Decodes image bytes to 8-bit RGB. `path` is only used in error messages.
pub fn decode_rgb(bytes: &[u8], path: &Path, max_pixels: u64) -> Result<RgbImage> {
    let decode_err = |reason: String| DataError::Decode {
        path: path.to_path_buf(),
        reason,
    };
    if bytes.is_empty() {
        return Err(decode_err("file is empty (0 bytes)".into()));
    }
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| decode_err(e.to_string()))?;
    if reader.format().is_none() {
        return Err(decode_err("not a recognised image format".into()));
    }
    let (width, height) = reader
        .into_dimensions()
        .map_err(|e| decode_err(e.to_string()))?;
    let pixels = u64::from(width) * u64::from(height);
    if pixels > max_pixels {
        return Err(DataError::TooLarge {
            path: path.to_path_buf(),
            width,
            height,
            pixels,
            limit: max_pixels,
        });
    }
    if pixels == 0 {
        return Err(decode_err("image has zero width or height".into()));
    }
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| decode_err(e.to_string()))?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(width);
    limits.max_image_height = Some(height);
    // Output at up to 16 bits x 4 channels, plus decoder working memory.
    limits.max_alloc = Some(pixels.saturating_mul(16).max(64 << 20));
    reader.limits(limits);
    let img = reader.decode().map_err(|e| decode_err(e.to_string()))?;
    Ok(img.into_rgb8())
}

/// How an image is brought to the network's input size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ResizeMode {
    /// Stretch to the target size, ignoring aspect ratio (what the reference did).
    #[default]
    Squash,
    /// Scale the longer side to the target, centre, and pad with black.
    KeepAspect,
}

impl std::str::FromStr for ResizeMode {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "squash" => Ok(ResizeMode::Squash),
            "keep-aspect" => Ok(ResizeMode::KeepAspect),
            o => Err(format!(
                "unknown resize mode '{o}' (expected squash or keep-aspect)"
            )),
        }
    }
}

/// Resizes an RGB image to `width` x `height` (bilinear with antialiasing).
pub fn resize_rgb(img: &RgbImage, width: u32, height: u32, mode: ResizeMode) -> RgbImage {
    let (sw, sh) = img.dimensions();
    let (rw, rh) = match mode {
        ResizeMode::Squash => (width, height),
        ResizeMode::KeepAspect => {
            let s = (width as f64 / sw as f64).min(height as f64 / sh as f64);
            (
                ((sw as f64 * s).round() as u32).clamp(1, width),
                ((sh as f64 * s).round() as u32).clamp(1, height),
            )
        }
    };
    let resized = resize_exact(img.as_raw(), sw, sh, rw, rh, fr::PixelType::U8x3);
    let resized = RgbImage::from_raw(rw, rh, resized).unwrap_or_else(|| RgbImage::new(rw, rh));
    if (rw, rh) == (width, height) {
        return resized;
    }
    let mut out = RgbImage::new(width, height);
    image::imageops::overlay(
        &mut out,
        &resized,
        i64::from((width - rw) / 2),
        i64::from((height - rh) / 2),
    );
    out
}

/// Resizes a packed 8-bit buffer; falls back to nearest-neighbour copying if the SIMD resizer
/// refuses the buffers (it cannot for consistent sizes, but no panic is allowed here).
pub(crate) fn resize_exact(
    src: &[u8],
    sw: u32,
    sh: u32,
    dw: u32,
    dh: u32,
    pixel: fr::PixelType,
) -> Vec<u8> {
    let channels = pixel.size();
    if (sw, sh) == (dw, dh) {
        return src.to_vec();
    }
    let resized = (|| {
        let src_img = fr::images::Image::from_vec_u8(sw, sh, src.to_vec(), pixel).ok()?;
        let mut dst = fr::images::Image::new(dw, dh, pixel);
        let opts = fr::ResizeOptions::new()
            .resize_alg(fr::ResizeAlg::Convolution(fr::FilterType::Bilinear));
        fr::Resizer::new().resize(&src_img, &mut dst, &opts).ok()?;
        Some(dst.into_vec())
    })();
    resized.unwrap_or_else(|| {
        let mut out = vec![0u8; dw as usize * dh as usize * channels];
        for y in 0..dh as usize {
            let sy = y * sh as usize / dh as usize;
            for x in 0..dw as usize {
                let sx = x * sw as usize / dw as usize;
                let s = (sy * sw as usize + sx) * channels;
                let d = (y * dw as usize + x) * channels;
                out[d..d + channels].copy_from_slice(&src[s..s + channels]);
            }
        }
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png_bytes(w: u32, h: u32) -> Vec<u8> {
        let img = RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, 7]));
        let mut out = Vec::new();
        img.write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png)
            .unwrap();
        out
    }

    #[test]
    fn decodes_and_reports_bad_files() {
        let p = Path::new("x.png");
        let ok = decode_rgb(&png_bytes(5, 4), p, DEFAULT_MAX_PIXELS).unwrap();
        assert_eq!(ok.dimensions(), (5, 4));
        let empty = decode_rgb(&[], p, DEFAULT_MAX_PIXELS).unwrap_err();
        assert!(empty.to_string().contains("x.png") && empty.to_string().contains("empty"));
        let junk = decode_rgb(b"hello, this is text", p, DEFAULT_MAX_PIXELS).unwrap_err();
        assert!(junk.to_string().contains("not a recognised image format"));
        let bytes = png_bytes(40, 40);
        let truncated = decode_rgb(&bytes[..bytes.len() / 2], p, DEFAULT_MAX_PIXELS);
        assert!(truncated.is_err());
        let big = decode_rgb(&png_bytes(100, 100), p, 99 * 100).unwrap_err();
        assert!(matches!(big, DataError::TooLarge { pixels: 10000, .. }));
    }

    #[test]
    fn resize_modes() {
        let img = RgbImage::from_pixel(40, 20, image::Rgb([200, 200, 200]));
        let sq = resize_rgb(&img, 10, 10, ResizeMode::Squash);
        assert_eq!(sq.dimensions(), (10, 10));
        assert_eq!(sq.get_pixel(5, 0).0, [200, 200, 200]);
        let ka = resize_rgb(&img, 10, 10, ResizeMode::KeepAspect);
        assert_eq!(ka.dimensions(), (10, 10));
        // 40x20 -> 10x5, centred: rows 0-1 are padding, row 5 is content.
        assert_eq!(ka.get_pixel(5, 0).0, [0, 0, 0]);
        assert_eq!(ka.get_pixel(5, 4).0, [200, 200, 200]);
    }
}
