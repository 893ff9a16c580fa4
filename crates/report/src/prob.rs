//! Probabilities from logits: softmax (with a temperature) and the top class. The bottom of
//! the crate: it imports nothing of it.

/// Numerically stable softmax of one row.
pub fn softmax(row: &[f32]) -> Vec<f32> {
    let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = row.iter().map(|x| (x - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.iter().map(|e| e / sum).collect()
}

/// Index and value of the largest probability.
pub fn top1(p: &[f32]) -> (usize, f32) {
    p.iter().enumerate().fold(
        (0, f32::NEG_INFINITY),
        |b, (i, &x)| if x > b.1 { (i, x) } else { b },
    )
}

/// Softmax of `logits / temperature`.
pub fn softmax_t(logits: &[f32], temperature: f64) -> Vec<f32> {
    let t = temperature as f32;
    let scaled: Vec<f32> = logits.iter().map(|z| z / t).collect();
    softmax(&scaled)
}

#[cfg(test)]
mod tests {
    #[test]
    fn softmax_sums_to_one_and_keeps_order() {
        let p = super::softmax(&[1.0, 3.0, 2.0, 1000.0]);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert_eq!(super::top1(&p).0, 3);
        let q = super::softmax(&[0.0, (2.0f32).ln()]);
        assert!((q[1] - 2.0 / 3.0).abs() < 1e-6);
    }
}
