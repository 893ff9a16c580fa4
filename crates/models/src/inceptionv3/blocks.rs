//! The building blocks of InceptionV3, following torchvision's `inception.py`
//! (`BasicConv2d`, `InceptionA` .. `InceptionE`, `InceptionAux`). Field names are
//! torchvision's attribute names (`branch1x1`, `branch7x7dbl_3`, ...), so checkpoint tensors
//! load by name.
//!
//! # Shapes (input `[b, c_in, h, w]`)
//! - [`InceptionA`]: `[b, 224 + pool_features, h, w]` (64 + 64 + 96 + pool_features).
//! - [`InceptionB`]: `[b, 384 + 96 + c_in, (h-3)/2+1, (w-3)/2+1]` (grid reduction).
//! - [`InceptionC`]: `[b, 768, h, w]` (four branches of 192).
//! - [`InceptionD`]: `[b, 320 + 192 + c_in, (h-3)/2+1, (w-3)/2+1]` (grid reduction).
//! - [`InceptionE`]: `[b, 2048, h, w]` (320 + 768 + 768 + 192).
//! - [`InceptionAux`]: `[b, 768, h, w]` -> `[b, classes]`, needs `h, w >= 17`.
#![allow(non_snake_case)] // torchvision's attribute names (`branch7x7dbl_1`, `AuxLogits`)

use crate::onnx::{self, Graph, Value};
use artemis_kernels::{Activation, conv_norm_act};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{AvgPool2d, AvgPool2dConfig, MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;

/// BatchNorm epsilon of torchvision's InceptionV3 (`BasicConv2d`: `eps=0.001`).
pub const BN_EPS: f64 = 1e-3;

/// Convolution (no bias) -> BatchNorm -> ReLU.
#[derive(Module, Debug)]
pub struct BasicConv2d {
    pub conv: Conv2d,
    pub bn: BatchNorm,
}

impl BasicConv2d {
    /// `kernel` and `padding` as `(height, width)`.
    pub fn new(
        c_in: usize,
        c_out: usize,
        kernel: (usize, usize),
        stride: usize,
        padding: (usize, usize),
        device: &Device,
    ) -> Self {
        let (ph, pw) = padding;
        BasicConv2d {
            conv: Conv2dConfig::new([c_in, c_out], [kernel.0, kernel.1])
                .with_stride([stride, stride])
                .with_padding(PaddingConfig2d::Explicit(ph, pw, ph, pw))
                .with_bias(false)
                .init(device),
            bn: BatchNormConfig::new(c_out)
                .with_epsilon(BN_EPS)
                .with_momentum(0.1)
                .init(device),
        }
    }

    /// Square kernel `k`, padding `p` on every side.
    pub fn square(
        c_in: usize,
        c_out: usize,
        k: usize,
        stride: usize,
        p: usize,
        d: &Device,
    ) -> Self {
        Self::new(c_in, c_out, (k, k), stride, (p, p), d)
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        conv_norm_act(&self.conv, &self.bn, x, Activation::Relu)
    }

    /// [`Self::forward`] as ONNX (BatchNorm folded).
    pub fn onnx(&self, name: &str, g: &mut Graph, x: &Value) -> onnx::Result<Value> {
        let y = g.conv(name, x, &self.conv, Some(&self.bn))?;
        Ok(g.relu(&y))
    }
}

/// A branch of [`BasicConv2d`]s applied one after the other to `x`, as ONNX.
fn chain(
    g: &mut Graph,
    name: &str,
    x: &Value,
    convs: &[(&str, &BasicConv2d)],
) -> onnx::Result<Value> {
    let mut y = x.clone();
    for (n, c) in convs {
        y = c.onnx(&format!("{name}.{n}"), g, &y)?;
    }
    Ok(y)
}

/// 3x3 max pool, stride 2, no padding (the grid reductions and the stem).
pub fn max_pool_3s2() -> MaxPool2d {
    MaxPool2dConfig::new([3, 3]).with_strides([2, 2]).init()
}

/// 3x3 average pool, stride 1, padding 1, padding counted (PyTorch's default
/// `count_include_pad=True`, as torchvision's `F.avg_pool2d` call uses).
fn avg_pool_3s1() -> AvgPool2d {
    AvgPool2dConfig::new([3, 3])
        .with_strides([1, 1])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .with_count_include_pad(true)
        .init()
}

/// The 35x35 module (figure 5 of the paper): 1x1, 5x5, double 3x3 and pool branches.
#[derive(Module, Debug)]
pub struct InceptionA {
    pub branch1x1: BasicConv2d,
    pub branch5x5_1: BasicConv2d,
    pub branch5x5_2: BasicConv2d,
    pub branch3x3dbl_1: BasicConv2d,
    pub branch3x3dbl_2: BasicConv2d,
    pub branch3x3dbl_3: BasicConv2d,
    pub branch_pool: BasicConv2d,
    pool: AvgPool2d,
}

impl InceptionA {
    pub fn new(c_in: usize, pool_features: usize, d: &Device) -> Self {
        InceptionA {
            branch1x1: BasicConv2d::square(c_in, 64, 1, 1, 0, d),
            branch5x5_1: BasicConv2d::square(c_in, 48, 1, 1, 0, d),
            branch5x5_2: BasicConv2d::square(48, 64, 5, 1, 2, d),
            branch3x3dbl_1: BasicConv2d::square(c_in, 64, 1, 1, 0, d),
            branch3x3dbl_2: BasicConv2d::square(64, 96, 3, 1, 1, d),
            branch3x3dbl_3: BasicConv2d::square(96, 96, 3, 1, 1, d),
            branch_pool: BasicConv2d::square(c_in, pool_features, 1, 1, 0, d),
            pool: avg_pool_3s1(),
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let b1 = self.branch1x1.forward(x.clone());
        let b5 = self
            .branch5x5_2
            .forward(self.branch5x5_1.forward(x.clone()));
        let b3 = self.branch3x3dbl_3.forward(
            self.branch3x3dbl_2
                .forward(self.branch3x3dbl_1.forward(x.clone())),
        );
        let bp = self.branch_pool.forward(self.pool.forward(x));
        Tensor::cat(vec![b1, b5, b3, bp], 1)
    }

    /// [`Self::forward`] as ONNX.
    pub fn onnx(&self, name: &str, g: &mut Graph, x: Value) -> onnx::Result<Value> {
        let b1 = self.branch1x1.onnx(&format!("{name}.branch1x1"), g, &x)?;
        let b5 = chain(
            g,
            name,
            &x,
            &[
                ("branch5x5_1", &self.branch5x5_1),
                ("branch5x5_2", &self.branch5x5_2),
            ],
        )?;
        let b3 = chain(
            g,
            name,
            &x,
            &[
                ("branch3x3dbl_1", &self.branch3x3dbl_1),
                ("branch3x3dbl_2", &self.branch3x3dbl_2),
                ("branch3x3dbl_3", &self.branch3x3dbl_3),
            ],
        )?;
        let p = g.avg_pool(&x, &self.pool);
        let bp = self
            .branch_pool
            .onnx(&format!("{name}.branch_pool"), g, &p)?;
        Ok(g.concat(&[b1, b5, b3, bp]))
    }
}

/// Grid reduction 35 -> 17: strided 3x3, strided double 3x3, max pool.
#[derive(Module, Debug)]
pub struct InceptionB {
    pub branch3x3: BasicConv2d,
    pub branch3x3dbl_1: BasicConv2d,
    pub branch3x3dbl_2: BasicConv2d,
    pub branch3x3dbl_3: BasicConv2d,
    pool: MaxPool2d,
}

impl InceptionB {
    pub fn new(c_in: usize, d: &Device) -> Self {
        InceptionB {
            branch3x3: BasicConv2d::square(c_in, 384, 3, 2, 0, d),
            branch3x3dbl_1: BasicConv2d::square(c_in, 64, 1, 1, 0, d),
            branch3x3dbl_2: BasicConv2d::square(64, 96, 3, 1, 1, d),
            branch3x3dbl_3: BasicConv2d::square(96, 96, 3, 2, 0, d),
            pool: max_pool_3s2(),
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let b3 = self.branch3x3.forward(x.clone());
        let bd = self.branch3x3dbl_3.forward(
            self.branch3x3dbl_2
                .forward(self.branch3x3dbl_1.forward(x.clone())),
        );
        let bp = self.pool.forward(x);
        Tensor::cat(vec![b3, bd, bp], 1)
    }

    /// [`Self::forward`] as ONNX.
    pub fn onnx(&self, name: &str, g: &mut Graph, x: Value) -> onnx::Result<Value> {
        let b3 = self.branch3x3.onnx(&format!("{name}.branch3x3"), g, &x)?;
        let bd = chain(
            g,
            name,
            &x,
            &[
                ("branch3x3dbl_1", &self.branch3x3dbl_1),
                ("branch3x3dbl_2", &self.branch3x3dbl_2),
                ("branch3x3dbl_3", &self.branch3x3dbl_3),
            ],
        )?;
        let bp = g.max_pool(&x, &self.pool);
        Ok(g.concat(&[b3, bd, bp]))
    }
}

/// The 17x17 module (figure 6): 1x1, factorised 7x7, double factorised 7x7, pool.
#[derive(Module, Debug)]
pub struct InceptionC {
    pub branch1x1: BasicConv2d,
    pub branch7x7_1: BasicConv2d,
    pub branch7x7_2: BasicConv2d,
    pub branch7x7_3: BasicConv2d,
    pub branch7x7dbl_1: BasicConv2d,
    pub branch7x7dbl_2: BasicConv2d,
    pub branch7x7dbl_3: BasicConv2d,
    pub branch7x7dbl_4: BasicConv2d,
    pub branch7x7dbl_5: BasicConv2d,
    pub branch_pool: BasicConv2d,
    pool: AvgPool2d,
}

impl InceptionC {
    pub fn new(c_in: usize, c7: usize, d: &Device) -> Self {
        let row = |a, b| BasicConv2d::new(a, b, (1, 7), 1, (0, 3), d);
        let col = |a, b| BasicConv2d::new(a, b, (7, 1), 1, (3, 0), d);
        InceptionC {
            branch1x1: BasicConv2d::square(c_in, 192, 1, 1, 0, d),
            branch7x7_1: BasicConv2d::square(c_in, c7, 1, 1, 0, d),
            branch7x7_2: row(c7, c7),
            branch7x7_3: col(c7, 192),
            branch7x7dbl_1: BasicConv2d::square(c_in, c7, 1, 1, 0, d),
            branch7x7dbl_2: col(c7, c7),
            branch7x7dbl_3: row(c7, c7),
            branch7x7dbl_4: col(c7, c7),
            branch7x7dbl_5: row(c7, 192),
            branch_pool: BasicConv2d::square(c_in, 192, 1, 1, 0, d),
            pool: avg_pool_3s1(),
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let b1 = self.branch1x1.forward(x.clone());
        let mut b7 = self.branch7x7_1.forward(x.clone());
        b7 = self.branch7x7_3.forward(self.branch7x7_2.forward(b7));
        let mut bd = self.branch7x7dbl_1.forward(x.clone());
        bd = self.branch7x7dbl_2.forward(bd);
        bd = self.branch7x7dbl_3.forward(bd);
        bd = self.branch7x7dbl_4.forward(bd);
        bd = self.branch7x7dbl_5.forward(bd);
        let bp = self.branch_pool.forward(self.pool.forward(x));
        Tensor::cat(vec![b1, b7, bd, bp], 1)
    }

    /// [`Self::forward`] as ONNX.
    pub fn onnx(&self, name: &str, g: &mut Graph, x: Value) -> onnx::Result<Value> {
        let b1 = self.branch1x1.onnx(&format!("{name}.branch1x1"), g, &x)?;
        let b7 = chain(
            g,
            name,
            &x,
            &[
                ("branch7x7_1", &self.branch7x7_1),
                ("branch7x7_2", &self.branch7x7_2),
                ("branch7x7_3", &self.branch7x7_3),
            ],
        )?;
        let bd = chain(
            g,
            name,
            &x,
            &[
                ("branch7x7dbl_1", &self.branch7x7dbl_1),
                ("branch7x7dbl_2", &self.branch7x7dbl_2),
                ("branch7x7dbl_3", &self.branch7x7dbl_3),
                ("branch7x7dbl_4", &self.branch7x7dbl_4),
                ("branch7x7dbl_5", &self.branch7x7dbl_5),
            ],
        )?;
        let p = g.avg_pool(&x, &self.pool);
        let bp = self
            .branch_pool
            .onnx(&format!("{name}.branch_pool"), g, &p)?;
        Ok(g.concat(&[b1, b7, bd, bp]))
    }
}

/// Grid reduction 17 -> 8: 1x1 then strided 3x3; 1x1, 1x7, 7x1, strided 3x3; max pool.
#[derive(Module, Debug)]
pub struct InceptionD {
    pub branch3x3_1: BasicConv2d,
    pub branch3x3_2: BasicConv2d,
    pub branch7x7x3_1: BasicConv2d,
    pub branch7x7x3_2: BasicConv2d,
    pub branch7x7x3_3: BasicConv2d,
    pub branch7x7x3_4: BasicConv2d,
    pool: MaxPool2d,
}

impl InceptionD {
    pub fn new(c_in: usize, d: &Device) -> Self {
        InceptionD {
            branch3x3_1: BasicConv2d::square(c_in, 192, 1, 1, 0, d),
            branch3x3_2: BasicConv2d::square(192, 320, 3, 2, 0, d),
            branch7x7x3_1: BasicConv2d::square(c_in, 192, 1, 1, 0, d),
            branch7x7x3_2: BasicConv2d::new(192, 192, (1, 7), 1, (0, 3), d),
            branch7x7x3_3: BasicConv2d::new(192, 192, (7, 1), 1, (3, 0), d),
            branch7x7x3_4: BasicConv2d::square(192, 192, 3, 2, 0, d),
            pool: max_pool_3s2(),
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let b3 = self
            .branch3x3_2
            .forward(self.branch3x3_1.forward(x.clone()));
        let mut b7 = self.branch7x7x3_1.forward(x.clone());
        b7 = self.branch7x7x3_2.forward(b7);
        b7 = self.branch7x7x3_3.forward(b7);
        b7 = self.branch7x7x3_4.forward(b7);
        let bp = self.pool.forward(x);
        Tensor::cat(vec![b3, b7, bp], 1)
    }

    /// [`Self::forward`] as ONNX.
    pub fn onnx(&self, name: &str, g: &mut Graph, x: Value) -> onnx::Result<Value> {
        let b3 = chain(
            g,
            name,
            &x,
            &[
                ("branch3x3_1", &self.branch3x3_1),
                ("branch3x3_2", &self.branch3x3_2),
            ],
        )?;
        let b7 = chain(
            g,
            name,
            &x,
            &[
                ("branch7x7x3_1", &self.branch7x7x3_1),
                ("branch7x7x3_2", &self.branch7x7x3_2),
                ("branch7x7x3_3", &self.branch7x7x3_3),
                ("branch7x7x3_4", &self.branch7x7x3_4),
            ],
        )?;
        let bp = g.max_pool(&x, &self.pool);
        Ok(g.concat(&[b3, b7, bp]))
    }
}

/// The 8x8 module (figure 7): 1x1, 3x3 split into 1x3 and 3x1, double 3x3 split likewise,
/// pool.
#[derive(Module, Debug)]
pub struct InceptionE {
    pub branch1x1: BasicConv2d,
    pub branch3x3_1: BasicConv2d,
    pub branch3x3_2a: BasicConv2d,
    pub branch3x3_2b: BasicConv2d,
    pub branch3x3dbl_1: BasicConv2d,
    pub branch3x3dbl_2: BasicConv2d,
    pub branch3x3dbl_3a: BasicConv2d,
    pub branch3x3dbl_3b: BasicConv2d,
    pub branch_pool: BasicConv2d,
    pool: AvgPool2d,
}

impl InceptionE {
    pub fn new(c_in: usize, d: &Device) -> Self {
        let row = |a, b| BasicConv2d::new(a, b, (1, 3), 1, (0, 1), d);
        let col = |a, b| BasicConv2d::new(a, b, (3, 1), 1, (1, 0), d);
        InceptionE {
            branch1x1: BasicConv2d::square(c_in, 320, 1, 1, 0, d),
            branch3x3_1: BasicConv2d::square(c_in, 384, 1, 1, 0, d),
            branch3x3_2a: row(384, 384),
            branch3x3_2b: col(384, 384),
            branch3x3dbl_1: BasicConv2d::square(c_in, 448, 1, 1, 0, d),
            branch3x3dbl_2: BasicConv2d::square(448, 384, 3, 1, 1, d),
            branch3x3dbl_3a: row(384, 384),
            branch3x3dbl_3b: col(384, 384),
            branch_pool: BasicConv2d::square(c_in, 192, 1, 1, 0, d),
            pool: avg_pool_3s1(),
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let b1 = self.branch1x1.forward(x.clone());
        let t = self.branch3x3_1.forward(x.clone());
        let b3 = Tensor::cat(
            vec![
                self.branch3x3_2a.forward(t.clone()),
                self.branch3x3_2b.forward(t),
            ],
            1,
        );
        let t = self
            .branch3x3dbl_2
            .forward(self.branch3x3dbl_1.forward(x.clone()));
        let bd = Tensor::cat(
            vec![
                self.branch3x3dbl_3a.forward(t.clone()),
                self.branch3x3dbl_3b.forward(t),
            ],
            1,
        );
        let bp = self.branch_pool.forward(self.pool.forward(x));
        Tensor::cat(vec![b1, b3, bd, bp], 1)
    }

    /// [`Self::forward`] as ONNX.
    pub fn onnx(&self, name: &str, g: &mut Graph, x: Value) -> onnx::Result<Value> {
        let n = |s: &str| format!("{name}.{s}");
        let b1 = self.branch1x1.onnx(&n("branch1x1"), g, &x)?;
        let t = self.branch3x3_1.onnx(&n("branch3x3_1"), g, &x)?;
        let a = self.branch3x3_2a.onnx(&n("branch3x3_2a"), g, &t)?;
        let b = self.branch3x3_2b.onnx(&n("branch3x3_2b"), g, &t)?;
        let b3 = g.concat(&[a, b]);
        let t = chain(
            g,
            name,
            &x,
            &[
                ("branch3x3dbl_1", &self.branch3x3dbl_1),
                ("branch3x3dbl_2", &self.branch3x3dbl_2),
            ],
        )?;
        let a = self.branch3x3dbl_3a.onnx(&n("branch3x3dbl_3a"), g, &t)?;
        let b = self.branch3x3dbl_3b.onnx(&n("branch3x3dbl_3b"), g, &t)?;
        let bd = g.concat(&[a, b]);
        let p = g.avg_pool(&x, &self.pool);
        let bp = self.branch_pool.onnx(&n("branch_pool"), g, &p)?;
        Ok(g.concat(&[b1, b3, bd, bp]))
    }
}

/// The auxiliary classifier on the 17x17 grid (training only): 5x5/3 average pool, 1x1 to
/// 128, 5x5 to 768, global average pool, linear.
#[derive(Module, Debug)]
pub struct InceptionAux {
    pub conv0: BasicConv2d,
    pub conv1: BasicConv2d,
    pub fc: Linear,
    pool: AvgPool2d,
}

impl InceptionAux {
    /// Smallest 17x17-grid side it takes: the 5x5/3 pool must leave at least 5x5 for `conv1`.
    pub const MIN_GRID: usize = 17;

    pub fn new(c_in: usize, classes: usize, d: &Device) -> Self {
        InceptionAux {
            conv0: BasicConv2d::square(c_in, 128, 1, 1, 0, d),
            conv1: BasicConv2d::square(128, 768, 5, 1, 0, d),
            fc: LinearConfig::new(768, classes).init(d),
            pool: AvgPool2dConfig::new([5, 5]).with_strides([3, 3]).init(),
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let y = self
            .conv1
            .forward(self.conv0.forward(self.pool.forward(x)))
            .mean_dim(3)
            .mean_dim(2);
        let [b, c, _, _] = y.dims();
        self.fc.forward(y.reshape([b, c]))
    }
}
