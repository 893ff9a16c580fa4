//! A convolution, its activation and the max-pooling after it as one operation (the
//! reference baseline's `Conv -> sigmoid -> MaxPool` blocks), parallel over images.
//!
//! Unfused, each block writes its full-size activation map (`[32, 32, 149, 149]`, 90 MB, for
//! the baseline's first layer at 150 px), reads it back to pool, and its backward makes three
//! more full-size passes (pooling's scatter, the activation's gradient, the convolution's
//! input). Fused, each image's map lives in a per-thread scratch buffer while it is pooled,
//! and the operation keeps only the pooled output and, per pooled value, which input of its
//! window won (`u8`).
//!
//! That is enough for the backward: the activation is monotone (identity, ReLU, ReLU6,
//! sigmoid), so the winner's activation output is the pooled value `p`, and the gradient
//! reaching the convolution is `dp * act'(p)` at the winner and 0 elsewhere. For the same
//! reason the forward pools the raw convolution and adds the bias and applies the
//! activation to the pooled values only. Ties go to the
//! first maximum in row order, as in [`crate::pool`].

use crate::act::{self, Activation};
use crate::conv::{col_buffer, col2im, columns, sum_in_order};
use crate::gemm::{Mat, gemm};
use crate::geom::ConvGeom;
use crate::lanes;
use crate::pool::PoolGeom;
use rayon::prelude::*;

/// The pooled output `[n, o, poh, pow]` and each value's winner within its window.
pub struct Pooled {
    pub y: Vec<f32>,
    pub argmax: Vec<u8>,
}

/// Max-pools one plane into `y` and records each window's winner in `argmax`.
fn pool_plane(pg: &PoolGeom, z: &[f32], y: &mut [f32], argmax: &mut [u8]) {
    if pg.kernel == [2, 2] && pg.stride == [2, 2] {
        return crate::simd::vectorized(
            #[inline(always)]
            || pool_plane_2x2(pg, z, y, argmax),
        );
    }
    let [kh, kw] = pg.kernel;
    for oy in 0..pg.oh {
        for ox in 0..pg.ow {
            let at = (oy * pg.stride[0]) * pg.w + ox * pg.stride[1];
            let (mut best, mut win) = (z[at], 0u8);
            for ky in 0..kh {
                let row = &z[at + ky * pg.w..][..kw];
                for (kx, &v) in row.iter().enumerate() {
                    if v > best {
                        (best, win) = (v, (ky * kw + kx) as u8);
                    }
                }
            }
            y[oy * pg.ow + ox] = best;
            argmax[oy * pg.ow + ox] = win;
        }
    }
}

/// [`pool_plane`] for 2x2 windows with stride 2 (the baseline's), written as selects.
#[inline(always)]
fn pool_plane_2x2(pg: &PoolGeom, z: &[f32], y: &mut [f32], argmax: &mut [u8]) {
    for oy in 0..pg.oh {
        let (a, b) = (
            &z[2 * oy * pg.w..][..2 * pg.ow],
            &z[(2 * oy + 1) * pg.w..][..2 * pg.ow],
        );
        let (yr, ar) = (
            &mut y[oy * pg.ow..][..pg.ow],
            &mut argmax[oy * pg.ow..][..pg.ow],
        );
        let windows = a.chunks_exact(2).zip(b.chunks_exact(2));
        for ((yv, av), (a, b)) in yr.iter_mut().zip(ar.iter_mut()).zip(windows) {
            let (mut m, mut k) = (a[0], 0u8);
            (m, k) = if a[1] > m { (a[1], 1) } else { (m, k) };
            (m, k) = if b[0] > m { (b[0], 2) } else { (m, k) };
            (m, k) = if b[1] > m { (b[1], 3) } else { (m, k) };
            (*yv, *av) = (m, k);
        }
    }
}

/// `maxpool(act(conv(x) + bias))` (`bias [o]`; a convolution without one passes zeros). `pg` pools one plane of the convolution's output
/// (`planes == 1`, `[h, w] == [oh, ow]`), and its window has at most 256 inputs.
pub fn forward(
    g: &ConvGeom,
    pg: &PoolGeom,
    x: &[f32],
    w: &[f32],
    bias: &[f32],
    act: Activation,
) -> Pooled {
    let (ohw, og, ckk, pohw) = (g.out_plane(), g.og(), g.ckk(), pg.oh * pg.ow);
    let mut y = vec![0.0; g.n * g.o * pohw];
    let mut argmax = vec![0u8; y.len()];
    y.par_chunks_mut(g.o * pohw)
        .zip(argmax.par_chunks_mut(g.o * pohw))
        .zip(x.par_chunks(g.c * g.in_plane()))
        .for_each_init(
            || (col_buffer(g), vec![0.0; g.o * ohw]),
            |(col, z), ((y_n, a_n), x_n)| {
                for grp in 0..g.groups {
                    let cols = columns(g, x_n, grp, col);
                    let w_g = Mat::rows(&w[grp * og * ckk..][..og * ckk], ckk);
                    let z_g = &mut z[grp * og * ohw..][..og * ohw];
                    gemm(og, ohw, ckk, z_g, w_g, Mat::rows(cols, ohw), false);
                }
                // Bias and activation after the pooling: both are monotone, so the window's
                // winner and value are the same, at a quarter of the work for 2x2 windows.
                for (oc, plane) in z.chunks(ohw).enumerate() {
                    let (ys, am) = (&mut y_n[oc * pohw..][..pohw], &mut a_n[oc * pohw..][..pohw]);
                    pool_plane(pg, plane, ys, am);
                    ys.iter_mut().for_each(|v| *v += bias[oc]);
                    act::apply(ys, act);
                }
            },
        );
    Pooled { y, argmax }
}

/// What the backward reads: the forward's input, weight, pooled output and winners.
pub struct Saved<'a> {
    pub x: &'a [f32],
    pub w: &'a [f32],
    pub y: &'a [f32],
    pub argmax: &'a [u8],
}

/// The gradients the backward computes; each is `None` unless asked for.
pub struct Grads {
    pub dx: Option<Vec<f32>>,
    pub dw: Option<Vec<f32>>,
    pub db: Option<Vec<f32>>,
}

/// One image's gradient at the convolution's output: `dp * act'(p)` at each window's winner.
fn scatter(
    (g, pg, act): (&ConvGeom, &PoolGeom, Activation),
    s: &Saved,
    dp: &[f32],
    n: usize,
    dz: &mut [f32],
) {
    let (ohw, pohw) = (g.out_plane(), pg.oh * pg.ow);
    dz.fill(0.0);
    let [kh, kw] = pg.kernel;
    let offsets: Vec<usize> = (0..kh * kw).map(|i| (i / kw) * pg.w + i % kw).collect();
    for oc in 0..g.o {
        let at = (n * g.o + oc) * pohw;
        let (y, a, d) = (
            &s.y[at..][..pohw],
            &s.argmax[at..][..pohw],
            &dp[at..][..pohw],
        );
        let plane = &mut dz[oc * ohw..][..ohw];
        for oy in 0..pg.oh {
            for ox in 0..pg.ow {
                let i = oy * pg.ow + ox;
                let pos = oy * pg.stride[0] * pg.w + ox * pg.stride[1] + offsets[a[i] as usize];
                plane[pos] += act.grad_from_output(y[i], d[i]);
            }
        }
    }
}

/// The gradients of [`forward`] from `dp [n, o, poh, pow]`, for the parents in
/// `want = [x, w, bias]`. Images are split into one contiguous block per thread and the
/// blocks' weight gradients added in order: deterministic for a given thread count.
pub fn backward(
    g: &ConvGeom,
    pg: &PoolGeom,
    s: &Saved,
    dp: &[f32],
    act: Activation,
    want: [bool; 3],
) -> Grads {
    let (ohw, og, ckk, cg, inp) = (g.out_plane(), g.og(), g.ckk(), g.cg(), g.in_plane());
    let blocks = rayon::current_num_threads().clamp(1, g.n.max(1));
    let per = g.n.div_ceil(blocks).max(1);
    let mut dx = vec![0.0; if want[0] { g.n * g.c * inp } else { 0 }];
    let mut dx_blocks: Vec<&mut [f32]> = dx.chunks_mut(per * g.c * inp).collect();
    dx_blocks.resize_with(blocks, Default::default);
    let parts: Vec<(Vec<f32>, Vec<f32>)> = dx_blocks
        .into_par_iter()
        .enumerate()
        .map(|(b, dx_b)| {
            let (mut dw, mut db) = (vec![0.0; g.o * ckk], vec![0.0; g.o]);
            let (mut col, mut dz) = (col_buffer(g), vec![0.0; g.o * ohw]);
            for n in b * per..((b + 1) * per).min(g.n) {
                scatter((g, pg, act), s, dp, n, &mut dz);
                let x_n = &s.x[n * g.c * inp..][..g.c * inp];
                for grp in 0..g.groups {
                    let dz_g = Mat::rows(&dz[grp * og * ohw..][..og * ohw], ohw);
                    if want[1] {
                        let cols = columns(g, x_n, grp, &mut col);
                        let dw_g = &mut dw[grp * og * ckk..][..og * ckk];
                        gemm(og, ckk, ohw, dw_g, dz_g, Mat::transposed(cols, ohw), true);
                    }
                    if want[0] {
                        let w_t = Mat::transposed(&s.w[grp * og * ckk..][..og * ckk], ckk);
                        let dx_g =
                            &mut dx_b[(n - b * per) * g.c * inp..][grp * cg * inp..][..cg * inp];
                        if g.is_pointwise() {
                            gemm(cg, ohw, og, dx_g, w_t, dz_g, false);
                        } else {
                            gemm(ckk, ohw, og, &mut col, w_t, dz_g, false);
                            col2im(g, &col, dx_g);
                        }
                    }
                }
                if want[2] {
                    for (d, plane) in db.iter_mut().zip(dz.chunks(ohw)) {
                        *d += lanes::sum(plane);
                    }
                }
            }
            (dw, db)
        })
        .collect();
    let (dws, dbs): (Vec<_>, Vec<_>) = parts.into_iter().unzip();
    Grads {
        dx: want[0].then_some(dx),
        dw: want[1].then(|| sum_in_order(dws)),
        db: want[2].then(|| sum_in_order(dbs)),
    }
}
