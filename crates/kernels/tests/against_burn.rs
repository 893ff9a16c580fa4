//! The kernels against burn's own implementation and against central finite differences of
//! an independent `f64` reference, on seeded random inputs.
//!
//! The loss is `sum(y * r)` for a fixed random `r`, so every gradient is non-trivial.
//! Tolerance: the largest absolute difference over the largest reference magnitude, at most
//! 1e-4 (measured: about 1e-6 against burn, 1e-6 against finite differences).

use artemis_kernels::{Activation, activate, batch_norm, conv2d_act, conv2d_act_pool, max_pool2d};
use burn::module::Param;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::MaxPool2dConfig;
use burn::nn::{BatchNorm, BatchNormConfig, PaddingConfig2d};
use burn::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const TOL: f64 = 1e-4;

fn random(rng: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

fn tensor<const D: usize>(data: Vec<f32>, shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::from_data(TensorData::new(data, shape), device)
}

fn values<const D: usize>(t: &Tensor<D>) -> Vec<f32> {
    t.to_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .unwrap_or_default()
}

/// Largest absolute difference over the largest magnitude of `want`.
fn rel_err(got: &[f32], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(1e-6f64, |m, v| m.max(v.abs()));
    got.iter()
        .zip(want)
        .map(|(g, w)| (*g as f64 - w).abs())
        .fold(0.0, f64::max)
        / scale
}

fn as_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// One convolution case: input shape, out channels, kernel, stride, padding (t, l, b, r),
/// dilation, groups, bias.
#[derive(Debug, Clone, Copy)]
struct Case {
    x: [usize; 4],
    o: usize,
    k: [usize; 2],
    stride: [usize; 2],
    pad: [usize; 4],
    dilation: [usize; 2],
    groups: usize,
    bias: bool,
    /// Fused after the convolution.
    act: Activation,
    /// The module declares burn's `Same` padding (EfficientNet-Lite's layers); `pad` is then
    /// what it works out to, for the f64 reference.
    same: bool,
}

const fn case(
    x: [usize; 4],
    o: usize,
    k: usize,
    stride: usize,
    pad: [usize; 4],
    groups: usize,
) -> Case {
    Case {
        x,
        o,
        k: [k, k],
        stride: [stride, stride],
        pad,
        dilation: [1, 1],
        groups,
        bias: false,
        act: Activation::Identity,
        same: false,
    }
}

fn cases() -> Vec<Case> {
    let mut v = vec![
        // MobileNetV2's stem: 3x3 stride 2, padding 1, dense.
        case([2, 3, 17, 16], 8, 3, 2, [1, 1, 1, 1], 1),
        // Pointwise expansion and projection.
        case([3, 16, 7, 9], 24, 1, 1, [0, 0, 0, 0], 1),
        // Depthwise 3x3, strides 1 and 2, TensorFlow SAME's asymmetric padding (0, 1).
        case([2, 12, 9, 7], 12, 3, 1, [1, 1, 1, 1], 12),
        case([2, 12, 10, 10], 12, 3, 2, [0, 0, 1, 1], 12),
        // Depthwise 3x3 and 5x5 at stride 1 on wider planes, one with bias, ReLU6 and
        // asymmetric padding.
        case([2, 8, 20, 21], 8, 3, 1, [1, 1, 1, 1], 8),
        case([1, 4, 13, 26], 4, 5, 1, [2, 2, 2, 2], 4),
        Case {
            bias: true,
            act: Activation::Relu6,
            ..case([2, 6, 12, 17], 6, 3, 1, [0, 1, 1, 0], 6)
        },
        // Depthwise 5x5 (EfficientNet-Lite), odd size.
        case([1, 6, 11, 13], 6, 5, 2, [2, 2, 2, 2], 6),
        // Groups in between, and a depthwise multiplier of 2.
        case([2, 8, 8, 6], 12, 3, 1, [1, 0, 1, 2], 2),
        case([2, 4, 6, 6], 8, 3, 1, [1, 1, 1, 1], 4),
        // The reference baseline: valid 2x2 and 3x3 with bias and a fused sigmoid.
        Case {
            bias: true,
            act: Activation::Sigmoid,
            ..case([2, 3, 15, 15], 8, 2, 1, [0, 0, 0, 0], 1)
        },
        Case {
            bias: true,
            act: Activation::Sigmoid,
            ..case([2, 8, 9, 9], 6, 3, 1, [0, 0, 0, 0], 1)
        },
        // Fused ReLU and ReLU6.
        Case {
            act: Activation::Relu,
            ..case([2, 4, 7, 7], 6, 3, 1, [1, 1, 1, 1], 1)
        },
        Case {
            act: Activation::Relu6,
            ..case([2, 6, 7, 7], 6, 3, 2, [1, 1, 1, 1], 6)
        },
        // MobileNetV2's last blocks at 96 px: 3x3 planes, padding 1.
        case([8, 16, 3, 3], 16, 3, 1, [1, 1, 1, 1], 16),
        case([8, 32, 6, 6], 32, 3, 2, [1, 1, 1, 1], 32),
        // Batch 32, and batch 1.
        case([32, 4, 6, 6], 6, 3, 1, [1, 1, 1, 1], 1),
        Case {
            bias: true,
            ..case([32, 6, 6, 5], 6, 3, 2, [1, 1, 1, 1], 6)
        },
        case([1, 5, 5, 5], 7, 1, 1, [0, 0, 0, 0], 1),
        // 1x1 stride 2 (InceptionV3-style reductions are 3x3; this is the general path).
        case([2, 4, 9, 9], 4, 1, 2, [0, 0, 0, 0], 1),
    ];
    // burn's `Same` padding, as EfficientNet-Lite declares it: the stem (3x3 s2 on an even
    // side: one more row and column after), 5x5 depthwise at strides 2 (even and odd sides)
    // and 1, with ReLU6.
    for (x, o, k, s, pad, g) in [
        ([2, 3, 16, 16], 8, 3, 2, [0, 0, 1, 1], 1),
        ([2, 6, 12, 10], 6, 5, 2, [1, 1, 2, 2], 6),
        ([2, 6, 11, 9], 6, 5, 2, [2, 2, 2, 2], 6),
        ([2, 6, 9, 9], 6, 5, 1, [2, 2, 2, 2], 6),
    ] {
        v.push(Case {
            same: true,
            act: Activation::Relu6,
            ..case(x, o, k, s, pad, g)
        });
    }
    // Dilation 2, dense and depthwise; non-square kernel.
    v.push(Case {
        dilation: [2, 2],
        ..case([2, 4, 11, 10], 5, 3, 1, [2, 2, 2, 2], 1)
    });
    v.push(Case {
        dilation: [2, 1],
        ..case([2, 6, 11, 10], 6, 3, 1, [2, 1, 2, 1], 6)
    });
    v.push(Case {
        k: [1, 3],
        ..case([2, 4, 7, 7], 4, 1, 1, [0, 1, 0, 1], 1)
    });
    v
}

fn conv_module(c: &Case, rng: &mut StdRng, device: &Device) -> Conv2d {
    let [t, l, b, r] = c.pad;
    let mut conv = Conv2dConfig::new([c.x[1], c.o], c.k)
        .with_stride(c.stride)
        .with_dilation(c.dilation)
        .with_groups(c.groups)
        .with_padding(match c.same {
            true => PaddingConfig2d::Same,
            false => PaddingConfig2d::Explicit(t, l, b, r),
        })
        .with_bias(c.bias)
        .init(device);
    let shape = conv.weight.dims();
    conv.weight = Param::from_tensor(tensor(random(rng, shape.iter().product()), shape, device));
    if c.bias {
        conv.bias = Some(Param::from_tensor(tensor(random(rng, c.o), [c.o], device)));
    }
    conv
}

/// Output, dx, dw and db of `sum(f(x) * r)`.
fn conv_grads(
    conv: &Conv2d,
    x: &[f32],
    c: &Case,
    r: &[f32],
    own: bool,
    device: &Device,
) -> [Vec<f32>; 4] {
    let xt = tensor(x.to_vec(), c.x, device).require_grad();
    let y = if own {
        conv2d_act(conv, xt.clone(), c.act)
    } else {
        activate(conv.forward(xt.clone()), c.act)
    };
    let rt = tensor(r.to_vec(), y.dims(), device);
    let grads = (y.clone() * rt).sum().backward();
    let grad = |t: Option<Tensor<4>>| t.map(|t| values(&t)).unwrap_or_default();
    let db = conv
        .bias
        .as_ref()
        .and_then(|b| b.grad(&grads))
        .map(|t| values(&t))
        .unwrap_or_default();
    [
        values(&y),
        grad(xt.grad(&grads)),
        grad(conv.weight.grad(&grads)),
        db,
    ]
}

#[test]
fn convolutions_match_burn_forward_and_gradients() {
    let device = Device::flex().autodiff();
    let mut rng = StdRng::seed_from_u64(7);
    for c in cases() {
        let conv = conv_module(&c, &mut rng, &device);
        let x = random(&mut rng, c.x.iter().product());
        let out_dims = conv.forward(tensor(x.clone(), c.x, &device)).dims();
        let r = random(&mut rng, out_dims.iter().product());
        let ours = conv_grads(&conv, &x, &c, &r, true, &device);
        let burn = conv_grads(&conv, &x, &c, &r, false, &device);
        for (name, (o, b)) in ["y", "dx", "dw", "db"].iter().zip(ours.iter().zip(&burn)) {
            let e = rel_err(o, &as_f64(b));
            assert!(e <= TOL, "{c:?}: {name} differs from burn by {e:.2e}");
        }
    }
}

/// The f64 reference convolution (direct loops), NCHW.
fn conv_f64(c: &Case, x: &[f64], w: &[f64], b: Option<&[f64]>) -> (Vec<f64>, [usize; 4]) {
    let [n, ci, h, wd] = c.x;
    let [t, l, bo, r] = c.pad;
    let (kh, kw, cg, og) = (c.k[0], c.k[1], ci / c.groups, c.o / c.groups);
    let oh = (h + t + bo - c.dilation[0] * (kh - 1) - 1) / c.stride[0] + 1;
    let ow = (wd + l + r - c.dilation[1] * (kw - 1) - 1) / c.stride[1] + 1;
    let mut y = vec![0.0; n * c.o * oh * ow];
    for (i, oc, oy, ox) in itertools(n, c.o, oh, ow) {
        let g = oc / og;
        let mut acc = b.map_or(0.0, |b| b[oc]);
        for cc in 0..cg {
            for ky in 0..kh {
                for kx in 0..kw {
                    let iy = (oy * c.stride[0] + ky * c.dilation[0]) as isize - t as isize;
                    let ix = (ox * c.stride[1] + kx * c.dilation[1]) as isize - l as isize;
                    if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                        continue;
                    }
                    let xi = ((i * ci + g * cg + cc) * h + iy as usize) * wd + ix as usize;
                    acc += x[xi] * w[((oc * cg + cc) * kh + ky) * kw + kx];
                }
            }
        }
        y[((i * c.o + oc) * oh + oy) * ow + ox] = act_f64(c.act, acc);
    }
    (y, [n, c.o, oh, ow])
}

fn act_f64(act: Activation, z: f64) -> f64 {
    match act {
        Activation::Identity => z,
        Activation::Relu => z.max(0.0),
        Activation::Relu6 => z.clamp(0.0, 6.0),
        Activation::Sigmoid => 1.0 / (1.0 + (-z).exp()),
    }
}

fn itertools(
    a: usize,
    b: usize,
    c: usize,
    d: usize,
) -> impl Iterator<Item = (usize, usize, usize, usize)> {
    (0..a).flat_map(move |i| {
        (0..b).flat_map(move |j| (0..c).flat_map(move |k| (0..d).map(move |l| (i, j, k, l))))
    })
}

/// Central differences of `loss` at up to `samples` evenly spaced entries of `v`.
fn finite_diff(v: &[f64], samples: usize, loss: impl Fn(&[f64]) -> f64) -> Vec<(usize, f64)> {
    // Small enough that a step almost never crosses a ReLU kink; f64 keeps it exact enough.
    let h = 1e-6;
    let step = (v.len() / samples).max(1);
    (0..v.len())
        .step_by(step)
        .map(|i| {
            let mut p = v.to_vec();
            p[i] += h;
            let up = loss(&p);
            p[i] -= 2.0 * h;
            (i, (up - loss(&p)) / (2.0 * h))
        })
        .collect()
}

fn check_fd(name: &str, analytic: &[f32], fd: &[(usize, f64)]) {
    let got: Vec<f32> = fd.iter().map(|&(i, _)| analytic[i]).collect();
    let want: Vec<f64> = fd.iter().map(|&(_, g)| g).collect();
    let e = rel_err(&got, &want);
    assert!(
        e <= TOL,
        "{name}: analytic gradient differs from finite differences by {e:.2e}"
    );
}

#[test]
fn convolution_gradients_match_finite_differences() {
    let device = Device::flex().autodiff();
    let mut rng = StdRng::seed_from_u64(11);
    for c in cases().into_iter().filter(|c| c.x[0] <= 3) {
        let conv = conv_module(&c, &mut rng, &device);
        let x = random(&mut rng, c.x.iter().product());
        let (w, b) = (
            values(&conv.weight.val()),
            conv.bias.as_ref().map(|b| values(&b.val())),
        );
        let (x64, w64, b64) = (as_f64(&x), as_f64(&w), b.as_deref().map(as_f64));
        let (y64, dims) = conv_f64(&c, &x64, &w64, b64.as_deref());
        let r = random(&mut rng, dims.iter().product());
        let [y, dx, dw, db] = conv_grads(&conv, &x, &c, &r, true, &device);
        assert!(
            rel_err(&y, &y64) <= TOL,
            "{c:?}: forward differs from the f64 reference"
        );
        let loss = |y: &[f64]| y.iter().zip(&r).map(|(y, r)| y * *r as f64).sum::<f64>();
        check_fd(
            &format!("{c:?}: dx"),
            &dx,
            &finite_diff(&x64, 40, |x| loss(&conv_f64(&c, x, &w64, b64.as_deref()).0)),
        );
        check_fd(
            &format!("{c:?}: dw"),
            &dw,
            &finite_diff(&w64, 40, |w| loss(&conv_f64(&c, &x64, w, b64.as_deref()).0)),
        );
        if let Some(b64) = &b64 {
            check_fd(
                &format!("{c:?}: db"),
                &db,
                &finite_diff(b64, 40, |b| loss(&conv_f64(&c, &x64, &w64, Some(b)).0)),
            );
        }
    }
}

fn bn_module(ch: usize, rng: &mut StdRng, device: &Device) -> BatchNorm {
    let mut bn = BatchNormConfig::new(ch).with_epsilon(1e-5).init(device);
    let gamma: Vec<f32> = random(rng, ch).iter().map(|v| 1.0 + 0.5 * v).collect();
    bn.gamma = Param::from_tensor(tensor(gamma, [ch], device));
    bn.beta = Param::from_tensor(tensor(random(rng, ch), [ch], device));
    bn
}

/// Output, dx, dgamma, dbeta and the updated running mean and variance.
fn bn_grads(
    bn: &BatchNorm,
    x: &[f32],
    shape: [usize; 4],
    r: &[f32],
    act: Activation,
    own: bool,
) -> [Vec<f32>; 6] {
    let device = Device::flex().autodiff();
    let xt = tensor(x.to_vec(), shape, &device).require_grad();
    let y = if own {
        batch_norm(bn, xt.clone(), act)
    } else {
        activate(bn.forward(xt.clone()), act)
    };
    let grads = (y.clone() * tensor(r.to_vec(), shape, &device))
        .sum()
        .backward();
    let g = |t: Option<Tensor<1>>| t.map(|t| values(&t)).unwrap_or_default();
    [
        values(&y),
        xt.grad(&grads).map(|t| values(&t)).unwrap_or_default(),
        g(bn.gamma.grad(&grads)),
        g(bn.beta.grad(&grads)),
        values(&bn.running_mean.value()),
        values(&bn.running_var.value()),
    ]
}

#[test]
fn batch_norm_matches_burn_with_each_activation() {
    let device = Device::flex().autodiff();
    let mut rng = StdRng::seed_from_u64(3);
    for (shape, act) in [
        ([4, 5, 6, 7], Activation::Identity),
        ([2, 8, 5, 5], Activation::Relu),
        ([32, 3, 4, 4], Activation::Relu6),
        ([1, 6, 9, 3], Activation::Relu6),
        ([2, 4, 5, 5], Activation::Sigmoid),
        ([8, 16, 3, 3], Activation::Relu6),
    ] {
        let ch = shape[1];
        let seed: u64 = rng.random();
        let ours_bn = bn_module(ch, &mut StdRng::seed_from_u64(seed), &device);
        let burn_bn = bn_module(ch, &mut StdRng::seed_from_u64(seed), &device);
        // Inputs with an offset and a spread per channel, scaled into ReLU6's clipping range.
        let x: Vec<f32> = random(&mut rng, shape.iter().product())
            .iter()
            .map(|v| 3.0 * v + 1.0)
            .collect();
        let r = random(&mut rng, x.len());
        let ours = bn_grads(&ours_bn, &x, shape, &r, act, true);
        let burn = bn_grads(&burn_bn, &x, shape, &r, act, false);
        for (name, (o, b)) in ["y", "dx", "dgamma", "dbeta", "running mean", "running var"]
            .iter()
            .zip(ours.iter().zip(&burn))
        {
            let e = rel_err(o, &as_f64(b));
            assert!(
                e <= TOL,
                "{shape:?} {act:?}: {name} differs from burn by {e:.2e}"
            );
        }
    }
}

/// The f64 reference BatchNorm (biased batch variance) and activation.
fn bn_f64(shape: [usize; 4], x: &[f64], gamma: &[f64], beta: &[f64], act: Activation) -> Vec<f64> {
    let [n, c, h, w] = shape;
    let plane = h * w;
    let mut y = vec![0.0; x.len()];
    for ch in 0..c {
        let idx = |i: usize, p: usize| (i * c + ch) * plane + p;
        let all: Vec<usize> = (0..n)
            .flat_map(|i| (0..plane).map(move |p| idx(i, p)))
            .collect();
        let mean = all.iter().map(|&k| x[k]).sum::<f64>() / all.len() as f64;
        let var = all.iter().map(|&k| (x[k] - mean).powi(2)).sum::<f64>() / all.len() as f64;
        for &k in &all {
            y[k] = act_f64(
                act,
                (x[k] - mean) / (var + 1e-5).sqrt() * gamma[ch] + beta[ch],
            );
        }
    }
    y
}

#[test]
fn batch_norm_gradients_match_finite_differences() {
    let device = Device::flex().autodiff();
    let mut rng = StdRng::seed_from_u64(5);
    for act in [
        Activation::Identity,
        Activation::Relu,
        Activation::Relu6,
        Activation::Sigmoid,
    ] {
        let shape = [3, 4, 5, 3];
        let bn = bn_module(shape[1], &mut rng, &device);
        let x: Vec<f32> = random(&mut rng, shape.iter().product())
            .iter()
            .map(|v| 3.0 * v + 1.0)
            .collect();
        let r = random(&mut rng, x.len());
        let (gamma, beta) = (
            as_f64(&values(&bn.gamma.val())),
            as_f64(&values(&bn.beta.val())),
        );
        let [y, dx, dgamma, dbeta, ..] = bn_grads(&bn, &x, shape, &r, act, true);
        let x64 = as_f64(&x);
        assert!(rel_err(&y, &bn_f64(shape, &x64, &gamma, &beta, act)) <= TOL);
        let loss = |y: Vec<f64>| y.iter().zip(&r).map(|(y, r)| y * *r as f64).sum::<f64>();
        // Entries right at a clipping edge have no derivative; random data never lands on one.
        check_fd(
            &format!("{act:?}: dx"),
            &dx,
            &finite_diff(&x64, 60, |x| loss(bn_f64(shape, x, &gamma, &beta, act))),
        );
        check_fd(
            "dgamma",
            &dgamma,
            &finite_diff(&gamma, 4, |g| loss(bn_f64(shape, &x64, g, &beta, act))),
        );
        check_fd(
            "dbeta",
            &dbeta,
            &finite_diff(&beta, 4, |b| loss(bn_f64(shape, &x64, &gamma, b, act))),
        );
    }
}

#[test]
fn max_pooling_matches_burn() {
    let device = Device::flex().autodiff();
    let mut rng = StdRng::seed_from_u64(13);
    for (shape, k, s) in [
        ([2, 3, 9, 8], 2, 2),
        ([32, 4, 7, 7], 2, 2),
        ([1, 2, 9, 9], 3, 2),
        ([2, 2, 6, 5], 2, 1),
    ] {
        let pool = MaxPool2dConfig::new([k, k]).with_strides([s, s]).init();
        let x = random(&mut rng, shape.iter().product());
        let run = |own: bool| {
            let xt = tensor(x.clone(), shape, &device).require_grad();
            let y = if own {
                max_pool2d(&pool, xt.clone())
            } else {
                pool.forward(xt.clone())
            };
            let r = tensor(
                (0..y.dims().iter().product())
                    .map(|i| (i % 7) as f32 - 3.0)
                    .collect(),
                y.dims(),
                &device,
            );
            let grads = (y.clone() * r).sum().backward();
            [
                values(&y),
                xt.grad(&grads).map(|t| values(&t)).unwrap_or_default(),
            ]
        };
        let (ours, burn) = (run(true), run(false));
        assert_eq!(
            ours, burn,
            "{shape:?} k{k} s{s}: max-pooling differs from burn"
        );
    }
}

/// Output, dx (empty when `x` is not tracked), dw and db of `sum(pool(act(conv(x))) * r)`.
fn conv_pool_grads(
    (conv, pool): (&Conv2d, &burn::nn::pool::MaxPool2d),
    (x, track_x): (&[f32], bool),
    c: &Case,
    own: bool,
    device: &Device,
) -> [Vec<f32>; 4] {
    let mut xt = tensor(x.to_vec(), c.x, device);
    if track_x {
        xt = xt.require_grad();
    }
    let y = if own {
        conv2d_act_pool(conv, c.act, pool, xt.clone())
    } else {
        pool.forward(activate(conv.forward(xt.clone()), c.act))
    };
    let r = tensor(
        (0..y.dims().iter().product())
            .map(|i| ((i * 7919) % 13) as f32 / 6.0 - 1.0)
            .collect(),
        y.dims(),
        device,
    );
    let grads = (y.clone() * r).sum().backward();
    let grad = |t: Option<Tensor<4>>| t.map(|t| values(&t)).unwrap_or_default();
    let db = conv.bias.as_ref().and_then(|b| b.grad(&grads));
    [
        values(&y),
        grad(xt.grad(&grads)),
        grad(conv.weight.grad(&grads)),
        db.map(|t| values(&t)).unwrap_or_default(),
    ]
}

#[test]
fn fused_convolution_and_pooling_match_burn() {
    let device = Device::flex().autodiff();
    let mut rng = StdRng::seed_from_u64(17);
    let baseline = |x, o, k| Case {
        bias: true,
        act: Activation::Sigmoid,
        ..case(x, o, k, 1, [0, 0, 0, 0], 1)
    };
    // (case, pool kernel, pool stride, whether x is tracked)
    for (c, pk, ps, track_x) in [
        // The reference baseline's blocks: odd maps (the last row and column are dropped).
        (baseline([2, 3, 16, 16], 8, 2), 2, 2, false),
        (baseline([3, 8, 11, 11], 6, 3), 2, 2, true),
        (baseline([32, 4, 9, 9], 5, 3), 2, 2, true),
        // Overlapping windows, ReLU and ReLU6, padding, stride, groups, no bias.
        (
            Case {
                act: Activation::Relu,
                ..case([2, 4, 9, 9], 6, 3, 1, [1, 1, 1, 1], 2)
            },
            3,
            2,
            true,
        ),
        (
            Case {
                act: Activation::Relu6,
                ..case([1, 3, 12, 10], 4, 3, 2, [1, 0, 1, 2], 1)
            },
            2,
            1,
            true,
        ),
        (case([2, 5, 8, 8], 5, 1, 1, [0, 0, 0, 0], 1), 2, 2, true),
    ] {
        let conv = conv_module(&c, &mut rng, &device);
        let pool = MaxPool2dConfig::new([pk, pk]).with_strides([ps, ps]).init();
        let x: Vec<f32> = random(&mut rng, c.x.iter().product())
            .iter()
            .map(|v| 3.0 * v)
            .collect();
        let run = |own| conv_pool_grads((&conv, &pool), (&x, track_x), &c, own, &device);
        let (ours, burn) = (run(true), run(false));
        for (name, (o, b)) in ["y", "dx", "dw", "db"].iter().zip(ours.iter().zip(&burn)) {
            let e = rel_err(o, &as_f64(b));
            assert!(
                e <= TOL,
                "{c:?} pool {pk}/{ps}: {name} differs from burn by {e:.2e}"
            );
        }
        assert_eq!(
            ours[1].is_empty(),
            !track_x,
            "{c:?}: dx only when x is tracked"
        );
    }
}

#[test]
fn other_devices_keep_burns_path() {
    // Inference device: the module's own forward, bit for bit.
    let device = Device::flex();
    let mut rng = StdRng::seed_from_u64(9);
    let c = case([2, 4, 8, 8], 4, 3, 1, [1, 1, 1, 1], 4);
    let conv = conv_module(&c, &mut rng, &device);
    let x = tensor(random(&mut rng, 2 * 4 * 64), c.x, &device);
    assert_eq!(
        values(&artemis_kernels::conv2d(&conv, x.clone())),
        values(&conv.forward(x.clone()))
    );
    let bn = bn_module(4, &mut rng, &device);
    assert_eq!(
        values(&batch_norm(&bn, x.clone(), Activation::Relu6)),
        values(&bn.forward(x).clamp(0.0, 6.0))
    );
}
