//! Depthwise convolution of small planes (MobileNetV2's 20x20, 10x10 and 5x5 stages) in
//! blocks of eight channels, laid out channels-last in per-thread scratch buffers.
//!
//! Row by row (`depthwise.rs`), a 10-pixel row is one 8-lane vector and two scalar tails per
//! tap, and a 5-pixel row is all tail: the loops' overheads outweigh their arithmetic. Here
//! each image's planes are copied, eight channels at a time, into a zero-padded buffer
//! `[rows, cols, 8]` (the padding written as zeros, so no tap needs a bounds test), every
//! output pixel is nine (`kh * kw`) full 8-lane multiply-adds, and the result is copied back
//! to NCHW. The copies are of planes that fit in L1.
//!
//! Shapes in this file: `x [n, c, h, w]`, `w [c, 1, kh, kw]`, `y [n, c, oh, ow]`; a block is
//! channels `8 b .. 8 b + 8` of one image (the last one zero-filled past `c`).
//!
//! The weight gradient sums per channel over images in image order: it does not depend on
//! the thread count.

use crate::act::{self, Activation};
use crate::fresh::{init_zeros, par_init};
use crate::geom::ConvGeom;
use crate::simd::vectorized;
use rayon::prelude::*;

const L: usize = 8;

/// Whether this file's loops take `g`: a depthwise convolution whose input rows are at most
/// 20 wide. Wider rows vectorise well row by row: taking MobileNetV2's 40-wide planes too,
/// or every stride-2 plane, measured no gain (process CPU time of its depthwise layers'
/// forward and backward passes, alternating runs).
pub(crate) fn applies(g: &ConvGeom) -> bool {
    g.w <= 20
}

/// The zero-padded block's extent: the input rows and columns the taps reach.
struct Padded {
    rows: usize,
    cols: usize,
}

impl Padded {
    fn of(g: &ConvGeom) -> Padded {
        Padded {
            rows: (g.oh - 1) * g.stride[0] + (g.kh - 1) * g.dilation[0] + 1,
            cols: (g.ow - 1) * g.stride[1] + (g.kw - 1) * g.dilation[1] + 1,
        }
    }
    fn len(&self) -> usize {
        self.rows * self.cols * L
    }
    /// Offset (in pixels) of each tap from an output pixel's top-left input pixel.
    fn taps(&self, g: &ConvGeom) -> Vec<usize> {
        (0..g.kh)
            .flat_map(|ky| (0..g.kw).map(move |kx| (ky, kx)))
            .map(|(ky, kx)| ky * g.dilation[0] * self.cols + kx * g.dilation[1])
            .collect()
    }
    /// The padded pixel of output pixel `(oy, ox)`'s top-left tap.
    #[inline(always)]
    fn origin(&self, g: &ConvGeom, oy: usize, ox: usize) -> usize {
        oy * g.stride[0] * self.cols + ox * g.stride[1]
    }
}

/// Copies planes `planes [k, h, w]` (k <= 8) into the padded block `dst [rows, cols, 8]`,
/// zeros around and in the lanes past `k`.
#[inline(always)]
fn pack_input(g: &ConvGeom, p: &Padded, planes: &[f32], k: usize, dst: &mut [f32]) {
    dst.fill(0.0);
    for l in 0..k {
        let plane = &planes[l * g.h * g.w..][..g.h * g.w];
        for iy in 0..g.h.min(p.rows.saturating_sub(g.pad[0])) {
            let py = iy + g.pad[0];
            for ix in 0..g.w.min(p.cols.saturating_sub(g.pad[1])) {
                dst[(py * p.cols + ix + g.pad[1]) * L + l] = plane[iy * g.w + ix];
            }
        }
    }
}

/// Every block's weights, packed once per call: `[c / 8 (rounded up), kh * kw, 8]`, lanes
/// past `c` zero. Block `b` is `packed[b * kk * 8..][..kk * 8]`.
fn pack_weights(w: &[f32], c: usize, kk: usize) -> Vec<f32> {
    let mut out = vec![0.0; c.div_ceil(L) * kk * L];
    for ch in 0..c {
        let (b, l) = (ch / L, ch % L);
        for t in 0..kk {
            out[(b * kk + t) * L + l] = w[ch * kk + t];
        }
    }
    out
}

/// `act(y)` of one image's `x_n [c, h, w]`.
fn forward_image(
    g: &ConvGeom,
    x_n: &[f32],
    wp: &[f32],
    bias: Option<&[f32]>,
    act: Activation,
    y_n: &mut [f32],
    scratch: &mut Vec<f32>,
) {
    let (p, kk, ohw) = (Padded::of(g), g.kh * g.kw, g.oh * g.ow);
    let taps = p.taps(g);
    scratch.resize(p.len(), 0.0);
    for c0 in (0..g.c).step_by(L) {
        let k = L.min(g.c - c0);
        let wb = &wp[c0 * kk..][..kk * L];
        let b: [f32; L] = std::array::from_fn(|l| match bias {
            Some(b) if l < k => b[c0 + l],
            _ => 0.0,
        });
        pack_input(g, &p, &x_n[c0 * g.h * g.w..], k, scratch);
        let y_b = &mut y_n[c0 * ohw..][..k * ohw];
        vectorized(
            #[inline(always)]
            || {
                for oy in 0..g.oh {
                    for ox in 0..g.ow {
                        let o = p.origin(g, oy, ox);
                        let mut acc = [0.0f32; L];
                        for (t, &off) in taps.iter().enumerate() {
                            let src = &scratch[(o + off) * L..][..L];
                            let wt = &wb[t * L..][..L];
                            for l in 0..L {
                                acc[l] += wt[l] * src[l];
                            }
                        }
                        for (l, a) in acc.iter().enumerate().take(k) {
                            y_b[l * ohw + oy * g.ow + ox] = b[l] + a;
                        }
                    }
                }
            },
        );
    }
    act::apply(y_n, act);
}

/// `act(y) [n, c, oh, ow]`, parallel over images.
pub(crate) fn forward(
    g: &ConvGeom,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    act: Activation,
) -> Vec<f32> {
    let wp = pack_weights(w, g.c, g.kh * g.kw);
    let image = g.c * g.oh * g.ow;
    par_init(g.n * image, image, Vec::new, |scratch, n, y_n| {
        // Every element is written below; zeroed here, in cache, as safe code must.
        let y_n = init_zeros(y_n);
        let x_n = &x[n * g.c * g.h * g.w..][..g.c * g.h * g.w];
        forward_image(g, x_n, &wp, bias, act, y_n, scratch);
        y_n
    })
}

/// Copies `dy_n`'s planes of channels `c0 .. c0 + k` into `dst [oh * ow, 8]`.
#[inline(always)]
fn pack_output(g: &ConvGeom, dy_n: &[f32], c0: usize, k: usize, dst: &mut [f32]) {
    let ohw = g.oh * g.ow;
    dst.fill(0.0);
    for l in 0..k {
        let plane = &dy_n[(c0 + l) * ohw..][..ohw];
        for (i, v) in plane.iter().enumerate() {
            dst[i * L + l] = *v;
        }
    }
}

/// `dx [n, c, h, w]` from `dy [n, c, oh, ow]`, parallel over images: each output pixel's
/// gradient scattered to the padded block, then the block's inside copied out.
pub(crate) fn backward_input(g: &ConvGeom, w: &[f32], dy: &[f32]) -> Vec<f32> {
    let (p, kk, ohw) = (Padded::of(g), g.kh * g.kw, g.oh * g.ow);
    let (taps, wp) = (p.taps(g), pack_weights(w, g.c, kk));
    let image = g.c * g.h * g.w;
    par_init(
        g.n * image,
        image,
        || (vec![0.0; p.len()], vec![0.0; ohw * L]),
        |(dp, db), n, dx_n| {
            let (dx_n, dy_n) = (init_zeros(dx_n), &dy[n * g.c * ohw..][..g.c * ohw]);
            for c0 in (0..g.c).step_by(L) {
                let k = L.min(g.c - c0);
                let wb = &wp[c0 * kk..][..kk * L];
                pack_output(g, dy_n, c0, k, db);
                dp.fill(0.0);
                vectorized(
                    #[inline(always)]
                    || scatter(g, &p, &taps, wb, db, dp),
                );
                unpack_input(g, &p, dp, &mut dx_n[c0 * g.h * g.w..], k);
            }
            dx_n
        },
    )
}

/// `dp[origin + tap] += w[tap] * db[pixel]` over every output pixel and tap.
#[inline(always)]
fn scatter(g: &ConvGeom, p: &Padded, taps: &[usize], wb: &[f32], db: &[f32], dp: &mut [f32]) {
    for oy in 0..g.oh {
        for ox in 0..g.ow {
            let o = p.origin(g, oy, ox);
            let d = &db[(oy * g.ow + ox) * L..][..L];
            for (t, &off) in taps.iter().enumerate() {
                let dst = &mut dp[(o + off) * L..][..L];
                let wt = &wb[t * L..][..L];
                for l in 0..L {
                    dst[l] += wt[l] * d[l];
                }
            }
        }
    }
}

/// The inside of the padded block `dp` back to planes `dx [k, h, w]` (input pixels no tap
/// reaches get 0).
fn unpack_input(g: &ConvGeom, p: &Padded, dp: &[f32], dx: &mut [f32], k: usize) {
    for l in 0..k {
        let plane = &mut dx[l * g.h * g.w..][..g.h * g.w];
        for iy in 0..g.h {
            for ix in 0..g.w {
                let (py, px) = (iy + g.pad[0], ix + g.pad[1]);
                plane[iy * g.w + ix] = if py < p.rows && px < p.cols {
                    dp[(py * p.cols + px) * L + l]
                } else {
                    0.0
                };
            }
        }
    }
}

/// `dW [c, 1, kh, kw]`, parallel over channel blocks, images summed in order.
pub(crate) fn backward_weight(g: &ConvGeom, x: &[f32], dy: &[f32]) -> Vec<f32> {
    let (p, kk, ohw) = (Padded::of(g), g.kh * g.kw, g.oh * g.ow);
    let taps = p.taps(g);
    let blocks: Vec<Vec<f32>> = (0..g.c.div_ceil(L))
        .into_par_iter()
        .map(|b| {
            let (c0, mut xb, mut db) = (b * L, vec![0.0; p.len()], vec![0.0; ohw * L]);
            let k = L.min(g.c - c0);
            let mut acc = vec![0.0f32; kk * L];
            for n in 0..g.n {
                let x_n = &x[(n * g.c + c0) * g.h * g.w..];
                pack_input(g, &p, x_n, k, &mut xb);
                pack_output(g, &dy[n * g.c * ohw..][..g.c * ohw], c0, k, &mut db);
                vectorized(
                    #[inline(always)]
                    || correlate(g, &p, &taps, &xb, &db, &mut acc),
                );
            }
            acc
        })
        .collect();
    let mut dw = vec![0.0; g.c * kk];
    for (b, acc) in blocks.iter().enumerate() {
        for l in 0..L.min(g.c - b * L) {
            for t in 0..kk {
                dw[(b * L + l) * kk + t] = acc[t * L + l];
            }
        }
    }
    dw
}

/// `acc[tap] += sum over output pixels of xb[origin + tap] * db[pixel]`, one image's sum per
/// tap added at the end (as `depthwise.rs` adds each image's).
#[inline(always)]
fn correlate(g: &ConvGeom, p: &Padded, taps: &[usize], xb: &[f32], db: &[f32], acc: &mut [f32]) {
    for (t, &off) in taps.iter().enumerate() {
        let mut s = [0.0f32; L];
        for oy in 0..g.oh {
            for ox in 0..g.ow {
                let src = &xb[(p.origin(g, oy, ox) + off) * L..][..L];
                let d = &db[(oy * g.ow + ox) * L..][..L];
                for l in 0..L {
                    s[l] += src[l] * d[l];
                }
            }
        }
        let a = &mut acc[t * L..][..L];
        for l in 0..L {
            a[l] += s[l];
        }
    }
}
