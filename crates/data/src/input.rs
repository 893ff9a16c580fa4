//! The one way a picture to classify enters artemis: a file, or the bytes of an upload, whose
//! format is recognised once ([`Format::detect`]) and decoded into pictures with their
//! metadata. `predict` opens files with [`open`], `serve` opens uploads with [`open_bytes`];
//! both get the same [`Opened`] (training and evaluation read JPEG/PNG data sets through the
//! same decoder, [`crate::image_io`]).
//!
//! | format | recognised by | pictures |
//! |---|---|---|
//! | NIfTI-1 (`.nii`, `.nii.gz`) | the name | one per slice along the chosen axis |
//! | DICOM Part 10 | `DICM` after the 128-byte preamble | one per frame |
//! | JPEG, PNG (anything else is tried as an image) | the content | one |

use crate::dicom::{DicomOptions, Identifiers, decode_dicom, sniff};
use crate::error::Result;
use crate::fsutil::{max_file_bytes, read_limited};
use crate::image_io::{DEFAULT_MAX_PIXELS, decode_rgb_checked};
use crate::volume::{SliceAxis, Volume, VolumeOptions, decode_volume, is_nifti_path};
use image::RgbImage;
use std::path::Path;

/// A file format artemis reads pictures from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Nifti,
    Dicom,
    /// JPEG or PNG (the image decoder tells which, and refuses anything else).
    Image,
}

impl Format {
    /// The format of a file from its name and first bytes (at least 132 of them when the file
    /// has that many): NIfTI by its name, DICOM by its preamble, anything else as an image.
    pub fn detect(name: &Path, head: &[u8]) -> Format {
        if is_nifti_path(name) {
            Format::Nifti
        } else if sniff(head) {
            Format::Dicom
        } else {
            Format::Image
        }
    }

    /// The format by content alone, when the bytes start like one artemis reads: JPEG and PNG
    /// by their signatures, DICOM by its preamble, NIfTI-1 by `n+1` at byte 344 or as gzip.
    pub fn sniff(bytes: &[u8]) -> Option<Format> {
        if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) || bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
            Some(Format::Image)
        } else if sniff(bytes) {
            Some(Format::Dicom)
        } else if bytes.get(344..348) == Some(b"n+1\0") || bytes.starts_with(&[0x1f, 0x8b]) {
            Some(Format::Nifti)
        } else {
            None
        }
    }
}

/// How to open an input (the defaults suit `predict`).
#[derive(Debug, Clone, Copy)]
pub struct InputOptions {
    /// Largest picture accepted, checked before decoding (a volume may hold 64 times as many
    /// voxels).
    pub max_pixels: u64,
    /// Keep the DICOM patient and study identifiers (withheld unless asked for).
    pub identifiers: bool,
    /// Which slices of a volume.
    pub slice_axis: SliceAxis,
    /// Half-open range of slice indices of a volume to keep.
    pub slice_range: Option<(usize, usize)>,
}

impl Default for InputOptions {
    fn default() -> Self {
        InputOptions {
            max_pixels: DEFAULT_MAX_PIXELS,
            identifiers: false,
            slice_axis: SliceAxis::Auto,
            slice_range: None,
        }
    }
}

impl InputOptions {
    fn volume(&self) -> VolumeOptions {
        VolumeOptions {
            axis: self.slice_axis,
            range: self.slice_range,
            max_voxels: self.max_pixels.saturating_mul(64),
        }
    }

    fn dicom(&self) -> DicomOptions {
        DicomOptions {
            max_pixels: self.max_pixels,
            identifiers: self.identifiers,
        }
    }

    /// The largest file worth reading for this format.
    fn max_bytes(&self, format: Format) -> u64 {
        match format {
            Format::Nifti => max_file_bytes(self.volume().max_voxels),
            Format::Dicom | Format::Image => max_file_bytes(self.max_pixels),
        }
    }
}

/// One picture of an input: where in the file it is, and the picture as decoded.
#[derive(Debug, Clone)]
pub struct Picture {
    /// DICOM frame index (0-based).
    pub frame: Option<u32>,
    /// NIfTI slice index along the slicing axis.
    pub slice: Option<usize>,
    pub image: RgbImage,
}

/// An input decoded into its pictures, with what else the file told.
#[derive(Debug, Clone)]
pub struct Opened {
    pub format: Format,
    pub pictures: Vec<Picture>,
    /// DICOM identifiers, only when [`InputOptions::identifiers`] asked for them.
    pub identifiers: Option<Identifiers>,
    /// A volume's geometry and window (its slices are in `pictures`).
    pub volume: Option<Volume>,
    /// What the decoder had to say about a picture it read anyway (a damaged JPEG decoded
    /// leniently).
    pub warning: Option<String>,
}

/// Reads and decodes a file (at most the bytes its format could need within the limits).
pub fn open(path: &Path, opts: &InputOptions) -> Result<Opened> {
    let format = match std::fs::File::open(path) {
        Ok(f) => Format::detect(path, &head(f)),
        Err(_) => Format::detect(path, &[]),
    };
    let bytes = read_limited(path, opts.max_bytes(format))?;
    decode(format, bytes, path, opts)
}

/// Decodes the bytes of an upload; `name` (the client's file name) names it in errors and
/// tells a NIfTI volume.
pub fn open_bytes(bytes: Vec<u8>, name: &Path, opts: &InputOptions) -> Result<Opened> {
    let format = Format::detect(name, &bytes);
    decode(format, bytes, name, opts)
}

/// The first 132 bytes of a file (fewer when it is shorter or unreadable).
fn head(f: std::fs::File) -> Vec<u8> {
    use std::io::Read;
    let mut head = Vec::with_capacity(132);
    let _ = f.take(132).read_to_end(&mut head);
    head
}

fn decode(format: Format, bytes: Vec<u8>, path: &Path, opts: &InputOptions) -> Result<Opened> {
    let mut out = Opened {
        format,
        pictures: Vec::new(),
        identifiers: None,
        volume: None,
        warning: None,
    };
    match format {
        Format::Nifti => {
            let mut v = decode_volume(&bytes, path, &opts.volume())?;
            out.pictures = std::mem::take(&mut v.slices)
                .into_iter()
                .map(|s| Picture {
                    frame: None,
                    slice: Some(s.index),
                    image: s.image,
                })
                .collect();
            out.volume = Some(v);
        }
        Format::Dicom => {
            let d = decode_dicom(bytes, path, &opts.dicom())?;
            out.pictures = (d.frames.into_iter().enumerate())
                .map(|(i, f)| Picture {
                    frame: Some(i as u32),
                    slice: None,
                    image: f.image,
                })
                .collect();
            out.identifiers = d.identifiers;
        }
        Format::Image => {
            let (image, warning) = decode_rgb_checked(&bytes, path, opts.max_pixels)?;
            out.pictures.push(Picture {
                frame: None,
                slice: None,
                image,
            });
            out.warning = warning;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png_bytes(w: u32, h: u32) -> Vec<u8> {
        let img = RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, 7]));
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png).unwrap();
        out.into_inner()
    }

    #[test]
    fn formats_are_told_by_name_and_content() {
        let mut dicom = vec![0u8; 128];
        dicom.extend_from_slice(b"DICM");
        assert_eq!(Format::detect(Path::new("a.dcm"), &dicom), Format::Dicom);
        // The content decides for DICOM, whatever the name says.
        assert_eq!(Format::detect(Path::new("a.png"), &dicom), Format::Dicom);
        assert_eq!(
            Format::detect(Path::new("brain.nii.gz"), &[0x1f, 0x8b]),
            Format::Nifti
        );
        assert_eq!(Format::detect(Path::new("BRAIN.NII"), &[]), Format::Nifti);
        assert_eq!(
            Format::detect(Path::new("x"), &png_bytes(2, 2)),
            Format::Image
        );
        assert_eq!(Format::sniff(&png_bytes(2, 2)), Some(Format::Image));
        assert_eq!(Format::sniff(&dicom), Some(Format::Dicom));
        assert_eq!(Format::sniff(&[0x1f, 0x8b, 8]), Some(Format::Nifti));
        assert_eq!(Format::sniff(b"GIF89a"), None);
    }

    #[test]
    fn a_file_and_its_bytes_open_to_the_same_picture() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("slice.png");
        let bytes = png_bytes(5, 3);
        std::fs::write(&path, &bytes).unwrap();
        let opts = InputOptions::default();
        let a = open(&path, &opts).unwrap();
        let b = open_bytes(bytes, Path::new("upload.png"), &opts).unwrap();
        assert_eq!(a.format, Format::Image);
        assert_eq!(a.pictures.len(), 1);
        assert_eq!(a.pictures[0].image, b.pictures[0].image);
        assert_eq!(a.pictures[0].image.dimensions(), (5, 3));
    }

    #[test]
    fn errors_name_the_input() {
        let opts = InputOptions::default();
        let mut fake = vec![0u8; 128];
        fake.extend_from_slice(b"DICMgarbage");
        let e = open_bytes(fake, Path::new("scan-17.dcm"), &opts).unwrap_err();
        assert!(e.to_string().contains("scan-17.dcm"), "{e}");
        let e = open_bytes(b"not a picture".to_vec(), Path::new("notes.txt"), &opts).unwrap_err();
        assert!(e.to_string().contains("notes.txt"), "{e}");
        let e = open_bytes(vec![0x1f, 0x8b, 1, 2], Path::new("v.nii.gz"), &opts).unwrap_err();
        assert!(e.to_string().contains("v.nii.gz"), "{e}");
    }
}
