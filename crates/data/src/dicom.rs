//! DICOM input with dicom-rs: a file becomes one 8-bit RGB picture per frame, the way a
//! radiologist's viewer would show it.
//!
//! - Pixel data is decoded by `dicom-pixeldata`: native (uncompressed) pixel data and the
//!   encapsulated transfer syntaxes its `native` feature decodes in pure Rust (JPEG baseline
//!   and extended, JPEG lossless, RLE lossless, deflated explicit VR). Others are refused with
//!   the transfer syntax's UID in the message.
//! - Grey images: the modality LUT (Rescale Slope / Intercept) is applied, then the first
//!   Window Center / Width (DICOM PS3.3 C.11.2.1.2, the `LINEAR` function); without a window,
//!   a robust window from the 0.5th to the 99.5th percentile of the frame. `MONOCHROME1`
//!   (white = low) is inverted so that every picture has black = low.
//! - Colour images (`RGB`, `YBR_FULL`) are converted to RGB as they are.
//! - Patient and study identifiers are read only when asked ([`DicomOptions::identifiers`]).
//!
//! A multi-frame file yields one picture per frame.

use crate::error::{DataError, Result};
use dicom_dictionary_std::tags;
use dicom_object::{DefaultDicomObject, OpenFileOptions};
use dicom_pixeldata::{ConvertOptions, ModalityLutOption, PixelDecoder, VoiLutOption};
use image::{Rgb, RgbImage};
use serde::Serialize;
use std::path::Path;

/// What to read besides the pixels.
#[derive(Debug, Clone, Copy)]
pub struct DicomOptions {
    /// Refuse images with more pixels than this (rows x columns x frames), checked before the
    /// pixel data is decoded.
    pub max_pixels: u64,
    /// Read patient/study identifiers (never read otherwise).
    pub identifiers: bool,
}

/// Patient and study identifiers, for users who asked for them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Identifiers {
    pub patient_name: Option<String>,
    pub patient_id: Option<String>,
    pub study_instance_uid: Option<String>,
    pub series_instance_uid: Option<String>,
    pub sop_instance_uid: Option<String>,
    pub accession_number: Option<String>,
    pub study_date: Option<String>,
}

/// How the grey values were mapped to 8 bits.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Windowing {
    /// The file's Window Center / Width.
    File { center: f64, width: f64 },
    /// 0.5th to 99.5th percentile of the frame.
    Percentile { low: f64, high: f64 },
    /// Colour data, used as is.
    Colour,
}

/// One decoded frame.
#[derive(Debug, Clone)]
pub struct DicomFrame {
    pub image: RgbImage,
    pub windowing: Windowing,
}

/// A decoded DICOM file.
#[derive(Debug, Clone)]
pub struct DicomImage {
    pub frames: Vec<DicomFrame>,
    pub photometric: String,
    pub bits_stored: u16,
    pub transfer_syntax: String,
    /// Present only when [`DicomOptions::identifiers`] was set.
    pub identifiers: Option<Identifiers>,
}

/// Whether `bytes` start like a DICOM Part 10 file (`DICM` after the 128-byte preamble).
pub fn sniff(bytes: &[u8]) -> bool {
    bytes.len() >= 132 && &bytes[128..132] == b"DICM"
}

fn bad(path: &Path, reason: impl std::fmt::Display) -> DataError {
    DataError::Decode {
        path: path.into(),
        reason: format!("DICOM: {reason}"),
    }
}

fn text(obj: &DefaultDicomObject, tag: dicom_core::Tag) -> Option<String> {
    obj.element_opt(tag)
        .ok()
        .flatten()
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim_end_matches(['\0', ' ']).to_string())
        .filter(|s| !s.is_empty())
}

fn int(obj: &DefaultDicomObject, tag: dicom_core::Tag) -> Option<i64> {
    obj.element_opt(tag)
        .ok()
        .flatten()
        .and_then(|e| e.to_int::<i64>().ok())
}

/// The `q` quantile (0..=1) of `v` (sorted in place).
fn quantile(v: &mut [f32], q: f64) -> f64 {
    v.sort_by(f32::total_cmp);
    let i = ((v.len() - 1) as f64 * q).round() as usize;
    f64::from(v[i])
}

/// Maps grey values to 8 bits with the DICOM `LINEAR` window function.
pub fn window_linear(x: f64, center: f64, width: f64) -> u8 {
    let w = width.max(1.0);
    let y = ((x - (center - 0.5)) / (w - 1.0).max(1e-9) + 0.5) * 255.0;
    y.round().clamp(0.0, 255.0) as u8
}

/// Reads a DICOM file into one picture per frame.
pub fn read_dicom(path: &Path, opts: &DicomOptions) -> Result<DicomImage> {
    let obj = OpenFileOptions::new()
        .open_file(path)
        .map_err(|e| bad(path, e))?;
    let ts = obj
        .meta()
        .transfer_syntax()
        .trim_end_matches('\0')
        .to_string();
    let rows = int(&obj, tags::ROWS).ok_or_else(|| bad(path, "no Rows (0028,0010)"))?;
    let cols = int(&obj, tags::COLUMNS).ok_or_else(|| bad(path, "no Columns (0028,0011)"))?;
    let frames = int(&obj, tags::NUMBER_OF_FRAMES).unwrap_or(1).max(1);
    if rows <= 0 || cols <= 0 {
        return Err(bad(path, format!("impossible size {cols}x{rows}")));
    }
    let pixels = (rows as u64) * (cols as u64) * (frames as u64);
    if pixels > opts.max_pixels {
        return Err(DataError::TooLarge {
            path: path.into(),
            width: cols as u32,
            height: rows as u32,
            pixels,
            limit: opts.max_pixels,
        });
    }
    if obj.element_opt(tags::PIXEL_DATA).ok().flatten().is_none() {
        return Err(bad(path, "no pixel data (7FE0,0010)"));
    }
    let decoded = obj.decode_pixel_data().map_err(|e| {
        bad(
            path,
            format!("cannot decode pixel data (transfer syntax {ts}): {e}"),
        )
    })?;
    let photometric = decoded.photometric_interpretation().as_ref().to_string();
    let spp = decoded.samples_per_pixel();
    let (w, h) = (decoded.columns(), decoded.rows());
    let plane = (w as usize) * (h as usize);
    let mut out = Vec::with_capacity(decoded.number_of_frames() as usize);
    for f in 0..decoded.number_of_frames() {
        let frame = if spp == 1 {
            let opts = ConvertOptions::new()
                .with_modality_lut(ModalityLutOption::Default)
                .with_voi_lut(VoiLutOption::Identity);
            let v: Vec<f32> = decoded
                .to_vec_frame_with_options(f, &opts)
                .map_err(|e| bad(path, format!("frame {f}: {e}")))?;
            if v.len() < plane {
                return Err(bad(
                    path,
                    format!("frame {f}: {} values for {w}x{h} pixels", v.len()),
                ));
            }
            let window = decoded
                .window()
                .ok()
                .flatten()
                .and_then(|ws| ws.get(f as usize).or(ws.first()).copied())
                .filter(|wl| wl.width > 0.0 && wl.width.is_finite() && wl.center.is_finite());
            let (map, windowing): (Box<dyn Fn(f32) -> u8>, Windowing) = match window {
                Some(wl) => (
                    Box::new(move |x| window_linear(f64::from(x), wl.center, wl.width)),
                    Windowing::File {
                        center: wl.center,
                        width: wl.width,
                    },
                ),
                None => {
                    let mut s: Vec<f32> = v[..plane]
                        .iter()
                        .copied()
                        .filter(|x| x.is_finite())
                        .collect();
                    if s.is_empty() {
                        return Err(bad(path, format!("frame {f}: no finite pixel values")));
                    }
                    let lo = quantile(&mut s, 0.005);
                    let hi = quantile(&mut s, 0.995);
                    let span = (hi - lo).max(1e-9);
                    (
                        Box::new(move |x| {
                            ((f64::from(x) - lo) / span * 255.0)
                                .round()
                                .clamp(0.0, 255.0) as u8
                        }),
                        Windowing::Percentile { low: lo, high: hi },
                    )
                }
            };
            let invert = photometric == "MONOCHROME1";
            let img = RgbImage::from_fn(w, h, |x, y| {
                let g = map(v[(y * w + x) as usize]);
                Rgb([if invert { 255 - g } else { g }; 3])
            });
            DicomFrame {
                image: img,
                windowing,
            }
        } else if spp == 3 {
            let v: Vec<u8> = decoded
                .to_vec_frame_with_options(
                    f,
                    &ConvertOptions::new()
                        .with_modality_lut(ModalityLutOption::None)
                        .force_8bit(),
                )
                .map_err(|e| bad(path, format!("frame {f}: {e}")))?;
            if v.len() < 3 * plane {
                return Err(bad(
                    path,
                    format!("frame {f}: {} values for {w}x{h} RGB pixels", v.len()),
                ));
            }
            let ybr = photometric == "YBR_FULL";
            let img = RgbImage::from_fn(w, h, |x, y| {
                let i = 3 * (y * w + x) as usize;
                let (a, b, c) = (f32::from(v[i]), f32::from(v[i + 1]), f32::from(v[i + 2]));
                if ybr {
                    let px = |z: f32| z.round().clamp(0.0, 255.0) as u8;
                    Rgb([
                        px(a + 1.402 * (c - 128.0)),
                        px(a - 0.344_136 * (b - 128.0) - 0.714_136 * (c - 128.0)),
                        px(a + 1.772 * (b - 128.0)),
                    ])
                } else {
                    Rgb([v[i], v[i + 1], v[i + 2]])
                }
            });
            DicomFrame {
                image: img,
                windowing: Windowing::Colour,
            }
        } else {
            return Err(bad(path, format!("{spp} samples per pixel not supported")));
        };
        out.push(frame);
    }
    let identifiers = opts.identifiers.then(|| Identifiers {
        patient_name: text(&obj, tags::PATIENT_NAME),
        patient_id: text(&obj, tags::PATIENT_ID),
        study_instance_uid: text(&obj, tags::STUDY_INSTANCE_UID),
        series_instance_uid: text(&obj, tags::SERIES_INSTANCE_UID),
        sop_instance_uid: text(&obj, tags::SOP_INSTANCE_UID),
        accession_number: text(&obj, tags::ACCESSION_NUMBER),
        study_date: text(&obj, tags::STUDY_DATE),
    });
    Ok(DicomImage {
        frames: out,
        photometric,
        bits_stored: decoded.bits_stored(),
        transfer_syntax: ts,
        identifiers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_window_follows_the_standard() {
        // C.11.2.1.2: x <= c - 0.5 - (w-1)/2 -> 0; x > c - 0.5 + (w-1)/2 -> max.
        assert_eq!(window_linear(40.0 - 0.5 - 199.0 / 2.0, 40.0, 200.0), 0);
        assert_eq!(
            window_linear(40.0 - 0.5 + 199.0 / 2.0 + 0.01, 40.0, 200.0),
            255
        );
        assert_eq!(window_linear(40.0, 40.0, 200.0), 128);
        assert!(sniff(&[&[0u8; 128][..], b"DICM"].concat()));
        assert!(!sniff(b"\x89PNG"));
    }
}
