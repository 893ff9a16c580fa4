//! One training step's pieces, shared by single-device training (`train`) and data-parallel
//! replicas (`replicas`): what the trainable stages read ([`Inputs`]), what every epoch trains
//! on ([`EpochContext`]), a batch's loss ([`batch_loss`]) and a step's gradients
//! ([`StepGrads`]).

use crate::dataset::{Batch, Loaded, batch_tensor, to_vec_f32};
use crate::error::Result;
use crate::features::Features;
use crate::run::RunConfig;
use artemis_data::transform::{Augment, Preprocess};
use artemis_models::Network;
use burn::nn::loss::CrossEntropyLoss;
use burn::optim::GradientsParams;
use burn::prelude::*;

/// A seed for stream `b` of seed `a` (epochs, batches, images, replicas).
pub(crate) fn mix(a: u64, b: u64) -> u64 {
    // SplitMix64 finaliser over a simple combination: distinct streams per (a, b).
    let mut z = a ^ b.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// What the trainable stages take as input: decoded images (augmented per batch) or cached
/// activations of the frozen stages (one set per augmentation copy).
pub(crate) enum Inputs {
    Images(Loaded),
    Features(Vec<Features>),
}

impl Inputs {
    pub(crate) fn len(&self) -> usize {
        match self {
            Inputs::Images(l) => l.images.len(),
            Inputs::Features(f) => f.first().map_or(0, |f| f.shape[0]),
        }
    }

    /// The batch of rows `idx` with their `classes` for `epoch` (augmentation seeds from
    /// `augment`).
    pub(crate) fn batch(
        &self,
        idx: &[usize],
        classes: Vec<usize>,
        epoch: usize,
        pre: &Preprocess,
        augment: Option<(&Augment, &[u64])>,
        device: &Device,
    ) -> Batch {
        let x = match self {
            Inputs::Images(l) => {
                let imgs: Vec<_> = idx.iter().map(|&i| &l.images[i]).collect();
                batch_tensor(&imgs, pre, augment, device)
            }
            Inputs::Features(copies) => copies[(epoch - 1) % copies.len()].batch(idx, device),
        };
        Batch::new(x, classes, device)
    }
}

/// What every epoch of a run trains on.
pub(crate) struct EpochContext<'a> {
    pub(crate) run_cfg: &'a RunConfig,
    pub(crate) inputs: &'a Inputs,
    pub(crate) classes: &'a [usize],
    pub(crate) input_stage: usize,
    pub(crate) loss_fn: CrossEntropyLoss,
    /// Every replica's device (autodiff), at least one; the model lives on the first between
    /// steps ([`Self::device`]).
    pub(crate) replicas: &'a [Device],
}

impl EpochContext<'_> {
    /// The first replica's device.
    pub(crate) fn device(&self) -> &Device {
        &self.replicas[0]
    }
}

/// A step's gradients, for the optimizer: when the head and the backbone train at different
/// rates, the head's in `head` and the rest in `rest`; else all in `rest` (`head` is `None`).
pub(crate) struct StepGrads {
    pub head: Option<GradientsParams>,
    pub rest: GradientsParams,
}

impl StepGrads {
    pub(crate) fn of(
        mut grads: burn::tensor::Gradients,
        model: &Network,
        split: bool,
    ) -> StepGrads {
        match (split, model.classifier()) {
            (true, Some(head)) => StepGrads {
                head: Some(GradientsParams::from_module(&mut grads, head)),
                rest: GradientsParams::from_grads(grads, model),
            },
            _ => StepGrads {
                head: None,
                rest: GradientsParams::from_grads(grads, model),
            },
        }
    }
}

/// Rows `chunk` of batch `b` of an epoch (the first at position `offset` of the batch, for
/// the per-image augmentation seeds) through the network on `device`: the loss (plus 0.4 of
/// InceptionV3's auxiliary loss; the logged loss is this sum) and how many of its images the
/// network got right.
pub(crate) fn batch_loss(
    ctx: &EpochContext,
    model: &Network,
    chunk: &[usize],
    offset: usize,
    epoch: usize,
    b: usize,
    device: &Device,
) -> Result<(Tensor<1>, usize)> {
    let (run_cfg, seed, bs) = (
        ctx.run_cfg,
        ctx.run_cfg.train.seed,
        ctx.run_cfg.train.batch_size_at(epoch),
    );
    let classes: Vec<usize> = chunk.iter().map(|&i| ctx.classes[i]).collect();
    let seeds: Vec<u64> = (0..chunk.len())
        .map(|k| mix(mix(seed, epoch as u64), (b * bs + offset + k) as u64))
        .collect();
    let augment = Some((&run_cfg.augment, &seeds[..]));
    let batch = (ctx.inputs).batch(chunk, classes, epoch, &run_cfg.preprocess, augment, device);
    step_loss(ctx, model, batch)
}

/// The loss of one batch (with InceptionV3's auxiliary loss when it has one) and how many of
/// its predictions were right.
pub(crate) fn step_loss(
    ctx: &EpochContext,
    model: &Network,
    batch: Batch,
) -> Result<(Tensor<1>, usize)> {
    let (logits, aux) = model.forward_train(batch.x, ctx.input_stage);
    let mut loss = ctx.loss_fn.forward(logits.clone(), batch.y.clone());
    if let Some(aux) = aux {
        let aux_loss = ctx.loss_fn.forward(aux, batch.y);
        loss = loss + aux_loss.mul_scalar(artemis_models::inceptionv3::AUX_WEIGHT);
    }
    let preds = argmax_rows(&to_vec_f32(logits.detach())?, ctx.run_cfg.classes.len());
    let correct = preds
        .iter()
        .zip(&batch.classes)
        .filter(|(p, c)| p == c)
        .count();
    Ok((loss, correct))
}

/// Index of the largest value of each row of a `[rows, k]` matrix.
pub fn argmax_rows(v: &[f32], k: usize) -> Vec<usize> {
    v.chunks(k)
        .map(|row| {
            row.iter()
                .enumerate()
                .fold((0, f32::NEG_INFINITY), |best, (i, &x)| {
                    if x > best.1 { (i, x) } else { best }
                })
                .0
        })
        .collect()
}
