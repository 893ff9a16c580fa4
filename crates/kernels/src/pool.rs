//! Max-pooling on NCHW slices without padding or dilation (the reference baseline's 2x2,
//! stride 2, floor), parallel over `(image, channel)` planes.
//!
//! The backward pass sends each output gradient to the first input of its window (in row
//! order) that equals the window's maximum, found again from the saved input and output.
//! Ties are all but impossible on real activations; where a sigmoid saturates to exactly 1
//! they occur, but its gradient there is 0 whichever input receives it.

use rayon::prelude::*;

/// A pooling window: `[kh, kw]` and `[sh, sw]` on planes of `[h, w]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolGeom {
    pub planes: usize,
    pub h: usize,
    pub w: usize,
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub oh: usize,
    pub ow: usize,
}

impl PoolGeom {
    /// `None` when a window does not fit the plane.
    pub fn new(
        planes: usize,
        [h, w]: [usize; 2],
        kernel: [usize; 2],
        stride: [usize; 2],
    ) -> Option<Self> {
        if kernel.contains(&0) || stride.contains(&0) || h < kernel[0] || w < kernel[1] {
            return None;
        }
        let (oh, ow) = (
            (h - kernel[0]) / stride[0] + 1,
            (w - kernel[1]) / stride[1] + 1,
        );
        Some(PoolGeom {
            planes,
            h,
            w,
            kernel,
            stride,
            oh,
            ow,
        })
    }

    /// Input offsets (within a plane) of output `(oy, ox)`'s window, in row order.
    fn window(&self, oy: usize, ox: usize) -> impl Iterator<Item = usize> + '_ {
        let (y0, x0) = (oy * self.stride[0], ox * self.stride[1]);
        (0..self.kernel[0])
            .flat_map(move |ky| (0..self.kernel[1]).map(move |kx| (y0 + ky) * self.w + x0 + kx))
    }
}

pub fn forward(g: &PoolGeom, x: &[f32]) -> Vec<f32> {
    let mut y = vec![0.0; g.planes * g.oh * g.ow];
    y.par_chunks_mut(g.oh * g.ow)
        .zip(x.par_chunks(g.h * g.w))
        .for_each(|(y, x)| {
            if g.kernel == [2, 2] && g.stride == [2, 2] {
                for (oy, row) in y.chunks_exact_mut(g.ow).enumerate() {
                    let (a, b) = (&x[2 * oy * g.w..][..g.w], &x[(2 * oy + 1) * g.w..][..g.w]);
                    for (ox, v) in row.iter_mut().enumerate() {
                        *v = a[2 * ox]
                            .max(a[2 * ox + 1])
                            .max(b[2 * ox].max(b[2 * ox + 1]));
                    }
                }
                return;
            }
            for oy in 0..g.oh {
                for ox in 0..g.ow {
                    y[oy * g.ow + ox] = g
                        .window(oy, ox)
                        .map(|i| x[i])
                        .fold(f32::NEG_INFINITY, f32::max);
                }
            }
        });
    y
}

pub fn backward(g: &PoolGeom, x: &[f32], y: &[f32], dy: &[f32]) -> Vec<f32> {
    let mut dx = vec![0.0; x.len()];
    dx.par_chunks_mut(g.h * g.w)
        .enumerate()
        .for_each(|(p, dx)| {
            let x = &x[p * g.h * g.w..][..g.h * g.w];
            let (y, dy) = (
                &y[p * g.oh * g.ow..][..g.oh * g.ow],
                &dy[p * g.oh * g.ow..][..g.oh * g.ow],
            );
            for oy in 0..g.oh {
                for ox in 0..g.ow {
                    let o = oy * g.ow + ox;
                    if let Some(i) = g.window(oy, ox).find(|&i| x[i] == y[o]) {
                        dx[i] += dy[o];
                    }
                }
            }
        });
    dx
}
