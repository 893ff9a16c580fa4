//! A bounds-checked front to the `gemm` crate (the GEMM burn-flex uses). With `fresh.rs`
//! (output buffers that are not zeroed first), the only places in artemis that use `unsafe`.
//!
//! Matrices are views of `f32` slices with element strides: element `(i, j)` of a view is
//! `data[i * rs + j * cs]`. Every view is checked against its slice before the call, so the
//! pointers the `gemm` crate reads and writes stay inside the slices it was given.
#![allow(unsafe_code)]

use std::mem::MaybeUninit;

/// A read-only `rows x cols` view of a slice.
#[derive(Clone, Copy)]
pub(crate) struct Mat<'a> {
    pub data: &'a [f32],
    pub rs: usize,
    pub cs: usize,
}

impl<'a> Mat<'a> {
    /// A row-major `rows x cols` matrix: row stride `cols`.
    pub fn rows(data: &'a [f32], cols: usize) -> Self {
        Mat {
            data,
            rs: cols,
            cs: 1,
        }
    }
    /// The transpose of a row-major matrix with `cols` columns.
    pub fn transposed(data: &'a [f32], cols: usize) -> Self {
        Mat {
            data,
            rs: 1,
            cs: cols,
        }
    }
}

/// The last element a `rows x cols` view with these strides reaches, plus one.
fn extent(rows: usize, cols: usize, rs: usize, cs: usize) -> usize {
    if rows == 0 || cols == 0 {
        return 0;
    }
    (rows - 1) * rs + (cols - 1) * cs + 1
}

/// `dst = a x b` (`accumulate`: `dst += a x b`) with `a` `m x k`, `b` `k x n` and `dst` a
/// row-major `m x n` matrix with row stride `n`. Single-threaded: callers parallelise over
/// images or channels, which keeps every result independent of the thread count.
///
/// # Panics
/// If a view does not fit its slice.
pub(crate) fn gemm(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    a: Mat,
    b: Mat,
    accumulate: bool,
) {
    assert!(
        dst.len() >= m * n,
        "gemm: destination {} < {m}x{n}",
        dst.len()
    );
    if k == 0 && !accumulate {
        dst[..m * n].fill(0.0);
    }
    // SAFETY: `dst` holds `m x n` elements (checked above) and is borrowed mutably, so
    // nothing else aliases it.
    unsafe { raw(m, n, k, dst.as_mut_ptr(), a, b, accumulate) }
}

/// `dst = a x b` into a destination that need not be initialised (a chunk of a
/// [`crate::fresh::par_init`] buffer): `dst` is exactly `m x n`, row-major, and comes back as
/// the floats written.
///
/// # Panics
/// If `dst` is not `m * n` long or a view does not fit its slice.
pub(crate) fn gemm_into<'d>(
    m: usize,
    n: usize,
    k: usize,
    dst: &'d mut [MaybeUninit<f32>],
    a: Mat,
    b: Mat,
) -> &'d mut [f32] {
    assert_eq!(dst.len(), m * n, "gemm_into: destination is not {m}x{n}");
    if k == 0 || dst.is_empty() {
        return crate::fresh::init_zeros(dst);
    }
    // SAFETY: `dst` holds `m x n` elements and is borrowed mutably. With `accumulate` false
    // the `gemm` crate sets its `alpha` to zero and never reads the destination
    // (gemm-common 0.19, `gemm_basic_generic`: `if !read_dst { alpha.set_zero() }`; its
    // microkernels store `beta * a x b` when alpha is zero), and with k > 0 it writes every
    // one of the `m x n` elements before returning.
    unsafe {
        raw(m, n, k, dst.as_mut_ptr().cast::<f32>(), a, b, false);
        &mut *(dst as *mut [MaybeUninit<f32>] as *mut [f32])
    }
}

/// The `gemm` crate's call, once the views are checked to fit their slices.
///
/// # Safety
/// `dst` must be valid for writes (and, with `accumulate`, reads) of `m x n` floats, row
/// stride `n`, and alias neither view.
///
/// # Panics
/// If a view does not fit its slice.
unsafe fn raw(m: usize, n: usize, k: usize, dst: *mut f32, a: Mat, b: Mat, accumulate: bool) {
    assert!(
        a.data.len() >= extent(m, k, a.rs, a.cs),
        "gemm: lhs does not fit"
    );
    assert!(
        b.data.len() >= extent(k, n, b.rs, b.cs),
        "gemm: rhs does not fit"
    );
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    // SAFETY: the two views were checked above to lie inside their slices (the largest
    // index each can reach is below its length); the caller vouches for `dst`; strides fit
    // in isize because they index allocated slices.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            n as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_a_naive_product_and_accumulates() {
        let (m, n, k) = (3, 5, 4);
        let a: Vec<f32> = (0..m * k).map(|i| i as f32 * 0.5 - 2.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 7) as f32 - 3.0).collect();
        let mut dst = vec![1.0; m * n];
        gemm(m, n, k, &mut dst, Mat::rows(&a, k), Mat::rows(&b, n), true);
        for i in 0..m {
            for j in 0..n {
                let want: f32 = 1.0 + (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum::<f32>();
                assert!((dst[i * n + j] - want).abs() < 1e-5);
            }
        }
        // a^T is k x m: the transposed view of the same slice.
        let mut t = vec![0.0; k * n];
        let c: Vec<f32> = (0..m * n).map(|i| i as f32).collect();
        gemm(
            k,
            n,
            m,
            &mut t,
            Mat::transposed(&a, k),
            Mat::rows(&c, n),
            false,
        );
        let want: f32 = (0..m).map(|p| a[p * k + 1] * c[p * n + 2]).sum();
        assert!((t[n + 2] - want).abs() < 1e-4);
    }

    #[test]
    #[should_panic(expected = "lhs does not fit")]
    fn refuses_a_view_past_its_slice() {
        let a = [0.0; 5];
        let b = [0.0; 6];
        let mut dst = [0.0; 4];
        gemm(2, 2, 3, &mut dst, Mat::rows(&a, 3), Mat::rows(&b, 2), false);
    }
}
