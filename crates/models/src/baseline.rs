//! The reference project's baseline CNN (erdos_artemis, 2022, Keras), and a ReLU +
//! BatchNorm variant of the same topology.
//!
//! Reference (Keras, `Sequential`, valid padding, sigmoid after every layer but the last):
//! `Conv 32 (2x2) -> MaxPool 2 -> Conv 64 (3x3) -> MaxPool 2 -> Conv 32 (3x3) -> MaxPool 2 ->
//! Conv 32 (3x3) -> MaxPool 2 -> Conv 64 (2x2) -> MaxPool 2 -> Flatten -> Dense 44 -> Dense 32 ->
//! Dense n (softmax)`; 82,104 parameters for 12 classes at 150x150x3. Weights are initialised
//! like Keras (Glorot-uniform kernels). The softmax lives in the loss, so `forward` returns
//! logits.
//!
//! The `relu-bn` variant keeps the layers and sizes but puts BatchNorm after each convolution,
//! uses ReLU (He initialisation), and adds dropout before the last dense layer.
//!
//! # Shapes
//! input `[batch, 3, height, width]` -> features (last conv map, before its pool)
//! `[batch, 64, h', w']` -> logits `[batch, classes]`.

use artemis_kernels::{Activation, conv_norm_act, conv2d_act, conv2d_act_pool, max_pool2d};
use burn::module::Initializer;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Dropout, DropoutConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::{relu, sigmoid};
use serde::{Deserialize, Serialize};

use crate::onnx::{self, Graph, Value};

/// Which activation scheme the baseline uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BaselineVariant {
    /// Exactly the reference: sigmoid everywhere, no normalisation.
    Sigmoid,
    /// Conv -> BatchNorm -> ReLU, ReLU dense layers, dropout before the classifier.
    ReluBn,
}

/// (out channels, kernel) of the five convolutions.
const CONVS: [(usize, usize); 5] = [(32, 2), (64, 3), (32, 3), (32, 3), (64, 2)];
const DENSE: [usize; 2] = [44, 32];

/// Spatial size after the conv/pool stack for an input side, or `None` if it vanishes.
pub fn feature_side(mut side: usize) -> Option<usize> {
    for (_, k) in CONVS {
        side = side.checked_sub(k - 1)?; // valid conv
        side /= 2; // max pool 2, floor
        if side == 0 {
            return None;
        }
    }
    Some(side)
}

/// The baseline CNN.
#[derive(Module, Debug)]
pub struct BaselineCnn {
    convs: Vec<Conv2d>,
    /// One per convolution for `relu-bn`, empty for `sigmoid`.
    norms: Vec<BatchNorm>,
    pool: MaxPool2d,
    fc1: Linear,
    fc2: Linear,
    dropout: Dropout,
    classifier: Linear,
}

/// Builds a [`BaselineCnn`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaselineConfig {
    pub num_classes: usize,
    /// Input `(height, width)`.
    pub input: (usize, usize),
    pub variant: BaselineVariant,
}

impl BaselineConfig {
    /// Size of the flattened feature vector, or `None` if the input is too small.
    pub fn flat_features(&self) -> Option<usize> {
        Some(feature_side(self.input.0)? * feature_side(self.input.1)? * CONVS[4].0)
    }

    pub fn init(&self, device: &Device) -> Option<BaselineCnn> {
        let flat = self.flat_features()?;
        let relu_bn = self.variant == BaselineVariant::ReluBn;
        let init = if relu_bn {
            Initializer::KaimingUniform {
                gain: 2f64.sqrt(),
                fan_out_only: false,
            }
        } else {
            Initializer::XavierUniform { gain: 1.0 }
        };
        let mut cin = 3;
        let mut convs = Vec::new();
        let mut norms = Vec::new();
        for (cout, k) in CONVS {
            convs.push(
                Conv2dConfig::new([cin, cout], [k, k])
                    .with_initializer(init.clone())
                    .init(device),
            );
            if relu_bn {
                norms.push(BatchNormConfig::new(cout).init(device));
            }
            cin = cout;
        }
        let linear = |i: usize, o: usize| {
            LinearConfig::new(i, o)
                .with_initializer(init.clone())
                .init(device)
        };
        Some(BaselineCnn {
            convs,
            norms,
            pool: MaxPool2dConfig::new([2, 2]).init(),
            fc1: linear(flat, DENSE[0]),
            fc2: linear(DENSE[0], DENSE[1]),
            dropout: DropoutConfig::new(if relu_bn { 0.3 } else { 0.0 }).init(),
            classifier: linear(DENSE[1], self.num_classes),
        })
    }
}

impl BaselineCnn {
    fn act<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        if self.norms.is_empty() {
            sigmoid(x)
        } else {
            relu(x)
        }
    }

    fn conv_block(&self, i: usize, x: Tensor<4>) -> Tensor<4> {
        match self.norms.get(i) {
            Some(bn) => conv_norm_act(&self.convs[i], bn, x, Activation::Relu),
            None => conv2d_act(&self.convs[i], x, Activation::Sigmoid),
        }
    }

    /// Block `i` and the pooling after it (one fused operation for the sigmoid variant).
    fn pooled_block(&self, i: usize, x: Tensor<4>) -> Tensor<4> {
        match self.norms.get(i) {
            Some(_) => max_pool2d(&self.pool, self.conv_block(i, x)),
            None => conv2d_act_pool(&self.convs[i], Activation::Sigmoid, &self.pool, x),
        }
    }

    /// The last convolutional map (after its activation, before its pool): what class
    /// activation maps are computed on.
    ///
    /// # Shapes
    /// `[b, 3, h, w]` -> `[b, 64, h', w']`
    pub fn forward_features(&self, x: Tensor<4>) -> Tensor<4> {
        let mut x = x;
        let last = self.convs.len() - 1;
        for i in 0..last {
            x = self.pooled_block(i, x);
        }
        self.conv_block(last, x)
    }

    /// Pool, flatten and the dense layers.
    ///
    /// # Shapes
    /// `[b, 64, h', w']` -> `[b, classes]`
    pub fn head(&self, features: Tensor<4>) -> Tensor<2> {
        let x = max_pool2d(&self.pool, features);
        let x: Tensor<2> = x.flatten(1, 3);
        let x = self.act(self.fc1.forward(x));
        let x = self.act(self.fc2.forward(x));
        let x = self.dropout.forward(x);
        self.classifier.forward(x)
    }

    /// Logits.
    ///
    /// # Shapes
    /// `[b, 3, h, w]` -> `[b, classes]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        self.head(self.forward_features(x))
    }

    fn onnx_act(&self, g: &mut Graph, x: &Value) -> Value {
        if self.norms.is_empty() {
            g.sigmoid(x)
        } else {
            g.relu(x)
        }
    }

    /// [`Self::forward_features`] as an ONNX graph (BatchNorm folded).
    pub fn onnx_features(&self, g: &mut Graph, mut x: Value) -> onnx::Result<Value> {
        let last = self.convs.len() - 1;
        for (i, conv) in self.convs.iter().enumerate() {
            let y = g.conv(&format!("convs.{i}"), &x, conv, self.norms.get(i))?;
            x = self.onnx_act(g, &y);
            if i < last {
                x = g.max_pool(&x, &self.pool);
            }
        }
        Ok(x)
    }

    /// [`Self::head`] as an ONNX graph (dropout is the identity at inference).
    pub fn onnx_head(&self, g: &mut Graph, features: Value) -> onnx::Result<Value> {
        let x = g.max_pool(&features, &self.pool);
        let x = g.flatten(&x);
        let x = g.linear("fc1", &x, &self.fc1)?;
        let x = self.onnx_act(g, &x);
        let x = g.linear("fc2", &x, &self.fc2)?;
        let x = self.onnx_act(g, &x);
        g.linear("classifier", &x, &self.classifier)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_parameter_count() {
        let device = Device::flex();
        let cfg = BaselineConfig {
            num_classes: 12,
            input: (150, 150),
            variant: BaselineVariant::Sigmoid,
        };
        assert_eq!(cfg.flat_features(), Some(576));
        let m = cfg.init(&device).unwrap();
        assert_eq!(m.num_params(), 82_104);
        let out = m.forward(Tensor::zeros([2, 3, 150, 150], &device));
        assert_eq!(out.dims(), [2, 12]);
        let f = m.forward_features(Tensor::zeros([1, 3, 150, 150], &device));
        assert_eq!(f.dims(), [1, 64, 6, 6]);
    }

    #[test]
    fn relu_bn_variant_shapes() {
        let device = Device::flex();
        let cfg = BaselineConfig {
            num_classes: 4,
            input: (96, 128),
            variant: BaselineVariant::ReluBn,
        };
        let m = cfg.init(&device).unwrap();
        // 82,104 - 12-class head + 4-class head + BatchNorm over 224 channels: burn counts
        // gamma, beta and the two running statistics (4 x 224).
        let flat = cfg.flat_features().unwrap();
        let expected = 416
            + 18_496
            + 18_464
            + 9_248
            + 8_256
            + (flat * 44 + 44)
            + 1_440
            + (32 * 4 + 4)
            + 4 * 224;
        assert_eq!(m.num_params(), expected);
        let out = m.forward(Tensor::zeros([3, 3, 96, 128], &device));
        assert_eq!(out.dims(), [3, 4]);
        assert!(
            BaselineConfig {
                input: (20, 20),
                ..cfg
            }
            .init(&device)
            .is_none()
        );
    }
}
