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
use dicom_pixeldata::{
    ConvertOptions, DecodedPixelData, ModalityLutOption, PixelDecoder, VoiLutOption,
};
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

/// Value representations whose length field is 2 bytes in explicit-VR encodings; every other
/// one, unknown codes included (dicom-rs reads those as UN), has a 4-byte length.
const SHORT_VRS: [&[u8; 2]; 21] = [
    b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS", b"LO", b"LT", b"PN",
    b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US",
];

/// Checks, before dicom-rs builds the object, that no element, item or fragment declares more
/// bytes than the file holds after it: dicom-rs allocates (and zeroes) a value's declared
/// length before reading it, so a 4 kB file declaring a 3 GB value made it allocate 3 GB
/// (found by fuzzing). The file meta group is walked here (explicit VR little endian, as far
/// as its byte count (0002,0000) says, as dicom-rs reads it); the data set is walked by
/// dicom-rs's own reader, stopping at each header before its value is read, so the check
/// sees the file exactly as the parser will. Whatever fails to parse here is left for the
/// parser to report.
fn check_lengths(bytes: &[u8]) -> std::result::Result<(), String> {
    use dicom_encoding::transfer_syntax::TransferSyntaxIndex;
    use dicom_parser::dataset::{DataSetReader, DataToken};
    use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

    let magic = if sniff(bytes) { 128 } else { 0 };
    // One explicit-VR little-endian element header at `at`: (group, element, length, header
    // size), the length field 2 or 4 bytes by the VR as dicom-rs reads it (it does not
    // check that (0002,0000) says UL, only that its length is 4).
    let header = |at: usize| -> Option<(u16, u16, u32, usize)> {
        let h = bytes.get(at..at + 8)?;
        let (g, e) = (
            u16::from_le_bytes([h[0], h[1]]),
            u16::from_le_bytes([h[2], h[3]]),
        );
        if SHORT_VRS.contains(&&[h[4], h[5]]) {
            Some((g, e, u32::from(u16::from_le_bytes([h[6], h[7]])), 8))
        } else {
            let l = bytes.get(at + 8..at + 12)?;
            Some((g, e, u32::from_le_bytes([l[0], l[1], l[2], l[3]]), 12))
        }
    };
    let start = magic + 4;
    let (group_len, meta_start) = match header(start) {
        Some((0x0002, 0x0000, 4, size)) => match bytes.get(start + size..start + size + 4) {
            Some(v) => (
                u32::from_le_bytes([v[0], v[1], v[2], v[3]]) as usize,
                start + size + 4,
            ),
            None => return Ok(()),
        },
        // dicom-rs refuses a meta group without its length: nothing to check.
        _ => return Ok(()),
    };
    let mut pos = meta_start;
    while pos - meta_start < group_len {
        let Some((g, e, len, size)) = header(pos) else {
            return Ok(());
        };
        pos += size;
        if len == u32::MAX || len as usize > bytes.len() - pos {
            return Err(format!(
                "file meta element ({g:04X},{e:04X}) declares {len} bytes, only {} remain",
                bytes.len() - pos
            ));
        }
        pos += len as usize;
    }
    let mut cursor = std::io::Cursor::new(&bytes[magic..]);
    let Ok(meta) = dicom_object::FileMetaTable::from_reader(&mut cursor) else {
        return Ok(());
    };
    let Some(ts) = TransferSyntaxRegistry.get(meta.transfer_syntax()) else {
        return Ok(());
    };
    if !matches!(
        ts.codec(),
        dicom_encoding::transfer_syntax::Codec::None
            | dicom_encoding::transfer_syntax::Codec::EncapsulatedPixelData(..)
    ) {
        // Deflated data sets: dicom-rs inflates them as a stream; not walked.
        return Ok(());
    }
    let offset = magic + cursor.position() as usize;
    let reader = Tracked {
        bytes,
        pos: std::rc::Rc::new(std::cell::Cell::new(offset)),
    };
    let pos = reader.pos.clone();
    let Ok(dataset) = DataSetReader::new_with_ts(reader, ts) else {
        return Ok(());
    };
    for token in dataset {
        let (what, len) = match token {
            Ok(DataToken::ElementHeader(h)) => (format!("element {}", h.tag), h.len.get()),
            Ok(DataToken::ItemStart { len }) => ("item".to_string(), len.get()),
            Ok(_) => continue,
            Err(_) => break,
        };
        let left = bytes.len() - pos.get();
        if let Some(len) = len
            && len as usize > left
        {
            return Err(format!(
                "{what} declares {len} bytes, only {left} remain in the file"
            ));
        }
    }
    Ok(())
}

/// A reader over the file's bytes whose position can be read while dicom-rs owns it.
struct Tracked<'a> {
    bytes: &'a [u8],
    pos: std::rc::Rc<std::cell::Cell<usize>>,
}

impl std::io::Read for Tracked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let at = self.pos.get();
        let n = buf.len().min(self.bytes.len() - at);
        buf[..n].copy_from_slice(&self.bytes[at..at + n]);
        self.pos.set(at + n);
        Ok(n)
    }
}

/// Reads a DICOM file into one picture per frame.
pub fn read_dicom(path: &Path, opts: &DicomOptions) -> Result<DicomImage> {
    // The whole file is parsed into memory: refuse files no picture within the pixel limit
    // could fill before reading them.
    let bytes = crate::fsutil::read_limited(path, crate::fsutil::max_file_bytes(opts.max_pixels))?;
    decode_dicom(bytes, path, opts)
}

/// [`read_dicom`] of a file's bytes (an upload); `path` names it in errors.
pub fn decode_dicom(bytes: Vec<u8>, path: &Path, opts: &DicomOptions) -> Result<DicomImage> {
    let obj = parse_checked(bytes, path, opts)?;
    let ts = obj
        .meta()
        .transfer_syntax()
        .trim_end_matches('\0')
        .to_string();
    // The pixel data decoders (JPEG, RLE, ...) are others' code meeting the file's bytes.
    let decoded = crate::guard::catch_panic(|| obj.decode_pixel_data())
        .map_err(|what| {
            bad(
                path,
                format!("the pixel data decoder failed on it ({what})"),
            )
        })?
        .map_err(|e| {
            bad(
                path,
                format!("cannot decode pixel data (transfer syntax {ts}): {e}"),
            )
        })?;
    let photometric = decoded.photometric_interpretation().as_ref().to_string();
    let mut out = Vec::with_capacity(decoded.number_of_frames() as usize);
    for f in 0..decoded.number_of_frames() {
        out.push(match decoded.samples_per_pixel() {
            1 => grey_frame(path, &decoded, f, photometric == "MONOCHROME1")?,
            3 => colour_frame(path, &decoded, f, photometric == "YBR_FULL")?,
            spp => return Err(bad(path, format!("{spp} samples per pixel not supported"))),
        });
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

/// The file parsed, after every check that must come before its pixel data is decoded.
fn parse_checked(bytes: Vec<u8>, path: &Path, opts: &DicomOptions) -> Result<DefaultDicomObject> {
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
    check_pixel_header(path, &obj, opts.max_pixels)?;
    Ok(obj)
}

/// Size, samples and bits the decoder will allocate for, and (for native pixel data) that
/// the data holds every pixel the header announces.
fn check_pixel_header(path: &Path, obj: &DefaultDicomObject, max_pixels: u64) -> Result<()> {
    let rows = int(obj, tags::ROWS).ok_or_else(|| bad(path, "no Rows (0028,0010)"))?;
    let cols = int(obj, tags::COLUMNS).ok_or_else(|| bad(path, "no Columns (0028,0011)"))?;
    let frames = int(obj, tags::NUMBER_OF_FRAMES).unwrap_or(1).max(1);
    if rows <= 0 || cols <= 0 {
        return Err(bad(path, format!("impossible size {cols}x{rows}")));
    }
    let pixels = (rows as u64) * (cols as u64) * (frames as u64);
    if pixels > max_pixels {
        return Err(DataError::TooLarge {
            path: path.into(),
            width: cols as u32,
            height: rows as u32,
            pixels,
            limit: max_pixels,
        });
    }
    let Some(pixel_data) = obj.element_opt(tags::PIXEL_DATA).ok().flatten() else {
        return Err(bad(path, "no pixel data (7FE0,0010)"));
    };
    // The decoder allocates rows x columns x frames x samples x bytes before it decodes a
    // compressed stream: only grey or colour pictures of up to 32-bit samples get that far
    // (a fuzzed header asked for gigabytes here).
    let spp = int(obj, tags::SAMPLES_PER_PIXEL).unwrap_or(1);
    if spp != 1 && spp != 3 {
        return Err(bad(path, format!("{spp} samples per pixel not supported")));
    }
    let bits = int(obj, tags::BITS_ALLOCATED).unwrap_or(8);
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
    Ok(())
}

/// Frame `f` of a grey picture: modality LUT applied, then the file's window (of that frame,
/// else the first) or, without one, the 0.5-99.5 percentile range mapped to 0..255;
/// MONOCHROME1 inverted.
fn grey_frame(
    path: &Path,
    decoded: &DecodedPixelData<'_>,
    f: u32,
    invert: bool,
) -> Result<DicomFrame> {
    let (w, h) = (decoded.columns(), decoded.rows());
    let plane = (w as usize) * (h as usize);
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
    let image = RgbImage::from_fn(w, h, |x, y| {
        let g = map(v[(y * w + x) as usize]);
        Rgb([if invert { 255 - g } else { g }; 3])
    });
    Ok(DicomFrame { image, windowing })
}

/// Frame `f` of a colour picture, 8 bits a sample; YBR_FULL converted to RGB.
fn colour_frame(
    path: &Path,
    decoded: &DecodedPixelData<'_>,
    f: u32,
    ybr: bool,
) -> Result<DicomFrame> {
    let (w, h) = (decoded.columns(), decoded.rows());
    let plane = (w as usize) * (h as usize);
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
    let image = RgbImage::from_fn(w, h, |x, y| {
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
    Ok(DicomFrame {
        image,
        windowing: Windowing::Colour,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Explicit-VR little-endian element with a 2-byte length.
    fn short(group: u16, element: u16, vr: &[u8; 2], value: &[u8]) -> Vec<u8> {
        let mut v = [group.to_le_bytes(), element.to_le_bytes()].concat();
        v.extend_from_slice(vr);
        v.extend_from_slice(&(value.len() as u16).to_le_bytes());
        v.extend_from_slice(value);
        v
    }

    /// Fuzzing regression (fuzz/ target `dicom`, twice): dicom-rs allocates a value's declared
    /// length before reading it. Here the meta group holds a foreign element before the
    /// transfer syntax (implicit VR), as dicom-rs accepts, and the data set then declares 3 GB.
    #[test]
    fn declared_lengths_past_the_end_are_refused_before_parsing() {
        let mut meta = short(0x0021, 0x0003, b"UI", b"1\0");
        meta.extend(short(0x0002, 0x0010, b"UI", b"1.2.840.10008.1.2\0"));
        let mut file = vec![0u8; 128];
        file.extend_from_slice(b"DICM");
        file.extend(short(
            0x0002,
            0x0000,
            b"UL",
            &(meta.len() as u32).to_le_bytes(),
        ));
        file.extend(&meta);
        // Implicit VR: tag, 4-byte length, value.
        for (tag, len, value) in [
            ([0x10u8, 0x00, 0x10, 0x00], 4u32, &b"Doe^"[..]),
            ([0xE1, 0x7F, 0x10, 0x00], 0xC000_0000, &[0u8; 16][..]),
        ] {
            file.extend_from_slice(&tag);
            file.extend_from_slice(&len.to_le_bytes());
            file.extend_from_slice(value);
        }
        let e = check_lengths(&file).unwrap_err();
        assert!(e.contains("(7FE1,0010) declares 3221225472 bytes"), "{e}");
        // The same file with an honest length passes.
        let n = file.len();
        file[n - 20..n - 16].copy_from_slice(&16u32.to_le_bytes());
        assert_eq!(check_lengths(&file), Ok(()));
    }

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
