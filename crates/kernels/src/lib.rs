//! CPU training kernels for artemis's networks, plugged into burn 0.22 as backend-extension
//! operations with backward passes of their own.
//!
//! burn-flex (burn's CPU backend) implements no convolution backward: autodiff falls back to
//! `conv_transpose2d` (a serial loop over images and groups of small GEMMs) for the input
//! gradient and to one `conv2d` plus one `slice_assign` per group for a grouped weight
//! gradient, and BatchNorm in training is about ten unfused tensor operations. This crate
//! replaces those on the CPU:
//!
//! - [`conv2d`]: dense/grouped convolution (im2col + GEMM per image, parallel over the batch)
//!   and depthwise convolution (direct loops parallel over `(image, channel)` planes), forward
//!   and both gradients;
//! - [`batch_norm`]: BatchNorm with batch statistics fused with ReLU/ReLU6, forward and
//!   backward in two passes each.
//!
//! Both take burn's own modules (`Conv2d`, `BatchNorm`), so weights, records and checkpoints
//! are unchanged. They run only for `f32` tensors on the autodiff-over-Flex device (training
//! on the CPU); on any other device, and when `ARTEMIS_KERNELS=burn` is set, they call burn's
//! modules exactly as before. Results are deterministic for a given thread count.
//!
//! Layout: NCHW throughout, as burn's modules hold their tensors, so no transposing copy is
//! made on the way in or out.

mod act;
mod backend;
mod batchnorm;
mod conv;
mod conv_pool;
mod depthwise;
mod dw_blocked;
mod fresh;
mod gemm;
mod geom;
mod lanes;
mod pool;
mod simd;

pub use act::Activation;
pub use backend::{BnOut, ConvSpec, PoolSpec, TrainKernels};
pub use geom::ConvGeom;

use burn::backend::{Dispatch, DispatchDevice};
use burn::nn::conv::Conv2d;
use burn::nn::pool::MaxPool2d;
use burn::nn::{BatchNorm, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::DType;
use burn::tensor::activation::{relu, sigmoid};
use std::cell::Cell;
use std::sync::OnceLock;

/// Which implementation the training layers use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernels {
    /// This crate's kernels on the CPU training device, burn's elsewhere (the default).
    Own,
    /// burn's kernels everywhere (`ARTEMIS_KERNELS=burn`): the reference they are tested
    /// and benchmarked against.
    Burn,
}

impl Kernels {
    /// The choice on this thread: the one [`with_kernels`] set, else the process's
    /// (`ARTEMIS_KERNELS=burn` selects burn's kernels).
    pub fn current() -> Kernels {
        static CHOICE: OnceLock<Kernels> = OnceLock::new();
        let process = || {
            *CHOICE.get_or_init(|| match std::env::var("ARTEMIS_KERNELS").as_deref() {
                Ok("burn") => Kernels::Burn,
                _ => Kernels::Own,
            })
        };
        OVERRIDE.with(Cell::get).unwrap_or_else(process)
    }
}

thread_local! {
    static OVERRIDE: Cell<Option<Kernels>> = const { Cell::new(None) };
}

/// Runs `f` with `kernels` for the layers this thread runs (the choice is made when a layer
/// runs forward, so the backward pass follows it): how tests and benchmarks compare the two
/// in one process.
pub fn with_kernels<R>(kernels: Kernels, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<Kernels>);
    impl Drop for Restore {
        fn drop(&mut self) {
            OVERRIDE.with(|o| o.set(self.0));
        }
    }
    let _restore = Restore(OVERRIDE.with(|o| o.replace(Some(kernels))));
    f()
}

/// Whether a tensor goes to this crate's kernels: f32 on the autodiff-over-Flex device.
fn routes<const D: usize>(x: &Tensor<D>) -> bool {
    if Kernels::current() == Kernels::Burn || x.dtype() != DType::F32 {
        return false;
    }
    match x.device().as_dispatch() {
        DispatchDevice::Autodiff(inner) => matches!(**inner, DispatchDevice::Flex(_)),
        _ => false,
    }
}

/// `conv.forward(x)`, through this crate's kernels on the CPU training device.
///
/// # Shapes
/// `[n, c, h, w]` -> `[n, o, oh, ow]` (burn's `Conv2d` rules, padding included).
pub fn conv2d(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    conv2d_act(conv, x, Activation::Identity)
}

/// `act(conv.forward(x))`, the activation fused into the convolution on the CPU training
/// device (the reference baseline's convolution + sigmoid).
pub fn conv2d_act(conv: &Conv2d, x: Tensor<4>, act: Activation) -> Tensor<4> {
    if !routes(&x) {
        return activate(conv.forward(x), act);
    }
    let [_, _, h, w] = x.dims();
    let spec = conv_spec(conv, [h, w]);
    let weight = conv.weight.val();
    if spec.geom(x.dims(), weight.dims()).is_none() {
        return activate(conv.forward(x), act); // burn reports the shape error
    }
    let (x, weight) = (x.into_dispatch(), weight.into_dispatch());
    let y = match &conv.bias {
        Some(b) => <Dispatch as TrainKernels>::kernel_conv2d_bias(
            x,
            weight,
            b.val().into_dispatch(),
            spec,
            act,
        ),
        None => <Dispatch as TrainKernels>::kernel_conv2d(x, weight, spec, act),
    };
    Tensor::from_dispatch(y)
}

/// `act(bn.forward(x))`, fused through this crate's kernels when `bn` trains on the CPU
/// training device. The running statistics are updated exactly as burn's `BatchNorm` does.
///
/// # Shapes
/// `[n, c, h, w]` -> `[n, c, h, w]`.
pub fn batch_norm(bn: &BatchNorm, x: Tensor<4>, act: Activation) -> Tensor<4> {
    if !(routes(&x) && bn.training.is_enabled()) {
        return activate(bn.forward(x), act);
    }
    let device = x.device();
    let out = <Dispatch as TrainKernels>::kernel_batch_norm(
        x.into_dispatch(),
        bn.gamma.val().into_dispatch(),
        bn.beta.val().into_dispatch(),
        bn.epsilon,
        act,
    );
    let (mean, var) = (
        Tensor::<1>::from_dispatch(out.mean),
        Tensor::<1>::from_dispatch(out.var),
    );
    let m = bn.momentum;
    let running_mean = bn.running_mean.value_sync().to_device(&device);
    let running_var = bn.running_var.value_sync().to_device(&device);
    bn.running_mean.update(
        running_mean
            .mul_scalar(1.0 - m)
            .add(mean.detach().mul_scalar(m))
            .detach(),
    );
    bn.running_var.update(
        running_var
            .mul_scalar(1.0 - m)
            .add(var.detach().mul_scalar(m))
            .detach(),
    );
    Tensor::from_dispatch(out.y)
}

/// The activation with burn's operations (what [`batch_norm`] fuses).
pub fn activate<const D: usize>(x: Tensor<D>, act: Activation) -> Tensor<D> {
    match act {
        Activation::Identity => x,
        Activation::Relu => relu(x),
        Activation::Relu6 => x.clamp(0.0, 6.0),
        Activation::Sigmoid => sigmoid(x),
    }
}

/// `pool.forward(act(conv.forward(x)))`, as one fused operation on the CPU training device
/// when the pool has no padding or dilation (the reference baseline's blocks): the full-size
/// activation map is never stored (see the `conv_pool` module).
///
/// # Shapes
/// `[n, c, h, w]` -> `[n, o, poh, pow]`.
pub fn conv2d_act_pool(
    conv: &Conv2d,
    act: Activation,
    pool: &MaxPool2d,
    x: Tensor<4>,
) -> Tensor<4> {
    let unfused = |x| max_pool2d(pool, conv2d_act(conv, x, act));
    let [_, _, h, w] = x.dims();
    let spec = conv_spec(conv, [h, w]);
    let Some(pool_spec) = pool_spec(pool) else {
        return unfused(x);
    };
    let weight = conv.weight.val();
    let Some(g) = spec.geom(x.dims(), weight.dims()) else {
        return unfused(x);
    };
    if !routes(&x) || pool_spec.geom([g.oh, g.ow]).is_none() {
        return unfused(x);
    }
    let bias = match &conv.bias {
        Some(b) => b.val(),
        None => Tensor::zeros([g.o], &x.device()),
    };
    Tensor::from_dispatch(<Dispatch as TrainKernels>::kernel_conv2d_pool(
        x.into_dispatch(),
        weight.into_dispatch(),
        bias.into_dispatch(),
        spec,
        act,
        pool_spec,
    ))
}

/// A convolution's stride, padding, dilation and groups on an `[h, w]` input. burn's `Same`
/// padding becomes the explicit `(before, after)` pair its `Conv2d` computes for that input
/// size (TensorFlow's SAME: the odd pixel of padding goes after, as EfficientNet-Lite's
/// stride-2 layers need).
fn conv_spec(conv: &Conv2d, [h, w]: [usize; 2]) -> ConvSpec {
    let (rows, cols) = match conv.padding {
        PaddingConfig2d::Valid => ((0, 0), (0, 0)),
        PaddingConfig2d::Explicit(top, left, bottom, right) => ((top, bottom), (left, right)),
        PaddingConfig2d::Same => {
            let [kh, kw] = conv.kernel_size;
            let [sh, sw] = conv.stride;
            (same_padding(kh, sh, h), same_padding(kw, sw, w))
        }
    };
    ConvSpec {
        stride: conv.stride,
        pad: [rows, cols],
        dilation: conv.dilation,
        groups: conv.groups,
    }
}

/// `(before, after)` padding of a side of `size` for an output of `ceil(size / stride)`, as
/// burn's `PaddingConfig2d::Same` computes it (the kernel's size without dilation, as burn's).
fn same_padding(kernel: usize, stride: usize, size: usize) -> (usize, usize) {
    let out = size.div_ceil(stride.max(1));
    let total = match out {
        0 => 0,
        _ => ((out - 1) * stride + kernel).saturating_sub(size),
    };
    (total / 2, total - total / 2)
}

/// A pool's window when it has no padding or dilation and floors its output size.
fn pool_spec(pool: &MaxPool2d) -> Option<PoolSpec> {
    let plain = matches!(pool.padding, PaddingConfig2d::Valid)
        && pool.dilation == [1, 1]
        && !pool.ceil_mode;
    plain.then_some(PoolSpec {
        kernel: pool.kernel_size,
        stride: pool.stride,
    })
}

/// `pool.forward(x)`, through this crate's kernel on the CPU training device when the pool
/// has no padding or dilation.
///
/// # Shapes
/// `[n, c, h, w]` -> `[n, c, (h - kh) / sh + 1, (w - kw) / sw + 1]`.
pub fn max_pool2d(pool: &MaxPool2d, x: Tensor<4>) -> Tensor<4> {
    let [_, _, h, w] = x.dims();
    let fits = h >= pool.kernel_size[0] && w >= pool.kernel_size[1];
    if !(routes(&x) && pool_spec(pool).is_some() && fits) {
        return pool.forward(x);
    }
    let y = <Dispatch as TrainKernels>::kernel_max_pool2d(
        x.into_dispatch(),
        pool.kernel_size,
        pool.stride,
    );
    Tensor::from_dispatch(y)
}

/// `act(bn(conv(x)))`: the convolution -> BatchNorm -> activation unit of MobileNetV2,
/// EfficientNet-Lite, InceptionV3 and the `relu-bn` baseline.
pub fn conv_norm_act(conv: &Conv2d, bn: &BatchNorm, x: Tensor<4>, act: Activation) -> Tensor<4> {
    batch_norm(bn, conv2d(conv, x), act)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_padding_is_burns() {
        // EfficientNet-Lite at 160 px: the stem (3x3 s2 on 160), a 5x5 s2 depthwise on 40, a
        // 5x5 s1 one on 10, and an odd side at stride 2.
        assert_eq!(same_padding(3, 2, 160), (0, 1));
        assert_eq!(same_padding(5, 2, 40), (1, 2));
        assert_eq!(same_padding(5, 1, 10), (2, 2));
        assert_eq!(same_padding(3, 1, 7), (1, 1));
        assert_eq!(same_padding(3, 2, 7), (1, 1));
        assert_eq!(same_padding(1, 1, 7), (0, 0));
        let conv = burn::nn::conv::Conv2dConfig::new([4, 4], [5, 5])
            .with_stride([2, 2])
            .with_groups(4)
            .with_padding(PaddingConfig2d::Same)
            .init(&Device::flex());
        let spec = conv_spec(&conv, [40, 41]);
        assert_eq!(spec.pad, [(1, 2), (2, 2)]);
        let g = spec.geom([1, 4, 40, 41], conv.weight.dims()).unwrap();
        // The output burn's Same gives: ceil(side / stride).
        assert_eq!((g.oh, g.ow), (20, 21));
    }
}
