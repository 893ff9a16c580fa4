//! Times whole-network training steps (forward, backward, Adam) of one architecture on a
//! random batch, with the wall time of each phase (forward, backward, Adam). Set
//! `ARTEMIS_KERNELS=burn` for burn's kernels instead of artemis-kernels'.
//! `cargo run --release -p artemis-models --example train_step -- mobilenetv2 160 32 [STEPS]`
use artemis_models::{Architecture, ModelSpec};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{AdamConfig, GradientsParams};
use burn::prelude::*;
use burn::tensor::Distribution;
use std::time::Instant;

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arch: Architecture = args
        .get(1)
        .map_or("mobilenetv2", |s| s.as_str())
        .parse()
        .expect("architecture");
    let side: usize = args.get(2).map_or(160, |s| s.parse().expect("side"));
    let batch: usize = args.get(3).map_or(32, |s| s.parse().expect("batch"));
    let steps: usize = args.get(4).map_or(4, |s| s.parse().expect("steps"));
    let device = Device::flex().autodiff();
    device.seed(0);
    let mut model = ModelSpec::new(arch, 12, (side, side))
        .init(&device)
        .expect("model");
    let mut optim = AdamConfig::new().init();
    let loss_fn = CrossEntropyLossConfig::new().init(&device);
    let x = Tensor::<4>::random(
        [batch, 3, side, side],
        Distribution::Uniform(0.0, 255.0),
        &device,
    );
    let y = Tensor::<1, Int>::from_data(
        TensorData::new(
            (0..batch as i64).map(|i| i % 12).collect::<Vec<_>>(),
            [batch],
        ),
        &device,
    );
    let mut rates = Vec::new();
    for step in 0..steps {
        let t = Instant::now();
        let loss = loss_fn.forward(model.forward(x.clone()), y.clone());
        let _ = loss.clone().into_data();
        let f = t.elapsed().as_secs_f64();
        let grads = loss.backward();
        let b = t.elapsed().as_secs_f64();
        let grads = GradientsParams::from_grads(grads, &model);
        model = optim.step(1e-3, model.clone(), grads);
        let _ = device.sync();
        let s = t.elapsed().as_secs_f64();
        println!(
            "step {step}: forward {f:.3} s, backward {:.3} s, Adam {:.3} s, {:.1} images/s",
            b - f,
            s - b,
            batch as f64 / s
        );
        if step > 0 {
            rates.push(batch as f64 / s);
        }
    }
    rates.sort_by(f64::total_cmp);
    if let Some(m) = rates.get(rates.len() / 2) {
        println!("median after the first step: {m:.1} images/s");
    }
}
