//! artemis-models: network architectures, one file per architecture.
//!
//! Every network exposes `forward_features` (the last convolutional map, for class activation
//! maps) and `head` (features to logits) besides `forward`.

pub mod baseline;
pub mod mobilenetv2;

use baseline::{BaselineCnn, BaselineConfig, BaselineVariant};
use burn::prelude::*;
use mobilenetv2::{MobileNetV2, MobileNetV2Config};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Errors of the models crate.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The input size is too small (or too large) for the architecture.
    #[error("model {model}: input {height}x{width} is not supported: {reason}")]
    InputSize {
        model: String,
        height: usize,
        width: usize,
        reason: String,
    },
    /// Pretrained weights that are missing, wrong or do not fit.
    #[error("weights {path}: {reason}")]
    Weights { path: PathBuf, reason: String },
    /// A training split point the architecture does not have.
    #[error("model {model}: {reason}")]
    Config { model: String, reason: String },
}

/// The architectures artemis trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Architecture {
    /// The reference baseline CNN (sigmoid, 82,104 parameters at 12 classes).
    Baseline,
    /// The baseline topology with BatchNorm and ReLU.
    BaselineReluBn,
    /// MobileNetV2 (torchvision layout; ImageNet weights with `--pretrained imagenet`).
    #[serde(rename = "mobilenetv2")]
    MobileNetV2,
}

impl Architecture {
    pub fn name(self) -> &'static str {
        match self {
            Architecture::Baseline => "baseline",
            Architecture::BaselineReluBn => "baseline-relu-bn",
            Architecture::MobileNetV2 => "mobilenetv2",
        }
    }

    /// The input size the reference used for this architecture `(height, width)`.
    pub fn default_input(self) -> (usize, usize) {
        match self {
            Architecture::MobileNetV2 => (160, 160),
            _ => (150, 150),
        }
    }

    /// Number of stages training can be split at (see [`Network::forward_from`]).
    pub fn stages(self) -> usize {
        match self {
            Architecture::MobileNetV2 => mobilenetv2::STAGES,
            _ => 1,
        }
    }
}

impl std::fmt::Display for Architecture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Architecture {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "baseline" => Ok(Architecture::Baseline),
            "baseline-relu-bn" | "relu-bn" => Ok(Architecture::BaselineReluBn),
            "mobilenetv2" | "mobilenet-v2" | "mobilenet_v2" => Ok(Architecture::MobileNetV2),
            o => Err(format!(
                "unknown model '{o}' (expected baseline, baseline-relu-bn or mobilenetv2)"
            )),
        }
    }
}

fn one() -> f32 {
    1.0
}

/// Everything needed to rebuild a network before loading its weights.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    pub architecture: Architecture,
    pub num_classes: usize,
    /// `(height, width)`.
    pub input: (usize, usize),
    /// Width multiplier (MobileNetV2; 1.0 elsewhere).
    #[serde(default = "one")]
    pub width: f32,
}

/// Dropout before the classifier of the transfer-learning head (the reference's 0.5).
pub const HEAD_DROPOUT: f64 = 0.5;

/// A network of any supported architecture.
// One value per run, moved rarely: the size gap between variants costs nothing here.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Network {
    Baseline(BaselineCnn),
    MobileNetV2(MobileNetV2),
}

impl ModelSpec {
    /// Builds a freshly initialised network on `device`.
    pub fn init(&self, device: &Device) -> Result<Network, ModelError> {
        let input_err = |reason: &str| ModelError::InputSize {
            model: self.architecture.name().into(),
            height: self.input.0,
            width: self.input.1,
            reason: reason.into(),
        };
        let variant = match self.architecture {
            Architecture::Baseline => BaselineVariant::Sigmoid,
            Architecture::BaselineReluBn => BaselineVariant::ReluBn,
            Architecture::MobileNetV2 => {
                if self.input.0 < 32 || self.input.1 < 32 || self.input.0.max(self.input.1) > 1024 {
                    return Err(input_err("MobileNetV2 takes 32 to 1024 px"));
                }
                if !(self.width > 0.0 && self.width <= 4.0) {
                    return Err(ModelError::Config {
                        model: self.architecture.name().into(),
                        reason: format!("width multiplier {} out of (0, 4]", self.width),
                    });
                }
                return Ok(Network::MobileNetV2(
                    MobileNetV2Config {
                        num_classes: self.num_classes,
                        width: self.width,
                        dropout: HEAD_DROPOUT,
                    }
                    .init(device),
                ));
            }
        };
        BaselineConfig {
            num_classes: self.num_classes,
            input: self.input,
            variant,
        }
        .init(device)
        .map(Network::Baseline)
        .ok_or_else(|| {
            input_err("too small for five valid convolutions and pools (at least 94 px)")
        })
    }

    /// Builds the network and loads pretrained weights from `weights` (the backbone; the
    /// classifier too when the spec has the checkpoint's 1000 classes).
    pub fn init_pretrained(
        &self,
        weights: &std::path::Path,
        device: &Device,
    ) -> Result<Network, ModelError> {
        match self.init(device)? {
            Network::MobileNetV2(m) => {
                let with_classifier = self.num_classes == 1000;
                mobilenetv2::weights::load_torchvision(m, weights, with_classifier)
                    .map(Network::MobileNetV2)
            }
            Network::Baseline(_) => Err(ModelError::Config {
                model: self.architecture.name().into(),
                reason: "no pretrained weights exist for this architecture".into(),
            }),
        }
    }
}

impl Network {
    /// Logits. `[b, 3, h, w]` -> `[b, classes]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        match self {
            Network::Baseline(m) => m.forward(x),
            Network::MobileNetV2(m) => m.forward(x),
        }
    }

    /// Runs stages `from..to` of the network: the activations that feed stage `to` given those
    /// that feed stage `from` (stage 0 takes the image). For a frozen prefix these are what
    /// the feature cache holds.
    pub fn forward_stages(&self, x: Tensor<4>, from: usize, to: usize) -> Tensor<4> {
        match self {
            // One stage: the whole network is stage 0; nothing to run below it.
            Network::Baseline(_) => x,
            Network::MobileNetV2(m) => m.forward_stages(x, from, to),
        }
    }

    /// Logits from the activations that feed stage `from` (0: the image).
    pub fn forward_from(&self, x: Tensor<4>, from: usize) -> Tensor<2> {
        match self {
            Network::Baseline(m) => m.forward(x),
            Network::MobileNetV2(m) => m.forward_from(x, from),
        }
    }

    /// The final linear layer (its own learning rate in transfer learning), if the
    /// architecture has a separate one.
    pub fn classifier(&self) -> Option<&burn::nn::Linear> {
        match self {
            Network::Baseline(_) => None,
            Network::MobileNetV2(m) => Some(&m.classifier),
        }
    }

    /// Freezes every stage below `stage`: its parameters stop requiring gradients and its
    /// BatchNorm layers use (and keep) their running statistics.
    pub fn freeze_below(self, stage: usize) -> Self {
        match self {
            Network::Baseline(m) if stage > 0 => Network::Baseline(m.freeze()),
            Network::Baseline(m) => Network::Baseline(m),
            Network::MobileNetV2(m) => Network::MobileNetV2(m.freeze_below(stage)),
        }
    }

    /// Last convolutional map. `[b, 3, h, w]` -> `[b, c, h', w']`.
    pub fn forward_features(&self, x: Tensor<4>) -> Tensor<4> {
        match self {
            Network::Baseline(m) => m.forward_features(x),
            Network::MobileNetV2(m) => m.forward_features(x),
        }
    }

    /// Features to logits. `[b, c, h', w']` -> `[b, classes]`.
    pub fn head(&self, features: Tensor<4>) -> Tensor<2> {
        match self {
            Network::Baseline(m) => m.head(features),
            Network::MobileNetV2(m) => m.head(features),
        }
    }
}
