//! What the pretrained backbones share: a list of *stages* (the unit at which training
//! splits into a frozen, cached part and a trainable part), the last of which is the global
//! average pool, followed by dropout and a linear classifier.

use crate::onnx::{self, Graph, Value};
use burn::prelude::*;

/// A network of `STAGES` stages; stage `POOL_STAGE` (the last) is the global average pool,
/// the stages before it end in the last convolutional map.
pub trait Staged {
    const STAGES: usize;
    const POOL_STAGE: usize = Self::STAGES - 1;

    /// Runs stage `i < POOL_STAGE` (the pool is [`global_pool`]).
    fn conv_stage(&self, i: usize, x: Tensor<4>) -> Tensor<4>;

    /// Dropout and the linear classifier on pooled features. `[b, c]` -> `[b, classes]`.
    fn classifier_head(&self, pooled: Tensor<2>) -> Tensor<2>;

    /// Stage `i < POOL_STAGE` as an ONNX graph (BatchNorm folded).
    fn onnx_conv_stage(&self, i: usize, g: &mut Graph, x: Value) -> onnx::Result<Value>;

    /// [`Self::classifier_head`] as an ONNX graph (dropout is the identity at inference).
    fn onnx_classifier_head(&self, g: &mut Graph, pooled: Value) -> onnx::Result<Value>;

    /// Stages `from..to` as an ONNX graph; the pool stage gives `[b, c, 1, 1]` like
    /// [`Self::forward_stages`].
    fn onnx_stages(
        &self,
        g: &mut Graph,
        mut x: Value,
        from: usize,
        to: usize,
    ) -> onnx::Result<Value> {
        for i in from..to.min(Self::STAGES) {
            x = if i == Self::POOL_STAGE {
                g.global_avg_pool(&x)
            } else {
                self.onnx_conv_stage(i, g, x)?
            };
        }
        Ok(x)
    }

    /// Runs stages `from..to` (`to` is capped at `STAGES`).
    fn forward_stages(&self, mut x: Tensor<4>, from: usize, to: usize) -> Tensor<4> {
        for i in from..to.min(Self::STAGES) {
            x = if i == Self::POOL_STAGE {
                global_pool(x)
            } else {
                self.conv_stage(i, x)
            };
        }
        x
    }

    /// The last conv map. `[b, 3, h, w]` -> `[b, c, h', w']`.
    fn forward_features(&self, x: Tensor<4>) -> Tensor<4> {
        self.forward_stages(x, 0, Self::POOL_STAGE)
    }

    /// Pool, dropout, classifier. `[b, c, h', w']` -> `[b, classes]`.
    fn head(&self, features: Tensor<4>) -> Tensor<2> {
        self.forward_from(features, Self::POOL_STAGE)
    }

    /// Logits from the output of stage `from - 1` (the image when `from == 0`).
    fn forward_from(&self, x: Tensor<4>, from: usize) -> Tensor<2> {
        let pooled = self.forward_stages(x, from, Self::STAGES);
        let [b, c, _, _] = pooled.dims();
        self.classifier_head(pooled.reshape([b, c]))
    }

    /// Logits. `[b, 3, h, w]` -> `[b, classes]`.
    fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        self.forward_from(x, 0)
    }
}

/// Global average pool. `[b, c, h, w]` -> `[b, c, 1, 1]`.
pub fn global_pool(x: Tensor<4>) -> Tensor<4> {
    x.mean_dim(3).mean_dim(2)
}

/// Freezes the blocks of a run of stages that starts at stage `first` (block `i` is stage
/// `first + i`) when they lie below `stage`.
pub fn freeze_blocks<M: burn::module::Module>(
    blocks: Vec<M>,
    first: usize,
    stage: usize,
) -> Vec<M> {
    blocks
        .into_iter()
        .enumerate()
        .map(|(i, b)| if first + i < stage { b.freeze() } else { b })
        .collect()
}
