//! Sums and dot products in eight independent lanes, so that the compiler vectorises them
//! (a single running `f32` sum is a dependency chain it may not reorder). The lane order is
//! fixed, so results do not depend on threads or on the machine's vector width.

const LANES: usize = 8;

/// `sum(a[i] * b[i])` over the common length.
#[inline(always)]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    sum_map2(a, b, |x, y| x * y)
}

/// `sum(a[i * stride] * b[i])` for `b.len()` terms: a dot product with a strided left side.
#[inline(always)]
pub(crate) fn dot_strided(a: &[f32], stride: usize, b: &[f32]) -> f32 {
    if stride == 1 {
        return dot(a, b);
    }
    let mut acc = [0.0f32; LANES];
    let full = b.len() / LANES * LANES;
    for base in (0..full).step_by(LANES) {
        for l in 0..LANES {
            acc[l] += a[(base + l) * stride] * b[base + l];
        }
    }
    let tail: f32 = (full..b.len()).map(|i| a[i * stride] * b[i]).sum();
    acc.iter().sum::<f32>() + tail
}

/// `dst[i * ds] += a * src[i * ss]` over the terms both slices hold. The contiguous case is
/// a loop of its own: written with `step_by(1)` it did not vectorise.
#[inline(always)]
pub(crate) fn axpy(a: f32, src: &[f32], ss: usize, dst: &mut [f32], ds: usize) {
    if ss == 1 && ds == 1 {
        for (d, s) in dst.iter_mut().zip(src) {
            *d += a * s;
        }
    } else {
        for (d, s) in dst.iter_mut().step_by(ds).zip(src.iter().step_by(ss)) {
            *d += a * s;
        }
    }
}

/// `sum(a[i])`.
#[inline(always)]
pub(crate) fn sum(a: &[f32]) -> f32 {
    sum_map(a, |x| x)
}

/// `sum(f(a[i]))`.
#[inline(always)]
pub(crate) fn sum_map(a: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    sum_map2(a, a, |x, _| f(x))
}

/// `sum(f(a[i], b[i]))` over the common length.
#[inline(always)]
pub(crate) fn sum_map2(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f32; LANES];
    let mut ca = a.chunks_exact(LANES);
    let mut cb = b.chunks_exact(LANES);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for l in 0..LANES {
            acc[l] += f(x[l], y[l]);
        }
    }
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| f(*x, *y))
        .sum();
    acc.iter().sum::<f32>() + tail
}

/// `(sum(a[i] - k), sum((a[i] - k)^2))`, each sum in a loop of its own (one loop with both
/// did not vectorise well: see `batchnorm::gated_sums`).
#[inline(always)]
pub(crate) fn shifted_sums(a: &[f32], k: f32) -> (f32, f32) {
    (sum_map(a, |x| x - k), sum_map(a, |x| (x - k) * (x - k)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agree_with_plain_loops() {
        let a: Vec<f32> = (0..45).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..23).map(|i| (i as f32 * 0.11).cos()).collect();
        let plain: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - plain).abs() < 1e-5);
        let strided: f32 = (0..b.len() / 2).map(|i| a[i * 2] * b[i]).sum();
        assert!((dot_strided(&a, 2, &b[..b.len() / 2]) - strided).abs() < 1e-5);
        assert!((sum(&a) - a.iter().sum::<f32>()).abs() < 1e-5);
    }
}
