//! JPEG decoding with libjpeg-turbo's decompressor, the one place in artemis-data that calls
//! `unsafe` code (an error manager for the C library).
//!
//! libjpeg-turbo is the JPEG decoder of Chromium, Firefox, Pillow, OpenCV and TensorFlow. With
//! its defaults (the accurate integer IDCT, "fancy" triangle-filter chroma upsampling) artemis
//! reads the same pixels, bit for bit, as the in-browser page, a Pillow or Keras pipeline and
//! the reference project. `mozjpeg-sys` builds it from source (mozjpeg's decompressor is
//! libjpeg-turbo's, unchanged), with its SIMD code where `nasm` is installed and plain C
//! otherwise; both give the same pixels.
//!
//! CMYK and YCCK files (print-world JPEGs, stored the Adobe way with inverted ink amounts) are
//! read as CMYK and brought to RGB here, with the same rule as `image`'s decoder (each ink
//! value times the black one, [`blinn`]).
//!
//! libjpeg reports a fatal error through `error_exit`, which must not return: ours unwinds (the
//! `C-unwind` ABI), and the unwind is caught here. Damaged entropy-coded data is not fatal:
//! libjpeg warns and decodes on (grey where data is missing); the first such warning comes back
//! with the picture.
#![allow(unsafe_code)]

use crate::error::DataError;
use image::{DynamicImage, RgbImage};
use mozjpeg::{ColorSpace, Decompress, Marker};
use mozjpeg_sys as ffi;
use std::cell::Cell;
use std::os::raw::c_int;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};

/// What a decode that gave no picture ends with.
pub(crate) enum Failure {
    /// Refused for good (over the pixel limit): the error to report.
    Refused(DataError),
    /// A colour space artemis does not read through libjpeg (none of grey, YCbCr, RGB, CMYK
    /// or YCCK).
    Colour,
    /// libjpeg refused the file as malformed: why.
    Fatal(String),
}

/// A picture, and libjpeg's first warning about damaged data in it, if any.
pub(crate) struct Decoded {
    pub image: RgbImage,
    pub warning: Option<&'static str>,
}

thread_local! {
    /// The first damage warning of the decode running on this thread.
    static WARNING: Cell<Option<&'static str>> = const { Cell::new(None) };
}

/// The warnings that mean damaged data, in words; other warnings (an unknown JFIF revision, a
/// bad ICC profile) say nothing about the pixels.
fn damage(code: c_int) -> Option<&'static str> {
    Some(match code {
        ffi::JWRN_EXTRANEOUS_DATA => "corrupt data: extraneous bytes before a marker",
        ffi::JWRN_HIT_MARKER => "corrupt data: premature end of a data segment",
        ffi::JWRN_HUFF_BAD_CODE => "corrupt data: bad Huffman code",
        ffi::JWRN_JPEG_EOF => "premature end of the JPEG data",
        ffi::JWRN_MUST_RESYNC => "corrupt data: lost sync at a restart marker",
        ffi::JWRN_NOT_SEQUENTIAL => "corrupt data: restart markers out of order",
        ffi::JWRN_TOO_MUCH_DATA => "corrupt data: more data than the image holds",
        ffi::JWRN_BOGUS_PROGRESSION => "corrupt progression in a progressive JPEG",
        _ => return None,
    })
}

/// A fatal error's message code in words, for the common ones.
fn fatal(code: c_int) -> String {
    match code {
        ffi::JERR_NO_SOI => "no start-of-image marker".into(),
        ffi::JERR_SOI_DUPLICATE => "a second start-of-image marker".into(),
        ffi::JERR_SOF_DUPLICATE => "a second start-of-frame marker".into(),
        ffi::JERR_SOF_UNSUPPORTED => "an unsupported JPEG process".into(),
        ffi::JERR_NO_HUFF_TABLE | ffi::JERR_NO_QUANT_TABLE => {
            "a table the scan needs is missing".into()
        }
        ffi::JERR_BAD_HUFF_TABLE => "a bad Huffman table".into(),
        ffi::JERR_EMPTY_IMAGE | ffi::JERR_NO_IMAGE => "no image data".into(),
        ffi::JERR_IMAGE_TOO_BIG => "image dimensions too large".into(),
        ffi::JERR_BAD_LENGTH
        | ffi::JERR_BAD_COMPONENT_ID
        | ffi::JERR_BAD_SAMPLING
        | ffi::JERR_BAD_PRECISION
        | ffi::JERR_COMPONENT_COUNT => "a malformed header".into(),
        ffi::JERR_INPUT_EOF => "the data ends early".into(),
        ffi::JERR_UNKNOWN_MARKER => "an unsupported marker".into(),
        _ => format!("libjpeg error code {code}"),
    }
}

/// A fatal libjpeg error: carries its message code out of the C library as an unwind.
struct Fatal(c_int);

extern "C-unwind" fn error_exit(cinfo: &mut ffi::jpeg_common_struct) {
    // SAFETY: libjpeg calls this with the decompressor whose `err` points at the error manager
    // built in `error_manager`, which the decompressor owns and keeps alive while it runs.
    let code = unsafe { cinfo.err.as_ref() }.map_or(-1, |e| e.msg_code);
    resume_unwind(Box::new(Fatal(code)));
}

extern "C-unwind" fn emit_message(cinfo: &mut ffi::jpeg_common_struct, level: c_int) {
    if level >= 0 {
        return; // trace messages
    }
    // SAFETY: as in `error_exit`.
    if let Some(err) = unsafe { cinfo.err.as_mut() } {
        err.num_warnings += 1;
        if let Some(what) = damage(err.msg_code) {
            WARNING.with(|w| {
                if w.get().is_none() {
                    w.set(Some(what));
                }
            });
        }
    }
}

/// libjpeg's standard error manager with our `error_exit` and `emit_message` (nothing is
/// printed to stderr).
fn error_manager() -> ffi::jpeg_error_mgr {
    // SAFETY: `jpeg_error_mgr` is a C struct of integers, pointers and optional function
    // pointers, for which all-zero bytes are a valid value; `jpeg_std_error` then fills it in.
    let mut err: ffi::jpeg_error_mgr = unsafe { std::mem::zeroed() };
    // SAFETY: `err` is a valid, exclusively borrowed error manager.
    unsafe { ffi::jpeg_std_error(&mut err) };
    err.error_exit = Some(error_exit);
    err.emit_message = Some(emit_message);
    err
}

/// The EXIF orientation stored in an APP1 segment, if any.
fn orientation(d: &Decompress<&[u8]>) -> Option<image::metadata::Orientation> {
    d.markers().find_map(|m| {
        let tiff = m.data.strip_prefix(b"Exif\0\0")?;
        image::metadata::Orientation::from_exif_chunk(tiff)
    })
}

/// `value * black / 255`, rounded as `image`'s decoder (zune-jpeg) does it, for stored (Adobe,
/// inverted) ink amounts: no ink (255) leaves the other value as it is.
fn blinn(value: u8, black: u8) -> u8 {
    let t = i32::from(value) * i32::from(black) + 128;
    ((t + (t >> 8)) >> 8) as u8
}

/// Interleaved CMYK samples as libjpeg gives them (inverted, the Adobe way) to RGB.
fn cmyk_to_rgb(cmyk: &[u8]) -> Vec<u8> {
    let rgb = cmyk.chunks_exact(4).flat_map(|p| {
        let [c, m, y, k] = [p[0], p[1], p[2], p[3]];
        [blinn(c, k), blinn(m, k), blinn(y, k)]
    });
    rgb.collect()
}

/// Decodes JPEG bytes to 8-bit RGB (grey replicated to three channels, the EXIF orientation
/// applied), checking the header's size against `check_size` before any pixel is decoded.
pub(crate) fn decode(
    bytes: &[u8],
    check_size: impl Fn(u32, u32) -> Result<u64, DataError>,
) -> Result<Decoded, Failure> {
    WARNING.with(|w| w.set(None));
    let run = catch_unwind(AssertUnwindSafe(|| -> Result<Decoded, Failure> {
        let d = Decompress::with_err(error_manager())
            .with_markers(&[Marker::APP(1)])
            .from_mem(bytes)
            .map_err(|e| Failure::Fatal(e.to_string()))?;
        let cmyk = match d.color_space() {
            ColorSpace::JCS_GRAYSCALE | ColorSpace::JCS_YCbCr | ColorSpace::JCS_RGB => false,
            ColorSpace::JCS_CMYK | ColorSpace::JCS_YCCK => true,
            _ => return Err(Failure::Colour),
        };
        let (w, h) = (d.width() as u32, d.height() as u32);
        check_size(w, h).map_err(Failure::Refused)?;
        let turn = orientation(&d);
        let started = if cmyk {
            d.to_colorspace(ColorSpace::JCS_CMYK)
        } else {
            d.rgb()
        };
        let mut started = started.map_err(|e| Failure::Fatal(e.to_string()))?;
        let mut pixels: Vec<u8> = started
            .read_scanlines()
            .map_err(|e| Failure::Fatal(e.to_string()))?;
        if cmyk {
            pixels = cmyk_to_rgb(&pixels);
        }
        started
            .finish()
            .map_err(|e| Failure::Fatal(e.to_string()))?;
        let image = RgbImage::from_raw(w, h, pixels)
            .ok_or_else(|| Failure::Fatal("fewer pixels than the header declares".into()))?;
        let mut image = DynamicImage::ImageRgb8(image);
        if let Some(o) = turn {
            image.apply_orientation(o);
        }
        Ok(Decoded {
            image: image.into_rgb8(),
            warning: WARNING.with(|w| w.get()),
        })
    }));
    match run {
        Ok(result) => result,
        Err(payload) => match payload.downcast::<Fatal>() {
            Ok(f) => Err(Failure::Fatal(fatal(f.0))),
            // Not libjpeg's error: a bug to surface, not a damaged file to skip.
            Err(other) => resume_unwind(other),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 4:2:0 colour JPEG (the sampling of most scans here) of a smooth pattern with edges,
    /// odd-sized so the upsampling's edge cases count, written by jpeg-encoder (pinned, so the
    /// bytes are fixed).
    fn sample() -> Vec<u8> {
        let img = RgbImage::from_fn(37, 29, |x, y| {
            let v = ((x * 7 + y * 3) % 256) as u8;
            image::Rgb([
                v,
                v.wrapping_mul(3),
                if (x / 5 + y / 4) % 2 == 0 { 40 } else { 210 },
            ])
        });
        let mut out = Vec::new();
        let mut enc = jpeg_encoder::Encoder::new(&mut out, 85);
        enc.set_sampling_factor(jpeg_encoder::SamplingFactor::R_4_2_0);
        enc.encode(img.as_raw(), 37, 29, jpeg_encoder::ColorType::Rgb)
            .unwrap();
        out
    }

    #[test]
    fn decodes_the_pixels_pillow_decodes() {
        let bytes = sample();
        let d = decode(&bytes, |w, h| Ok(u64::from(w) * u64::from(h)))
            .ok()
            .unwrap();
        assert_eq!(d.image.dimensions(), (37, 29));
        assert!(d.warning.is_none());
        // blake3 of the RGB bytes that Pillow 13.0 (libjpeg-turbo 3) decodes from `sample()`
        // (`numpy.asarray(Image.open(f).convert("RGB")).tobytes()` on `sample()` written to a
        // file), as Chromium does. zune-jpeg, artemis's decoder before, gives other pixels.
        let want = "0503d027f12b7451b8a92a784801dd3539123d6453fbd76f194e8689a304e70a";
        assert_eq!(blake3::hash(d.image.as_raw()).to_hex().as_str(), want);
    }

    #[test]
    fn damaged_scan_data_decodes_with_a_warning_and_limits_refuse_first() {
        // The scan cut in the middle and the end-of-image marker put after it.
        let full = sample();
        let sos = full.windows(2).position(|w| w == [0xFF, 0xDA]).unwrap();
        let mut bytes = full[..sos + (full.len() - sos) / 2].to_vec();
        bytes.extend([0xFF, 0xD9]);
        let d = decode(&bytes, |w, h| Ok(u64::from(w) * u64::from(h)))
            .ok()
            .unwrap();
        assert!(d.warning.is_some(), "no warning for a damaged scan");
        let refused = decode(&sample(), |_, _| {
            Err(DataError::Decode {
                path: "x.jpg".into(),
                reason: "too large".into(),
            })
        });
        assert!(matches!(refused, Err(Failure::Refused(_))));
        let not_jpeg = decode(b"\x89PNG\r\n\x1a\nnot a jpeg", |_, _| Ok(0));
        assert!(matches!(not_jpeg, Err(Failure::Fatal(_))));
    }
}
