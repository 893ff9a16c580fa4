//! Dense and grouped 2-D convolution on NCHW slices: im2col + GEMM per image and group,
//! parallel over the images of the batch.
//!
//! - forward: `y_n[g] = W[g] (og x ckk) . col(x_n[g]) (ckk x oh*ow)`;
//! - input gradient: `dx_n[g] = col2im(W[g]^T . dy_n[g])` (one parallel task per image, where
//!   burn's default runs `conv_transpose2d` as a serial loop over images and groups);
//! - weight gradient: `dW[g] = sum_n dy_n[g] . col(x_n[g])^T`, summed per contiguous block of
//!   images (one block per thread) and the blocks added in order, so the result depends on
//!   the thread count but not on scheduling.
//!
//! A 1x1 convolution with stride 1 and no padding (MobileNet's expansions and projections)
//! uses the input plane as its im2col matrix: no copy.

use crate::act::{self, Activation};
use crate::fresh::{init_zeros, par_init};
use crate::gemm::{Mat, gemm, gemm_into};
use crate::geom::ConvGeom;
use crate::lanes;
use rayon::prelude::*;

/// One group's im2col matrix of one image: row `(ci, ky, kx)`, column `oy * ow + ox` holds
/// `x[ci, oy * sy - pt + ky * dy, ox * sx - pl + kx * dx]`, or 0 in the padding.
fn im2col(g: &ConvGeom, x: &[f32], col: &mut [f32]) {
    let (ohw, ow, w) = (g.out_plane(), g.ow, g.w);
    for ci in 0..g.cg() {
        let plane = &x[ci * g.in_plane()..][..g.in_plane()];
        for ky in 0..g.kh {
            let rows = g.rows_for(ky);
            for kx in 0..g.kw {
                let cols = g.cols_for(kx);
                let dst = &mut col[((ci * g.kh + ky) * g.kw + kx) * ohw..][..ohw];
                dst[..rows.start * ow].fill(0.0);
                dst[rows.end * ow..].fill(0.0);
                let ix0 = (cols.start * g.stride[1] + kx * g.dilation[1]).saturating_sub(g.pad[1]);
                for oy in rows.clone() {
                    let iy = oy * g.stride[0] + ky * g.dilation[0] - g.pad[0];
                    let src = &plane[iy * w..][..w];
                    let d = &mut dst[oy * ow..][..ow];
                    d[..cols.start].fill(0.0);
                    d[cols.end..].fill(0.0);
                    let d = &mut d[cols.clone()];
                    if d.is_empty() {
                        continue;
                    }
                    if g.stride[1] == 1 {
                        d.copy_from_slice(&src[ix0..][..d.len()]);
                    } else {
                        for (j, v) in d.iter_mut().enumerate() {
                            *v = src[ix0 + j * g.stride[1]];
                        }
                    }
                }
            }
        }
    }
}

/// Adds an im2col matrix back onto the image it was taken from (the adjoint of [`im2col`]).
pub(crate) fn col2im(g: &ConvGeom, col: &[f32], x: &mut [f32]) {
    let (ohw, ow, w) = (g.out_plane(), g.ow, g.w);
    for ci in 0..g.cg() {
        let plane = &mut x[ci * g.in_plane()..][..g.in_plane()];
        for ky in 0..g.kh {
            let rows = g.rows_for(ky);
            for kx in 0..g.kw {
                let cols = g.cols_for(kx);
                let src = &col[((ci * g.kh + ky) * g.kw + kx) * ohw..][..ohw];
                let ix0 = (cols.start * g.stride[1] + kx * g.dilation[1]).saturating_sub(g.pad[1]);
                for oy in rows.clone() {
                    let iy = oy * g.stride[0] + ky * g.dilation[0] - g.pad[0];
                    let dst = &mut plane[iy * w..][..w];
                    let s = &src[oy * ow..][cols.clone()];
                    if s.is_empty() {
                        continue;
                    }
                    if g.stride[1] == 1 {
                        for (d, v) in dst[ix0..][..s.len()].iter_mut().zip(s) {
                            *d += v;
                        }
                    } else {
                        for (j, v) in s.iter().enumerate() {
                            dst[ix0 + j * g.stride[1]] += v;
                        }
                    }
                }
            }
        }
    }
}

/// Scratch for one image's im2col matrix (none for a pointwise convolution).
pub(crate) fn col_buffer(g: &ConvGeom) -> Vec<f32> {
    if g.is_pointwise() {
        Vec::new()
    } else {
        vec![0.0; g.ckk() * g.out_plane()]
    }
}

/// Group `grp`'s input planes of one image, as its im2col matrix (`ckk x oh*ow`).
pub(crate) fn columns<'a>(
    g: &ConvGeom,
    x_n: &'a [f32],
    grp: usize,
    col: &'a mut [f32],
) -> &'a [f32] {
    let x_g = &x_n[grp * g.cg() * g.in_plane()..][..g.cg() * g.in_plane()];
    if g.is_pointwise() {
        x_g
    } else {
        im2col(g, x_g, col);
        col
    }
}

/// `act(y) [n, o, oh, ow]` of `x [n, c, h, w]`, `w [o, c / groups, kh, kw]` and an optional
/// bias. Each image's output is written by its GEMMs, never zeroed first (`fresh.rs`).
pub fn forward(
    g: &ConvGeom,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    act: Activation,
) -> Vec<f32> {
    let (ohw, og, ckk) = (g.out_plane(), g.og(), g.ckk());
    let x_n = |n: usize| &x[n * g.c * g.in_plane()..][..g.c * g.in_plane()];
    par_init(
        g.n * g.o * ohw,
        g.o * ohw,
        || col_buffer(g),
        |col, n, y_n| {
            let y_n = if g.groups == 1 {
                let cols = Mat::rows(columns(g, x_n(n), 0, col), ohw);
                gemm_into(og, ohw, ckk, y_n, Mat::rows(w, ckk), cols)
            } else {
                let y_n = init_zeros(y_n);
                for grp in 0..g.groups {
                    let cols = Mat::rows(columns(g, x_n(n), grp, col), ohw);
                    let (w_g, y_g) = (&w[grp * og * ckk..][..og * ckk], &mut y_n[grp * og * ohw..]);
                    gemm(og, ohw, ckk, y_g, Mat::rows(w_g, ckk), cols, false);
                }
                y_n
            };
            if let Some(b) = bias {
                for (row, b) in y_n.chunks_mut(ohw).zip(b) {
                    row.iter_mut().for_each(|v| *v += b);
                }
            }
            act::apply(y_n, act);
            y_n
        },
    )
}

/// `dx [n, c, h, w]` from `dy [n, o, oh, ow]` and the weight. A pointwise convolution's
/// `dx` is written by one GEMM per image; the others' are zeroed per image (in cache) and
/// accumulated by `col2im`.
pub fn backward_input(g: &ConvGeom, w: &[f32], dy: &[f32]) -> Vec<f32> {
    let (ohw, og, ckk, cg) = (g.out_plane(), g.og(), g.ckk(), g.cg());
    par_init(
        g.n * g.c * g.in_plane(),
        g.c * g.in_plane(),
        || col_buffer(g),
        |col, n, dx_n| {
            let dy_n = &dy[n * g.o * ohw..][..g.o * ohw];
            if g.is_pointwise() && g.groups == 1 {
                let w_t = Mat::transposed(w, ckk);
                return gemm_into(cg, ohw, og, dx_n, w_t, Mat::rows(dy_n, ohw));
            }
            let dx_n = init_zeros(dx_n);
            for grp in 0..g.groups {
                let w_t = Mat::transposed(&w[grp * og * ckk..][..og * ckk], ckk);
                let dy_g = Mat::rows(&dy_n[grp * og * ohw..][..og * ohw], ohw);
                let dx_g = &mut dx_n[grp * cg * g.in_plane()..][..cg * g.in_plane()];
                if g.is_pointwise() {
                    gemm(cg, ohw, og, dx_g, w_t, dy_g, false);
                } else {
                    gemm(ckk, ohw, og, col, w_t, dy_g, false);
                    col2im(g, col, dx_g);
                }
            }
            dx_n
        },
    )
}

/// `dW [o, c / groups, kh, kw]` from the input and `dy`.
pub fn backward_weight(g: &ConvGeom, x: &[f32], dy: &[f32]) -> Vec<f32> {
    let (ohw, og, ckk) = (g.out_plane(), g.og(), g.ckk());
    let blocks = rayon::current_num_threads().clamp(1, g.n.max(1));
    let per = g.n.div_ceil(blocks).max(1);
    let partials: Vec<Vec<f32>> = (0..blocks)
        .into_par_iter()
        .map(|b| {
            let mut acc = vec![0.0; g.o * ckk];
            let mut col = col_buffer(g);
            for n in b * per..((b + 1) * per).min(g.n) {
                let x_n = &x[n * g.c * g.in_plane()..][..g.c * g.in_plane()];
                let dy_n = &dy[n * g.o * ohw..][..g.o * ohw];
                for grp in 0..g.groups {
                    let cols = columns(g, x_n, grp, &mut col);
                    let dy_g = Mat::rows(&dy_n[grp * og * ohw..][..og * ohw], ohw);
                    let acc_g = &mut acc[grp * og * ckk..][..og * ckk];
                    gemm(og, ckk, ohw, acc_g, dy_g, Mat::transposed(cols, ohw), true);
                }
            }
            acc
        })
        .collect();
    sum_in_order(partials)
}

/// The element-wise sum of equally long buffers, added in their order.
pub(crate) fn sum_in_order(parts: Vec<Vec<f32>>) -> Vec<f32> {
    let mut it = parts.into_iter();
    let mut total = it.next().unwrap_or_default();
    for p in it {
        total.iter_mut().zip(&p).for_each(|(t, v)| *t += v);
    }
    total
}

/// `db [o]`: `dy` summed over images and pixels, per output channel.
pub fn backward_bias(n: usize, o: usize, plane: usize, dy: &[f32]) -> Vec<f32> {
    (0..o)
        .into_par_iter()
        .map(|oc| {
            (0..n)
                .map(|i| lanes::sum(&dy[(i * o + oc) * plane..][..plane]))
                .sum()
        })
        .collect()
}
