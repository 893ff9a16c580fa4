//! Data-parallel training steps: one replica of the network per device (`--device
//! vulkan:0,vulkan:1`), each step's batch split between them.
//!
//! A step of batch `B` on `k` replicas:
//! 1. the batch's rows are cut into `k` contiguous shards (sizes differing by at most one;
//!    each image keeps the augmentation seed of its position in the whole batch);
//! 2. every replica, on a thread of its own, runs the network forked onto its device (same
//!    parameter ids, fresh autodiff leaves) on its shard, and back-propagates its shard's
//!    mean loss scaled by `shard / B`;
//! 3. the gradients are moved to the first device and added there in replica order, which
//!    gives the gradient of the whole batch's mean loss; one optimizer step follows.
//!
//! The result is deterministic and resumes bit-identically like single-device training: the
//! shards, seeds and order of additions are fixed, and each replica's device is seeded per
//! step for its random draws (dropout; two replicas on one device, as the CPU tests run
//! them, share its stream, so there dropout draws are not reproducible). BatchNorm normalises each shard with its
//! own statistics (as PyTorch's DistributedDataParallel does without SyncBatchNorm), and its
//! running averages become the mean of the replicas' updates: burn's `RunningState` keeps one
//! update per thread, and they are merged after every step (averaging two values in either
//! order gives the same bits; with three or more the merge order may differ in the last bit).

use crate::error::{EngineError, Result};
use crate::step::{EpochContext, StepGrads, batch_loss, mix};
use artemis_models::Network;
use burn::module::Module;
use burn::optim::GradientsAccumulator;
use burn::optim::GradientsParams;
use burn::prelude::Tensor;

/// `model` with every parameter initialised now, on this thread, in the module's order.
/// burn initialises parameters lazily, at first use; replicas forked from a network that is
/// not initialised yet would race to draw its random initial values.
pub(crate) fn initialised(model: Network) -> Network {
    struct Touch;
    impl burn::module::ModuleVisitor for Touch {
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<D>>) {
            let _ = param.val();
        }
    }
    model.visit(&mut Touch);
    model
}

/// The contiguous shards of `chunk`, one per replica (none empty): `(offset, rows)`.
fn shards(chunk: &[usize], k: usize) -> Vec<(usize, &[usize])> {
    let k = k.clamp(1, chunk.len().max(1));
    let (base, extra) = (chunk.len() / k, chunk.len() % k);
    let mut out = Vec::with_capacity(k);
    let mut start = 0;
    for i in 0..k {
        let len = base + usize::from(i < extra);
        if len > 0 {
            out.push((start, &chunk[start..start + len]));
        }
        start += len;
    }
    out
}

/// One replica's share of a step: its shard's loss (unscaled), right answers and gradients,
/// on the first device.
type Share = (f64, usize, StepGrads);

/// Batch `b` of `epoch` (rows `chunk`) on every replica of `ctx`: the batch's mean loss, its
/// right answers, and the summed gradients on the first device.
pub(crate) fn step(
    ctx: &EpochContext,
    model: &Network,
    chunk: &[usize],
    epoch: usize,
    b: usize,
    split: bool,
) -> Result<(f64, usize, StepGrads)> {
    let parts = shards(chunk, ctx.replicas.len());
    let total = chunk.len() as f64;
    let main = ctx.device();
    let shares: Vec<Result<Share>> = std::thread::scope(|s| {
        let handles: Vec<_> = (parts.iter().zip(ctx.replicas))
            .enumerate()
            .map(|(i, (&(offset, rows), device))| {
                s.spawn(move || -> Result<Share> {
                    // Each replica's random draws (dropout) from a stream of its own.
                    let seed = mix(mix(ctx.run_cfg.train.seed, epoch as u64), b as u64);
                    device.seed(mix(seed, i as u64));
                    let replica = model.clone().fork(device);
                    let (loss, correct) =
                        batch_loss(ctx, &replica, rows, offset, epoch, b, device)?;
                    let value = f64::from(loss.clone().into_scalar::<f32>());
                    let weight = rows.len() as f64 / total;
                    let grads = StepGrads::of(loss.mul_scalar(weight).backward(), &replica, split);
                    Ok((value, correct, to_device(grads, main, &replica)))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(EngineError::Tensor(
                        "a training replica panicked (see the message above)".into(),
                    ))
                })
            })
            .collect()
    });
    // Each replica's BatchNorm running averages merged (see the module's notes).
    drop(model.valid());
    let (mut loss, mut correct) = (0.0, 0);
    let mut head = GradientsAccumulator::<Network>::new();
    let mut rest = GradientsAccumulator::<Network>::new();
    let mut has_head = false;
    for (share, &(_, rows)) in shares.into_iter().zip(&parts) {
        let (l, c, g) = share?;
        loss += l * rows.len() as f64 / total;
        correct += c;
        if let Some(h) = g.head {
            has_head = true;
            head.accumulate(model, h);
        }
        rest.accumulate(model, g.rest);
    }
    let grads = StepGrads {
        head: has_head.then(|| head.grads()),
        rest: rest.grads(),
    };
    Ok((loss, correct, grads))
}

/// `grads` (of `replica`) moved to `device`.
fn to_device(grads: StepGrads, device: &burn::prelude::Device, replica: &Network) -> StepGrads {
    let move_to = |g: GradientsParams| g.to_device(device, replica);
    StepGrads {
        head: grads.head.map(move_to),
        rest: move_to(grads.rest),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_cover_the_batch_in_order() {
        let chunk: Vec<usize> = (10..17).collect();
        let parts = shards(&chunk, 3);
        let sizes: Vec<usize> = parts.iter().map(|(_, r)| r.len()).collect();
        assert_eq!(sizes, [3, 2, 2]);
        let offsets: Vec<usize> = parts.iter().map(|(o, _)| *o).collect();
        assert_eq!(offsets, [0, 3, 5]);
        let joined: Vec<usize> = parts.iter().flat_map(|(_, r)| r.iter().copied()).collect();
        assert_eq!(joined, chunk);
        // A last batch smaller than the replica count: no empty shard.
        assert_eq!(shards(&chunk[..2], 4).len(), 2);
    }
}
