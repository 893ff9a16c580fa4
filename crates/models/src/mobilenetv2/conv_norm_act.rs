//! `Conv2dNormActivation` of torchvision (`torchvision/ops/misc.py`): convolution without
//! bias, BatchNorm (eps 1e-5, momentum 0.1 as in PyTorch), optional ReLU6.
//!
//! Padding is symmetric, `(kernel - 1) / 2` on every side, as in PyTorch; TF-style
//! bottom/right padding gives different ImageNet predictions with these weights.
//!
//! # Shapes
//! `[b, c_in, h, w]` -> `[b, c_out, ceil(h / stride), ceil(w / stride)]`.

use crate::onnx::{self, Graph, Value};
use artemis_kernels::{Activation, conv_norm_act};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, PaddingConfig2d};
use burn::prelude::*;

/// BatchNorm epsilon of the torchvision checkpoint. With Keras' 1e-3 the ImageNet top-1 is
/// wrong on every golden image (some running variances are ~1e-44).
pub const BN_EPS: f64 = 1e-5;

/// Convolution -> BatchNorm -> optional ReLU6.
#[derive(Module, Debug)]
pub struct ConvNormAct {
    pub conv: Conv2d,
    pub bn: BatchNorm,
    /// ReLU6 after the norm (false for the linear bottleneck projection).
    pub act: bool,
}

/// What one [`ConvNormAct`] is.
#[derive(Debug, Clone, Copy)]
pub struct ConvNormActConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub kernel: usize,
    pub stride: usize,
    /// Convolution groups (`in_channels` for a depthwise convolution).
    pub groups: usize,
    pub act: bool,
}

impl ConvNormActConfig {
    pub fn init(&self, device: &Device) -> ConvNormAct {
        let p = (self.kernel - 1) / 2;
        let conv = Conv2dConfig::new(
            [self.in_channels, self.out_channels],
            [self.kernel, self.kernel],
        )
        .with_stride([self.stride, self.stride])
        .with_groups(self.groups)
        .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
        .with_bias(false)
        .init(device);
        let bn = BatchNormConfig::new(self.out_channels)
            .with_epsilon(BN_EPS)
            .with_momentum(0.1)
            .init(device);
        ConvNormAct {
            conv,
            bn,
            act: self.act,
        }
    }
}

impl ConvNormAct {
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let act = if self.act {
            Activation::Relu6
        } else {
            Activation::Identity
        };
        conv_norm_act(&self.conv, &self.bn, x, act)
    }

    /// [`Self::forward`] as ONNX: one convolution (BatchNorm folded), then `Clip(0, 6)`.
    pub fn onnx(&self, name: &str, g: &mut Graph, x: &Value) -> onnx::Result<Value> {
        let y = g.conv(name, x, &self.conv, Some(&self.bn))?;
        Ok(if self.act { g.relu6(&y) } else { y })
    }
}

/// `min(max(x, 0), 6)`.
pub fn relu6(x: Tensor<4>) -> Tensor<4> {
    x.clamp(0.0, 6.0)
}
