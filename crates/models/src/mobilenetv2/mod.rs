//! MobileNetV2 (Sandler, Howard, Zhu, Zhmoginov, Chen: "MobileNetV2: Inverted Residuals and
//! Linear Bottlenecks", CVPR 2018), following the torchvision reference implementation
//! (`torchvision/models/mobilenetv2.py`, v0.2+), whose ImageNet checkpoint
//! `mobilenet_v2-b0353104.pth` [`weights`] loads.
//!
//! The network is a list of *stages*, the unit at which training can be split into a frozen
//! part (run once, its output cached) and a trainable part:
//!
//! | stage | torchvision     | what                              | output at 224 (width 1) |
//! |-------|-----------------|-----------------------------------|-------------------------|
//! | 0     | `features.0`    | conv 3x3 s2, 32                   | `[32, 112, 112]`        |
//! | 1-17  | `features.1-17` | 17 inverted residual blocks       | ... `[320, 7, 7]`       |
//! | 18    | `features.18`   | conv 1x1, 1280 (the last conv map) | `[1280, 7, 7]`          |
//! | 19    | (functional)    | global average pool               | `[1280, 1, 1]`          |
//!
//! followed by the head: dropout, then `classifier.1` (linear to the classes). torchvision
//! uses dropout 0.2; the transfer-learning head of the reference uses 0.5 (configurable).
//!
//! # Shapes
//! input `[b, 3, h, w]` (ImageNet mean/std normalised) -> features `[b, 1280, h/32, w/32]`
//! (rounded up per stride) -> logits `[b, classes]`.

pub mod conv_norm_act;
pub mod inverted_residual;
pub mod weights;

use crate::onnx::{self, Graph, Value};
use crate::staged::{Staged, freeze_blocks};
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig};
use burn::prelude::*;
use conv_norm_act::{ConvNormAct, ConvNormActConfig};
use inverted_residual::{InvertedResidual, InvertedResidualConfig};

/// `(expansion t, channels c, repeats n, first stride s)`, table 2 of the paper.
const SETTINGS: [(usize, usize, usize, usize); 7] = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
];

/// Number of stages (see the module table): stem, 17 blocks, last conv, pool.
pub const STAGES: usize = 20;

/// torchvision's `_make_divisible`: round to the nearest multiple of `divisor`, never more
/// than 10% below `v`.
fn make_divisible(v: f64, divisor: usize) -> usize {
    let d = divisor as f64;
    let mut new = ((v + d / 2.0) / d).floor().max(1.0) as usize * divisor;
    if (new as f64) < 0.9 * v {
        new += divisor;
    }
    new
}

/// What a [`MobileNetV2`] is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MobileNetV2Config {
    pub num_classes: usize,
    /// Width multiplier (1.0 for the ImageNet checkpoint).
    pub width: f32,
    /// Dropout before the classifier.
    pub dropout: f64,
}

/// MobileNetV2.
#[derive(Module, Debug)]
pub struct MobileNetV2 {
    /// `features.0`.
    pub stem: ConvNormAct,
    /// `features.1` .. `features.17`.
    pub blocks: Vec<InvertedResidual>,
    /// `features.18`.
    pub last: ConvNormAct,
    pub dropout: Dropout,
    /// `classifier.1`.
    pub classifier: Linear,
}

impl MobileNetV2Config {
    /// Channels of the last conv map.
    pub fn last_channels(&self) -> usize {
        make_divisible(1280.0 * f64::from(self.width.max(1.0)), 8)
    }

    pub fn init(&self, device: &Device) -> MobileNetV2 {
        let w = f64::from(self.width);
        let mut c_in = make_divisible(32.0 * w, 8);
        let stem = ConvNormActConfig {
            in_channels: 3,
            out_channels: c_in,
            kernel: 3,
            stride: 2,
            groups: 1,
            act: true,
        }
        .init(device);
        let mut blocks = Vec::new();
        for (t, c, n, s) in SETTINGS {
            let c_out = make_divisible(c as f64 * w, 8);
            for i in 0..n {
                blocks.push(
                    InvertedResidualConfig {
                        in_channels: c_in,
                        out_channels: c_out,
                        stride: if i == 0 { s } else { 1 },
                        expand_ratio: t,
                    }
                    .init(device),
                );
                c_in = c_out;
            }
        }
        let last_c = self.last_channels();
        let last = ConvNormActConfig {
            in_channels: c_in,
            out_channels: last_c,
            kernel: 1,
            stride: 1,
            groups: 1,
            act: true,
        }
        .init(device);
        MobileNetV2 {
            stem,
            blocks,
            last,
            dropout: DropoutConfig::new(self.dropout).init(),
            classifier: LinearConfig::new(last_c, self.num_classes).init(device),
        }
    }
}

impl Staged for MobileNetV2 {
    const STAGES: usize = STAGES;

    fn conv_stage(&self, i: usize, x: Tensor<4>) -> Tensor<4> {
        match i {
            0 => self.stem.forward(x),
            18 => self.last.forward(x),
            b => self.blocks[b - 1].forward(x),
        }
    }

    fn classifier_head(&self, pooled: Tensor<2>) -> Tensor<2> {
        self.classifier.forward(self.dropout.forward(pooled))
    }

    fn onnx_conv_stage(&self, i: usize, g: &mut Graph, x: Value) -> onnx::Result<Value> {
        match i {
            0 => self.stem.onnx("features.0", g, &x),
            18 => self.last.onnx("features.18", g, &x),
            b => self.blocks[b - 1].onnx(&format!("features.{b}"), g, x),
        }
    }

    fn onnx_classifier_head(&self, g: &mut Graph, pooled: Value) -> onnx::Result<Value> {
        g.linear("classifier.1", &pooled, &self.classifier)
    }
}

impl MobileNetV2 {
    /// Freezes every stage below `stage` (parameters stop requiring gradients; BatchNorm uses
    /// and keeps its running statistics).
    pub fn freeze_below(mut self, stage: usize) -> Self {
        if stage > 0 {
            self.stem = self.stem.freeze();
        }
        let n = self.blocks.len();
        self.blocks = freeze_blocks(self.blocks, 1, stage);
        if stage > n + 1 {
            self.last = self.last.freeze();
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(m: &MobileNetV2) -> usize {
        m.num_params()
    }

    #[test]
    fn channel_rounding_matches_torchvision() {
        assert_eq!(make_divisible(32.0, 8), 32);
        assert_eq!(make_divisible(32.0 * 0.35, 8), 16);
        assert_eq!(make_divisible(16.0 * 0.5, 8), 8);
        assert_eq!(make_divisible(24.0 * 0.75, 8), 24);
        assert_eq!(
            MobileNetV2Config {
                num_classes: 10,
                width: 1.4,
                dropout: 0.2
            }
            .last_channels(),
            1792
        );
    }

    #[test]
    fn shapes_at_160_and_224() {
        let device = Device::flex();
        let m = MobileNetV2Config {
            num_classes: 12,
            width: 1.0,
            dropout: 0.5,
        }
        .init(&device);
        assert_eq!(m.blocks.len(), 17);
        // torchvision mobilenet_v2(): 3,504,872 parameters at 1000 classes; 12 classes swap
        // the 1280x1000 (+1000) classifier for 1280x12 (+12). burn also counts the BatchNorm
        // running mean and variance (2 x 17,056 values at width 1).
        assert_eq!(count(&m), 3_504_872 - 1_281_000 + 15_372 + 2 * 17_056);
        for (side, out) in [(160, 5), (224, 7)] {
            let x = Tensor::<4>::zeros([2, 3, side, side], &device);
            let f = m.forward_features(x.clone());
            assert_eq!(f.dims(), [2, 1280, out, out]);
            assert_eq!(m.head(f).dims(), [2, 12]);
            assert_eq!(m.forward(x.clone()).dims(), [2, 12]);
            // Output of stage 14 (block 14, the first 160-channel block, stride 32).
            let mid = m.forward_stages(x.clone(), 0, 15);
            assert_eq!(mid.dims(), [2, 160, side / 32, side / 32]);
        }
    }
}
