//! Per-image steps before the resize that take away how a collection framed and exposed its
//! slices, so a network cannot tell the source by its look.
//!
//! Why: in the Kaggle set every Training glioma is a 512x512 figshare slice (dark, the head
//! small inside a wide black border), while most other classes and the Testing gliomas come
//! from web pages (tight crops, bright, high contrast). A network trained on the raw pictures
//! learns the look with the label (`artemis data check` reports the class-by-size table).
//!
//! [`Framing::Head`] does two things, in integer arithmetic so that the browser page
//! (`preprocess.js`) gets the same bytes:
//!
//! 1. **Crop to the head.** A pixel's value is the largest of its three channels. The
//!    threshold is a tenth of the 99.5th percentile of the values; a row (column) belongs to
//!    the head when more than 1/50 of its pixels exceed it. The picture is cut to the first
//!    and last such row and column, or left whole when that box is under 16 pixels a side.
//! 2. **Stretch the intensities.** Over the cropped picture's pixels above the threshold, the
//!    1st and 99th percentiles `lo` and `hi` map to 0 and 255 (every channel, clamped:
//!    `((x - lo) * 255 + (hi - lo) / 2) / (hi - lo)`); left as is when `hi <= lo`.
//!
//! Percentile `q` of `n` values is the `k`-th smallest, `k = max(1, ceil(q * n))`.

use image::RgbImage;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// What happens to a decoded picture before it is resized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Framing {
    /// The picture as decoded (what the reference did).
    #[default]
    AsIs,
    /// Cropped to the head and its intensities stretched (see the module).
    Head,
}

impl std::str::FromStr for Framing {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "as-is" => Ok(Framing::AsIs),
            "head" => Ok(Framing::Head),
            o => Err(format!("unknown framing '{o}' (expected as-is or head)")),
        }
    }
}

impl Framing {
    /// The picture after this framing (borrowed when nothing changes).
    pub fn apply<'a>(self, img: &'a RgbImage) -> Cow<'a, RgbImage> {
        match self {
            Framing::AsIs => Cow::Borrowed(img),
            Framing::Head => Cow::Owned(head(img)),
        }
    }

    /// Where the framed picture lies in `img`: `(x, y, width, height)` in its pixels (the
    /// whole picture when nothing is cropped). Heat maps of the framed picture are placed
    /// back over the decoded one with it.
    pub fn region(self, img: &RgbImage) -> (u32, u32, u32, u32) {
        let (x0, y0, x1, y1) = match self {
            Framing::AsIs => (0, 0, img.width() as usize, img.height() as usize),
            Framing::Head => find_head(img).bounds,
        };
        (x0 as u32, y0 as u32, (x1 - x0) as u32, (y1 - y0) as u32)
    }

    /// The framing in words (model cards, exported metadata); empty for [`Framing::AsIs`].
    pub fn describe(self) -> &'static str {
        match self {
            Framing::AsIs => "",
            Framing::Head => {
                "cropped to the head (rows and columns with more than 2% of pixels above a \
                 tenth of the 99.5th percentile) and stretched (its 1st-99th percentile to \
                 0-255)"
            }
        }
    }
}

/// Smallest side of a crop box; a smaller box leaves the picture whole.
const MIN_SIDE: usize = 16;

/// The `k`-th smallest value (`k = max(1, ceil(num / den * n))`) of a 256-bin histogram.
fn percentile(hist: &[u64; 256], num: u64, den: u64) -> u8 {
    let n: u64 = hist.iter().sum();
    let k = (n * num).div_ceil(den).max(1);
    let mut seen = 0;
    for (v, &c) in hist.iter().enumerate() {
        seen += c;
        if seen >= k {
            return v as u8;
        }
    }
    255
}

/// [`Framing::Head`] of one picture.
pub fn head(img: &RgbImage) -> RgbImage {
    let found = find_head(img);
    let (w, t) = (img.width() as usize, found.threshold);
    let (x0, y0, x1, y1) = found.bounds;
    let mut out = image::imageops::crop_imm(
        img,
        x0 as u32,
        y0 as u32,
        (x1 - x0) as u32,
        (y1 - y0) as u32,
    )
    .to_image();
    // The crop's values above the threshold, read from the values already computed.
    let mut fg = [0u64; 256];
    for row in found.value[y0 * w..y1 * w].chunks_exact(w) {
        (row[x0..x1].iter().filter(|&&v| v > t)).for_each(|&v| fg[usize::from(v)] += 1);
    }
    stretch(&mut out, &fg);
    out
}

/// Where [`head`] crops a picture, and what it found on the way.
struct Found {
    /// Each pixel's largest channel, row-major.
    value: Vec<u8>,
    /// A tenth of the 99.5th percentile of `value`.
    threshold: u8,
    /// `(x0, y0, x1, y1)`, end-exclusive; the whole picture when no head box was found.
    bounds: (usize, usize, usize, usize),
}

fn find_head(img: &RgbImage) -> Found {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let value: Vec<u8> = img
        .pixels()
        .map(|p| p.0[0].max(p.0[1]).max(p.0[2]))
        .collect();
    let mut hist = [0u64; 256];
    value.iter().for_each(|&v| hist[usize::from(v)] += 1);
    let t = percentile(&hist, 995, 1000) / 10;
    let (mut rows, mut cols) = (vec![0usize; h], vec![0usize; w]);
    for (i, _) in value.iter().enumerate().filter(|(_, v)| **v > t) {
        rows[i / w] += 1;
        cols[i % w] += 1;
    }
    let span = |counts: &[usize], len: usize| {
        let inside = |c: &usize| *c * 50 > len;
        let first = counts.iter().position(inside)?;
        let last = counts.iter().rposition(inside)?;
        (last + 1 - first >= MIN_SIDE).then_some((first, last + 1))
    };
    let ((y0, y1), (x0, x1)) = match (span(&rows, w), span(&cols, h)) {
        (Some(r), Some(c)) => (r, c),
        _ => ((0, h), (0, w)),
    };
    Found {
        value,
        threshold: t,
        bounds: (x0, y0, x1, y1),
    }
}

/// Maps the 1st..99th percentile of the histogram `hist` to 0..255, in place.
fn stretch(img: &mut RgbImage, hist: &[u64; 256]) {
    if hist.iter().all(|&c| c == 0) {
        return;
    }
    let (lo, hi) = (
        u32::from(percentile(hist, 1, 100)),
        u32::from(percentile(hist, 99, 100)),
    );
    if hi <= lo {
        return;
    }
    let d = hi - lo;
    let map: [u8; 256] = std::array::from_fn(|x| {
        let x = (x as u32).clamp(lo, hi);
        (((x - lo) * 255 + d / 2) / d) as u8
    });
    img.pixels_mut()
        .for_each(|p| p.0.iter_mut().for_each(|c| *c = map[usize::from(*c)]));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A dark 100x80 picture with a grey 40x30 "head" at (30, 20) holding a bright spot.
    fn framed() -> RgbImage {
        RgbImage::from_fn(100, 80, |x, y| {
            let inside = (30..70).contains(&x) && (20..50).contains(&y);
            let v = match (inside, x == 50 && y == 35) {
                (_, true) => 200,
                (true, false) => 60 + (x % 7) as u8,
                (false, false) => 3,
            };
            image::Rgb([v, v, v])
        })
    }

    #[test]
    fn crops_to_the_head_and_stretches_it() {
        let out = head(&framed());
        assert_eq!(out.dimensions(), (40, 30));
        let vals: Vec<u8> = out.pixels().map(|p| p.0[0]).collect();
        // The 1st percentile of the head (60) becomes 0, the 99th (66) 255; the spot clamps.
        assert_eq!(*vals.iter().min().unwrap(), 0);
        assert_eq!(*vals.iter().max().unwrap(), 255);
        assert_eq!(out.get_pixel(20, 15).0, [255, 255, 255]);
        assert_eq!(out.get_pixel(0, 0).0[0], 85); // x = 30: 60 + 2 -> (2 * 255 + 3) / 6
    }

    #[test]
    fn the_region_is_where_the_crop_was_taken() {
        let img = framed();
        assert_eq!(Framing::Head.region(&img), (30, 20, 40, 30));
        assert_eq!(Framing::AsIs.region(&img), (0, 0, 100, 80));
        let flat = RgbImage::from_pixel(50, 40, image::Rgb([90, 90, 90]));
        assert_eq!(Framing::Head.region(&flat), (0, 0, 50, 40));
    }

    #[test]
    fn a_flat_or_tiny_picture_is_left_alone() {
        let flat = RgbImage::from_pixel(50, 40, image::Rgb([90, 90, 90]));
        assert_eq!(head(&flat), flat);
        let mut dot = RgbImage::new(50, 40);
        dot.put_pixel(10, 10, image::Rgb([255, 0, 0]));
        // One bright pixel: no row holds 2% of its pixels above the threshold; no crop, and
        // the one value above it leaves lo == hi.
        assert_eq!(head(&dot), dot);
    }

    #[test]
    fn as_is_borrows_and_the_names_parse() {
        let img = framed();
        assert!(matches!(Framing::AsIs.apply(&img), Cow::Borrowed(_)));
        assert_eq!("head".parse::<Framing>(), Ok(Framing::Head));
        assert!(
            "crop"
                .parse::<Framing>()
                .unwrap_err()
                .contains("as-is or head")
        );
    }
}
