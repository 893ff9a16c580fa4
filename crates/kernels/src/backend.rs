//! The kernels as burn 0.22 backend-extension operations: a forward on burn-flex (burn's
//! CPU backend) and, on `Autodiff<Flex>`, a backward pass of our own.
//!
//! burn's runtime `Dispatch` routes a call to the backend of its first float tensor. Only
//! Flex and autodiff-over-Flex tensors may reach these operations (the routing in lib.rs checks
//! the device first); every other device keeps burn's own kernels.

use crate::act::{self, Activation};
use crate::batchnorm::{self, BnShape};
use crate::geom::ConvGeom;
use crate::pool::{self, PoolGeom};
use crate::{conv, conv_pool, depthwise};
use burn::backend::TensorMetadata;
use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, ExtensionType, Flex, backend_extension};
use burn::tensor::{Shape, TensorData};

/// burn-flex's tensor: bytes, a strided layout and a dtype.
type FlexTensor = FloatTensor<Flex>;

/// Stride, padding `[(top, bottom), (left, right)]`, dilation and groups of a convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvSpec {
    pub stride: [usize; 2],
    pub pad: [(usize, usize); 2],
    pub dilation: [usize; 2],
    pub groups: usize,
}

impl ConvSpec {
    /// The geometry for these input and weight shapes (`None` if they do not fit).
    pub fn geom(&self, x: [usize; 4], weight: [usize; 4]) -> Option<ConvGeom> {
        ConvGeom::new(x, weight, self.stride, self.pad, self.dilation, self.groups)
    }
}

/// A max-pooling window without padding or dilation: `kernel` and `stride`, `[rows, cols]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSpec {
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
}

impl PoolSpec {
    /// The pooling of one `[h, w]` plane (`None` if the window does not fit, or has more
    /// inputs than [`conv_pool`] can index).
    pub fn geom(&self, [h, w]: [usize; 2]) -> Option<PoolGeom> {
        if self.kernel[0] * self.kernel[1] > 256 {
            return None;
        }
        PoolGeom::new(1, [h, w], self.kernel, self.stride)
    }
}

/// A BatchNorm's output and the batch statistics it used.
#[derive(ExtensionType)]
pub struct BnOut<B: Backend> {
    pub y: FloatTensor<B>,
    pub mean: FloatTensor<B>,
    pub var: FloatTensor<B>,
}

/// Training kernels: convolution and BatchNorm (+ activation) with backward passes of our own.
#[backend_extension(Flex, Autodiff)]
pub trait TrainKernels: Backend {
    /// `x [n, c, h, w]` convolved with `weight [o, c / groups, kh, kw]`.
    fn kernel_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        spec: ConvSpec,
        act: Activation,
    ) -> FloatTensor<Self>;
    /// [`Self::kernel_conv2d`] plus `bias [o]`.
    fn kernel_conv2d_bias(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        spec: ConvSpec,
        act: Activation,
    ) -> FloatTensor<Self>;
    /// BatchNorm of `x [n, c, h, w]` with its batch statistics, then `act`.
    fn kernel_batch_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
        act: Activation,
    ) -> BnOut<Self>;
    /// `maxpool(act(conv(x) + bias))` in one operation: `[n, o, poh, pow]` (see
    /// [`conv_pool`]); `act` must be monotone (every [`Activation`] is).
    fn kernel_conv2d_pool(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        spec: ConvSpec,
        act: Activation,
        pool: PoolSpec,
    ) -> FloatTensor<Self>;
    /// Max-pooling of `x [n, c, h, w]` without padding: `[n, c, oh, ow]`.
    fn kernel_max_pool2d(
        x: FloatTensor<Self>,
        kernel: [usize; 2],
        stride: [usize; 2],
    ) -> FloatTensor<Self>;
}

/// A contiguous `f32` Flex tensor (copied only if it is a strided view).
fn dense(t: FlexTensor) -> FlexTensor {
    if t.as_slice::<f32>().is_some() {
        t
    } else {
        t.to_contiguous()
    }
}

/// The values of a tensor made by [`dense`].
fn values(t: &FlexTensor) -> &[f32] {
    // `dense` made it contiguous, and the routing in lib.rs only sends f32 tensors here.
    t.as_slice::<f32>().unwrap_or(&[])
}

/// A contiguous `f32` Flex tensor that this code alone holds, so its values can be
/// overwritten: `t` itself when it is (the usual case for a gradient handed to a backward
/// step), else a copy.
fn owned(t: FlexTensor) -> FlexTensor {
    let t = dense(t);
    let whole = t.layout().contiguous_offsets() == Some((0, t.bytes().len() / 4));
    if whole && t.is_unique() {
        t
    } else {
        tensor(values(&t).to_vec(), t.shape())
    }
}

/// The values of a tensor made by [`owned`], to overwrite.
fn values_mut(t: &mut FlexTensor) -> &mut [f32] {
    // `owned` made it contiguous, whole and unshared (a copy if it was not), and only f32
    // tensors are routed here; a shared tensor would be copied, not written through.
    t.storage_mut::<f32>()
}

fn dims<const D: usize>(t: &FlexTensor) -> [usize; D] {
    let s = t.shape();
    std::array::from_fn(|i| s[i])
}

fn tensor(data: Vec<f32>, shape: impl Into<Shape>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(data, shape.into()))
}

/// The geometry of a call the routing in lib.rs already validated.
fn geom_of(x: &FlexTensor, w: &FlexTensor, spec: ConvSpec) -> ConvGeom {
    match spec.geom(dims(x), dims(w)) {
        Some(g) => g,
        None => panic!(
            "kernel_conv2d: shapes {:?} and {:?} do not fit {spec:?}",
            x.shape(),
            w.shape()
        ),
    }
}

/// The convolution, its bias and its activation (applied per image, while it is in cache).
fn conv_forward(
    x: &FlexTensor,
    w: &FlexTensor,
    bias: Option<&FlexTensor>,
    g: &ConvGeom,
    act: Activation,
) -> FlexTensor {
    let (x, w, b) = (values(x), values(w), bias.map(values));
    let y = if g.is_depthwise() {
        depthwise::forward(g, x, w, b, act)
    } else {
        conv::forward(g, x, w, b, act)
    };
    tensor(y, [g.n, g.o, g.oh, g.ow])
}

fn pool_geom(x: &FlexTensor, kernel: [usize; 2], stride: [usize; 2]) -> PoolGeom {
    let [n, c, h, w] = dims(x);
    match PoolGeom::new(n * c, [h, w], kernel, stride) {
        Some(g) => g,
        None => panic!(
            "kernel_max_pool2d: window {kernel:?} does not fit {:?}",
            x.shape()
        ),
    }
}

/// A fused convolution + pooling's output, each window's winner and its geometries.
struct ConvPoolOut {
    y: FlexTensor,
    argmax: Vec<u8>,
    geom: ConvGeom,
    pool: PoolGeom,
}

/// The fused convolution + pooling of a call the routing in lib.rs already validated.
fn conv_pool_forward(
    x: &FlexTensor,
    w: &FlexTensor,
    b: &FlexTensor,
    spec: ConvSpec,
    act: Activation,
    pool: PoolSpec,
) -> ConvPoolOut {
    let geom = geom_of(x, w, spec);
    let Some(pg) = pool.geom([geom.oh, geom.ow]) else {
        panic!(
            "kernel_conv2d_pool: {pool:?} does not fit {:?}",
            [geom.oh, geom.ow]
        )
    };
    let out = conv_pool::forward(&geom, &pg, values(x), values(w), values(b), act);
    ConvPoolOut {
        y: tensor(out.y, [geom.n, geom.o, pg.oh, pg.ow]),
        argmax: out.argmax,
        geom,
        pool: pg,
    }
}

fn pool_forward(x: &FlexTensor, g: &PoolGeom) -> FlexTensor {
    let [n, c, _, _] = dims::<4>(x);
    tensor(pool::forward(g, values(x)), [n, c, g.oh, g.ow])
}

impl TrainKernels for Flex {
    fn kernel_conv2d(
        x: FlexTensor,
        weight: FlexTensor,
        spec: ConvSpec,
        act: Activation,
    ) -> FlexTensor {
        let (x, w) = (dense(x), dense(weight));
        conv_forward(&x, &w, None, &geom_of(&x, &w, spec), act)
    }

    fn kernel_conv2d_bias(
        x: FlexTensor,
        weight: FlexTensor,
        bias: FlexTensor,
        spec: ConvSpec,
        act: Activation,
    ) -> FlexTensor {
        let (x, w, b) = (dense(x), dense(weight), dense(bias));
        conv_forward(&x, &w, Some(&b), &geom_of(&x, &w, spec), act)
    }

    fn kernel_batch_norm(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        epsilon: f64,
        act: Activation,
    ) -> BnOut<Self> {
        let (x, gamma, beta) = (dense(x), dense(gamma), dense(beta));
        let [n, c, h, w] = dims(&x);
        let s = BnShape { n, c, plane: h * w };
        let out = batchnorm::forward(s, values(&x), values(&gamma), values(&beta), epsilon, act);
        BnOut {
            y: tensor(out.y, [n, c, h, w]),
            mean: tensor(out.mean, [c]),
            var: tensor(out.var, [c]),
        }
    }

    fn kernel_conv2d_pool(
        x: FlexTensor,
        weight: FlexTensor,
        bias: FlexTensor,
        spec: ConvSpec,
        act: Activation,
        pool: PoolSpec,
    ) -> FlexTensor {
        let (x, w, b) = (dense(x), dense(weight), dense(bias));
        conv_pool_forward(&x, &w, &b, spec, act, pool).y
    }

    fn kernel_max_pool2d(x: FlexTensor, kernel: [usize; 2], stride: [usize; 2]) -> FlexTensor {
        let x = dense(x);
        pool_forward(&x, &pool_geom(&x, kernel, stride))
    }
}

/// What a convolution's backward needs: its geometry and activation; the state holds its
/// input, its weight and (for an activation other than the identity) its output.
#[derive(Debug)]
struct ConvBackward {
    geom: ConvGeom,
    act: Activation,
}

type ConvState = (FlexTensor, FlexTensor, Option<FlexTensor>);

impl ConvBackward {
    /// The output gradient through the activation, then `[dx, dw, db]` for the parents that
    /// want them.
    fn grads(&self, state: ConvState, dy: FlexTensor, want: [bool; 3]) -> [Option<FlexTensor>; 3] {
        let (g, (x, w, y)) = (&self.geom, state);
        let dy = match &y {
            Some(y) => {
                let mut gated = owned(dy);
                act::gate_from_output(values(y), values_mut(&mut gated), self.act);
                gated
            }
            None => dense(dy),
        };
        let dy = values(&dy);
        let (xv, wv) = (values(&x), values(&w));
        let dx = want[0].then(|| {
            let v = if g.is_depthwise() {
                depthwise::backward_input(g, wv, dy)
            } else {
                conv::backward_input(g, wv, dy)
            };
            tensor(v, [g.n, g.c, g.h, g.w])
        });
        let dw = want[1].then(|| {
            let v = if g.is_depthwise() {
                depthwise::backward_weight(g, xv, dy)
            } else {
                conv::backward_weight(g, xv, dy)
            };
            tensor(v, [g.o, g.cg(), g.kh, g.kw])
        });
        let db = want[2].then(|| tensor(conv::backward_bias(g.n, g.o, g.out_plane(), dy), [g.o]));
        [dx, dw, db]
    }
}

impl Backward<Flex, 2> for ConvBackward {
    type State = ConvState;

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_w] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node);
        let [dx, dw, _] = self.grads(ops.state, dy, [node_x.is_some(), node_w.is_some(), false]);
        register(
            grads,
            [(node_x.map(|n| n.id), dx), (node_w.map(|n| n.id), dw)],
        );
    }
}

/// [`ConvBackward`] with a bias as the third parent.
#[derive(Debug)]
struct ConvBiasBackward(ConvBackward);

impl Backward<Flex, 3> for ConvBiasBackward {
    type State = ConvState;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_w, node_b] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node);
        let want = [node_x.is_some(), node_w.is_some(), node_b.is_some()];
        let [dx, dw, db] = self.0.grads(ops.state, dy, want);
        register(
            grads,
            [
                (node_x.map(|n| n.id), dx),
                (node_w.map(|n| n.id), dw),
                (node_b.map(|n| n.id), db),
            ],
        );
    }
}

/// Registers each computed gradient with its parent.
fn register<const N: usize>(grads: &mut Gradients, out: [(Option<NodeId>, Option<FlexTensor>); N]) {
    for (node, grad) in out {
        if let (Some(node), Some(grad)) = (node, grad) {
            grads.register::<Flex>(node, grad);
        }
    }
}

/// BatchNorm's backward: the input, the affine parameters and the batch statistics.
#[derive(Debug)]
struct BnBackward {
    epsilon: f64,
    act: Activation,
}

impl Backward<Flex, 3> for BnBackward {
    type State = [FlexTensor; 5];

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_gamma, node_beta] = ops.parents;
        let mut dx = owned(grads.consume::<Flex>(&ops.node));
        let [x, gamma, beta, mean, var] = ops.state;
        let [n, c, h, w] = dims(&x);
        let s = BnShape { n, c, plane: h * w };
        let saved = batchnorm::BnSaved {
            x: values(&x),
            gamma: values(&gamma),
            beta: values(&beta),
            mean: values(&mean),
            var: values(&var),
            eps: self.epsilon,
        };
        let (dgamma, dbeta) = batchnorm::backward(s, &saved, values_mut(&mut dx), self.act);
        let out = [
            (node_x.map(|n| n.id), Some(dx)),
            (node_gamma.map(|n| n.id), Some(tensor(dgamma, [c]))),
            (node_beta.map(|n| n.id), Some(tensor(dbeta, [c]))),
        ];
        register(grads, out);
    }
}

/// Max-pooling's backward: the window geometry; the state holds the input and the output.
#[derive(Debug)]
struct PoolBackward {
    geom: PoolGeom,
}

impl Backward<Flex, 1> for PoolBackward {
    type State = (FlexTensor, FlexTensor);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x] = ops.parents;
        let dy = dense(grads.consume::<Flex>(&ops.node));
        let (x, y) = ops.state;
        let dx = pool::backward(&self.geom, values(&x), values(&y), values(&dy));
        register(grads, [(node_x.map(|n| n.id), Some(tensor(dx, x.shape())))]);
    }
}

/// The fused convolution + pooling's backward; the state holds the input, the weight and the
/// pooled output with its winners.
#[derive(Debug)]
struct ConvPoolBackward {
    geom: ConvGeom,
    pool: PoolGeom,
    act: Activation,
}

impl Backward<Flex, 3> for ConvPoolBackward {
    type State = (FlexTensor, FlexTensor, FlexTensor, Vec<u8>);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_w, node_b] = ops.parents;
        let dp = dense(grads.consume::<Flex>(&ops.node));
        let (x, w, y, argmax) = ops.state;
        let g = &self.geom;
        let saved = conv_pool::Saved {
            x: values(&x),
            w: values(&w),
            y: values(&y),
            argmax: &argmax,
        };
        let want = [node_x.is_some(), node_w.is_some(), node_b.is_some()];
        let out = conv_pool::backward(g, &self.pool, &saved, values(&dp), self.act, want);
        register(
            grads,
            [
                (
                    node_x.map(|n| n.id),
                    out.dx.map(|v| tensor(v, [g.n, g.c, g.h, g.w])),
                ),
                (
                    node_w.map(|n| n.id),
                    out.dw.map(|v| tensor(v, [g.o, g.cg(), g.kh, g.kw])),
                ),
                (node_b.map(|n| n.id), out.db.map(|v| tensor(v, [g.o]))),
            ],
        );
    }
}

/// The forward of a tracked convolution: its geometry, its output and what its backward
/// keeps (the input, the weight and, after an activation, the output).
/// (The tensor type is the same for every checkpointing strategy.)
fn conv_saving(
    x: &FloatTensor<Autodiff<Flex>>,
    weight: &FloatTensor<Autodiff<Flex>>,
    bias: Option<&FloatTensor<Autodiff<Flex>>>,
    spec: ConvSpec,
    act: Activation,
) -> (ConvGeom, FlexTensor, ConvState) {
    let (xp, wp) = (
        dense(x.primitive().clone()),
        dense(weight.primitive().clone()),
    );
    let bp = bias.map(|b| dense(b.primitive().clone()));
    let geom = geom_of(&xp, &wp, spec);
    let y = conv_forward(&xp, &wp, bp.as_ref(), &geom, act);
    let saved_y = (act != Activation::Identity).then(|| y.clone());
    (geom, y, (xp, wp, saved_y))
}

impl<C: CheckpointStrategy> TrainKernels for Autodiff<Flex, C> {
    fn kernel_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        spec: ConvSpec,
        act: Activation,
    ) -> FloatTensor<Self> {
        let (geom, y, state) = conv_saving(&x, &weight, None, spec, act);
        match (ConvBackward { geom, act })
            .prepare::<C>([x.node(), weight.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(state, y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }

    fn kernel_conv2d_bias(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        spec: ConvSpec,
        act: Activation,
    ) -> FloatTensor<Self> {
        let (geom, y, state) = conv_saving(&x, &weight, Some(&bias), spec, act);
        match ConvBiasBackward(ConvBackward { geom, act })
            .prepare::<C>([x.node(), weight.node(), bias.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(state, y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }

    fn kernel_batch_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
        act: Activation,
    ) -> BnOut<Self> {
        let (xp, gp, bp) = (
            dense(x.primitive().clone()),
            dense(gamma.primitive().clone()),
            dense(beta.primitive().clone()),
        );
        let out = <Flex as TrainKernels>::kernel_batch_norm(
            xp.clone(),
            gp.clone(),
            bp.clone(),
            epsilon,
            act,
        );
        let (mean, var) = (out.mean.clone(), out.var.clone());
        let backward = BnBackward { epsilon, act };
        let y = match backward
            .prepare::<C>([x.node(), gamma.node(), beta.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish([xp, gp, bp, out.mean, out.var], out.y),
            OpsKind::UnTracked(prep) => prep.finish(out.y),
        };
        BnOut {
            y,
            mean: <FloatTensor<Self>>::new(mean),
            var: <FloatTensor<Self>>::new(var),
        }
    }

    fn kernel_conv2d_pool(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        spec: ConvSpec,
        act: Activation,
        pool: PoolSpec,
    ) -> FloatTensor<Self> {
        let (xp, wp, bp) = (
            dense(x.primitive().clone()),
            dense(weight.primitive().clone()),
            dense(bias.primitive().clone()),
        );
        let out = conv_pool_forward(&xp, &wp, &bp, spec, act, pool);
        let (y, argmax) = (out.y, out.argmax);
        let backward = ConvPoolBackward {
            geom: out.geom,
            pool: out.pool,
            act,
        };
        match backward
            .prepare::<C>([x.node(), weight.node(), bias.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish((xp, wp, y.clone(), argmax), y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }

    fn kernel_max_pool2d(
        x: FloatTensor<Self>,
        kernel: [usize; 2],
        stride: [usize; 2],
    ) -> FloatTensor<Self> {
        let xp = dense(x.primitive().clone());
        let geom = pool_geom(&xp, kernel, stride);
        let y = pool_forward(&xp, &geom);
        match (PoolBackward { geom })
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish((xp, y.clone()), y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }
}
