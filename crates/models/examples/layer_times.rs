//! Times the baseline's layers (forward and backward) on the flex backend, to see where a
//! training step goes. `cargo run --release -p artemis-models --example layer_times`
use burn::nn::conv::Conv2dConfig;
use burn::nn::pool::MaxPool2dConfig;
use burn::prelude::*;
use burn::tensor::Distribution;
use burn::tensor::activation::{relu, sigmoid};
use std::time::Instant;

fn time<F: FnMut()>(name: &str, mut f: F) {
    f();
    let t = Instant::now();
    let n = 3;
    for _ in 0..n {
        f();
    }
    println!(
        "{name:<40} {:>8.1} ms",
        t.elapsed().as_secs_f64() * 1000.0 / n as f64
    );
}

fn main() {
    let b = 32;
    let plain = Device::flex();
    let ad = Device::flex().autodiff();
    for (cin, cout, k, side) in [(3, 32, 2, 150), (32, 64, 3, 74), (64, 32, 3, 36)] {
        let conv = Conv2dConfig::new([cin, cout], [k, k]).init(&plain);
        let x = Tensor::<4>::random([b, cin, side, side], Distribution::Default, &plain);
        time(&format!("conv {cin}->{cout} k{k} @{side} fwd"), || {
            let _ = conv.forward(x.clone()).into_data();
        });
        let conv_ad = Conv2dConfig::new([cin, cout], [k, k]).init(&ad);
        let xa = Tensor::<4>::random([b, cin, side, side], Distribution::Default, &ad);
        time(&format!("conv {cin}->{cout} k{k} @{side} fwd+bwd"), || {
            let y = conv_ad.forward(xa.clone());
            let _ = y.sum().backward();
        });
        let y = conv.forward(x.clone());
        time(&format!("  sigmoid on {:?}", y.dims()), || {
            let _ = sigmoid(y.clone()).into_data();
        });
        time(&format!("  1/(1+exp(-x)) on {:?}", y.dims()), || {
            let _ = y.clone().neg().exp().add_scalar(1.0).recip().into_data();
        });
        time(&format!("  relu on {:?}", y.dims()), || {
            let _ = relu(y.clone()).into_data();
        });
        let pool = MaxPool2dConfig::new([2, 2]).init();
        time(&format!("  maxpool on {:?}", y.dims()), || {
            let _ = pool.forward(y.clone()).into_data();
        });
        // Each backward consumes its graph, so the forward is repeated inside the timing.
        time(
            &format!("  conv+sigmoid+pool fwd+bwd {:?}", y.dims()),
            || {
                let ya = conv_ad.forward(xa.clone());
                let _ = pool.forward(sigmoid(ya)).sum().backward();
            },
        );
        time(&format!("  conv+relu+pool fwd+bwd {:?}", y.dims()), || {
            let ya = conv_ad.forward(xa.clone());
            let _ = pool.forward(relu(ya)).sum().backward();
        });
    }
}
