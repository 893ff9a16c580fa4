//! Depthwise 2-D convolution (one filter per channel, `groups == c == o`) on NCHW slices, as
//! direct loops over each `(image, channel)` plane, parallel over the planes.
//!
//! Each kernel tap is one pass over the rows of the output plane that it reaches, with the
//! valid columns computed once, so the inner loop has no bounds test and (at stride 1) is a
//! contiguous multiply-add the compiler vectorises. The weight gradient is a sum over images
//! per channel, taken in image order: it does not depend on the thread count at all.

use crate::act::{self, Activation};
use crate::dw_blocked;
use crate::fresh::{init_fill, init_zeros, par_init};
use crate::geom::ConvGeom;
use crate::lanes;
use crate::simd::vectorized;
use rayon::prelude::*;

/// The taps of a kernel: `(ky, kx)` with the output rows and columns each one reaches, and
/// the input row/column of the first valid output.
struct Tap {
    k: usize,
    rows: std::ops::Range<usize>,
    cols: std::ops::Range<usize>,
    /// Input column of output column `cols.start`.
    ix0: usize,
    /// Input row of output row 0 plus padding: `iy = oy * stride + dy - pad`.
    dy: usize,
}

fn taps(g: &ConvGeom) -> Vec<Tap> {
    let mut taps = Vec::with_capacity(g.kh * g.kw);
    for ky in 0..g.kh {
        for kx in 0..g.kw {
            let (rows, cols) = (g.rows_for(ky), g.cols_for(kx));
            if rows.is_empty() || cols.is_empty() {
                continue;
            }
            let ix0 = cols.start * g.stride[1] + kx * g.dilation[1] - g.pad[1];
            taps.push(Tap {
                k: ky * g.kw + kx,
                rows,
                cols,
                ix0,
                dy: ky * g.dilation[0],
            });
        }
    }
    taps
}

impl Tap {
    fn input_row(&self, g: &ConvGeom, oy: usize) -> usize {
        oy * g.stride[0] + self.dy - g.pad[0]
    }
}

/// `act(y) [n, c, oh, ow]` of `x [n, c, h, w]` and `w [c, 1, kh, kw]`, plus an optional bias.
pub fn forward(
    g: &ConvGeom,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    act: Activation,
) -> Vec<f32> {
    if dw_blocked::applies(g) {
        return dw_blocked::forward(g, x, w, bias, act);
    }
    let (taps, kk) = (taps(g), g.kh * g.kw);
    let planes = g.n * g.c * g.out_plane();
    par_init(
        planes,
        g.out_plane(),
        || (),
        |_, p, y| {
            let c = p % g.c;
            let x = &x[p * g.in_plane()..][..g.in_plane()];
            let y = init_fill(y, bias.map_or(0.0, |b| b[c]));
            vectorized(
                #[inline(always)]
                || plane_forward(g, &taps, &w[c * kk..][..kk], x, y),
            );
            act::apply(y, act);
            y
        },
    )
}

/// One output plane, row by row: every tap that reaches a row adds into it while it is hot.
#[inline(always)]
fn plane_forward(g: &ConvGeom, taps: &[Tap], w: &[f32], x: &[f32], y: &mut [f32]) {
    let sx = g.stride[1];
    for (oy, row) in y.chunks_exact_mut(g.ow).enumerate() {
        for t in taps.iter().filter(|t| t.rows.contains(&oy)) {
            let (wv, src) = (w[t.k], &x[t.input_row(g, oy) * g.w..][..g.w]);
            lanes::axpy(wv, &src[t.ix0..], sx, &mut row[t.cols.clone()], 1);
        }
    }
}

/// `dx [n, c, h, w]` from `dy [n, c, oh, ow]` and the weight.
pub fn backward_input(g: &ConvGeom, w: &[f32], dy: &[f32]) -> Vec<f32> {
    if dw_blocked::applies(g) {
        return dw_blocked::backward_input(g, w, dy);
    }
    let (taps, kk) = (taps(g), g.kh * g.kw);
    let planes = g.n * g.c * g.in_plane();
    par_init(
        planes,
        g.in_plane(),
        || (),
        |_, p, dx| {
            let (c, dx) = (p % g.c, init_zeros(dx));
            let dy = &dy[p * g.out_plane()..][..g.out_plane()];
            vectorized(
                #[inline(always)]
                || plane_backward_input(g, &taps, &w[c * kk..][..kk], dy, dx),
            );
            dx
        },
    )
}

#[inline(always)]
fn plane_backward_input(g: &ConvGeom, taps: &[Tap], w: &[f32], dy: &[f32], dx: &mut [f32]) {
    let sx = g.stride[1];
    for (oy, row) in dy.chunks_exact(g.ow).enumerate() {
        for t in taps.iter().filter(|t| t.rows.contains(&oy)) {
            let dst = &mut dx[t.input_row(g, oy) * g.w..][..g.w];
            lanes::axpy(w[t.k], &row[t.cols.clone()], 1, &mut dst[t.ix0..], sx);
        }
    }
}

/// `dW [c, 1, kh, kw]` from the input and `dy`.
pub fn backward_weight(g: &ConvGeom, x: &[f32], dy: &[f32]) -> Vec<f32> {
    if dw_blocked::applies(g) {
        return dw_blocked::backward_weight(g, x, dy);
    }
    let (taps, kk, sx) = (taps(g), g.kh * g.kw, g.stride[1]);
    let mut dw = vec![0.0; g.c * kk];
    dw.par_chunks_mut(kk).enumerate().for_each(|(c, dw)| {
        for n in 0..g.n {
            let p = n * g.c + c;
            let x = &x[p * g.in_plane()..][..g.in_plane()];
            let dy = &dy[p * g.out_plane()..][..g.out_plane()];
            vectorized(
                #[inline(always)]
                || {
                    for t in &taps {
                        let mut acc = 0.0;
                        for oy in t.rows.clone() {
                            let src = &x[t.input_row(g, oy) * g.w + t.ix0..];
                            acc += lanes::dot_strided(src, sx, &dy[oy * g.ow..][t.cols.clone()]);
                        }
                        dw[t.k] += acc;
                    }
                },
            );
        }
    });
    dw
}
