//! The activations the kernels fuse after a convolution or a BatchNorm, and their gradients.

/// An element-wise activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Activation {
    Identity,
    /// `max(z, 0)`.
    Relu,
    /// `min(max(z, 0), 6)` (MobileNetV2).
    Relu6,
    /// `1 / (1 + exp(-z))` (the reference baseline).
    Sigmoid,
}

/// `exp(x)` in a form the compiler vectorises: `2^n * p(r)` with `r = x - n ln 2`,
/// `|r| <= ln(2) / 2`, and `p` the degree-6 Taylor polynomial (relative error at most 3e-7,
/// measured 2.5e-7 over -87..88; arguments clamped to the finite range of `f32`).
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    let n = (x * std::f32::consts::LOG2_E + 0.5).floor();
    // ln 2 split in two so that n * LN2_HI is exact.
    let r = x - n * 0.693_145_75 - n * 1.428_606_8e-6;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    p * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

#[inline(always)]
pub(crate) fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + exp(-z))
}

impl Activation {
    /// `dy * act'(z)` from the output `y = act(z)`: ReLU and ReLU6 pass where the output is
    /// inside their open range (burn's rule differs only at exact zeros and sixes), sigmoid
    /// scales by `y (1 - y)`.
    #[inline(always)]
    pub(crate) fn grad_from_output(self, y: f32, dy: f32) -> f32 {
        match self {
            Activation::Identity => dy,
            Activation::Relu => {
                if y > 0.0 {
                    dy
                } else {
                    0.0
                }
            }
            Activation::Relu6 => {
                if y > 0.0 && y < 6.0 {
                    dy
                } else {
                    0.0
                }
            }
            Activation::Sigmoid => dy * y * (1.0 - y),
        }
    }
}

/// `act` on every element of one image's (or plane's) output, in place: called by the
/// forward kernels right after they write it, while it is still in cache.
#[inline(always)]
pub(crate) fn apply(y: &mut [f32], act: Activation) {
    crate::simd::vectorized(
        #[inline(always)]
        || match act {
            Activation::Identity => {}
            Activation::Relu => y.iter_mut().for_each(|v| *v = v.max(0.0)),
            Activation::Relu6 => y.iter_mut().for_each(|v| *v = v.clamp(0.0, 6.0)),
            Activation::Sigmoid => y.iter_mut().for_each(|v| *v = sigmoid(*v)),
        },
    );
}

/// `dy * act'(z)` for every element, from the outputs `y = act(z)`, written over `dy`.
pub(crate) fn gate_from_output(y: &[f32], dy: &mut [f32], act: Activation) {
    use rayon::prelude::*;
    dy.par_chunks_mut(1 << 14)
        .zip(y.par_chunks(1 << 14))
        .for_each(|(g, y)| {
            crate::simd::vectorized(
                #[inline(always)]
                || {
                    for (g, y) in g.iter_mut().zip(y) {
                        *g = act.grad_from_output(*y, *g);
                    }
                },
            )
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_3e7_of_std() {
        let mut worst = 0.0f32;
        for i in -8700..=8800 {
            let x = i as f32 * 0.01;
            worst = worst.max(((exp(x) - x.exp()) / x.exp()).abs());
        }
        assert!(worst < 3e-7, "relative error {worst}");
        assert!(
            (sigmoid(0.0) - 0.5).abs() < 1e-7 && sigmoid(-200.0) >= 0.0 && sigmoid(200.0) <= 1.0
        );
    }
}
