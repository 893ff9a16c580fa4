//! Classification metrics: confusion matrix, per-class precision / recall / F1 / support,
//! macro and weighted averages, and collapsed views (12 classes to tumor type or plane).

use serde::{Deserialize, Serialize};

/// A confusion matrix: `counts[true][predicted]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confusion {
    pub classes: Vec<String>,
    pub counts: Vec<Vec<usize>>,
}

/// Per-class figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassMetrics {
    pub class: String,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: usize,
}

/// Averages over classes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Averages {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
}

/// Everything computed from one confusion matrix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub n: usize,
    pub accuracy: f64,
    pub per_class: Vec<ClassMetrics>,
    /// Unweighted mean over classes with support (a class absent from the truth and never
    /// predicted is left out; one never present but predicted counts with recall 0).
    pub macro_avg: Averages,
    /// Mean weighted by support.
    pub weighted_avg: Averages,
    pub confusion: Confusion,
}

impl Confusion {
    pub fn new(classes: Vec<String>) -> Self {
        let k = classes.len();
        Confusion {
            classes,
            counts: vec![vec![0; k]; k],
        }
    }

    pub fn from_pairs(classes: Vec<String>, pairs: &[(usize, usize)]) -> Self {
        let mut c = Confusion::new(classes);
        for &(t, p) in pairs {
            c.counts[t][p] += 1;
        }
        c
    }

    /// Maps every class through `f` into `classes` (e.g. 12 -> 4 tumor types).
    pub fn collapse(&self, classes: Vec<String>, f: impl Fn(usize) -> usize) -> Confusion {
        let mut c = Confusion::new(classes);
        for (t, row) in self.counts.iter().enumerate() {
            for (p, &n) in row.iter().enumerate() {
                c.counts[f(t)][f(p)] += n;
            }
        }
        c
    }

    pub fn metrics(&self) -> Metrics {
        let k = self.classes.len();
        let n: usize = self.counts.iter().flatten().sum();
        let correct: usize = (0..k).map(|i| self.counts[i][i]).sum();
        let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        let mut per_class = Vec::with_capacity(k);
        for i in 0..k {
            let tp = self.counts[i][i];
            let support: usize = self.counts[i].iter().sum();
            let predicted: usize = (0..k).map(|t| self.counts[t][i]).sum();
            let precision = ratio(tp, predicted);
            let recall = ratio(tp, support);
            let f1 = if precision + recall == 0.0 {
                0.0
            } else {
                2.0 * precision * recall / (precision + recall)
            };
            per_class.push(ClassMetrics {
                class: self.classes[i].clone(),
                precision,
                recall,
                f1,
                support,
            });
        }
        let counted: Vec<&ClassMetrics> = per_class
            .iter()
            .enumerate()
            .filter(|(i, c)| c.support > 0 || (0..k).any(|t| self.counts[t][*i] > 0))
            .map(|(_, c)| c)
            .collect();
        let m = counted.len().max(1) as f64;
        let macro_avg = Averages {
            precision: counted.iter().map(|c| c.precision).sum::<f64>() / m,
            recall: counted.iter().map(|c| c.recall).sum::<f64>() / m,
            f1: counted.iter().map(|c| c.f1).sum::<f64>() / m,
        };
        let w = |f: fn(&ClassMetrics) -> f64| {
            if n == 0 {
                0.0
            } else {
                per_class
                    .iter()
                    .map(|c| f(c) * c.support as f64)
                    .sum::<f64>()
                    / n as f64
            }
        };
        let weighted_avg = Averages {
            precision: w(|c| c.precision),
            recall: w(|c| c.recall),
            f1: w(|c| c.f1),
        };
        Metrics {
            n,
            accuracy: ratio(correct, n),
            per_class,
            macro_avg,
            weighted_avg,
            confusion: self.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(k: usize) -> Vec<String> {
        (0..k).map(|i| format!("c{i}")).collect()
    }

    #[test]
    fn hand_computed_three_class_example() {
        // truth \ pred   c0 c1 c2
        //   c0            5  1  0
        //   c1            2  3  1
        //   c2            0  0  4
        let c = Confusion {
            classes: names(3),
            counts: vec![vec![5, 1, 0], vec![2, 3, 1], vec![0, 0, 4]],
        };
        let m = c.metrics();
        assert_eq!(m.n, 16);
        assert!((m.accuracy - 12.0 / 16.0).abs() < 1e-12);
        let p = [5.0 / 7.0, 3.0 / 4.0, 4.0 / 5.0];
        let r = [5.0 / 6.0, 3.0 / 6.0, 4.0 / 4.0];
        for i in 0..3 {
            assert!((m.per_class[i].precision - p[i]).abs() < 1e-12);
            assert!((m.per_class[i].recall - r[i]).abs() < 1e-12);
            let f1 = 2.0 * p[i] * r[i] / (p[i] + r[i]);
            assert!((m.per_class[i].f1 - f1).abs() < 1e-12);
        }
        assert_eq!(m.per_class[1].support, 6);
        let macro_f1 = (0..3)
            .map(|i| 2.0 * p[i] * r[i] / (p[i] + r[i]))
            .sum::<f64>()
            / 3.0;
        assert!((m.macro_avg.f1 - macro_f1).abs() < 1e-12);
        let weighted_recall = (6.0 * r[0] + 6.0 * r[1] + 4.0 * r[2]) / 16.0;
        assert!((m.weighted_avg.recall - weighted_recall).abs() < 1e-12);
        // weighted recall equals accuracy
        assert!((m.weighted_avg.recall - m.accuracy).abs() < 1e-12);
    }

    #[test]
    fn absent_classes_and_collapse() {
        // class 2 never occurs and is never predicted: excluded from the macro average
        let c = Confusion::from_pairs(names(3), &[(0, 0), (1, 1), (1, 0)]);
        let m = c.metrics();
        assert!((m.macro_avg.recall - (1.0 + 0.5) / 2.0).abs() < 1e-12);
        // 4 classes -> 2 groups {0,1} {2,3}
        let c = Confusion::from_pairs(names(4), &[(0, 1), (2, 3), (3, 0)]);
        let g = c.collapse(names(2), |i| i / 2);
        assert_eq!(g.counts, vec![vec![1, 0], vec![1, 1]]);
        assert!((g.metrics().accuracy - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(Confusion::new(names(2)).metrics().accuracy, 0.0);
    }
}
