//! Depthwise 2-D convolution (one filter per channel, `groups == c == o`) on NCHW slices, as
//! direct loops over each `(image, channel)` plane, parallel over the planes.
//!
//! Each kernel tap is one pass over the rows of the output plane that it reaches, with the
//! valid columns computed once, so the inner loop has no bounds test and is a contiguous
//! multiply-add the compiler vectorises: at stride 2 the input plane is first regrouped by
//! column phase (even columns, then odd), so that a tap's inputs lie next to each other. The weight gradient is a sum over images
//! per channel, taken in image order: it does not depend on the thread count at all.

use crate::act::{self, Activation};
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

/// A plane's columns regrouped by their phase modulo the column stride `sx`: row `iy` of
/// phase `q` holds `x[iy, q], x[iy, q + sx], x[iy, q + 2 sx], ...`, so a strided tap reads (or
/// writes) a contiguous run. Layout `[sx, h, wq]` with `wq = ceil(w / sx)`; at stride 1 it is
/// the plane itself, and the kernels use the plane without a copy.
#[derive(Debug, Clone, Copy)]
struct Phases {
    sx: usize,
    h: usize,
    w: usize,
    wq: usize,
}

impl Phases {
    fn new(g: &ConvGeom) -> Phases {
        let sx = g.stride[1];
        Phases {
            sx,
            h: g.h,
            w: g.w,
            wq: g.w.div_ceil(sx),
        }
    }
    fn len(&self) -> usize {
        self.sx * self.h * self.wq
    }
    /// The run that starts at input row `iy`, column `ix` and steps by `sx`, from its start to
    /// the end of its phase row.
    #[inline(always)]
    fn at(&self, iy: usize, ix: usize) -> std::ops::Range<usize> {
        let (q, j) = (ix % self.sx, ix / self.sx);
        let row = (q * self.h + iy) * self.wq;
        row + j..row + self.wq
    }
    /// `plane [h, w]` regrouped into `buf`.
    fn split(&self, plane: &[f32], buf: &mut [f32]) {
        for q in 0..self.sx.min(self.w) {
            for iy in 0..self.h {
                let (src, dst) = (&plane[iy * self.w..][..self.w], &mut buf[self.at(iy, q)]);
                for (d, s) in dst.iter_mut().zip(src[q..].iter().step_by(self.sx)) {
                    *d = *s;
                }
            }
        }
    }
    /// `buf` written back into `plane [h, w]` (the inverse of [`Self::split`]).
    fn merge(&self, buf: &[f32], plane: &mut [f32]) {
        for q in 0..self.sx.min(self.w) {
            for iy in 0..self.h {
                let (src, dst) = (&buf[self.at(iy, q)], &mut plane[iy * self.w..][..self.w]);
                for (d, s) in dst[q..].iter_mut().step_by(self.sx).zip(src) {
                    *d = *s;
                }
            }
        }
    }
}

/// Scratch for one plane's phases (none at stride 1).
fn phase_buffer(ph: &Phases) -> Vec<f32> {
    if ph.sx == 1 {
        Vec::new()
    } else {
        vec![0.0; ph.len()]
    }
}

/// The plane in phase layout: itself at stride 1, else split into `buf`.
fn phased<'a>(ph: &Phases, plane: &'a [f32], buf: &'a mut [f32]) -> &'a [f32] {
    if ph.sx == 1 {
        plane
    } else {
        ph.split(plane, buf);
        buf
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
    let (taps, kk, ph) = (taps(g), g.kh * g.kw, Phases::new(g));
    let mut y = vec![0.0; g.n * g.c * g.out_plane()];
    y.par_chunks_mut(g.out_plane()).enumerate().for_each_init(
        || phase_buffer(&ph),
        |buf, (p, y)| {
            let c = p % g.c;
            let x = phased(&ph, &x[p * g.in_plane()..][..g.in_plane()], buf);
            if let Some(b) = bias {
                y.fill(b[c]);
            }
            let w = &w[c * kk..][..kk];
            vectorized(
                #[inline(always)]
                || plane_forward(g, &ph, &taps, w, x, y),
            );
            act::apply(y, act);
        },
    );
    y
}

/// One output plane, row by row: every tap that reaches a row adds into it while it is hot.
/// `x` is the input plane in phase layout.
#[inline(always)]
fn plane_forward(g: &ConvGeom, ph: &Phases, taps: &[Tap], w: &[f32], x: &[f32], y: &mut [f32]) {
    for (oy, row) in y.chunks_exact_mut(g.ow).enumerate() {
        for t in taps.iter().filter(|t| t.rows.contains(&oy)) {
            let src = &x[ph.at(t.input_row(g, oy), t.ix0)];
            lanes::axpy(w[t.k], src, &mut row[t.cols.clone()]);
        }
    }
}

/// `dx [n, c, h, w]` from `dy [n, c, oh, ow]` and the weight.
pub fn backward_input(g: &ConvGeom, w: &[f32], dy: &[f32]) -> Vec<f32> {
    let (taps, kk, ph) = (taps(g), g.kh * g.kw, Phases::new(g));
    let mut dx = vec![0.0; g.n * g.c * g.in_plane()];
    dx.par_chunks_mut(g.in_plane()).enumerate().for_each_init(
        || phase_buffer(&ph),
        |buf, (p, dx)| {
            let c = p % g.c;
            let dy = &dy[p * g.out_plane()..][..g.out_plane()];
            let w = &w[c * kk..][..kk];
            let acc: &mut [f32] = if ph.sx == 1 {
                &mut *dx
            } else {
                buf.fill(0.0);
                &mut buf[..]
            };
            vectorized(
                #[inline(always)]
                || plane_backward_input(g, &ph, &taps, w, dy, acc),
            );
            if ph.sx != 1 {
                ph.merge(buf, dx);
            }
        },
    );
    dx
}

/// Adds one plane's input gradient into `dx`, in phase layout.
#[inline(always)]
fn plane_backward_input(
    g: &ConvGeom,
    ph: &Phases,
    taps: &[Tap],
    w: &[f32],
    dy: &[f32],
    dx: &mut [f32],
) {
    for (oy, row) in dy.chunks_exact(g.ow).enumerate() {
        for t in taps.iter().filter(|t| t.rows.contains(&oy)) {
            let dst = &mut dx[ph.at(t.input_row(g, oy), t.ix0)];
            lanes::axpy(w[t.k], &row[t.cols.clone()], dst);
        }
    }
}

/// `dW [c, 1, kh, kw]` from the input and `dy`.
pub fn backward_weight(g: &ConvGeom, x: &[f32], dy: &[f32]) -> Vec<f32> {
    let (taps, kk, ph) = (taps(g), g.kh * g.kw, Phases::new(g));
    let mut dw = vec![0.0; g.c * kk];
    dw.par_chunks_mut(kk).enumerate().for_each_init(
        || phase_buffer(&ph),
        |buf, (c, dw)| {
            for n in 0..g.n {
                let p = n * g.c + c;
                let x = phased(&ph, &x[p * g.in_plane()..][..g.in_plane()], buf);
                let dy = &dy[p * g.out_plane()..][..g.out_plane()];
                vectorized(
                    #[inline(always)]
                    || {
                        for t in &taps {
                            let mut acc = 0.0;
                            for oy in t.rows.clone() {
                                let src = &x[ph.at(t.input_row(g, oy), t.ix0)];
                                acc += lanes::dot(src, &dy[oy * g.ow..][t.cols.clone()]);
                            }
                            dw[t.k] += acc;
                        }
                    },
                );
            }
        },
    );
    dw
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_split_and_merge_back_every_column() {
        for (w, sx) in [(7, 2), (8, 2), (5, 3), (1, 2), (6, 1)] {
            let ph = Phases {
                sx,
                h: 3,
                w,
                wq: w.div_ceil(sx),
            };
            let plane: Vec<f32> = (0..3 * w).map(|i| i as f32).collect();
            let mut buf = vec![-1.0; ph.len()];
            ph.split(&plane, &mut buf);
            // Row 1, starting at column 1: columns 1, 1 + sx, ...
            let run: Vec<f32> = buf[ph.at(1, 1.min(w - 1))].to_vec();
            let want: Vec<f32> = (1.min(w - 1)..w)
                .step_by(sx)
                .map(|x| (w + x) as f32)
                .collect();
            assert_eq!(run[..want.len()], want[..], "w {w}, stride {sx}");
            let mut back = vec![0.0; 3 * w];
            ph.merge(&buf, &mut back);
            assert_eq!(back, plane, "w {w}, stride {sx}");
        }
    }
}
