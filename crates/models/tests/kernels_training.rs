//! Whole networks trained with artemis-kernels against the same networks trained with burn's
//! kernels: 20 steps (forward, backward, SGD) on real scans of `../shared/data` from the
//! same start give the same losses and final weights: within 1e-3 relative, or within 3x
//! what rounding-level noise in the input images causes in burn itself where the network is
//! that sensitive (see `same_training`).
//!
//! MobileNetV2 and EfficientNet-Lite0 start from their ImageNet weights (`scripts/setup`
//! fetches them) at 96 px, the reference baseline from a seeded initialisation at 150 px on raw 0..255 input, as the
//! reference trained it. Batches of 8, cycling over 24 scans (two per class).
#![allow(clippy::unwrap_used)]

use artemis_data::image_io::{DEFAULT_MAX_PIXELS, ResizeMode, read_rgb};
use artemis_data::transform::{Preprocess, Scaling};
use artemis_kernels::{Kernels, with_kernels};
use artemis_models::{Architecture, ModelSpec, Network};
use burn::module::{Module, ModuleVisitor, Param};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{GradientsParams, SgdConfig};
use burn::prelude::*;
use std::path::PathBuf;

const STEPS: usize = 20;
const BATCH: usize = 8;
const TOL: f32 = 1e-3;
/// Steps compared at `TOL` before burn's own rounding noise dominates (MobileNetV2 and the
/// baseline; EfficientNet-Lite0 is more sensitive, see the test).
const EXACT_STEPS: usize = 3;
/// Plain SGD: its steps are the gradients, so it compares them. Adam divides each gradient by
/// its own running magnitude, and its first steps are `lr * sign(g)`: the bias before a
/// BatchNorm has a true gradient of exactly 0 (the norm removes any shift), computed as
/// rounding noise of 1e-7 that either implementation gets a different sign of, so two correct
/// implementations part from the second step (measured: losses 1.9e-3 apart at step 2 with
/// Adam at 1e-4).
const LR: f64 = 1e-4;

fn data() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/artemis-planes/Training")
}

/// Two scans of each of the 12 classes, preprocessed: `(chw values, class)`.
fn scans(side: u32, scaling: Scaling) -> Vec<(Vec<f32>, usize)> {
    let mut classes: Vec<PathBuf> = std::fs::read_dir(data())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    classes.sort();
    assert_eq!(
        classes.len(),
        12,
        "the 12-class layout under {}",
        data().display()
    );
    let pre = Preprocess {
        width: side,
        height: side,
        resize: ResizeMode::Squash,
        scaling,
        framing: Default::default(),
    };
    let mut out = Vec::new();
    for (label, dir) in classes.iter().enumerate() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for f in files.iter().take(2) {
            let img = pre.resize(&read_rgb(f, DEFAULT_MAX_PIXELS).unwrap());
            let mut chw = vec![0f32; pre.tensor_len()];
            pre.write_chw(&img, &mut chw);
            out.push((chw, label));
        }
    }
    out
}

/// Every float parameter, flattened in visiting order.
struct Flatten(Vec<f32>);

impl ModuleVisitor for Flatten {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.0.extend(
            param
                .val()
                .into_data()
                .convert::<f32>()
                .try_to_vec::<f32>()
                .unwrap(),
        );
    }
}

/// The network every training starts from: ImageNet weights, or burn's seeded initialisation
/// (the device seeded first).
fn start(arch: Architecture, side: usize, device: &Device) -> Network {
    let spec = ModelSpec::new(arch, 12, (side, side));
    match arch.checkpoint() {
        Some(c) => spec.init_pretrained(&c.default_path(), device).unwrap(),
        None => spec.init(device).unwrap(),
    }
}

/// [`start`]'s weights, flattened.
fn start_weights(arch: Architecture, side: usize) -> Vec<f32> {
    with_kernels(Kernels::Burn, || {
        let device = Device::flex().autodiff();
        device.seed(0);
        let mut flat = Flatten(Vec::new());
        start(arch, side, &device).visit(&mut flat);
        flat.0
    })
}

/// The losses of each step and the final weights.
fn train(
    arch: Architecture,
    side: usize,
    scaling: Scaling,
    kernels: Kernels,
    input_scale: f32,
) -> (Vec<f32>, Vec<f32>) {
    let scans = scans(side as u32, scaling);
    with_kernels(kernels, || {
        let device = Device::flex().autodiff();
        device.seed(0);
        let mut model = start(arch, side, &device);
        let mut optim = SgdConfig::new().init();
        let loss_fn = CrossEntropyLossConfig::new().init(&device);
        let mut losses = Vec::new();
        for step in 0..STEPS {
            let batch: Vec<&(Vec<f32>, usize)> = (0..BATCH)
                .map(|i| &scans[(step * BATCH + i) % scans.len()])
                .collect();
            let x: Vec<f32> = batch
                .iter()
                .flat_map(|(v, _)| v.iter().map(|v| v * input_scale))
                .collect();
            let y: Vec<i64> = batch.iter().map(|(_, c)| *c as i64).collect();
            let x = Tensor::<4>::from_data(TensorData::new(x, [BATCH, 3, side, side]), &device);
            let y = Tensor::<1, Int>::from_data(TensorData::new(y, [BATCH]), &device);
            let loss = loss_fn.forward(model.forward(x), y);
            losses.push(loss.clone().into_scalar::<f32>());
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(LR, model, grads);
        }
        let mut flat = Flatten(Vec::new());
        model.visit(&mut flat);
        (losses, flat.0)
    })
}

/// Largest per-step relative loss difference and the largest weight difference relative to
/// the largest weight.
fn apart(a: &(Vec<f32>, Vec<f32>), b: &(Vec<f32>, Vec<f32>)) -> (Vec<f32>, f32) {
    let losses =
        a.0.iter()
            .zip(&b.0)
            .map(|(x, y)| (x - y).abs() / y.abs().max(1e-6))
            .collect();
    let scale = b.1.iter().fold(0f32, |m, v| m.max(v.abs()));
    let worst =
        a.1.iter()
            .zip(&b.1)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
    (losses, worst / scale)
}

/// artemis-kernels against burn's kernels, measured against burn against itself with every
/// input value scaled by 1 + 1e-6 and by 1 - 1e-6 (rounding-level noise; the larger gap of
/// the two). MobileNetV2 on batches of 8 is that sensitive: its ReLU6 gates flip on rounding
/// (one flip moves a 3x3 plane's channel gradient by a seventy-second), and burn's own losses
/// part by 1e-2 within 20 steps. So the first `exact_steps` must agree to 1e-3 (MobileNetV2,
/// three steps: measured up to 1.2e-4), later steps and the final weights to within 4x the
/// largest noise gap so far; the reference baseline agrees to 1e-7 throughout. Training must
/// have moved: the loss falls by 5% (`loss_falls`), or else the weights moved at least 10x
/// their gap to burn's.
fn same_training(
    arch: Architecture,
    side: usize,
    scaling: Scaling,
    exact_steps: usize,
    loss_falls: bool,
) {
    let own = train(arch, side, scaling, Kernels::Own, 1.0);
    let burn = train(arch, side, scaling, Kernels::Burn, 1.0);
    let (loss_gap, weight_gap) = apart(&own, &burn);
    // burn against itself with the input scaled by 1 + 1e-6 and by 1 - 1e-6: the larger gap
    // of the two at each step (one draw of chaotic growth is a noisy yardstick).
    let (mut loss_noise, mut weight_noise) = (vec![0f32; STEPS], 0f32);
    for scale in [1.0 + 1e-6, 1.0 - 1e-6] {
        let (l, w) = apart(&train(arch, side, scaling, Kernels::Burn, scale), &burn);
        loss_noise = loss_noise.iter().zip(&l).map(|(a, b)| a.max(*b)).collect();
        weight_noise = weight_noise.max(w);
    }
    let show = |v: &[f32]| {
        v.iter()
            .map(|g| format!("{g:.1e}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    eprintln!(
        "{arch} loss gaps, artemis-kernels vs burn: {}\n{arch} loss gaps, burn vs burn(1 ± 1e-6): {}",
        show(&loss_gap),
        show(&loss_noise)
    );
    eprintln!("{arch} weight gaps: {weight_gap:.2e} (burn vs burn(1 ± 1e-6): {weight_noise:.2e})");
    // The first steps, before rounding noise has grown: within 1e-3 (measured 6.4e-4).
    for (step, gap) in loss_gap.iter().enumerate().take(exact_steps) {
        assert!(
            *gap <= TOL,
            "{arch} step {step}: losses {} and {} are {gap:.2e} apart",
            own.0[step],
            burn.0[step]
        );
    }
    // Afterwards: within 4x the largest gap burn shows against itself up to that step.
    let mut envelope = TOL;
    for (step, (gap, noise)) in loss_gap
        .iter()
        .zip(&loss_noise)
        .enumerate()
        .skip(exact_steps)
    {
        envelope = envelope.max(*noise);
        assert!(
            *gap <= 4.0 * envelope,
            "{arch} step {step}: losses {gap:.2e} apart, beyond 4x burn's own noise ({envelope:.2e})"
        );
    }
    let bound = TOL.max(4.0 * weight_noise);
    assert!(
        weight_gap <= bound,
        "{arch}: final weights {weight_gap:.2e} apart (bound {bound:.2e})"
    );
    // Training moved: a backward pass that left the weights alone would pass the rest.
    let (_, moved) = apart(
        &(Vec::new(), own.1.clone()),
        &(Vec::new(), start_weights(arch, side)),
    );
    eprintln!("{arch} weights moved {moved:.2e} from the start");
    match loss_falls {
        true => assert!(
            own.0[STEPS - 1] < own.0[0] * 0.95,
            "{arch}: the loss did not fall: {:?}",
            own.0
        ),
        false => assert!(
            moved >= 10.0 * weight_gap,
            "{arch}: weights moved {moved:.2e}, not 10x their gap to burn's ({weight_gap:.2e})"
        ),
    }
}

/// One test for the three networks: burn's random generator is global to the backend, so two
/// trainings on parallel test threads would interleave their draws (dropout masks,
/// initialisations) and differ for that reason alone.
///
/// EfficientNet-Lite0's convolutions declare burn's `Same` padding (asymmetric at stride 2 on
/// even sides), which artemis-kernels work out themselves. It amplifies rounding faster than
/// MobileNetV2: burn against itself with the input noise is already 1.9e-3 apart at step 2
/// (MobileNetV2: 2.9e-4) and 6.1e-2 at step 6, so only its first two steps are held to 1e-3
/// (measured 1.0e-5 and 6.6e-4), the rest to the envelope (final weights 2.3e-3 apart against
/// burn's own 4.0e-3). Its loss does not fall in 20 SGD steps at 1e-4 (a fresh 12-class head
/// behind dropout), so it must show that it trained by its weights: they moved 7.2e-2, 31x
/// their gap to burn's.
#[test]
fn mobilenetv2_lite0_and_the_reference_baseline_train_the_same_with_either_kernels() {
    same_training(
        Architecture::MobileNetV2,
        96,
        Scaling::Imagenet,
        EXACT_STEPS,
        true,
    );
    same_training(Architecture::EfficientNetLite0, 96, Scaling::Lite, 2, false);
    same_training(
        Architecture::Baseline,
        150,
        Scaling::Raw255,
        EXACT_STEPS,
        true,
    );
}
