//! artemis-explain: where did the network look?
//!
//! **Grad-CAM** (Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via
//! Gradient-based Localization", ICCV 2017; reference implementation
//! `jacobgil/pytorch-grad-cam`): for class `c` and the last convolutional map `A` (`[C, h, w]`),
//! the channel weights are the spatial means of the gradient, `alpha_k = mean_ij dy_c/dA_kij`,
//! and the map is `ReLU(sum_k alpha_k A_k)`, normalised to `[0, 1]`. The gradient comes from
//! burn's autodiff through the network's head only (the convolutional trunk runs once, without
//! a graph). For a global-average-pool + linear head the gradient is constant over space,
//! `alpha_k = w_ck / (h w)`, so Grad-CAM equals the class activation map of Zhou et al. (CVPR
//! 2016) up to scale; the tests check that closed form.
//!
//! [`overlay_png`] draws the map over the image the user gave (mapped back through the
//! resize the network's input used), in the perceptual *inferno* colour map, with a colour
//! bar, the class and the research-use notice.

pub mod render;

pub use render::{OverlayStyle, heat_layer, onto_picture, overlay_png};

use artemis_models::Network;
use burn::prelude::*;

/// Errors of the explain crate.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    /// Class indices do not match the batch or the network.
    #[error("invalid request: {0}")]
    Request(String),
    /// The backend returned no gradient or data of the wrong type.
    #[error("tensor error: {0}")]
    Tensor(String),
    /// A picture could not be drawn or encoded.
    #[error("{path}: cannot draw heat map: {reason}")]
    Render {
        path: std::path::PathBuf,
        reason: String,
    },
}

pub type Result<T> = std::result::Result<T, ExplainError>;

/// A class activation map on the network's last convolutional grid.
#[derive(Debug, Clone, PartialEq)]
pub struct Cam {
    /// Grid size (the last conv map's spatial size).
    pub width: usize,
    pub height: usize,
    /// Row-major, `height * width` values in `[0, 1]` (all zero when nothing supports the class).
    pub values: Vec<f32>,
    /// The class the map explains.
    pub class: usize,
    /// Largest value before normalisation (0: no positive evidence).
    pub peak: f32,
}

impl Cam {
    /// The map with every value (and the peak) multiplied by `w`.
    pub fn scaled(mut self, w: f32) -> Cam {
        self.values.iter_mut().for_each(|v| *v *= w);
        self.peak *= w;
        self
    }

    /// Adds `w` times `other`, sampled at this map's cell centres (nearest cell) when its grid
    /// is another size: the mean of several networks' maps for one picture.
    pub fn add_resampled(&mut self, other: &Cam, w: f32) {
        for y in 0..self.height {
            let oy = ((2 * y + 1) * other.height) / (2 * self.height);
            for x in 0..self.width {
                let ox = ((2 * x + 1) * other.width) / (2 * self.width);
                self.values[y * self.width + x] += w * other.at(ox, oy);
            }
        }
        self.peak += w * other.peak;
    }

    /// Value at grid cell `(x, y)`.
    pub fn at(&self, x: usize, y: usize) -> f32 {
        self.values[y * self.width + x]
    }

    /// Grid cell of the largest value.
    pub fn argmax(&self) -> (usize, usize) {
        let i = self
            .values
            .iter()
            .enumerate()
            .fold(
                (0, f32::NEG_INFINITY),
                |b, (i, &v)| if v > b.1 { (i, v) } else { b },
            )
            .0;
        (i % self.width, i / self.width)
    }

    /// Bilinear sample at continuous grid coordinates (cell centres at `i + 0.5`).
    pub fn sample(&self, gx: f32, gy: f32) -> f32 {
        let fx = (gx - 0.5).clamp(0.0, (self.width - 1) as f32);
        let fy = (gy - 0.5).clamp(0.0, (self.height - 1) as f32);
        let (x0, y0) = (fx.floor() as usize, fy.floor() as usize);
        let (x1, y1) = ((x0 + 1).min(self.width - 1), (y0 + 1).min(self.height - 1));
        let (tx, ty) = (fx - x0 as f32, fy - y0 as f32);
        let top = self.at(x0, y0) * (1.0 - tx) + self.at(x1, y0) * tx;
        let bottom = self.at(x0, y1) * (1.0 - tx) + self.at(x1, y1) * tx;
        top * (1.0 - ty) + bottom * ty
    }
}

fn to_vec(t: Tensor<4>) -> Result<Vec<f32>> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| ExplainError::Tensor(format!("{e:?}")))
}

/// Grad-CAM of `classes[i]` for every image of the batch `x` (`[b, 3, h, w]`, preprocessed
/// as the network expects). The network is used in inference mode (no dropout, BatchNorm on
/// its running statistics) whatever its flags.
pub fn grad_cam(net: &Network, x: Tensor<4>, classes: &[usize]) -> Result<Vec<Cam>> {
    let [b, _, _, _] = x.dims();
    if classes.len() != b {
        return Err(ExplainError::Request(format!(
            "{} classes for a batch of {b}",
            classes.len()
        )));
    }
    Ok(grad_cam_with_logits(net, x, |i, _| classes[i])?.0)
}

/// Grad-CAM with the class of image `i` chosen by `pick(i, logits_i)` from the same forward
/// pass (e.g. the predicted class), and the logits of every image: one pass of the network
/// serves both the prediction and its explanation.
pub fn grad_cam_with_logits(
    net: &Network,
    x: Tensor<4>,
    pick: impl Fn(usize, &[f32]) -> usize,
) -> Result<(Vec<Cam>, Vec<Vec<f32>>)> {
    let [b, _, _, _] = x.dims();
    let net = net.valid();
    let device = x.device();
    // The trunk once, without a graph; the head on a tracked copy of its output.
    let features = net.forward_features(x.without_autodiff());
    let [_, _, h, w] = features.dims();
    let tracked = features.clone().autodiff().require_grad();
    let logits = net.head(tracked.clone());
    let [_, k] = logits.dims();
    let values = logits
        .clone()
        .without_autodiff()
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| ExplainError::Tensor(format!("{e:?}")))?;
    let rows: Vec<Vec<f32>> = values.chunks(k).map(<[f32]>::to_vec).collect();
    let classes: Vec<usize> = rows.iter().enumerate().map(|(i, r)| pick(i, r)).collect();
    if let Some(&bad) = classes.iter().find(|&&c| c >= k) {
        return Err(ExplainError::Request(format!(
            "class {bad} out of range for {k} classes"
        )));
    }
    let mut mask = vec![0f32; b * k];
    for (i, &cls) in classes.iter().enumerate() {
        mask[i * k + cls] = 1.0;
    }
    let mask = Tensor::<2>::from_data(TensorData::new(mask, [b, k]), &device);
    let target = (logits * mask).sum();
    let grads = target.backward();
    let g = tracked
        .grad(&grads)
        .ok_or_else(|| ExplainError::Tensor("no gradient reached the last conv map".into()))?;
    // alpha: [b, c, 1, 1]; map: [b, 1, h, w]
    let alpha = g.mean_dim(3).mean_dim(2);
    let map = (features * alpha).sum_dim(1).clamp_min(0.0);
    let values = to_vec(map)?;
    let cams = values
        .chunks(h * w)
        .zip(&classes)
        .map(|(v, &class)| {
            let peak = v.iter().cloned().fold(0.0f32, f32::max);
            let values = if peak > 0.0 {
                v.iter().map(|x| x / peak).collect()
            } else {
                vec![0.0; v.len()]
            };
            Cam {
                width: w,
                height: h,
                values,
                class,
                peak,
            }
        })
        .collect();
    Ok((cams, rows))
}

#[cfg(test)]
mod tests {
    use super::*;
    use artemis_models::{Architecture, ModelSpec};

    #[test]
    fn maps_average_across_grids() {
        let cam = |w: usize, h: usize, values: Vec<f32>| Cam {
            width: w,
            height: h,
            values,
            class: 1,
            peak: 2.0,
        };
        // Same grid: the weighted sum.
        let mut a = cam(2, 1, vec![1.0, 0.0]).scaled(0.5);
        a.add_resampled(&cam(2, 1, vec![0.0, 1.0]), 0.5);
        assert_eq!(a.values, vec![0.5, 0.5]);
        assert_eq!(a.peak, 2.0);
        // A 4x2 map read at the centres of a 2x1 grid: cells (1, 0) and (3, 0).
        let mut b = cam(2, 1, vec![0.0, 0.0]);
        b.add_resampled(
            &cam(4, 2, vec![0.0, 1.0, 0.0, 3.0, 9.0, 9.0, 9.0, 9.0]),
            1.0,
        );
        assert_eq!(b.values, vec![9.0, 9.0]);
        let mut c = cam(2, 2, vec![0.0; 4]);
        c.add_resampled(
            &cam(4, 2, vec![0.0, 1.0, 0.0, 3.0, 5.0, 6.0, 7.0, 8.0]),
            1.0,
        );
        assert_eq!(c.values, vec![1.0, 3.0, 6.0, 8.0]);
    }

    fn spec(arch: Architecture, side: usize) -> ModelSpec {
        ModelSpec::new(arch, 5, (side, side))
    }

    fn input(device: &Device, b: usize, side: usize, seed: u64) -> Tensor<4> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let v: Vec<f32> = (0..b * 3 * side * side)
            .map(|_| rng.random_range(-1.0f32..1.0))
            .collect();
        Tensor::from_data(TensorData::new(v, [b, 3, side, side]), device)
    }

    #[test]
    fn global_pool_linear_head_matches_the_closed_form() {
        // MobileNetV2: pool + dropout + linear. Grad-CAM = ReLU(sum_k w_ck A_k), normalised.
        let device = Device::flex();
        let net = spec(Architecture::MobileNetV2, 96).init(&device).unwrap();
        let x = input(&device, 2, 96, 1);
        let feats = net.valid().forward_features(x.clone());
        let [_, c, h, w] = feats.dims();
        let a = to_vec(feats).unwrap();
        let lin = net.classifier().unwrap();
        // burn's Linear weight is [in, out].
        let wts: Vec<f32> = lin
            .weight
            .val()
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .unwrap();
        let k = 5;
        let mut compared = 0;
        for cls in 0..k {
            let classes = [cls, (cls + 1) % k];
            let cams = grad_cam(&net, x.clone(), &classes).unwrap();
            for (i, cam) in cams.iter().enumerate() {
                assert_eq!((cam.width, cam.height, cam.class), (w, h, classes[i]));
                let mut expect = vec![0f32; h * w];
                for ch in 0..c {
                    let wc = wts[ch * k + classes[i]];
                    for p in 0..h * w {
                        expect[p] += wc * a[((i * c) + ch) * h * w + p];
                    }
                }
                let expect: Vec<f32> = expect.iter().map(|v| v.max(0.0)).collect();
                let peak = expect.iter().cloned().fold(0.0f32, f32::max);
                if peak == 0.0 {
                    // No positive evidence anywhere: an all-zero map.
                    assert_eq!(cam.peak, 0.0);
                    assert!(cam.values.iter().all(|&v| v == 0.0));
                    continue;
                }
                compared += 1;
                // Grad-CAM carries the 1/(h w) of the pool: compare the raw peak and the shape.
                let scaled = peak / (h * w) as f32;
                assert!(
                    (cam.peak - scaled).abs() <= 1e-4 * scaled.max(1e-3),
                    "{} vs {scaled}",
                    cam.peak
                );
                for (p, (got, want)) in cam.values.iter().zip(&expect).enumerate() {
                    assert!(
                        (got - want / peak).abs() < 1e-4,
                        "cell {p}: {got} vs {}",
                        want / peak
                    );
                }
            }
        }
        assert!(
            compared >= 3,
            "too few maps with positive evidence: {compared}"
        );
    }

    #[test]
    fn the_explaining_pass_gives_the_network_logits_and_picks_its_class() {
        let device = Device::flex();
        let net = spec(Architecture::BaselineReluBn, 96)
            .init(&device)
            .unwrap();
        let x = input(&device, 2, 96, 3);
        let plain = to_vec(net.valid().forward(x.clone()).reshape([2, 5, 1, 1])).unwrap();
        let (cams, logits) = grad_cam_with_logits(&net, x, |_, z| {
            z.iter()
                .enumerate()
                .fold(
                    (0, f32::NEG_INFINITY),
                    |b, (i, &v)| if v > b.1 { (i, v) } else { b },
                )
                .0
        })
        .unwrap();
        for (got, want) in logits.concat().iter().zip(&plain) {
            assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        }
        for (cam, z) in cams.iter().zip(&logits) {
            assert!(z.iter().all(|&v| v <= z[cam.class]));
        }
    }

    #[test]
    fn every_architecture_gives_a_normalised_map_and_bad_requests_fail() {
        let device = Device::flex();
        for arch in Architecture::ALL {
            let net = spec(arch, 96).init(&device).unwrap();
            let cams = grad_cam(&net, input(&device, 1, 96, 2), &[0]).unwrap();
            let cam = &cams[0];
            assert_eq!(cam.values.len(), cam.width * cam.height);
            assert!(cam.values.iter().all(|v| (0.0..=1.0).contains(v)), "{arch}");
            if cam.peak > 0.0 {
                let (x, y) = cam.argmax();
                assert_eq!(cam.at(x, y), 1.0);
            }
            assert!(grad_cam(&net, input(&device, 1, 96, 2), &[9]).is_err());
            assert!(grad_cam(&net, input(&device, 2, 96, 2), &[0]).is_err());
        }
    }

    #[test]
    fn bilinear_sampling_hits_cell_centres() {
        let cam = Cam {
            width: 2,
            height: 1,
            values: vec![0.0, 1.0],
            class: 0,
            peak: 1.0,
        };
        assert_eq!(cam.sample(0.5, 0.5), 0.0);
        assert_eq!(cam.sample(1.5, 0.5), 1.0);
        assert!((cam.sample(1.0, 0.5) - 0.5).abs() < 1e-6);
        assert_eq!(cam.sample(-3.0, 9.0), 0.0);
    }
}
