//! Two classifiers scored on the same images, compared image by image.
//!
//! Two accuracies with overlapping intervals can still differ reliably: most images are right
//! (or wrong) for both, and only the images on which the two disagree carry the difference.
//! A paired comparison resamples images, not each classifier's figure on its own, so the
//! interval of the difference is much narrower than either accuracy's.
//!
//! - The difference is `accuracy(B) - accuracy(A)` with a 95% percentile-bootstrap interval.
//!   Resampling draws *groups* with replacement: a group is one image, and when several pairs
//!   of runs scored the same image (the same recipes with other seeds) all of that image's
//!   rows move together, so repeated looks at one image are not counted as independent.
//! - McNemar's exact test (two-sided, binomial on the discordant images, p = 1/2) is given
//!   when every group holds one row; with repeated rows its independence does not hold.

use crate::stats::{Interval, interval};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// One image scored by both classifiers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PairedRow {
    /// Rows with the same group are resampled together (one group per distinct image).
    pub group: usize,
    pub a_correct: bool,
    pub b_correct: bool,
}

/// The comparison of B against A.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairedScore {
    /// Rows compared, and the distinct groups (images) among them.
    pub n: usize,
    pub groups: usize,
    pub a_accuracy: f64,
    pub b_accuracy: f64,
    /// Rows A gets right and B wrong, and the other way.
    pub a_only: usize,
    pub b_only: usize,
    /// `accuracy(B) - accuracy(A)`, with its paired bootstrap interval.
    pub difference: Interval,
    pub resamples: usize,
    pub seed: u64,
    /// McNemar's exact two-sided p-value; `None` when a group holds several rows.
    pub mcnemar_p: Option<f64>,
}

/// Compares B with A over `rows` (none empty: the caller refuses that).
pub fn compare(rows: &[PairedRow], resamples: usize, seed: u64) -> PairedScore {
    let n = rows.len();
    let a_ok = rows.iter().filter(|r| r.a_correct).count();
    let b_ok = rows.iter().filter(|r| r.b_correct).count();
    let a_only = rows.iter().filter(|r| r.a_correct && !r.b_correct).count();
    let b_only = rows.iter().filter(|r| r.b_correct && !r.a_correct).count();
    // Per group: rows, and B's right answers minus A's.
    let mut per: std::collections::BTreeMap<usize, (usize, i64)> = Default::default();
    for r in rows {
        let e = per.entry(r.group).or_default();
        e.0 += 1;
        e.1 += i64::from(r.b_correct) - i64::from(r.a_correct);
    }
    let groups: Vec<(usize, i64)> = per.into_values().collect();
    let estimate = (b_ok as f64 - a_ok as f64) / n.max(1) as f64;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let samples: Vec<f64> = (0..resamples)
        .map(|_| {
            let (mut count, mut diff) = (0usize, 0i64);
            for _ in 0..groups.len() {
                let (c, d) = groups[rng.random_range(0..groups.len())];
                count += c;
                diff += d;
            }
            diff as f64 / count.max(1) as f64
        })
        .collect();
    PairedScore {
        n,
        groups: groups.len(),
        a_accuracy: a_ok as f64 / n.max(1) as f64,
        b_accuracy: b_ok as f64 / n.max(1) as f64,
        a_only,
        b_only,
        difference: interval(estimate, samples),
        resamples,
        seed,
        mcnemar_p: (groups.len() == n).then(|| mcnemar_exact(a_only, b_only)),
    }
}

/// McNemar's exact two-sided p-value for `b` and `c` discordant pairs: twice the smaller tail
/// of Binomial(b + c, 1/2), at most 1. Summed in logarithms, so thousands of pairs do not
/// underflow.
pub fn mcnemar_exact(b: usize, c: usize) -> f64 {
    let n = b + c;
    if n == 0 {
        return 1.0;
    }
    let k = b.min(c);
    let mut log_pmf = -(n as f64) * std::f64::consts::LN_2; // P(X = 0)
    let mut tail = 0.0;
    for i in 0..=k {
        tail += log_pmf.exp();
        log_pmf += ((n - i) as f64).ln() - ((i + 1) as f64).ln();
    }
    (2.0 * tail).min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(pattern: &[(bool, bool)]) -> Vec<PairedRow> {
        pattern
            .iter()
            .enumerate()
            .map(|(i, &(a, b))| PairedRow {
                group: i,
                a_correct: a,
                b_correct: b,
            })
            .collect()
    }

    #[test]
    fn mcnemar_by_hand() {
        // Binomial(10, 1/2): P(X <= 1) = 11/1024; two-sided 22/1024.
        assert!((mcnemar_exact(1, 9) - 22.0 / 1024.0).abs() < 1e-12);
        assert!((mcnemar_exact(9, 1) - 22.0 / 1024.0).abs() < 1e-12);
        assert_eq!(mcnemar_exact(5, 5), 1.0);
        assert_eq!(mcnemar_exact(0, 0), 1.0);
        // Large counts do not underflow to 0 or overflow to NaN: 40 against 60 of 100.
        let p = mcnemar_exact(40, 60);
        assert!(p > 0.04 && p < 0.07, "{p}"); // scipy.stats.binomtest: 0.0569
    }

    #[test]
    fn the_difference_and_its_interval() {
        // 100 images: 80 right for both, 2 only for A, 8 only for B, 10 wrong for both.
        let mut p = vec![(true, true); 80];
        p.extend([(true, false); 2]);
        p.extend([(false, true); 8]);
        p.extend([(false, false); 10]);
        let s = compare(&rows(&p), 2000, 7);
        assert_eq!((s.n, s.groups, s.a_only, s.b_only), (100, 100, 2, 8));
        assert!((s.a_accuracy - 0.82).abs() < 1e-12 && (s.b_accuracy - 0.88).abs() < 1e-12);
        assert!((s.difference.estimate - 0.06).abs() < 1e-12);
        // Only the 10 discordant images move the paired difference: its sd is
        // sqrt(10/100^2 - 0.06^2/100) = 0.031, so about ±0.061 around 0.06. Two unpaired
        // intervals would give ±0.099 (sd 0.050).
        let d = s.difference;
        assert!(d.low > -0.015 && d.low < 0.015, "{d:?}");
        assert!(d.high > 0.105 && d.high < 0.135, "{d:?}");
        assert!(s.mcnemar_p.is_some_and(|p| (p - 0.109375).abs() < 1e-9));
        // Same seed, same interval.
        assert_eq!(compare(&rows(&p), 2000, 7), s);
    }

    #[test]
    fn repeated_images_move_together_and_drop_mcnemar() {
        // The same 50 images scored by two pairs of runs that agree: groups of two rows.
        let mut one = vec![(true, true); 40];
        one.extend([(false, true); 6]);
        one.extend([(true, false); 4]);
        let mut rows_twice: Vec<PairedRow> = Vec::new();
        for _ in 0..2 {
            rows_twice.extend(rows(&one));
        }
        let twice = compare(&rows_twice, 2000, 1);
        let once = compare(&rows(&one), 2000, 1);
        assert_eq!((twice.n, twice.groups), (100, 50));
        assert_eq!(twice.mcnemar_p, None);
        assert!((twice.difference.estimate - once.difference.estimate).abs() < 1e-12);
        // Counting each image twice as independent would shrink the interval by about
        // 1/sqrt(2); resampled as groups it stays as wide as one pair's.
        let width = |s: &PairedScore| s.difference.high - s.difference.low;
        assert!((width(&twice) - width(&once)).abs() < 0.25 * width(&once));
    }
}
