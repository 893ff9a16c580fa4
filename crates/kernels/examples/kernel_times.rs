//! Times this crate's kernels against burn's on MobileNetV2's layer shapes at 160 px, batch
//! 32 (forward on burn-flex, and forward + backward on the autodiff device), then the
//! reference baseline's convolution + sigmoid and pooling layers at 150 px. Medians of 5.
//! `cargo run --release -p artemis-kernels --example kernel_times`
use artemis_kernels::{Activation, batch_norm, conv2d, conv2d_act, max_pool2d};
use burn::nn::conv::Conv2dConfig;
use burn::nn::pool::MaxPool2dConfig;
use burn::nn::{BatchNormConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::Distribution;
use std::time::Instant;

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn median_ms(mut f: impl FnMut()) -> f64 {
    f();
    let mut v: Vec<f64> = (0..5)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    v.sort_by(f64::total_cmp);
    v[2]
}

/// Times forward + backward (of the sum) with this crate's kernel and with burn's, and prints
/// a row: both times and burn's over ours.
fn row(label: String, ours: impl Fn() -> Tensor<4>, burn: impl Fn() -> Tensor<4>) {
    let time = |f: &dyn Fn() -> Tensor<4>| {
        median_ms(|| {
            let _ = f().sum().backward();
        })
    };
    let (o, r) = (time(&ours), time(&burn));
    println!("{label:<34} {o:>10.1} {r:>10.1} {:>7.2}x", r / o);
}

fn main() {
    let ad = Device::flex().autodiff();
    let b = 32;
    println!(
        "{:<34} {:>10} {:>10} {:>8}",
        "layer (fwd + bwd, autodiff)", "ours ms", "burn ms", "ratio"
    );
    // (channels in, out, kernel, stride, groups, side)
    for (cin, cout, k, s, groups, side) in [
        (3, 32, 3, 2, 1, 160),
        (32, 32, 3, 1, 32, 80),
        (96, 96, 3, 2, 96, 80),
        (144, 144, 3, 1, 144, 40),
        (192, 192, 3, 1, 192, 20),
        (576, 576, 3, 1, 576, 10),
        (576, 576, 3, 2, 576, 10),
        (960, 960, 3, 1, 960, 5),
        (32, 16, 1, 1, 1, 80),
        (16, 96, 1, 1, 1, 80),
        (144, 24, 1, 1, 1, 40),
    ] {
        let p = (k - 1) / 2;
        let conv = Conv2dConfig::new([cin, cout], [k, k])
            .with_stride([s, s])
            .with_groups(groups)
            .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
            .with_bias(false)
            .init(&ad);
        let x =
            Tensor::<4>::random([b, cin, side, side], Distribution::Default, &ad).require_grad();
        row(
            format!("conv {cin}->{cout} k{k} s{s} g{groups} @{side}"),
            || conv2d(&conv, x.clone()),
            || conv.forward(x.clone()),
        );
    }
    for (c, side) in [(32, 80), (96, 80), (144, 40), (576, 10)] {
        let bn = BatchNormConfig::new(c).init(&ad);
        let x = Tensor::<4>::random([b, c, side, side], Distribution::Default, &ad).require_grad();
        row(
            format!("batchnorm+relu6 {c} @{side}"),
            || batch_norm(&bn, x.clone(), Activation::Relu6),
            || bn.forward(x.clone()).clamp(0.0, 6.0),
        );
    }
    baseline_layers(&ad, b);
}

/// The reference baseline's layers at 150 px: valid convolutions fused with the sigmoid, and
/// 2x2 max-pooling.
fn baseline_layers(ad: &Device, b: usize) {
    // (channels in, out, kernel, side)
    for (cin, cout, k, side) in [
        (3, 32, 2, 150),
        (32, 64, 3, 74),
        (64, 32, 3, 36),
        (32, 32, 3, 17),
    ] {
        let conv = Conv2dConfig::new([cin, cout], [k, k])
            .with_padding(PaddingConfig2d::Valid)
            .init(ad);
        let x = Tensor::<4>::random([b, cin, side, side], Distribution::Default, ad).require_grad();
        row(
            format!("conv+sigmoid {cin}->{cout} k{k} @{side}"),
            || conv2d_act(&conv, x.clone(), Activation::Sigmoid),
            || burn::tensor::activation::sigmoid(conv.forward(x.clone())),
        );
    }
    let pool = MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init();
    for (c, side) in [(32, 149), (64, 72), (32, 34)] {
        let x = Tensor::<4>::random([b, c, side, side], Distribution::Default, ad).require_grad();
        row(
            format!("maxpool 2x2 {c} @{side}"),
            || max_pool2d(&pool, x.clone()),
            || pool.forward(x.clone()),
        );
    }
}
