//! artemis-models: network architectures, one file per architecture.
//!
//! Every network exposes `forward_features` (the last convolutional map, for class activation
//! maps) and `head` (features to logits) besides `forward`.

pub mod baseline;

use baseline::{BaselineCnn, BaselineConfig, BaselineVariant};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

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
}

/// The architectures artemis trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Architecture {
    /// The reference baseline CNN (sigmoid, 82,104 parameters at 12 classes).
    Baseline,
    /// The baseline topology with BatchNorm and ReLU.
    BaselineReluBn,
}

impl Architecture {
    pub fn name(self) -> &'static str {
        match self {
            Architecture::Baseline => "baseline",
            Architecture::BaselineReluBn => "baseline-relu-bn",
        }
    }

    /// The input size the reference used for this architecture `(height, width)`.
    pub fn default_input(self) -> (usize, usize) {
        (150, 150)
    }
}

impl std::str::FromStr for Architecture {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "baseline" => Ok(Architecture::Baseline),
            "baseline-relu-bn" | "relu-bn" => Ok(Architecture::BaselineReluBn),
            o => Err(format!(
                "unknown model '{o}' (expected baseline or baseline-relu-bn)"
            )),
        }
    }
}

/// Everything needed to rebuild a network before loading its weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelSpec {
    pub architecture: Architecture,
    pub num_classes: usize,
    /// `(height, width)`.
    pub input: (usize, usize),
}

/// A network of any supported architecture.
#[derive(Module, Debug)]
pub enum Network {
    Baseline(BaselineCnn),
}

impl ModelSpec {
    /// Builds a freshly initialised network on `device`.
    pub fn init(&self, device: &Device) -> Result<Network, ModelError> {
        let variant = match self.architecture {
            Architecture::Baseline => BaselineVariant::Sigmoid,
            Architecture::BaselineReluBn => BaselineVariant::ReluBn,
        };
        BaselineConfig {
            num_classes: self.num_classes,
            input: self.input,
            variant,
        }
        .init(device)
        .map(Network::Baseline)
        .ok_or_else(|| ModelError::InputSize {
            model: self.architecture.name().into(),
            height: self.input.0,
            width: self.input.1,
            reason: "too small for five valid convolutions and pools (at least 94 px)".into(),
        })
    }
}

impl Network {
    /// Logits. `[b, 3, h, w]` -> `[b, classes]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        match self {
            Network::Baseline(m) => m.forward(x),
        }
    }

    /// Last convolutional map. `[b, 3, h, w]` -> `[b, c, h', w']`.
    pub fn forward_features(&self, x: Tensor<4>) -> Tensor<4> {
        match self {
            Network::Baseline(m) => m.forward_features(x),
        }
    }

    /// Features to logits. `[b, c, h', w']` -> `[b, classes]`.
    pub fn head(&self, features: Tensor<4>) -> Tensor<2> {
        match self {
            Network::Baseline(m) => m.head(features),
        }
    }
}
