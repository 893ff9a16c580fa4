//! BatchNorm with batch statistics (training), fused with the activation that follows it,
//! on NCHW slices.
//!
//! Forward: one pass per channel for the mean and the (biased) variance, accumulated in
//! `f64` from `f32` lane sums, then one pass writing `act((x - mean) / sqrt(var + eps) *
//! gamma + beta)`. Backward: one pass per channel for `sum(g)` and `sum(g * xhat)` (with `g`
//! the output gradient masked by the activation, recomputed from `x`), then one pass writing
//! `dx = gamma / std * (g - mean(g) - xhat * mean(g * xhat))`. burn's composition takes about
//! ten tensor operations and two transposing copies each way.
//!
//! Statistics are taken per channel over images in order: results do not depend on threads.

use crate::act::{self, Activation};
use crate::fresh::{init_map, par_init};
use crate::lanes;
use crate::simd::vectorized;
use rayon::prelude::*;

/// `[n, c, h * w]`.
#[derive(Debug, Clone, Copy)]
pub struct BnShape {
    pub n: usize,
    pub c: usize,
    pub plane: usize,
}

impl BnShape {
    fn count(&self) -> f64 {
        (self.n * self.plane) as f64
    }
    /// The planes of channel `c`, in image order.
    fn planes<'a>(&self, data: &'a [f32], c: usize) -> impl Iterator<Item = &'a [f32]> {
        (0..self.n).map(move |i| &data[(i * self.c + c) * self.plane..][..self.plane])
    }
}

/// The output and the batch statistics (what the running averages are fed).
pub struct BnForward {
    pub y: Vec<f32>,
    pub mean: Vec<f32>,
    /// Biased (divided by `n * h * w`), as burn's `batch_norm_train` returns it.
    pub var: Vec<f32>,
}

/// Per channel: `(mean, variance)` over images and pixels, in one pass: sums of `x - k` and
/// `(x - k)^2` around the channel's first value `k` (shifted, so that a large mean does not
/// cancel the variance away), in `f32` lanes per plane and `f64` over planes.
fn statistics(s: BnShape, x: &[f32]) -> Vec<(f32, f32)> {
    (0..s.c)
        .into_par_iter()
        .map(|c| {
            let k = s
                .planes(x, c)
                .next()
                .and_then(|p| p.first())
                .copied()
                .unwrap_or(0.0);
            let (sum, sq) = s.planes(x, c).fold((0.0f64, 0.0f64), |(a, b), p| {
                let (pa, pb) = vectorized(
                    #[inline(always)]
                    || lanes::shifted_sums(p, k),
                );
                (a + pa as f64, b + pb as f64)
            });
            let (m, count) = (sum / s.count(), s.count());
            ((k as f64 + m) as f32, (sq / count - m * m).max(0.0) as f32)
        })
        .collect()
}

fn inv_std(var: f32, eps: f64) -> f32 {
    (1.0 / (var as f64 + eps).sqrt()) as f32
}

/// Per channel, the normalisation as `z = (x - mean) * scale + beta`: centred first, as burn
/// computes it, since folding the mean into a shift (`x * scale + shift`) loses digits in a
/// channel whose mean is large against its spread.
#[derive(Debug, Clone, Copy)]
struct Norm {
    mean: f32,
    scale: f32,
    beta: f32,
}

impl Norm {
    fn new(gamma: f32, beta: f32, mean: f32, var: f32, eps: f64) -> Norm {
        Norm {
            mean,
            scale: inv_std(var, eps) * gamma,
            beta,
        }
    }
    #[inline(always)]
    fn z(self, x: f32) -> f32 {
        (x - self.mean) * self.scale + self.beta
    }
}

/// The fused training forward of `x [n, c, h, w]`.
pub fn forward(
    s: BnShape,
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f64,
    act: Activation,
) -> BnForward {
    let stats = statistics(s, x);
    let maps: Vec<Norm> = (0..s.c)
        .map(|c| Norm::new(gamma[c], beta[c], stats[c].0, stats[c].1, eps))
        .collect();
    let y = match act {
        Activation::Identity => normalise(s, x, &maps, |z| z),
        Activation::Relu => normalise(s, x, &maps, |z| z.max(0.0)),
        Activation::Relu6 => normalise(s, x, &maps, |z| z.clamp(0.0, 6.0)),
        Activation::Sigmoid => normalise(s, x, &maps, act::sigmoid),
    };
    let (mean, var) = stats.into_iter().unzip();
    BnForward { y, mean, var }
}

/// `f(z(x))` with each channel's normalisation (one copy per activation `f`).
fn normalise(
    s: BnShape,
    x: &[f32],
    maps: &[Norm],
    f: impl Fn(f32) -> f32 + Sync + Copy,
) -> Vec<f32> {
    par_init(
        x.len(),
        s.plane,
        || (),
        |_, p, y| {
            let norm = maps[p % s.c];
            let x = &x[p * s.plane..][..s.plane];
            vectorized(
                #[inline(always)]
                || init_map(y, x, |x| f(norm.z(x))),
            )
        },
    )
}

/// Inputs of [`backward`] besides the shape and the activation.
pub struct BnSaved<'a> {
    pub x: &'a [f32],
    pub gamma: &'a [f32],
    pub beta: &'a [f32],
    pub mean: &'a [f32],
    pub var: &'a [f32],
    pub eps: f64,
}

/// Gradients of [`forward`]: `dy` becomes `dx` in place (it is read once per element, so
/// no separate output buffer has to be zeroed and written), and `(dgamma, dbeta)` are
/// returned.
pub fn backward(
    s: BnShape,
    saved: &BnSaved,
    dy: &mut [f32],
    act: Activation,
) -> (Vec<f32>, Vec<f32>) {
    match act {
        Activation::Identity => backward_gated(s, saved, dy, |_, g| g),
        Activation::Relu => backward_gated(s, saved, dy, |z, g| if z > 0.0 { g } else { 0.0 }),
        Activation::Relu6 => {
            backward_gated(
                s,
                saved,
                dy,
                |z, g| if (0.0..=6.0).contains(&z) { g } else { 0.0 },
            )
        }
        Activation::Sigmoid => backward_gated(s, saved, dy, |z, g| {
            let y = act::sigmoid(z);
            g * y * (1.0 - y)
        }),
    }
}

/// [`backward`] with the activation's gradient gate `gate(z, dy)` inlined (one copy per
/// activation, so the loops vectorise with a blend instead of a branch).
fn backward_gated(
    s: BnShape,
    v: &BnSaved,
    dy: &mut [f32],
    gate: impl Fn(f32, f32) -> f32 + Sync + Copy,
) -> (Vec<f32>, Vec<f32>) {
    let x = v.x;
    let norms: Vec<Norm> = (0..s.c)
        .map(|c| Norm::new(v.gamma[c], v.beta[c], v.mean[c], v.var[c], v.eps))
        .collect();
    // Per channel: dbeta = sum(g) and dgamma = sum(g * xhat), g the gated output gradient.
    let grad: &[f32] = dy;
    let (dbeta, dgamma): (Vec<f32>, Vec<f32>) = (0..s.c)
        .into_par_iter()
        .map(|c| {
            let (sg, sgx) =
                s.planes(x, c)
                    .zip(s.planes(grad, c))
                    .fold((0.0f64, 0.0f64), |(a, b), (xp, gp)| {
                        let (pa, pb) = vectorized(
                            #[inline(always)]
                            || gated_sums(xp, gp, norms[c], gate),
                        );
                        (a + pa as f64, b + pb as f64)
                    });
            (sg as f32, sgx as f32 * inv_std(v.var[c], v.eps))
        })
        .unzip();
    let m = s.count() as f32;
    dy.par_chunks_mut(s.plane).enumerate().for_each(|(p, gs)| {
        let c = p % s.c;
        let norm = norms[c];
        // dx = scale * (g - mean(g) - xhat * mean(g * xhat)) = scale * g + k * (x - mean) + k0
        let istd = inv_std(v.var[c], v.eps);
        let (k, k0) = (
            -norm.scale * dgamma[c] / m * istd,
            -norm.scale * dbeta[c] / m,
        );
        let xs = &x[p * s.plane..][..s.plane];
        vectorized(
            #[inline(always)]
            || {
                for (g, x) in gs.iter_mut().zip(xs) {
                    *g = norm.scale * gate(norm.z(*x), *g) + k * (x - norm.mean) + k0;
                }
            },
        )
    });
    (dgamma, dbeta)
}

/// Over one plane: `(sum(g), sum(g * (x - mean)))` with `g = gate(z(x), dy)`, each in 8
/// lanes of its own loop: with both sums in one loop the compiler paired `g` with
/// `g * (x - mean)` into two-wide vectors and tested the gate lane by lane (a profile showed
/// these sums at a quarter of a MobileNetV2 step); alone, each vectorises 8 wide. The plane
/// is still in cache for the second loop.
#[inline(always)]
fn gated_sums(xp: &[f32], gp: &[f32], norm: Norm, gate: impl Fn(f32, f32) -> f32) -> (f32, f32) {
    let g = |x: f32, dy: f32| gate(norm.z(x), dy);
    (
        lanes::sum_map2(xp, gp, g),
        lanes::sum_map2(xp, gp, |x, dy| g(x, dy) * (x - norm.mean)),
    )
}
