//! Preprocessing (resize, value scaling) and seeded training augmentation, as explicit,
//! serialisable steps saved with each run so that eval and predict apply the same ones.

use crate::error::{DataError, Result};
use crate::framing::Framing;
use crate::image_io::{ResizeMode, resize_rgb};
use image::RgbImage;
use rand::Rng;
use serde::{Deserialize, Serialize};

/// How 8-bit pixel values become network inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Scaling {
    /// Raw 0..255 values, as the reference fed its networks.
    #[default]
    Raw255,
    /// 0..1.
    Unit,
    /// `(x/255 - mean) / std` with the ImageNet mean and std (torchvision's MobileNetV2).
    Imagenet,
    /// `x/127.5 - 1`, i.e. -1..1 (InceptionV3: what torchvision's `transform_input` makes of
    /// ImageNet-normalised input, the scaling its ImageNet weights were trained on).
    Inception,
    /// `(x - 127) / 128` (EfficientNet-Lite's TensorFlow preprocessing).
    Lite,
}

impl Scaling {
    /// The network input for 8-bit value `v` in channel `c` (0 red, 1 green, 2 blue).
    pub fn value(self, c: usize, v: u8) -> f32 {
        let v = f32::from(v);
        match self {
            Scaling::Raw255 => v,
            Scaling::Unit => v / 255.0,
            Scaling::Imagenet => (v / 255.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c],
            Scaling::Inception => v / 127.5 - 1.0,
            Scaling::Lite => (v - 127.0) / 128.0,
        }
    }

    /// [`Self::value`] for every channel and 8-bit value.
    pub fn table(self) -> [[f32; 256]; 3] {
        std::array::from_fn(|c| std::array::from_fn(|v| self.value(c, v as u8)))
    }
}

impl std::str::FromStr for Scaling {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "raw255" => Ok(Scaling::Raw255),
            "unit" => Ok(Scaling::Unit),
            "imagenet" => Ok(Scaling::Imagenet),
            "inception" => Ok(Scaling::Inception),
            "lite" => Ok(Scaling::Lite),
            o => Err(format!(
                "unknown scaling '{o}' (expected raw255, unit, imagenet, inception or lite)"
            )),
        }
    }
}

/// ImageNet channel means (RGB).
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet channel standard deviations (RGB).
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Deterministic preprocessing applied to every image (train, eval, predict).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Preprocess {
    pub width: u32,
    pub height: u32,
    pub resize: ResizeMode,
    pub scaling: Scaling,
    /// What happens before the resize (runs made before it existed: as decoded).
    #[serde(default)]
    pub framing: Framing,
}

impl Preprocess {
    pub fn validate(&self) -> Result<()> {
        if !(8..=1024).contains(&self.width) || !(8..=1024).contains(&self.height) {
            return Err(DataError::Config(format!(
                "input size {}x{} must lie between 8 and 1024",
                self.width, self.height
            )));
        }
        Ok(())
    }

    /// Frames an image (see [`Framing`]) and resizes it to the input size.
    pub fn resize(&self, img: &RgbImage) -> RgbImage {
        self.fit(&self.framed(img))
    }

    /// The picture the network sees before the resize: what heat maps are drawn over.
    pub fn framed<'a>(&self, img: &'a RgbImage) -> std::borrow::Cow<'a, RgbImage> {
        self.framing.apply(img)
    }

    /// Resizes an already [framed](Self::framed) picture to the input size.
    pub fn fit(&self, framed: &RgbImage) -> RgbImage {
        resize_rgb(framed, self.width, self.height, self.resize)
    }

    /// The preprocessing in words, for people reading an exported model's metadata.
    pub fn describe(&self) -> String {
        let resize = match self.resize {
            ResizeMode::Squash => "stretched to",
            ResizeMode::KeepAspect => "scaled to fit (aspect kept, black borders) in",
        };
        let values = match self.scaling {
            Scaling::Raw255 => "raw 0..255 values".to_string(),
            Scaling::Unit => "x / 255".to_string(),
            Scaling::Imagenet => format!(
                "(x / 255 - mean) / std, ImageNet mean {IMAGENET_MEAN:?} and std {IMAGENET_STD:?}"
            ),
            Scaling::Inception => "x / 127.5 - 1".to_string(),
            Scaling::Lite => "(x - 127) / 128".to_string(),
        };
        format!(
            "decoded to 8-bit RGB, {}{resize} {}x{} (bilinear, antialiased), {values} per \
             channel, float32 NCHW [batch, 3, {}, {}] in RGB order",
            match self.framing.describe() {
                "" => String::new(),
                text => format!("{text}, "),
            },
            self.width,
            self.height,
            self.height,
            self.width
        )
    }

    /// Number of floats of one image tensor (`3 * height * width`).
    pub fn tensor_len(&self) -> usize {
        3 * self.width as usize * self.height as usize
    }

    /// Writes an image already at the input size into `out` as CHW floats.
    ///
    /// # Shapes
    /// `img`: `[height, width, 3]` u8 (HWC) -> `out`: `[3, height, width]` f32 (CHW).
    pub fn write_chw(&self, img: &RgbImage, out: &mut [f32]) {
        let plane = self.width as usize * self.height as usize;
        debug_assert_eq!(out.len(), 3 * plane);
        // The 3 x 256 possible values, computed once with the formula (a table lookup per
        // value instead of a division: this runs for every pixel of every prediction).
        let lut = self.scaling.table();
        for (c, table) in lut.iter().enumerate() {
            let dst = &mut out[c * plane..(c + 1) * plane];
            for (o, p) in dst.iter_mut().zip(img.as_raw().chunks_exact(3)) {
                *o = table[usize::from(p[c])];
            }
        }
    }
}

/// Random training augmentation; every parameter 0 (or false) disables its step.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct Augment {
    /// Mirror left-right with probability 1/2.
    pub hflip: bool,
    /// Rotate by a uniform angle in `[-deg, deg]`.
    pub rotate_deg: f32,
    /// Zoom by a uniform factor in `[1 - s, 1 + s]`.
    pub scale: f32,
    /// Add a uniform offset in `[-b, b] * 255`.
    pub brightness: f32,
    /// Multiply contrast around mid-grey by a uniform factor in `[1 - c, 1 + c]`.
    pub contrast: f32,
    /// Shift by a uniform fraction of the side in `[-t, t]`, each axis (0 in older runs).
    #[serde(default)]
    pub shift: f32,
    /// Gamma `v = 255 (v / 255)^g` with `ln g` uniform in `[-ln(1 + a), ln(1 + a)]`.
    #[serde(default)]
    pub gamma: f32,
    /// Add per-pixel uniform noise in `[-n, n] * 255`, `n` itself uniform in `[0, noise]`.
    #[serde(default)]
    pub noise: f32,
    /// On half the pictures, a Gaussian blur of standard deviation uniform in `[0, blur]`
    /// pixels (at the input size; under 0.25 none), before the other steps: other scanners'
    /// and web copies' softer pictures.
    #[serde(default)]
    pub blur: f32,
}

impl Augment {
    /// The augmentation used when one is asked for without details.
    pub fn standard() -> Self {
        Augment {
            hflip: true,
            rotate_deg: 10.0,
            scale: 0.1,
            brightness: 0.1,
            contrast: 0.1,
            ..Augment::default()
        }
    }

    /// Stronger, for other sources' scans: more rotation, zoom and exposure change, plus shift,
    /// gamma and noise.
    pub fn strong() -> Self {
        Augment {
            hflip: true,
            rotate_deg: 15.0,
            scale: 0.2,
            brightness: 0.2,
            contrast: 0.3,
            shift: 0.1,
            gamma: 0.5,
            noise: 0.03,
            blur: 0.0,
        }
    }

    pub fn is_identity(&self) -> bool {
        !self.hflip
            && self.rotate_deg == 0.0
            && self.scale == 0.0
            && self.brightness == 0.0
            && self.contrast == 0.0
            && self.shift == 0.0
            && self.gamma == 0.0
            && self.noise == 0.0
            && self.blur == 0.0
    }

    pub fn validate(&self) -> Result<()> {
        let bad = !(0.0..=45.0).contains(&self.rotate_deg)
            || !(0.0..0.9).contains(&self.scale)
            || !(0.0..=1.0).contains(&self.brightness)
            || !(0.0..=1.0).contains(&self.contrast)
            || !(0.0..=0.5).contains(&self.shift)
            || !(0.0..=2.0).contains(&self.gamma)
            || !(0.0..=0.5).contains(&self.noise)
            || !(0.0..=5.0).contains(&self.blur);
        if bad {
            return Err(DataError::Config(format!(
                "augmentation out of range: {self:?} (rotate 0-45 deg, scale 0-0.9, brightness \
                 and contrast 0-1, shift 0-0.5, gamma 0-2, noise 0-0.5, blur 0-5 px)"
            )));
        }
        Ok(())
    }

    /// Applies a random draw of the augmentation to an image (same size out).
    pub fn apply(&self, img: &RgbImage, rng: &mut impl Rng) -> RgbImage {
        if self.is_identity() {
            return img.clone();
        }
        let flip = self.hflip && rng.random_bool(0.5);
        let angle = if self.rotate_deg > 0.0 {
            rng.random_range(-self.rotate_deg..=self.rotate_deg)
                .to_radians()
        } else {
            0.0
        };
        let zoom = if self.scale > 0.0 {
            rng.random_range(1.0 - self.scale..=1.0 + self.scale)
        } else {
            1.0
        };
        let bright = if self.brightness > 0.0 {
            rng.random_range(-self.brightness..=self.brightness) * 255.0
        } else {
            0.0
        };
        let contrast = if self.contrast > 0.0 {
            rng.random_range(1.0 - self.contrast..=1.0 + self.contrast)
        } else {
            1.0
        };
        let (w, h) = img.dimensions();
        let mut uniform = |a: f32| {
            if a > 0.0 {
                rng.random_range(-a..=a)
            } else {
                0.0
            }
        };
        let (tx, ty) = (
            uniform(self.shift) * w as f32,
            uniform(self.shift) * h as f32,
        );
        let gamma = uniform((1.0 + self.gamma).ln()).exp();
        let noise = uniform(self.noise).abs() * 255.0;
        // Drawn last, and only when asked for: runs without blur draw what they always drew.
        let sigma = if self.blur > 0.0 && rng.random_bool(0.5) {
            rng.random_range(0.0..=self.blur)
        } else {
            0.0
        };
        // Under a quarter pixel a blur changes nothing visible (and `image` reads 0 as 0.8).
        let blurred = (sigma >= 0.25).then(|| image::imageops::blur(img, sigma));
        let img = blurred.as_ref().unwrap_or(img);
        let (cx, cy) = ((w as f32 - 1.0) / 2.0, (h as f32 - 1.0) / 2.0);
        let (sin, cos) = angle.sin_cos();
        let src = img.as_raw();
        let mut out = RgbImage::new(w, h);
        let sample = |x: i64, y: i64, c: usize| -> f32 {
            if x < 0 || y < 0 || x >= i64::from(w) || y >= i64::from(h) {
                0.0
            } else {
                f32::from(src[(y as usize * w as usize + x as usize) * 3 + c])
            }
        };
        for (x, y, px) in out.enumerate_pixels_mut() {
            // Inverse map: output pixel -> source coordinate.
            let mut dx = x as f32 - cx;
            let dy = y as f32 - cy;
            if flip {
                dx = -dx;
            }
            let sx = (cos * dx + sin * dy) / zoom + cx - tx;
            let sy = (-sin * dx + cos * dy) / zoom + cy - ty;
            let n = if noise > 0.0 {
                rng.random_range(-noise..=noise)
            } else {
                0.0
            };
            let (x0, y0) = (sx.floor(), sy.floor());
            let (fx, fy) = (sx - x0, sy - y0);
            let (x0, y0) = (x0 as i64, y0 as i64);
            for c in 0..3 {
                let v = sample(x0, y0, c) * (1.0 - fx) * (1.0 - fy)
                    + sample(x0 + 1, y0, c) * fx * (1.0 - fy)
                    + sample(x0, y0 + 1, c) * (1.0 - fx) * fy
                    + sample(x0 + 1, y0 + 1, c) * fx * fy;
                let v = ((v - 127.5) * contrast + 127.5 + bright).clamp(0.0, 255.0);
                let v = if gamma == 1.0 {
                    v
                } else {
                    255.0 * (v / 255.0).powf(gamma)
                };
                px.0[c] = (v + n).round().clamp(0.0, 255.0) as u8;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn scaling_values() {
        let img = RgbImage::from_pixel(2, 1, image::Rgb([255, 0, 128]));
        let mut out = vec![0.0; 6];
        let mut p = Preprocess {
            width: 2,
            height: 1,
            resize: ResizeMode::Squash,
            scaling: Scaling::Raw255,
            framing: Default::default(),
        };
        p.write_chw(&img, &mut out);
        assert_eq!(out, [255.0, 255.0, 0.0, 0.0, 128.0, 128.0]);
        p.scaling = Scaling::Imagenet;
        p.write_chw(&img, &mut out);
        assert!((out[0] - (1.0 - 0.485) / 0.229).abs() < 1e-6);
        assert!((out[2] - (0.0 - 0.456) / 0.224).abs() < 1e-6);
        p.scaling = Scaling::Inception;
        p.write_chw(&img, &mut out);
        assert_eq!(
            out,
            [
                1.0,
                1.0,
                -1.0,
                -1.0,
                128.0 / 127.5 - 1.0,
                128.0 / 127.5 - 1.0
            ]
        );
        p.scaling = Scaling::Lite;
        p.write_chw(&img, &mut out);
        assert_eq!(
            out,
            [
                1.0,
                1.0,
                -127.0 / 128.0,
                -127.0 / 128.0,
                1.0 / 128.0,
                1.0 / 128.0
            ]
        );
        assert_eq!("lite".parse::<Scaling>(), Ok(Scaling::Lite));
        assert!("tf".parse::<Scaling>().unwrap_err().contains("inception"));
    }

    #[test]
    fn augmentation_is_seeded_and_flip_mirrors() {
        let img = RgbImage::from_fn(16, 8, |x, _| image::Rgb([(x * 10) as u8; 3]));
        let a = Augment::standard();
        let r1 = a.apply(&img, &mut rand_chacha::ChaCha8Rng::seed_from_u64(5));
        let r2 = a.apply(&img, &mut rand_chacha::ChaCha8Rng::seed_from_u64(5));
        assert_eq!(r1, r2);
        let flip_only = Augment {
            hflip: true,
            ..Augment::default()
        };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let mut saw_flip = false;
        for _ in 0..8 {
            let f = flip_only.apply(&img, &mut rng);
            if f != img {
                saw_flip = true;
                assert_eq!(f.get_pixel(0, 3).0, img.get_pixel(15, 3).0);
            }
        }
        assert!(saw_flip);
        assert_eq!(Augment::default().apply(&img, &mut rng), img);
    }

    #[test]
    fn shift_gamma_and_noise_do_what_they_say() {
        let grey = RgbImage::from_pixel(20, 20, image::Rgb([128; 3]));
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        // Gamma alone: a flat picture stays flat, and over draws it gets both darker and
        // lighter (g above and below 1).
        let gamma = Augment {
            gamma: 1.0,
            ..Augment::default()
        };
        let values: Vec<u8> = (0..16)
            .map(|_| gamma.apply(&grey, &mut rng).get_pixel(3, 3).0[0])
            .collect();
        assert!(
            values.iter().any(|&v| v < 120) && values.iter().any(|&v| v > 136),
            "{values:?}"
        );
        // Noise alone: values spread around 128 by at most 0.1 * 255.
        let noisy = Augment {
            noise: 0.1,
            ..Augment::default()
        }
        .apply(&grey, &mut rng);
        let (lo, hi) = noisy
            .pixels()
            .fold((255, 0), |(l, h), p| (p.0[0].min(l), p.0[0].max(h)));
        assert!(lo < 128 && hi > 128 && lo >= 102 && hi <= 154, "{lo} {hi}");
        // Shift alone: a bright column moves and black comes in from the edge.
        let bar = RgbImage::from_fn(20, 20, |x, _| {
            image::Rgb([if x == 10 { 255 } else { 0 }; 3])
        });
        let shifted = Augment {
            shift: 0.3,
            ..Augment::default()
        }
        .apply(&bar, &mut rng);
        let column = (0..20).find(|&x| shifted.get_pixel(x, 10).0[0] > 128);
        assert_ne!(column, Some(10), "{column:?}");
        assert!(Augment::strong().validate().is_ok());
        assert!(
            Augment {
                noise: 0.9,
                ..Augment::default()
            }
            .validate()
            .is_err()
        );
    }

    #[test]
    fn blur_softens_an_edge_on_about_half_the_draws() {
        let edge = RgbImage::from_fn(20, 20, |x, _| image::Rgb([if x < 10 { 0 } else { 255 }; 3]));
        let blur = Augment {
            blur: 2.0,
            ..Augment::default()
        };
        assert!(!blur.is_identity() && blur.validate().is_ok());
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        // Softened: the pixel beside the edge is neither black nor white.
        let soft = (0..40)
            .filter(|_| {
                let v = blur.apply(&edge, &mut rng).get_pixel(9, 10).0[0];
                (5..250).contains(&v)
            })
            .count();
        assert!((8..32).contains(&soft), "{soft} of 40 draws blurred");
        let too_much = Augment {
            blur: 6.0,
            ..Augment::default()
        };
        assert!(too_much.validate().is_err());
        // A run recorded before the field existed reads back without blur.
        let old: Augment = serde_json::from_str(
            r#"{"hflip":true,"rotate_deg":15.0,"scale":0.2,"brightness":0.2,"contrast":0.3,
                "shift":0.1,"gamma":0.5,"noise":0.03}"#,
        )
        .unwrap();
        assert_eq!(old, Augment::strong());
    }
}
