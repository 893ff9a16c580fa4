//! InceptionV3 (Szegedy, Vanhoucke, Ioffe, Shlens, Wojna: "Rethinking the Inception
//! Architecture for Computer Vision", CVPR 2016), following the torchvision reference
//! implementation (`torchvision/models/inception.py`, `Inception3` with
//! `transform_input=False`), whose module and tensor names (`Conv2d_1a_3x3`, `Mixed_5b`,
//! `branch1x1`, `AuxLogits`, `fc`) the fields here keep, so that torchvision's ImageNet
//! checkpoint `inception_v3_google-0cc3c7bd.pth` loads by name ([`weights`]).
//!
//! Input scaling: torchvision's ImageNet weights were trained on `x/127.5 - 1` (its
//! `transform_input=True` turns ImageNet-normalised input into exactly that); artemis feeds
//! that scaling directly (`Scaling::Inception`).
//!
//! Stages (the unit at which training splits into a frozen, cached part and a trainable
//! part; the pools without parameters belong to the stage before them):
//!
//! | stage | torchvision                  | output at 299             |
//! |-------|------------------------------|---------------------------|
//! | 0     | `Conv2d_1a_3x3` (s2)          | `[32, 149, 149]`          |
//! | 1     | `Conv2d_2a_3x3`               | `[32, 147, 147]`          |
//! | 2     | `Conv2d_2b_3x3`, `maxpool1`   | `[64, 73, 73]`            |
//! | 3     | `Conv2d_3b_1x1`               | `[80, 73, 73]`            |
//! | 4     | `Conv2d_4a_3x3`, `maxpool2`   | `[192, 35, 35]`           |
//! | 5-7   | `Mixed_5b`, `Mixed_5c`, `Mixed_5d` | `[256/288/288, 35, 35]` |
//! | 8     | `Mixed_6a`                    | `[768, 17, 17]`           |
//! | 9-12  | `Mixed_6b` .. `Mixed_6e` (`AuxLogits` taps 12) | `[768, 17, 17]` |
//! | 13    | `Mixed_7a`                    | `[1280, 8, 8]`            |
//! | 14-15 | `Mixed_7b`, `Mixed_7c` (the last conv map) | `[2048, 8, 8]` |
//! | 16    | global average pool           | `[2048, 1, 1]`            |
//!
//! then dropout (0.5) and `fc`.
//!
//! # Shapes
//! input `[b, 3, h, w]`, `h, w >= 75` -> features `[b, 2048, g, g]` (`g` = 8 at 299, 1 at
//! 75) -> logits `[b, classes]`. The auxiliary classifier needs a 17x17-stage grid of at least
//! 17, i.e. an input of at least 299 ([`min_aux_input`]).
#![allow(non_snake_case)] // torchvision's module names (`Conv2d_1a_3x3`, `Mixed_5b`)

pub mod blocks;
pub mod weights;

use crate::onnx::{self, Graph, Value};
use crate::staged::Staged;
use blocks::{
    BasicConv2d, InceptionA, InceptionAux, InceptionB, InceptionC, InceptionD, InceptionE,
    max_pool_3s2,
};
use burn::nn::pool::MaxPool2d;
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig};
use burn::prelude::*;

/// Number of stages (see the module table).
pub const STAGES: usize = 17;
/// The stage whose output the auxiliary classifier reads (`Mixed_6e`).
pub const AUX_TAP: usize = 12;
/// Weight of the auxiliary loss in training (the paper and torchvision's reference training
/// recipe: `loss = main + 0.4 * aux`).
pub const AUX_WEIGHT: f64 = 0.4;
/// Smallest input side.
pub const MIN_INPUT: usize = 75;

/// Side of the 35x35 / 17x17 / 8x8 grids for an input side, `None` below [`MIN_INPUT`].
pub fn grids(side: usize) -> Option<(usize, usize, usize)> {
    let valid = |x: usize, k: usize, s: usize| x.checked_sub(k).map(|v| v / s + 1);
    let mut x = valid(side, 3, 2)?; // Conv2d_1a_3x3
    x = valid(x, 3, 1)?; // Conv2d_2a_3x3 (2b keeps the size)
    x = valid(x, 3, 2)?; // maxpool1
    x = valid(x, 3, 1)?; // Conv2d_4a_3x3 (3b is 1x1)
    let g35 = valid(x, 3, 2)?; // maxpool2
    let g17 = valid(g35, 3, 2)?; // Mixed_6a
    let g8 = valid(g17, 3, 2)?; // Mixed_7a
    Some((g35, g17, g8))
}

/// Smallest input side for which the auxiliary classifier fits.
pub fn min_aux_input() -> usize {
    (MIN_INPUT..)
        .find(|&s| grids(s).is_some_and(|(_, g17, _)| g17 >= InceptionAux::MIN_GRID))
        .unwrap_or(usize::MAX)
}

/// What an [`InceptionV3`] is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InceptionV3Config {
    pub num_classes: usize,
    /// Build the auxiliary classifier (used by training only).
    pub aux_logits: bool,
    /// Dropout before `fc` (torchvision: 0.5).
    pub dropout: f64,
}

/// InceptionV3.
#[derive(Module, Debug)]
pub struct InceptionV3 {
    pub Conv2d_1a_3x3: BasicConv2d,
    pub Conv2d_2a_3x3: BasicConv2d,
    pub Conv2d_2b_3x3: BasicConv2d,
    pub Conv2d_3b_1x1: BasicConv2d,
    pub Conv2d_4a_3x3: BasicConv2d,
    pub Mixed_5b: InceptionA,
    pub Mixed_5c: InceptionA,
    pub Mixed_5d: InceptionA,
    pub Mixed_6a: InceptionB,
    pub Mixed_6b: InceptionC,
    pub Mixed_6c: InceptionC,
    pub Mixed_6d: InceptionC,
    pub Mixed_6e: InceptionC,
    pub AuxLogits: Option<InceptionAux>,
    pub Mixed_7a: InceptionD,
    pub Mixed_7b: InceptionE,
    pub Mixed_7c: InceptionE,
    pub dropout: Dropout,
    pub fc: Linear,
    pool: MaxPool2d,
}

impl InceptionV3Config {
    pub fn init(&self, d: &Device) -> InceptionV3 {
        InceptionV3 {
            Conv2d_1a_3x3: BasicConv2d::square(3, 32, 3, 2, 0, d),
            Conv2d_2a_3x3: BasicConv2d::square(32, 32, 3, 1, 0, d),
            Conv2d_2b_3x3: BasicConv2d::square(32, 64, 3, 1, 1, d),
            Conv2d_3b_1x1: BasicConv2d::square(64, 80, 1, 1, 0, d),
            Conv2d_4a_3x3: BasicConv2d::square(80, 192, 3, 1, 0, d),
            Mixed_5b: InceptionA::new(192, 32, d),
            Mixed_5c: InceptionA::new(256, 64, d),
            Mixed_5d: InceptionA::new(288, 64, d),
            Mixed_6a: InceptionB::new(288, d),
            Mixed_6b: InceptionC::new(768, 128, d),
            Mixed_6c: InceptionC::new(768, 160, d),
            Mixed_6d: InceptionC::new(768, 160, d),
            Mixed_6e: InceptionC::new(768, 192, d),
            AuxLogits: self
                .aux_logits
                .then(|| InceptionAux::new(768, self.num_classes, d)),
            Mixed_7a: InceptionD::new(768, d),
            Mixed_7b: InceptionE::new(1280, d),
            Mixed_7c: InceptionE::new(2048, d),
            dropout: DropoutConfig::new(self.dropout).init(),
            fc: LinearConfig::new(2048, self.num_classes).init(d),
            pool: max_pool_3s2(),
        }
    }
}

impl Staged for InceptionV3 {
    const STAGES: usize = STAGES;

    fn conv_stage(&self, i: usize, x: Tensor<4>) -> Tensor<4> {
        match i {
            0 => self.Conv2d_1a_3x3.forward(x),
            1 => self.Conv2d_2a_3x3.forward(x),
            2 => self.pool.forward(self.Conv2d_2b_3x3.forward(x)),
            3 => self.Conv2d_3b_1x1.forward(x),
            4 => self.pool.forward(self.Conv2d_4a_3x3.forward(x)),
            5 => self.Mixed_5b.forward(x),
            6 => self.Mixed_5c.forward(x),
            7 => self.Mixed_5d.forward(x),
            8 => self.Mixed_6a.forward(x),
            9 => self.Mixed_6b.forward(x),
            10 => self.Mixed_6c.forward(x),
            11 => self.Mixed_6d.forward(x),
            12 => self.Mixed_6e.forward(x),
            13 => self.Mixed_7a.forward(x),
            14 => self.Mixed_7b.forward(x),
            _ => self.Mixed_7c.forward(x), // 15
        }
    }

    fn classifier_head(&self, pooled: Tensor<2>) -> Tensor<2> {
        self.fc.forward(self.dropout.forward(pooled))
    }

    fn onnx_conv_stage(&self, i: usize, g: &mut Graph, x: Value) -> onnx::Result<Value> {
        match i {
            0 => self.Conv2d_1a_3x3.onnx("Conv2d_1a_3x3", g, &x),
            1 => self.Conv2d_2a_3x3.onnx("Conv2d_2a_3x3", g, &x),
            2 => {
                let y = self.Conv2d_2b_3x3.onnx("Conv2d_2b_3x3", g, &x)?;
                Ok(g.max_pool(&y, &self.pool))
            }
            3 => self.Conv2d_3b_1x1.onnx("Conv2d_3b_1x1", g, &x),
            4 => {
                let y = self.Conv2d_4a_3x3.onnx("Conv2d_4a_3x3", g, &x)?;
                Ok(g.max_pool(&y, &self.pool))
            }
            5 => self.Mixed_5b.onnx("Mixed_5b", g, x),
            6 => self.Mixed_5c.onnx("Mixed_5c", g, x),
            7 => self.Mixed_5d.onnx("Mixed_5d", g, x),
            8 => self.Mixed_6a.onnx("Mixed_6a", g, x),
            9 => self.Mixed_6b.onnx("Mixed_6b", g, x),
            10 => self.Mixed_6c.onnx("Mixed_6c", g, x),
            11 => self.Mixed_6d.onnx("Mixed_6d", g, x),
            12 => self.Mixed_6e.onnx("Mixed_6e", g, x),
            13 => self.Mixed_7a.onnx("Mixed_7a", g, x),
            14 => self.Mixed_7b.onnx("Mixed_7b", g, x),
            _ => self.Mixed_7c.onnx("Mixed_7c", g, x), // 15
        }
    }

    fn onnx_classifier_head(&self, g: &mut Graph, pooled: Value) -> onnx::Result<Value> {
        g.linear("fc", &pooled, &self.fc)
    }
}

impl InceptionV3 {
    /// Training forward pass: logits and, when the model has an auxiliary classifier and
    /// `Mixed_6e`'s output is computed here (`from <= AUX_TAP + 1`), the auxiliary logits.
    pub fn forward_train(&self, x: Tensor<4>, from: usize) -> (Tensor<2>, Option<Tensor<2>>) {
        match &self.AuxLogits {
            Some(aux) if from <= AUX_TAP + 1 => {
                let tap = self.forward_stages(x, from, AUX_TAP + 1);
                let aux_logits = aux.forward(tap.clone());
                (self.forward_from(tap, AUX_TAP + 1), Some(aux_logits))
            }
            _ => (self.forward_from(x, from), None),
        }
    }

    /// Logits. `[b, 3, h, w]` -> `[b, classes]` (the auxiliary classifier is not used).
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        self.forward_from(x, 0)
    }

    /// Freezes every stage below `stage` (parameters stop requiring gradients; BatchNorm uses
    /// and keeps its running statistics). The auxiliary classifier freezes with `Mixed_6e`.
    pub fn freeze_below(mut self, stage: usize) -> Self {
        let f = |i: usize| stage > i;
        macro_rules! freeze {
            ($($i:expr => $field:ident),* $(,)?) => {
                $(if f($i) { self.$field = self.$field.freeze(); })*
            };
        }
        freeze!(
            0 => Conv2d_1a_3x3, 1 => Conv2d_2a_3x3, 2 => Conv2d_2b_3x3, 3 => Conv2d_3b_1x1,
            4 => Conv2d_4a_3x3, 5 => Mixed_5b, 6 => Mixed_5c, 7 => Mixed_5d, 8 => Mixed_6a,
            9 => Mixed_6b, 10 => Mixed_6c, 11 => Mixed_6d, 12 => Mixed_6e, 13 => Mixed_7a,
            14 => Mixed_7b, 15 => Mixed_7c,
        );
        if f(AUX_TAP) {
            self.AuxLogits = self.AuxLogits.map(|a| a.freeze());
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_sizes_and_limits() {
        assert_eq!(grids(299), Some((35, 17, 8)));
        assert_eq!(grids(75), Some((7, 3, 1)));
        assert_eq!(grids(74), None);
        assert_eq!(min_aux_input(), 299);
        assert!(grids(min_aux_input()).unwrap().1 >= 17);
        assert!(grids(min_aux_input() - 1).unwrap().1 < 17);
    }

    #[test]
    fn shapes_and_parameter_count() {
        let d = Device::flex();
        let m = InceptionV3Config {
            num_classes: 1000,
            aux_logits: false,
            dropout: 0.5,
        }
        .init(&d);
        // torchvision inception_v3(aux_logits=False): 23,834,568 parameters; burn also counts
        // the BatchNorm running mean and variance (17,216 channels, 34,432 values); the
        // fixture's tensor list gives the same 23,869,000.
        assert_eq!(m.num_params(), 23_834_568 + 34_432);
        for (side, g) in [(75, 1), (107, 2)] {
            let x = Tensor::<4>::zeros([1, 3, side, side], &d);
            let f = m.forward_features(x.clone());
            assert_eq!(f.dims(), [1, 2048, g, g]);
            assert_eq!(m.head(f).dims(), [1, 1000]);
            let mid = m.forward_stages(x, 0, AUX_TAP + 1);
            assert_eq!(mid.dims()[1], 768);
        }
    }

    #[test]
    fn auxiliary_classifier_trains_at_its_smallest_input() {
        let d = Device::flex().autodiff();
        let m = InceptionV3Config {
            num_classes: 12,
            aux_logits: true,
            dropout: 0.5,
        }
        .init(&d);
        let s = min_aux_input();
        // Two different images: in training mode BatchNorm normalises over the batch, and the
        // auxiliary head's 1x1 map of a single image would normalise to zero.
        let x = Tensor::<4>::random([2, 3, s, s], burn::tensor::Distribution::Default, &d);
        let (main, aux) = m.forward_train(x.clone(), 0);
        assert_eq!(main.dims(), [2, 12]);
        let aux = aux.unwrap();
        assert_eq!(aux.dims(), [2, 12]);
        // The weighted auxiliary loss reaches the auxiliary classifier and the trunk below
        // its tap.
        let grads = (main.sum() + aux.sum().mul_scalar(AUX_WEIGHT)).backward();
        let aux_fc = m
            .AuxLogits
            .as_ref()
            .unwrap()
            .fc
            .weight
            .grad(&grads)
            .unwrap();
        assert!(aux_fc.abs().sum().into_scalar::<f32>() > 0.0);
        assert!(m.Mixed_6e.branch1x1.conv.weight.grad(&grads).is_some());
        // Training from above the tap: no auxiliary output.
        let f = m.forward_stages(x, 0, 14);
        assert!(m.forward_train(f, 14).1.is_none());
    }
}
