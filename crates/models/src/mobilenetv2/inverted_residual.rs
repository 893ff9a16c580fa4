//! The inverted residual block with linear bottleneck of MobileNetV2 (Sandler et al. 2018,
//! section 3.3), following torchvision's `InvertedResidual`
//! (`torchvision/models/mobilenetv2.py`).
//!
//! `expand (1x1, ReLU6; absent when t = 1) -> depthwise 3x3 (stride s, ReLU6) -> project
//! (1x1, linear)`, plus the input when `s == 1` and `c_in == c_out`.
//!
//! # Shapes
//! `[b, c_in, h, w]` -> `[b, c_out, ceil(h / s), ceil(w / s)]`, hidden width `c_in * t`.

use super::conv_norm_act::{ConvNormAct, ConvNormActConfig};
use crate::onnx::{self, Graph, Value};
use burn::prelude::*;

/// One inverted residual block. Field names follow the roles; the torchvision names
/// (`conv.0.0`, `conv.1`, ...) are mapped in [`super::weights`].
#[derive(Module, Debug)]
pub struct InvertedResidual {
    /// 1x1 expansion, `None` when the expansion ratio is 1 (the first block).
    pub expand: Option<ConvNormAct>,
    pub depthwise: ConvNormAct,
    /// 1x1 linear projection (no activation).
    pub project: ConvNormAct,
    pub residual: bool,
}

/// Geometry of one block.
#[derive(Debug, Clone, Copy)]
pub struct InvertedResidualConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub stride: usize,
    pub expand_ratio: usize,
}

impl InvertedResidualConfig {
    pub fn init(&self, device: &Device) -> InvertedResidual {
        let hidden = self.in_channels * self.expand_ratio;
        let expand = (self.expand_ratio != 1).then(|| {
            ConvNormActConfig {
                in_channels: self.in_channels,
                out_channels: hidden,
                kernel: 1,
                stride: 1,
                groups: 1,
                act: true,
            }
            .init(device)
        });
        let depthwise = ConvNormActConfig {
            in_channels: hidden,
            out_channels: hidden,
            kernel: 3,
            stride: self.stride,
            groups: hidden,
            act: true,
        }
        .init(device);
        let project = ConvNormActConfig {
            in_channels: hidden,
            out_channels: self.out_channels,
            kernel: 1,
            stride: 1,
            groups: 1,
            act: false,
        }
        .init(device);
        InvertedResidual {
            expand,
            depthwise,
            project,
            residual: self.stride == 1 && self.in_channels == self.out_channels,
        }
    }
}

impl InvertedResidual {
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let h = match &self.expand {
            Some(e) => e.forward(x.clone()),
            None => x.clone(),
        };
        let y = self.project.forward(self.depthwise.forward(h));
        if self.residual { x + y } else { y }
    }

    /// [`Self::forward`] as ONNX.
    pub fn onnx(&self, name: &str, g: &mut Graph, x: Value) -> onnx::Result<Value> {
        let h = match &self.expand {
            Some(e) => e.onnx(&format!("{name}.expand"), g, &x)?,
            None => x.clone(),
        };
        let h = self.depthwise.onnx(&format!("{name}.depthwise"), g, &h)?;
        let y = self.project.onnx(&format!("{name}.project"), g, &h)?;
        Ok(if self.residual { g.add(&x, &y) } else { y })
    }
}
