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
use dicom_object::file::ReadPreamble;
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

/// How a DICOM data set is encoded, as far as element headers go.
#[derive(Clone, Copy)]
struct Syntax {
    explicit_vr: bool,
    big_endian: bool,
}

/// Value representations whose length field is 2 bytes in explicit-VR encodings; every other
/// one, unknown codes included (dicom-rs reads those as UN), has a 4-byte length.
const SHORT_VRS: [&[u8; 2]; 21] = [
    b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS", b"LO", b"LT", b"PN",
    b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US",
];

/// Checks, before dicom-rs parses a file, that no element, item or fragment declares more
/// bytes than the file holds after it. Walks the file meta group (explicit VR little endian),
/// reads the transfer syntax from it, then walks the data set, descending into sequences,
/// items and encapsulated pixel data. Deflated data sets are not walked (dicom-rs inflates
/// them); truncation is left for the parser to report.
fn check_lengths(bytes: &[u8]) -> std::result::Result<(), String> {
    let start = if sniff(bytes) { 132 } else { 0 };
    let meta = Syntax {
        explicit_vr: true,
        big_endian: false,
    };
    let mut ts = String::new();
    let pos = walk(bytes, start, bytes.len(), meta, 0, true, false, &mut ts)?;
    let ts = ts.trim_end_matches(['\0', ' ']);
    let syntax = match ts {
        "1.2.840.10008.1.2" => Syntax {
            explicit_vr: false,
            big_endian: false,
        },
        "1.2.840.10008.1.2.2" => Syntax {
            explicit_vr: true,
            big_endian: true,
        },
        "1.2.840.10008.1.2.1.99" => return Ok(()),
        _ => meta,
    };
    walk(
        bytes,
        pos,
        bytes.len(),
        syntax,
        0,
        false,
        false,
        &mut String::new(),
    )
    .map(|_| ())
}

/// Walks elements in `bytes[pos..end]`; returns where it stopped (the end, a delimiter it
/// consumed, or with `meta_only` the first element after group 0002). `fragments`: the
/// level is encapsulated pixel data, whose items are not walked into.
#[allow(clippy::too_many_arguments)]
fn walk(
    bytes: &[u8],
    mut pos: usize,
    end: usize,
    syn: Syntax,
    depth: usize,
    meta_only: bool,
    fragments: bool,
    ts: &mut String,
) -> std::result::Result<usize, String> {
    if depth > 64 {
        return Err("sequences nested more than 64 deep".into());
    }
    let u16_at = |p: usize| {
        let b = [bytes[p], bytes[p + 1]];
        if syn.big_endian {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        }
    };
    let u32_at = |p: usize| {
        let b = [bytes[p], bytes[p + 1], bytes[p + 2], bytes[p + 3]];
        if syn.big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        }
    };
    const UNDEFINED: u32 = 0xFFFF_FFFF;
    while end.saturating_sub(pos) >= 8 {
        let (group, element) = (u16_at(pos), u16_at(pos + 2));
        if meta_only && group != 0x0002 {
            return Ok(pos);
        }
        let tag = format!("({group:04X},{element:04X})");
        if group == 0xFFFE {
            let len = u32_at(pos + 4);
            pos += 8;
            match element {
                0xE000 if len == UNDEFINED => {
                    pos = walk(bytes, pos, end, syn, depth + 1, false, false, ts)?;
                }
                0xE000 => {
                    let len = len as usize;
                    if len > end - pos {
                        return Err(format!(
                            "item at byte {pos} declares {len} bytes, only {} remain",
                            end - pos
                        ));
                    }
                    // Items of a sequence hold elements; fragments of encapsulated pixel
                    // data hold compressed bytes.
                    if !fragments {
                        walk(bytes, pos, pos + len, syn, depth + 1, false, false, ts)?;
                    }
                    pos += len;
                }
                // Item or sequence delimiter: this level ends.
                _ => return Ok(pos),
            }
            continue;
        }
        let (vr, len, header): (Option<[u8; 2]>, u32, usize) = if syn.explicit_vr {
            let vr = [bytes[pos + 4], bytes[pos + 5]];
            if !SHORT_VRS.contains(&&vr) {
                if end - pos < 12 {
                    return Ok(end);
                }
                (Some(vr), u32_at(pos + 8), 12)
            } else {
                (Some(vr), u32::from(u16_at(pos + 6)), 8)
            }
        } else {
            (None, u32_at(pos + 4), 8)
        };
        pos += header;
        if len == UNDEFINED {
            // A sequence, or encapsulated pixel data (a sequence of fragments). Inside an
            // undefined-length UN (or unknown VR) the encoding is implicit VR little endian.
            let pixel_fragments = (group, element) == (0x7FE0, 0x0010);
            let inner = match vr {
                Some(v) if &v != b"SQ" && !pixel_fragments => Syntax {
                    explicit_vr: false,
                    big_endian: false,
                },
                _ => syn,
            };
            pos = walk(
                bytes,
                pos,
                end,
                inner,
                depth + 1,
                false,
                pixel_fragments,
                ts,
            )?;
            continue;
        }
        let len = len as usize;
        if len > end - pos {
            return Err(format!(
                "element {tag} declares {len} bytes, only {} remain in the file",
                end - pos
            ));
        }
        let value = &bytes[pos..pos + len];
        if (group, element) == (0x0002, 0x0010) {
            *ts = String::from_utf8_lossy(value).into_owned();
        }
        let is_sequence =
            vr == Some(*b"SQ") || (vr.is_none() && value.starts_with(&[0xFE, 0xFF, 0x00, 0xE0]));
        if is_sequence {
            walk(bytes, pos, pos + len, syn, depth + 1, false, false, ts)?;
        }
        pos += len;
    }
    Ok(end)
}

/// Reads a DICOM file into one picture per frame.
pub fn read_dicom(path: &Path, opts: &DicomOptions) -> Result<DicomImage> {
    // The whole file is parsed into memory: refuse files no picture within the pixel limit
    // could fill before reading them.
    let bytes =
        crate::image_io::read_limited(path, crate::image_io::max_file_bytes(opts.max_pixels))?;
    // dicom-rs sizes each value's buffer by its declared length before reading it: a
    // 4 kB file declaring a 3 GB value made it allocate 3 GB (found by fuzzing).
    check_lengths(&bytes).map_err(|e| bad(path, e))?;
    let preamble = if sniff(&bytes) {
        ReadPreamble::Always
    } else {
        ReadPreamble::Auto
    };
    let obj = OpenFileOptions::new()
        .read_preamble(preamble)
        .from_reader(std::io::Cursor::new(bytes))
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
    let Some(pixel_data) = obj.element_opt(tags::PIXEL_DATA).ok().flatten() else {
        return Err(bad(path, "no pixel data (7FE0,0010)"));
    };
    // The decoder allocates rows x columns x frames x samples x bytes before it decodes a
    // compressed stream: only grey or colour pictures of up to 32-bit samples get that far
    // (a fuzzed header asked for gigabytes here).
    let spp = int(&obj, tags::SAMPLES_PER_PIXEL).unwrap_or(1);
    if spp != 1 && spp != 3 {
        return Err(bad(path, format!("{spp} samples per pixel not supported")));
    }
    let bits = int(&obj, tags::BITS_ALLOCATED).unwrap_or(8);
    if !matches!(bits, 1 | 8 | 16 | 32) {
        return Err(bad(
            path,
            format!("{bits} bits allocated per sample not supported"),
        ));
    }
    let (spp, bits) = (spp as u64, bits as u64);
    // Native (uncompressed) pixel data must hold every pixel the header announces.
    if let Some(p) = pixel_data.value().primitive() {
        let need = (pixels * spp * bits).div_ceil(8);
        let have = p.calculate_byte_len() as u64;
        if have < need {
            return Err(bad(
                path,
                format!(
                    "inconsistent sizes: pixel data holds {have} bytes, {cols}x{rows} x \
                     {frames} frame(s) x {spp} sample(s) x {bits} bits need {need}"
                ),
            ));
        }
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
