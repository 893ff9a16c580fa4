//! Sums and dot products in eight independent lanes, so that the compiler vectorises them
//! (a single running `f32` sum is a dependency chain it may not reorder). The lane order is
//! fixed, so results do not depend on threads or on the machine's vector width.

const LANES: usize = 8;

/// `sum(a[i] * b[i])` over the common length.
#[inline(always)]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    sum_map2(a, b, |x, y| x * y)
}

/// `dst[i] += a * src[i]` over the terms both slices hold.
#[inline(always)]
pub(crate) fn axpy(a: f32, src: &[f32], dst: &mut [f32]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d += a * s;
    }
}

/// `sum(a[i])`.
#[inline(always)]
pub(crate) fn sum(a: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let mut c = a.chunks_exact(LANES);
    for x in &mut c {
        for l in 0..LANES {
            acc[l] += x[l];
        }
    }
    acc.iter().sum::<f32>() + c.remainder().iter().sum::<f32>()
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
    (
        sum_map2(a, a, |x, _| x - k),
        sum_map2(a, a, |x, _| (x - k) * (x - k)),
    )
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
        assert!((sum(&a) - a.iter().sum::<f32>()).abs() < 1e-5);
    }
}
