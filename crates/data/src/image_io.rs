//! Decoding raster images (JPEG, PNG) safely, and resizing them.
//!
//! The pixel count is checked from the header before any pixel is decoded, so a
//! decompression bomb (a small file claiming a huge image) is refused cheaply.

use crate::error::{DataError, Result};
use crate::jpeg;
use fast_image_resize as fr;
use image::{DynamicImage, ImageDecoder, ImageReader, RgbImage};
use std::io::Cursor;
use std::path::Path;

/// Default pixel-count limit: 64 megapixels, far above any MRI slice.
pub const DEFAULT_MAX_PIXELS: u64 = 64 * 1024 * 1024;

pub use crate::fsutil::{max_file_bytes, read_limited};

/// Reads and decodes an image file to 8-bit RGB (grey images are replicated to 3 channels,
/// alpha is dropped, 16-bit samples are scaled to 8 bits, palettes and CMYK are converted, the
/// EXIF orientation is applied). A decoder warning (a damaged JPEG decoded leniently) is
/// logged naming the file; [`read_rgb_checked`] returns it instead.
pub fn read_rgb(path: &Path, max_pixels: u64) -> Result<RgbImage> {
    let bytes = read_limited(path, max_file_bytes(max_pixels))?;
    decode_rgb(&bytes, path, max_pixels)
}

/// [`read_rgb`], with the decoder's warning about the file, if any.
pub fn read_rgb_checked(path: &Path, max_pixels: u64) -> Result<(RgbImage, Option<String>)> {
    let bytes = read_limited(path, max_file_bytes(max_pixels))?;
    decode_rgb_checked(&bytes, path, max_pixels)
}

/// The pixel count of a `width x height` picture, refused over `max_pixels` or when empty.
fn check_size(path: &Path, width: u32, height: u32, max_pixels: u64) -> Result<u64> {
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
        return Err(DataError::Decode {
            path: path.to_path_buf(),
            reason: "image has zero width or height".into(),
        });
    }
    Ok(pixels)
}

/// What a PNG decoder error means, in words (the `png` crate's messages carry Rust debug
/// text such as `ChunkType { type: IDAT, critical: true, ... }`).
fn png_reason(e: &image::ImageError) -> String {
    let text = e.to_string();
    if text.contains("CRC") {
        "PNG is damaged: a chunk's CRC checksum does not match its contents".into()
    } else if text.contains("deflate") {
        "PNG is damaged: its compressed image data is corrupt".into()
    } else if text.contains("ChunkType") || text.contains('{') {
        let kind = text.split(':').next().unwrap_or("format error").trim();
        format!("PNG is damaged or malformed ({kind})")
    } else {
        text
    }
}

/// Whether JPEG bytes end their last scan with an end-of-image marker (`FF D9` after the last
/// start-of-scan `FF DA`). The decoder fills a cut-off scan with grey without complaint; a
/// truncated file is refused instead. (Inside entropy-coded data every `FF` is followed by
/// `00` or a restart marker, so neither marker can appear there by accident.)
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let last = |m: u8| bytes.windows(2).rposition(|w| w == [0xFF, m]);
    match (last(0xDA), last(0xD9)) {
        (Some(sos), Some(eoi)) => eoi > sos,
        _ => false,
    }
}

/// Runs `image`'s decoder, turning a panic inside it into an error naming the file
/// ([`crate::guard`]). zune-jpeg 0.5.15 indexes past its buffers on some malformed JPEGs that
/// libjpeg-turbo refuses; the fuzzer finds them within seconds.
fn guarded<T>(path: &Path, decode: impl FnOnce() -> Result<T>) -> Result<T> {
    crate::guard::catch_panic(decode).unwrap_or_else(|what| {
        Err(DataError::Decode {
            path: path.to_path_buf(),
            reason: format!("the image decoder failed on it ({what})"),
        })
    })
}

/// Decodes image bytes to 8-bit RGB. `path` is only used in messages; a decoder warning is
/// logged ([`decode_rgb_checked`] returns it).
pub fn decode_rgb(bytes: &[u8], path: &Path, max_pixels: u64) -> Result<RgbImage> {
    let (img, warning) = decode_rgb_checked(bytes, path, max_pixels)?;
    if let Some(w) = warning {
        tracing::warn!("{}: {w}", path.display());
    }
    Ok(img)
}

/// [`decode_rgb`], with the decoder's warning about the bytes, if any: a JPEG that only the
/// lenient decoder reads (damaged data it decodes anyway, partly wrong) comes with one.
pub fn decode_rgb_checked(
    bytes: &[u8],
    path: &Path,
    max_pixels: u64,
) -> Result<(RgbImage, Option<String>)> {
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
    let Some(format) = reader.format() else {
        let what = if crate::dicom::sniff(bytes) {
            "a DICOM file: data folders hold JPEG/PNG slices (`artemis predict` reads DICOM)"
        } else {
            "not a recognised image format (JPEG or PNG expected)"
        };
        return Err(decode_err(what.into()));
    };
    // JPEG: libjpeg-turbo reads it (see `jpeg`), its header checked against our limits before
    // any pixel is decoded. A file it refuses as malformed (or in a colour space it does not
    // give as RGB) goes on to `image`'s decoder (zune-jpeg) below, which reads some damaged
    // files leniently.
    let mut warning = None;
    if format == image::ImageFormat::Jpeg {
        if !jpeg_is_complete(bytes) {
            return Err(decode_err(format!(
                "JPEG is truncated: no end-of-image marker after the last scan ({} bytes)",
                bytes.len()
            )));
        }
        let damaged = |what: &str| {
            format!(
                "JPEG is damaged ({what}); decoded leniently, so part of the picture may be wrong"
            )
        };
        match jpeg::decode(bytes, |w, h| check_size(path, w, h, max_pixels)) {
            Ok(d) => return Ok((d.image, d.warning.map(damaged))),
            Err(jpeg::Failure::Refused(e)) => return Err(e),
            Err(jpeg::Failure::Colour) => {}
            Err(jpeg::Failure::Fatal(why)) => {
                warning = Some(damaged(&format!("libjpeg-turbo refused it: {why}")))
            }
        }
    }
    guarded(path, || decode_with_image(reader, path, max_pixels)).map(|img| (img, warning))
}

/// Decodes with `image`'s own decoders (PNG; JPEG that libjpeg-turbo did not read).
fn decode_with_image(
    mut reader: ImageReader<Cursor<&[u8]>>,
    path: &Path,
    max_pixels: u64,
) -> Result<RgbImage> {
    let png = reader.format() == Some(image::ImageFormat::Png);
    let decode_err = |e: image::ImageError| DataError::Decode {
        path: path.to_path_buf(),
        reason: if png { png_reason(&e) } else { e.to_string() },
    };
    // One decoder: its header gives the size, checked against our limit (with our message)
    // before any pixel is decoded; the decoder's own limits follow from that size.
    reader.no_limits();
    let mut decoder = reader.into_decoder().map_err(decode_err)?;
    let (width, height) = decoder.dimensions();
    let pixels = check_size(path, width, height, max_pixels)?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(width);
    limits.max_image_height = Some(height);
    // Output at up to 16 bits x 4 channels, plus decoder working memory.
    limits.max_alloc = Some(pixels.saturating_mul(16).max(64 << 20));
    decoder.set_limits(limits).map_err(decode_err)?;
    // A camera or viewer may store the picture sideways with an EXIF orientation tag; what a
    // person sees is the oriented picture. An unreadable EXIF block is ignored.
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder).map_err(decode_err)?;
    img.apply_orientation(orientation);
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
    let resized = match pixel {
        fr::PixelType::U8 => resize_typed::<fr::pixels::U8>(src, sw, sh, dw, dh),
        fr::PixelType::U8x3 => resize_typed::<fr::pixels::U8x3>(src, sw, sh, dw, dh),
        _ => None,
    };
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

/// Bilinear (antialiased) resize of packed pixels of type `P`. The resizer's typed entry
/// point: its untyped `resize` matches over all 13 pixel types, and instantiating every one
/// of them in this crate was 60% of its compiled code and most of its build time (105 s of
/// a clean test build, twice: library and unit tests).
fn resize_typed<P: fr::PixelTrait>(
    src: &[u8],
    sw: u32,
    sh: u32,
    dw: u32,
    dh: u32,
) -> Option<Vec<u8>> {
    let src = fr::images::TypedImageRef::<P>::from_buffer(sw, sh, src).ok()?;
    let mut out = vec![0u8; dw as usize * dh as usize * P::size()];
    let mut dst = fr::images::TypedImage::<P>::from_buffer(dw, dh, &mut out).ok()?;
    let opts =
        fr::ResizeOptions::new().resize_alg(fr::ResizeAlg::Convolution(fr::FilterType::Bilinear));
    fr::Resizer::new()
        .resize_typed(&src, &mut dst, &opts)
        .ok()?;
    Some(out)
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

    /// A small CMYK JPEG written by jpeg-encoder, component 1's sampling factors (`h << 4 |
    /// v`) set to `sampling` and, when `split`, the scan header cut to the first three of the
    /// four components (a malformed file on which zune-jpeg 0.5.15 panics).
    fn cmyk_jpeg(sampling: u8, split: bool) -> Vec<u8> {
        let px: Vec<u8> = (0..24 * 16 * 4).map(|i| (i * 37 % 251) as u8).collect();
        let mut out = Vec::new();
        let enc = jpeg_encoder::Encoder::new(&mut out, 90);
        enc.encode(&px, 24, 16, jpeg_encoder::ColorType::Cmyk)
            .unwrap();
        let sof = out.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
        assert_eq!(out[sof + 9], 4, "four components");
        out[sof + 10 + 3 + 1] = sampling;
        if split {
            let sos = out.windows(2).position(|w| w == [0xFF, 0xDA]).unwrap();
            assert_eq!(out[sos + 4], 4);
            out[sos + 3] -= 2;
            out[sos + 4] = 3;
            out.drain(sos + 11..sos + 13);
        }
        out
    }

    #[test]
    fn cmyk_is_read_by_libjpeg_as_image_reads_it() {
        let bytes = cmyk_jpeg(0x11, false);
        let ours = match jpeg::decode(&bytes, |w, h| Ok(u64::from(w * h))) {
            Ok(d) => d.image,
            Err(_) => panic!("libjpeg-turbo did not read the CMYK file"),
        };
        let theirs = image::load_from_memory(&bytes).unwrap().into_rgb8();
        assert_eq!(ours.dimensions(), (24, 16));
        let worst = ours.as_raw().iter().zip(theirs.as_raw());
        let worst = worst.map(|(a, b)| a.abs_diff(*b)).max().unwrap();
        // The two decoders' IDCTs differ by a level or two; a wrong colour rule (ink not
        // inverted, black ignored) would be off by up to 255.
        assert!(
            worst <= 4,
            "largest difference {worst} grey levels (measured: 2)"
        );
    }

    #[test]
    fn a_decoder_panic_on_a_malformed_jpeg_is_an_error_naming_the_file() {
        let p = Path::new("split.jpg");
        // libjpeg-turbo reads the split scan (with a warning) but refuses an extension marker
        // (JPG0) before it, so these bytes go on to zune-jpeg, which panics on them.
        let mut bytes = cmyk_jpeg(0x22, true);
        let sos = bytes.windows(2).position(|w| w == [0xFF, 0xDA]).unwrap();
        bytes.splice(sos..sos, [0xFF, 0xF0, 0, 4, 0, 0]);
        let err = decode_rgb_checked(&bytes, p, DEFAULT_MAX_PIXELS).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("split.jpg") && text.contains("the image decoder failed"),
            "{text}"
        );
        assert!(!crate::guard::in_guarded_decode());
    }

    #[test]
    fn a_panic_in_the_decoder_becomes_an_error_naming_the_file() {
        let p = Path::new("scan.jpg");
        let out: Result<()> = guarded(p, || panic!("index 120 out of range"));
        let text = out.unwrap_err().to_string();
        assert!(
            text.contains("scan.jpg") && text.contains("index 120 out of range"),
            "{text}"
        );
        assert_eq!(guarded(p, || Ok(7)).unwrap(), 7);
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
