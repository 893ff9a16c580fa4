//! NIfTI-1 volumes (`.nii`, `.nii.gz`) with the `nifti` crate: a volume becomes one 8-bit
//! picture per slice along a chosen axis, oriented the way radiologists display it.
//!
//! - **Slicing axis**: a voxel axis (`i`, `j`, `k`), or an anatomical plane (`transverse`,
//!   `coronal`, `sagittal`) found from the header's orientation: the `sform` when
//!   `sform_code > 0`, else the `qform` quaternion when `qform_code > 0`, else the voxel axes
//!   taken as RAS. `auto` is `transverse`.
//! - **Orientation**: NIfTI world space is RAS+ (x to the patient's right, y anterior, z
//!   superior). Each slice is laid out with the patient's right on the image's left and
//!   anterior (transverse) or superior (coronal, sagittal) at the top; sagittal slices have
//!   anterior on the left.
//! - **Intensity**: scaled by the header's `scl_slope`/`scl_inter`, then one robust window
//!   for the whole volume, 0.5th to 99.5th percentile of its voxels, to 0-255.
//! - Header dimensions are checked before the data is read: at least 2-D, at most
//!   [`MAX_SIDE`] a side and the caller's voxel limit, so a corrupt header cannot ask for an
//!   impossible allocation.

use crate::error::{DataError, Result};
use crate::labels::Plane;
use image::{Rgb, RgbImage};
use ndarray::{ArrayD, IxDyn};
use nifti::{InMemNiftiObject, IntoNdArray, NiftiHeader, NiftiObject};
use serde::Serialize;
use std::borrow::Cow;
use std::io::Read;
use std::path::Path;

/// Longest side accepted in a volume header.
pub const MAX_SIDE: usize = 8192;

/// Which slices to cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SliceAxis {
    /// Transverse, from the header's orientation.
    #[default]
    Auto,
    /// Perpendicular to the given voxel axis (0, 1, 2 = i, j, k).
    Voxel(usize),
    /// The given anatomical plane, from the header's orientation.
    Plane(Plane),
}

impl std::str::FromStr for SliceAxis {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(SliceAxis::Auto),
            "i" | "0" => Ok(SliceAxis::Voxel(0)),
            "j" | "1" => Ok(SliceAxis::Voxel(1)),
            "k" | "2" => Ok(SliceAxis::Voxel(2)),
            p => Plane::parse(p).map(SliceAxis::Plane).ok_or_else(|| {
                format!(
                    "unknown slice axis '{p}' (expected auto, transverse, coronal, sagittal, i, j or k)"
                )
            }),
        }
    }
}

/// Options of [`read_volume`] and [`decode_volume`].
#[derive(Debug, Clone, Copy)]
pub struct VolumeOptions {
    pub axis: SliceAxis,
    /// Half-open range of slice indices to keep (clamped to the volume).
    pub range: Option<(usize, usize)>,
    /// Refuse volumes with more voxels than this.
    pub max_voxels: u64,
}

/// One slice picture.
#[derive(Debug, Clone)]
pub struct VolumeSlice {
    pub index: usize,
    pub image: RgbImage,
}

/// A decoded volume, sliced.
#[derive(Debug, Clone, Serialize)]
pub struct Volume {
    /// Voxel grid size (i, j, k).
    pub dims: [usize; 3],
    /// Voxel axis the slices are perpendicular to.
    pub axis: usize,
    /// The anatomical plane of the slices, when the orientation is known well enough.
    pub plane: Option<Plane>,
    /// Which orientation source was used: `sform`, `qform` or `none`.
    pub orientation: String,
    /// Intensity window (after scaling): 0.5th and 99.5th percentiles.
    pub window: (f32, f32),
    #[serde(skip)]
    pub slices: Vec<VolumeSlice>,
}

fn bad(path: &Path, reason: impl std::fmt::Display) -> DataError {
    DataError::Decode {
        path: path.into(),
        reason: format!("NIfTI: {reason}"),
    }
}

/// Whether a path names a NIfTI file by its extension.
pub fn is_nifti_path(path: &Path) -> bool {
    let n = path
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    n.ends_with(".nii") || n.ends_with(".nii.gz")
}

/// The 3x3 direction part of the voxel-to-world transform (columns: voxel axes) and its
/// source.
pub fn orientation(h: &NiftiHeader) -> ([[f64; 3]; 3], &'static str) {
    if h.sform_code > 0 {
        let r = [h.srow_x, h.srow_y, h.srow_z];
        let m = [0, 1, 2].map(|row| [0, 1, 2].map(|col| f64::from(r[row][col])));
        return (m, "sform");
    }
    if h.qform_code > 0 {
        let (b, c, d) = (
            f64::from(h.quatern_b),
            f64::from(h.quatern_c),
            f64::from(h.quatern_d),
        );
        let a = (1.0 - (b * b + c * c + d * d)).max(0.0).sqrt();
        let qfac = if h.pixdim[0] < 0.0 { -1.0 } else { 1.0 };
        let r = [
            [
                a * a + b * b - c * c - d * d,
                2.0 * (b * c - a * d),
                2.0 * (b * d + a * c),
            ],
            [
                2.0 * (b * c + a * d),
                a * a + c * c - b * b - d * d,
                2.0 * (c * d - a * b),
            ],
            [
                2.0 * (b * d - a * c),
                2.0 * (c * d + a * b),
                a * a + d * d - c * c - b * b,
            ],
        ];
        let m = [0, 1, 2]
            .map(|row| [0, 1, 2].map(|col| r[row][col] * if col == 2 { qfac } else { 1.0 }));
        return (m, "qform");
    }
    ([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], "none")
}

/// For each voxel axis: its dominant world axis (0 = x R/L, 1 = y A/P, 2 = z S/I) and whether
/// the voxel index grows towards the positive world direction.
pub fn axis_map(m: &[[f64; 3]; 3]) -> [(usize, bool); 3] {
    [0, 1, 2].map(|v| {
        let w = (0..3)
            .max_by(|&a, &b| m[a][v].abs().total_cmp(&m[b][v].abs()))
            .unwrap_or(v);
        (w, m[w][v] >= 0.0)
    })
}

fn plane_of_world_axis(w: usize) -> Plane {
    match w {
        0 => Plane::Sagittal,
        1 => Plane::Coronal,
        _ => Plane::Transverse,
    }
}

/// Reads and slices a NIfTI volume.
pub fn read_volume(path: &Path, opts: &VolumeOptions) -> Result<Volume> {
    let bytes = crate::fsutil::read_limited(path, crate::fsutil::max_file_bytes(opts.max_voxels))?;
    decode_volume(&bytes, path, opts)
}

/// [`read_volume`] of a file's bytes (gzip-compressed or not); `path` names it in errors.
pub fn decode_volume(bytes: &[u8], path: &Path, opts: &VolumeOptions) -> Result<Volume> {
    let raw = gunzip_limited(bytes, path, crate::fsutil::max_file_bytes(opts.max_voxels))?;
    let grid = checked_grid(path, &raw, opts.max_voxels)?;
    let (data, source, map) = read_grid(path, &raw, grid)?;
    let axis = slice_axis(path, opts.axis, &map)?;
    let mut world_axes: Vec<usize> = map.iter().map(|&(w, _)| w).collect();
    world_axes.sort_unstable();
    world_axes.dedup();
    let plane = (world_axes.len() == 3).then(|| plane_of_world_axis(map[axis].0));
    let (lo, hi) = robust_window(path, &data)?;
    let span = (hi - lo).max(1e-9);
    let (hor, ver) = in_plane_axes(axis, plane, &map);
    let (w, h) = (grid[hor], grid[ver]);
    let (start, end) = opts.range.map_or((0, grid[axis]), |(a, b)| {
        (a.min(grid[axis]), b.min(grid[axis]))
    });
    let mut slices = Vec::with_capacity(end.saturating_sub(start));
    for s in start..end {
        let img = RgbImage::from_fn(w as u32, h as u32, |x, y| {
            let (x, y) = (x as usize, y as usize);
            let hi_ = if map[hor].1 { w - 1 - x } else { x };
            let vi = if map[ver].1 { h - 1 - y } else { y };
            let mut idx = [0usize; 3];
            idx[axis] = s;
            idx[hor] = hi_;
            idx[ver] = vi;
            let v = data[IxDyn(&idx)];
            let g = if v.is_finite() {
                (((v - lo) / span) * 255.0).round().clamp(0.0, 255.0) as u8
            } else {
                0
            };
            Rgb([g; 3])
        });
        slices.push(VolumeSlice {
            index: s,
            image: img,
        });
    }
    Ok(Volume {
        dims: grid,
        axis,
        plane,
        orientation: source.into(),
        window: (lo, hi),
        slices,
    })
}

/// The bytes of a `.nii`, decompressed when they are gzip (`.nii.gz`): at most `limit` bytes
/// of output, so a small compressed file cannot expand to fill memory.
fn gunzip_limited<'a>(bytes: &'a [u8], path: &Path, limit: u64) -> Result<Cow<'a, [u8]>> {
    if !bytes.starts_with(&[0x1f, 0x8b]) {
        return Ok(Cow::Borrowed(bytes));
    }
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .take(limit.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| bad(path, format!("gzip: {e}")))?;
    if out.len() as u64 > limit {
        return Err(bad(
            path,
            format!("decompresses to more than {limit} bytes, over the limit for the voxel limit"),
        ));
    }
    Ok(Cow::Owned(out))
}

/// The voxel grid `[i, j, k]` the header announces, after every check that must come
/// before the data is read: 2 to 7 dimensions of one time point, sides within
/// [`MAX_SIDE`], `bitpix` agreeing with the datatype, at most `max_voxels`.
fn checked_grid(path: &Path, raw: &[u8], max_voxels: u64) -> Result<[usize; 3]> {
    let header = NiftiHeader::from_reader(std::io::Cursor::new(raw)).map_err(|e| bad(path, e))?;
    let nd = header.dim[0] as usize;
    if !(2..=7).contains(&nd) {
        return Err(bad(
            path,
            format!("dim[0] = {nd}, expected 2 to 7 dimensions"),
        ));
    }
    let dims: Vec<usize> = (1..=nd).map(|i| header.dim[i] as usize).collect();
    if dims.iter().any(|&d| d == 0 || d > MAX_SIDE) {
        return Err(bad(path, format!("impossible dimensions {dims:?}")));
    }
    if dims.iter().skip(3).any(|&d| d > 1) {
        return Err(bad(
            path,
            format!("{nd}-D volume {dims:?}: only 2-D and 3-D volumes (one time point) are read"),
        ));
    }
    // The reader sizes the data by `bitpix` and converts it by `datatype`: when they disagree
    // the conversion panics inside the crate (found by fuzzing), so refuse such headers here.
    let datatype = header.data_type().map_err(|e| bad(path, e))?;
    if i64::from(header.bitpix) != 8 * datatype.size_of() as i64 {
        return Err(bad(
            path,
            format!(
                "inconsistent header: bitpix {} but datatype {datatype:?} has {} bits",
                header.bitpix,
                8 * datatype.size_of()
            ),
        ));
    }
    let grid = [dims[0], dims[1], dims.get(2).copied().unwrap_or(1)];
    let voxels = grid.iter().map(|&d| d as u64).product::<u64>();
    if voxels > max_voxels {
        return Err(DataError::TooLarge {
            path: path.into(),
            width: grid[0] as u32,
            height: grid[1] as u32,
            pixels: voxels,
            limit: max_voxels,
        });
    }
    Ok(grid)
}

/// The voxels as a 3-D array in the header's axis order, where the orientation came from,
/// and each voxel axis's world axis and direction ([`axis_map`]).
type Grid = (ArrayD<f32>, &'static str, [(usize, bool); 3]);

/// Reads the voxels of a checked header ([`Grid`]).
fn read_grid(path: &Path, raw: &[u8], grid: [usize; 3]) -> Result<Grid> {
    // The `nifti` crate is others' code meeting the file's bytes: a panic in it (one was found
    // by fuzzing, now refused in `checked_grid`) is an error for this file.
    let read = crate::guard::catch_panic(|| -> std::result::Result<_, nifti::NiftiError> {
        let obj = InMemNiftiObject::from_reader(std::io::Cursor::new(raw))?;
        let (m, source) = orientation(obj.header());
        Ok((m, source, obj.into_volume().into_ndarray::<f32>()?))
    });
    let read = read.map_err(|what| bad(path, format!("the reader failed on it ({what})")))?;
    let (m, source, mut data): (_, _, ArrayD<f32>) = read.map_err(|e| bad(path, e))?;
    // The crate gives the array in the header's dimension order (any memory layout): drop
    // trailing singleton axes, add a third for a 2-D image.
    while data.ndim() > 3 && data.shape()[data.ndim() - 1] == 1 {
        let last = data.ndim() - 1;
        data = data.index_axis_move(ndarray::Axis(last), 0);
    }
    if data.ndim() == 2 {
        data = data.insert_axis(ndarray::Axis(2));
    }
    if data.shape() != grid {
        return Err(bad(
            path,
            format!(
                "volume data {:?} does not match its header dimensions {grid:?}",
                data.shape()
            ),
        ));
    }
    Ok((data, source, axis_map(&m)))
}

/// The voxel axis the slices are perpendicular to.
fn slice_axis(path: &Path, want: SliceAxis, map: &[(usize, bool); 3]) -> Result<usize> {
    match want {
        SliceAxis::Voxel(v) if v < 3 => Ok(v),
        SliceAxis::Voxel(v) => Err(bad(path, format!("no voxel axis {v}"))),
        SliceAxis::Auto => Ok(map.iter().position(|&(w, _)| w == 2).unwrap_or(2)),
        SliceAxis::Plane(p) => {
            let want = match p {
                Plane::Sagittal => 0,
                Plane::Coronal => 1,
                Plane::Transverse => 2,
            };
            map.iter().position(|&(w, _)| w == want).ok_or_else(|| {
                bad(
                    path,
                    format!("no voxel axis runs along the {} direction", p.name()),
                )
            })
        }
    }
}

/// The 0.5 and 99.5 percentiles of (a sample of at most about 2 million of) the finite voxels.
fn robust_window(path: &Path, data: &ArrayD<f32>) -> Result<(f32, f32)> {
    let step = (data.len() / 2_000_000).max(1);
    let mut sample: Vec<f32> = data
        .iter()
        .step_by(step)
        .copied()
        .filter(|v| v.is_finite())
        .collect();
    if sample.is_empty() {
        return Err(bad(path, "no finite voxel values"));
    }
    sample.sort_by(f32::total_cmp);
    let q = |p: f64| sample[((sample.len() - 1) as f64 * p).round() as usize];
    Ok((q(0.005), q(0.995)))
}

/// The slice's horizontal and vertical voxel axes: horizontal is world x (transverse,
/// coronal) or y (sagittal); both run from the largest world coordinate to the smallest
/// (right-to-left, anterior/superior at the top).
fn in_plane_axes(axis: usize, plane: Option<Plane>, map: &[(usize, bool); 3]) -> (usize, usize) {
    let others: Vec<usize> = (0..3).filter(|&a| a != axis).collect();
    let rank = |a: usize| match (plane, map[a].0) {
        (Some(Plane::Sagittal), 1) => 0,
        (Some(Plane::Sagittal), _) => 1,
        (_, 0) => 0,
        _ => 1,
    };
    if rank(others[0]) <= rank(others[1]) {
        (others[0], others[1])
    } else {
        (others[1], others[0])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_parsing_and_orientation_maps() {
        assert_eq!("auto".parse::<SliceAxis>().unwrap(), SliceAxis::Auto);
        assert_eq!("k".parse::<SliceAxis>().unwrap(), SliceAxis::Voxel(2));
        assert_eq!(
            "coronal".parse::<SliceAxis>().unwrap(),
            SliceAxis::Plane(Plane::Coronal)
        );
        assert!("diagonal".parse::<SliceAxis>().is_err());
        // Voxel axes permuted: i -> -z, j -> x, k -> y.
        let m = [[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [-1.0, 0.0, 0.0]];
        assert_eq!(axis_map(&m), [(2, false), (0, true), (1, true)]);
        assert!(is_nifti_path(Path::new("a/B.NII.GZ")) && !is_nifti_path(Path::new("x.png")));
    }

    /// Fuzzing regression (fuzz/ target `nifti`): a header whose `bitpix` disagrees with its
    /// datatype made the `nifti` crate panic while converting the data.
    #[test]
    fn bitpix_that_disagrees_with_the_datatype_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("v.nii");
        let data = ndarray::Array3::<f32>::from_shape_fn((6, 5, 4), |(i, j, k)| (i + j + k) as f32);
        nifti::writer::WriterOptions::new(&p)
            .write_nifti(&data)
            .unwrap();
        let mut bytes = std::fs::read(&p).unwrap();
        // Header offsets: datatype at 70 (16 = FLOAT32), bitpix at 72.
        assert_eq!(i16::from_le_bytes([bytes[70], bytes[71]]), 16);
        bytes[72..74].copy_from_slice(&8i16.to_le_bytes());
        let bad = dir.path().join("bad.nii");
        std::fs::write(&bad, &bytes).unwrap();
        let opts = VolumeOptions {
            axis: SliceAxis::Auto,
            range: None,
            max_voxels: 1 << 20,
        };
        assert!(read_volume(&p, &opts).is_ok());
        let e = read_volume(&bad, &opts).unwrap_err().to_string();
        assert!(e.contains("bad.nii") && e.contains("bitpix 8"), "{e}");
    }
}
