//! artemis-models: network architectures, one file per architecture.
//!
//! Every network exposes `forward_features` (the last convolutional map, for class activation
//! maps) and `head` (features to logits) besides `forward`.

pub mod baseline;
pub mod efficientnet_lite;
pub mod inceptionv3;
pub mod mobilenetv2;
pub mod onnx;
pub mod staged;
pub mod weights;

use baseline::{BaselineCnn, BaselineConfig, BaselineVariant};
use burn::prelude::*;
use efficientnet_lite::{EfficientNetLite, EfficientNetLiteConfig};
use inceptionv3::{InceptionV3, InceptionV3Config};
use mobilenetv2::{MobileNetV2, MobileNetV2Config};
use serde::{Deserialize, Serialize};
pub use staged::Staged;
use std::path::PathBuf;
use weights::Checkpoint;

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
    /// The network could not be written as ONNX.
    #[error("ONNX export of {model}: {error}")]
    Export {
        model: String,
        error: onnx::OnnxError,
    },
}

/// What an exported ONNX graph computes (input [`onnx::INPUT`] `[b, 3, h, w]`, preprocessed
/// as the run's config says).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnnxGraph {
    /// Output `logits` `[b, classes]` (softmax and temperature are left to the caller).
    Logits,
    /// Outputs `features`, the last convolutional map `[b, c, h', w']` (heat maps), and, for
    /// the pretrained backbones, `pooled`, its global average `[b, c]` (image embeddings).
    Backbone,
    /// Output `activations`: what feeds stage `K` (the frozen part of `--strategy from:K`,
    /// what the feature cache holds; `K = stages`: the pooled features `[b, c, 1, 1]` the head
    /// trains on). `K` lies in `1..=stages`.
    Stages(usize),
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
    /// InceptionV3 (torchvision layout; its ImageNet checkpoint loads with `--pretrained
    /// imagenet --weights FILE`, but cannot be fetched by the setup step).
    #[serde(rename = "inceptionv3")]
    InceptionV3,
    /// EfficientNet-Lite0 (ImageNet weights from the efficientnet-lite-pytorch port).
    #[serde(rename = "efficientnet-lite0")]
    EfficientNetLite0,
}

impl Architecture {
    pub fn name(self) -> &'static str {
        match self {
            Architecture::Baseline => "baseline",
            Architecture::BaselineReluBn => "baseline-relu-bn",
            Architecture::MobileNetV2 => "mobilenetv2",
            Architecture::InceptionV3 => "inceptionv3",
            Architecture::EfficientNetLite0 => "efficientnet-lite0",
        }
    }

    /// Every architecture, in the order the help text lists them.
    pub const ALL: [Architecture; 5] = [
        Architecture::Baseline,
        Architecture::BaselineReluBn,
        Architecture::MobileNetV2,
        Architecture::InceptionV3,
        Architecture::EfficientNetLite0,
    ];

    /// The default input size `(height, width)`: the reference's (150 for the baseline, 160
    /// for MobileNetV2), InceptionV3's native 299, EfficientNet-Lite0's native 224.
    pub fn default_input(self) -> (usize, usize) {
        match self {
            Architecture::MobileNetV2 => (160, 160),
            Architecture::InceptionV3 => (299, 299),
            Architecture::EfficientNetLite0 => (224, 224),
            _ => (150, 150),
        }
    }

    /// Number of stages training can be split at (see [`Network::forward_from`]).
    pub fn stages(self) -> usize {
        match self {
            Architecture::MobileNetV2 => mobilenetv2::STAGES,
            Architecture::InceptionV3 => inceptionv3::STAGES,
            Architecture::EfficientNetLite0 => efficientnet_lite::STAGES,
            _ => 1,
        }
    }

    /// A stage to fine-tune from that trains the top of the backbone (the benchmark's and the
    /// README's `from:K`): MobileNetV2's last 160/320-channel blocks, InceptionV3's 8x8
    /// modules, EfficientNet-Lite0's last five blocks.
    pub fn top_stage(self) -> Option<usize> {
        match self {
            Architecture::MobileNetV2 => Some(14),
            Architecture::InceptionV3 => Some(13),
            Architecture::EfficientNetLite0 => Some(12),
            _ => None,
        }
    }

    /// The ImageNet checkpoint `--pretrained imagenet` loads.
    pub fn checkpoint(self) -> Option<&'static Checkpoint> {
        match self {
            Architecture::MobileNetV2 => Some(&mobilenetv2::weights::CHECKPOINT),
            Architecture::InceptionV3 => Some(&inceptionv3::weights::CHECKPOINT),
            Architecture::EfficientNetLite0 => Some(&efficientnet_lite::weights::CHECKPOINT),
            _ => None,
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
            "inceptionv3" | "inception-v3" | "inception_v3" => Ok(Architecture::InceptionV3),
            "efficientnet-lite0" | "efficientnet_lite0" => Ok(Architecture::EfficientNetLite0),
            o => Err(format!(
                "unknown model '{o}' (expected one of: {})",
                Architecture::ALL.map(Architecture::name).join(", ")
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
    /// InceptionV3's auxiliary classifier (trained with weight 0.4; unused at inference).
    #[serde(default, skip_serializing_if = "is_false")]
    pub aux_logits: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
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
    InceptionV3(InceptionV3),
    EfficientNetLite(EfficientNetLite),
}

impl ModelSpec {
    /// `architecture` for `num_classes` at `input` `(height, width)`, width multiplier 1,
    /// no auxiliary classifier.
    pub fn new(architecture: Architecture, num_classes: usize, input: (usize, usize)) -> Self {
        ModelSpec {
            architecture,
            num_classes,
            input,
            width: 1.0,
            aux_logits: false,
        }
    }

    /// Builds a freshly initialised network on `device`.
    pub fn init(&self, device: &Device) -> Result<Network, ModelError> {
        let input_err = |reason: &str| ModelError::InputSize {
            model: self.architecture.name().into(),
            height: self.input.0,
            width: self.input.1,
            reason: reason.into(),
        };
        if self.aux_logits && self.architecture != Architecture::InceptionV3 {
            return Err(ModelError::Config {
                model: self.architecture.name().into(),
                reason: "only InceptionV3 has an auxiliary classifier".into(),
            });
        }
        let variant = match self.architecture {
            Architecture::InceptionV3 => {
                let min = inceptionv3::MIN_INPUT;
                if self.input.0.min(self.input.1) < min || self.input.0.max(self.input.1) > 1024 {
                    return Err(input_err("InceptionV3 takes 75 to 1024 px"));
                }
                let aux_min = inceptionv3::min_aux_input();
                if self.aux_logits && self.input.0.min(self.input.1) < aux_min {
                    return Err(input_err(&format!(
                        "InceptionV3's auxiliary classifier needs at least {aux_min} px"
                    )));
                }
                return Ok(Network::InceptionV3(
                    InceptionV3Config {
                        num_classes: self.num_classes,
                        aux_logits: self.aux_logits,
                        dropout: HEAD_DROPOUT,
                    }
                    .init(device),
                ));
            }
            Architecture::EfficientNetLite0 => {
                if self.input.0.min(self.input.1) < 32 || self.input.0.max(self.input.1) > 1024 {
                    return Err(input_err("EfficientNet-Lite0 takes 32 to 1024 px"));
                }
                return Ok(Network::EfficientNetLite(
                    EfficientNetLiteConfig {
                        num_classes: self.num_classes,
                        dropout: HEAD_DROPOUT,
                    }
                    .init(device),
                ));
            }
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
        let with_classifier = self.num_classes == 1000;
        match self.init(device)? {
            Network::MobileNetV2(m) => {
                mobilenetv2::weights::load_torchvision(m, weights, with_classifier)
                    .map(Network::MobileNetV2)
            }
            Network::InceptionV3(m) => {
                inceptionv3::weights::load_torchvision(m, weights, with_classifier)
                    .map(Network::InceptionV3)
            }
            Network::EfficientNetLite(m) => {
                efficientnet_lite::weights::load_imagenet(m, weights, with_classifier)
                    .map(Network::EfficientNetLite)
            }
            Network::Baseline(_) => Err(ModelError::Config {
                model: self.architecture.name().into(),
                reason: "no pretrained weights exist for this architecture".into(),
            }),
        }
    }
}

/// Logits of a staged network as ONNX: every stage, then the classifier.
fn staged_logits<S: Staged>(
    m: &S,
    g: &mut onnx::Graph,
    x: onnx::Value,
) -> onnx::Result<onnx::Value> {
    let pooled = m.onnx_stages(g, x, 0, S::STAGES)?;
    let flat = g.flatten(&pooled);
    m.onnx_classifier_head(g, flat)
}

/// The last conv map of a staged network as ONNX: every stage before the pool.
fn staged_features<S: Staged>(
    m: &S,
    g: &mut onnx::Graph,
    x: onnx::Value,
) -> onnx::Result<onnx::Value> {
    m.onnx_stages(g, x, 0, S::POOL_STAGE)
}

impl Network {
    /// Logits. `[b, 3, h, w]` -> `[b, classes]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        match self {
            Network::Baseline(m) => m.forward(x),
            Network::MobileNetV2(m) => m.forward(x),
            Network::InceptionV3(m) => m.forward(x),
            Network::EfficientNetLite(m) => m.forward(x),
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
            Network::InceptionV3(m) => m.forward_stages(x, from, to),
            Network::EfficientNetLite(m) => m.forward_stages(x, from, to),
        }
    }

    /// Logits from the activations that feed stage `from` (0: the image).
    pub fn forward_from(&self, x: Tensor<4>, from: usize) -> Tensor<2> {
        match self {
            Network::Baseline(m) => m.forward(x),
            Network::MobileNetV2(m) => m.forward_from(x, from),
            Network::InceptionV3(m) => m.forward_from(x, from),
            Network::EfficientNetLite(m) => m.forward_from(x, from),
        }
    }

    /// Training forward pass from stage `from`: logits and, for InceptionV3 with its
    /// auxiliary classifier (when the stage it reads is computed here), the auxiliary logits.
    pub fn forward_train(&self, x: Tensor<4>, from: usize) -> (Tensor<2>, Option<Tensor<2>>) {
        match self {
            Network::InceptionV3(m) => m.forward_train(x, from),
            _ => (self.forward_from(x, from), None),
        }
    }

    /// The final linear layer (its own learning rate in transfer learning), if the
    /// architecture has a separate one.
    pub fn classifier(&self) -> Option<&burn::nn::Linear> {
        match self {
            Network::Baseline(_) => None,
            Network::MobileNetV2(m) => Some(&m.classifier),
            Network::InceptionV3(m) => Some(&m.fc),
            Network::EfficientNetLite(m) => Some(&m.fc),
        }
    }

    /// Freezes every stage below `stage`: its parameters stop requiring gradients and its
    /// BatchNorm layers use (and keep) their running statistics.
    pub fn freeze_below(self, stage: usize) -> Self {
        match self {
            Network::Baseline(m) if stage > 0 => Network::Baseline(m.freeze()),
            Network::Baseline(m) => Network::Baseline(m),
            Network::MobileNetV2(m) => Network::MobileNetV2(m.freeze_below(stage)),
            Network::InceptionV3(m) => Network::InceptionV3(m.freeze_below(stage)),
            Network::EfficientNetLite(m) => Network::EfficientNetLite(m.freeze_below(stage)),
        }
    }

    /// The network as a self-contained ONNX model (opset [`onnx::OPSET`], BatchNorm folded,
    /// free batch size, `spec.input` spatial size), with `metadata` as its metadata
    /// properties. See [`OnnxGraph`] for the outputs.
    pub fn to_onnx(
        &self,
        spec: &ModelSpec,
        what: OnnxGraph,
        metadata: &[(String, String)],
    ) -> Result<Vec<u8>, ModelError> {
        use onnx::Dim;
        let model = spec.architecture.name().to_string();
        let err = |error| ModelError::Export {
            model: model.clone(),
            error,
        };
        let device = Device::flex();
        let (h, w) = spec.input;
        let probe = || Tensor::<4>::zeros([1, 3, h, w], &device);
        let map_dims = |t: Tensor<4>| {
            let [_, c, fh, fw] = t.dims();
            [Dim::Batch, Dim::Fixed(c), Dim::Fixed(fh), Dim::Fixed(fw)]
        };
        let mut g = onnx::Graph::default();
        let x = g.input();
        let stages = spec.architecture.stages();
        let doc = match what {
            OnnxGraph::Logits => {
                let logits = match self {
                    Network::Baseline(m) => {
                        let f = m.onnx_features(&mut g, x).map_err(err)?;
                        m.onnx_head(&mut g, f).map_err(err)?
                    }
                    Network::MobileNetV2(m) => staged_logits(m, &mut g, x).map_err(err)?,
                    Network::InceptionV3(m) => staged_logits(m, &mut g, x).map_err(err)?,
                    Network::EfficientNetLite(m) => staged_logits(m, &mut g, x).map_err(err)?,
                };
                g.output(
                    "logits",
                    &logits,
                    &[Dim::Batch, Dim::Fixed(spec.num_classes)],
                );
                format!("{model}: image -> logits")
            }
            OnnxGraph::Backbone => {
                let dims = map_dims(self.forward_features(probe()));
                let features = match self {
                    Network::Baseline(m) => m.onnx_features(&mut g, x).map_err(err)?,
                    Network::MobileNetV2(m) => staged_features(m, &mut g, x).map_err(err)?,
                    Network::InceptionV3(m) => staged_features(m, &mut g, x).map_err(err)?,
                    Network::EfficientNetLite(m) => staged_features(m, &mut g, x).map_err(err)?,
                };
                g.output("features", &features, &dims);
                if !matches!(self, Network::Baseline(_)) {
                    let pooled = g.global_avg_pool(&features);
                    let pooled = g.flatten(&pooled);
                    g.output("pooled", &pooled, &[Dim::Batch, dims[1]]);
                }
                format!("{model}: image -> last conv map (features), global average (pooled)")
            }
            OnnxGraph::Stages(to) => {
                if !(1..=stages).contains(&to) {
                    return Err(err(onnx::OnnxError::Unsupported(format!(
                        "stage {to} is not in 1..={stages}"
                    ))));
                }
                let dims = map_dims(self.forward_stages(probe(), 0, to));
                let y = match self {
                    Network::MobileNetV2(m) => m.onnx_stages(&mut g, x, 0, to),
                    Network::InceptionV3(m) => m.onnx_stages(&mut g, x, 0, to),
                    Network::EfficientNetLite(m) => m.onnx_stages(&mut g, x, 0, to),
                    Network::Baseline(_) => Err(onnx::OnnxError::Unsupported(
                        "the baseline has no stages to cut at".into(),
                    )),
                }
                .map_err(err)?;
                g.output("activations", &y, &dims);
                format!("{model}: image -> activations feeding stage {to}")
            }
        };
        Ok(g.finish(spec.input, &doc, metadata))
    }

    /// Last convolutional map. `[b, 3, h, w]` -> `[b, c, h', w']`.
    pub fn forward_features(&self, x: Tensor<4>) -> Tensor<4> {
        match self {
            Network::Baseline(m) => m.forward_features(x),
            Network::MobileNetV2(m) => m.forward_features(x),
            Network::InceptionV3(m) => m.forward_features(x),
            Network::EfficientNetLite(m) => m.forward_features(x),
        }
    }

    /// Features to logits. `[b, c, h', w']` -> `[b, classes]`.
    pub fn head(&self, features: Tensor<4>) -> Tensor<2> {
        match self {
            Network::Baseline(m) => m.head(features),
            Network::MobileNetV2(m) => m.head(features),
            Network::InceptionV3(m) => m.head(features),
            Network::EfficientNetLite(m) => m.head(features),
        }
    }
}
