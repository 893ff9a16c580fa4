//! Figures a reviewer asks for beyond a confusion matrix: one-vs-rest ROC and precision-recall
//! curves with their areas, percentile-bootstrap confidence intervals, calibration (expected
//! calibration error, reliability bins, temperature scaling) and selective prediction
//! (coverage against accuracy when the model may abstain).
//!
//! Definitions follow scikit-learn where it has one, so figures can be checked against it:
//! ROC-AUC is the trapezoidal area under the ROC curve (equal to the Mann-Whitney statistic,
//! ties counted half); PR-AUC is *average precision*, `sum_n (R_n - R_{n-1}) P_n` over
//! decreasing score thresholds (no interpolation).

use crate::metrics::Confusion;
pub use crate::prob::softmax_t;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Points of a curve, `(x, y)`.
pub type Curve = Vec<(f64, f64)>;

/// Counts of true and false positives at each distinct score threshold, highest first.
/// Returns `(tps, fps)`, cumulative, one entry per distinct score.
fn cumulative_counts(scores: &[f64], positive: &[bool]) -> (Vec<f64>, Vec<f64>) {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let (mut tps, mut fps) = (Vec::new(), Vec::new());
    let (mut tp, mut fp) = (0.0, 0.0);
    for (k, &i) in order.iter().enumerate() {
        if positive[i] {
            tp += 1.0;
        } else {
            fp += 1.0;
        }
        let last_of_tie = order
            .get(k + 1)
            .is_none_or(|&j| scores[j].total_cmp(&scores[i]).is_ne());
        if last_of_tie {
            tps.push(tp);
            fps.push(fp);
        }
    }
    (tps, fps)
}

/// ROC curve `(false-positive rate, true-positive rate)` from `(0, 0)` to `(1, 1)`; `None` when
/// the labels hold only one kind (the curve is undefined).
pub fn roc_curve(scores: &[f64], positive: &[bool]) -> Option<Curve> {
    let p = positive.iter().filter(|&&b| b).count() as f64;
    let n = positive.len() as f64 - p;
    if p == 0.0 || n == 0.0 {
        return None;
    }
    let (tps, fps) = cumulative_counts(scores, positive);
    let mut c = vec![(0.0, 0.0)];
    c.extend(fps.iter().zip(&tps).map(|(f, t)| (f / n, t / p)));
    Some(c)
}

/// Area under a curve by the trapezoidal rule (x must not decrease).
pub fn trapezoid(c: &[(f64, f64)]) -> f64 {
    c.windows(2)
        .map(|w| (w[1].0 - w[0].0) * (w[1].1 + w[0].1) / 2.0)
        .sum()
}

/// One-vs-rest ROC-AUC; `None` when undefined.
pub fn roc_auc(scores: &[f64], positive: &[bool]) -> Option<f64> {
    roc_curve(scores, positive).map(|c| trapezoid(&c))
}

/// Precision-recall curve `(recall, precision)` at each threshold, highest threshold first;
/// `None` without positives.
pub fn pr_curve(scores: &[f64], positive: &[bool]) -> Option<Curve> {
    let p = positive.iter().filter(|&&b| b).count() as f64;
    if p == 0.0 {
        return None;
    }
    let (tps, fps) = cumulative_counts(scores, positive);
    Some(
        tps.iter()
            .zip(&fps)
            .map(|(t, f)| (t / p, t / (t + f)))
            .collect(),
    )
}

/// Average precision (PR-AUC); `None` without positives.
pub fn average_precision(scores: &[f64], positive: &[bool]) -> Option<f64> {
    let c = pr_curve(scores, positive)?;
    let mut prev_recall = 0.0;
    let mut ap = 0.0;
    for (r, p) in c {
        ap += (r - prev_recall) * p;
        prev_recall = r;
    }
    Some(ap)
}

/// Areas per class (one-vs-rest) and their macro means over the classes where they are
/// defined.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Separation {
    pub roc_auc: Vec<Option<f64>>,
    pub pr_auc: Vec<Option<f64>>,
    pub macro_roc_auc: Option<f64>,
    pub macro_pr_auc: Option<f64>,
}

fn mean_defined(v: &[Option<f64>]) -> Option<f64> {
    let d: Vec<f64> = v.iter().flatten().copied().collect();
    (!d.is_empty()).then(|| d.iter().sum::<f64>() / d.len() as f64)
}

/// Column `c` of row-major probabilities, as f64.
fn column(probs: &[Vec<f32>], c: usize) -> Vec<f64> {
    probs
        .iter()
        .map(|p| f64::from(p.get(c).copied().unwrap_or(0.0)))
        .collect()
}

/// One-vs-rest areas for every class from probabilities (`probs[i][class]`) and true classes.
pub fn separation(probs: &[Vec<f32>], truth: &[usize], k: usize) -> Separation {
    let mut roc = Vec::with_capacity(k);
    let mut pr = Vec::with_capacity(k);
    for c in 0..k {
        let s = column(probs, c);
        let pos: Vec<bool> = truth.iter().map(|&t| t == c).collect();
        roc.push(roc_auc(&s, &pos));
        pr.push(average_precision(&s, &pos));
    }
    Separation {
        macro_roc_auc: mean_defined(&roc),
        macro_pr_auc: mean_defined(&pr),
        roc_auc: roc,
        pr_auc: pr,
    }
}

/// One-vs-rest ROC curves of every class (`None` where undefined).
pub fn roc_curves(probs: &[Vec<f32>], truth: &[usize], k: usize) -> Vec<Option<Curve>> {
    (0..k)
        .map(|c| {
            let pos: Vec<bool> = truth.iter().map(|&t| t == c).collect();
            roc_curve(&column(probs, c), &pos)
        })
        .collect()
}

/// A 95% interval with the point estimate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    pub estimate: f64,
    pub low: f64,
    pub high: f64,
}

impl std::fmt::Display for Interval {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.1}% [{:.1}, {:.1}]",
            100.0 * self.estimate,
            100.0 * self.low,
            100.0 * self.high
        )
    }
}

/// Percentile-bootstrap intervals: test images resampled with replacement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bootstrap {
    pub resamples: usize,
    pub seed: u64,
    pub accuracy: Interval,
    pub macro_f1: Interval,
    /// Per-class recall (classes without support in the sample: estimate 0, interval 0-0).
    pub recall: Vec<Interval>,
}

/// The `q`-quantile (0..=1) of sorted values, linear between order statistics (numpy's
/// default).
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// `estimate` with the 2.5% and 97.5% quantiles of its bootstrap `samples`.
pub(crate) fn interval(estimate: f64, mut samples: Vec<f64>) -> Interval {
    samples.sort_by(f64::total_cmp);
    Interval {
        estimate,
        low: quantile(&samples, 0.025),
        high: quantile(&samples, 0.975),
    }
}

/// 95% percentile-bootstrap intervals of accuracy, macro F1 and per-class recall from
/// `(truth, predicted)` pairs; the same seed gives the same intervals.
pub fn bootstrap(
    classes: &[String],
    pairs: &[(usize, usize)],
    resamples: usize,
    seed: u64,
) -> Bootstrap {
    let k = classes.len();
    let full = Confusion::from_pairs(classes.to_vec(), pairs).metrics();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (mut acc, mut f1) = (Vec::with_capacity(resamples), Vec::with_capacity(resamples));
    let mut rec: Vec<Vec<f64>> = vec![Vec::with_capacity(resamples); k];
    let n = pairs.len();
    let mut sample = Vec::with_capacity(n);
    for _ in 0..resamples {
        sample.clear();
        for _ in 0..n {
            sample.push(pairs[rng.random_range(0..n)]);
        }
        let m = Confusion::from_pairs(classes.to_vec(), &sample).metrics();
        acc.push(m.accuracy);
        f1.push(m.macro_avg.f1);
        for (c, r) in rec.iter_mut().enumerate() {
            r.push(m.per_class[c].recall);
        }
    }
    Bootstrap {
        resamples,
        seed,
        accuracy: interval(full.accuracy, acc),
        macro_f1: interval(full.macro_avg.f1, f1),
        recall: rec
            .into_iter()
            .enumerate()
            .map(|(c, r)| interval(full.per_class[c].recall, r))
            .collect(),
    }
}

/// One bin of a reliability diagram.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ReliabilityBin {
    /// Confidence range `[low, high)` (the last bin includes 1).
    pub low: f64,
    pub high: f64,
    pub count: usize,
    pub mean_confidence: f64,
    pub accuracy: f64,
}

/// Calibration of top-1 confidences.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalibrationStats {
    /// Expected calibration error: `sum_b (n_b / N) |accuracy_b - confidence_b|`.
    pub ece: f64,
    /// Maximum calibration error over non-empty bins.
    pub mce: f64,
    /// Mean negative log-likelihood of the true class.
    pub nll: f64,
    pub bins: Vec<ReliabilityBin>,
}

impl CalibrationStats {
    /// Whether every figure is a finite number.
    pub fn is_finite(&self) -> bool {
        [self.ece, self.mce, self.nll].iter().all(|x| x.is_finite())
            && self
                .bins
                .iter()
                .all(|b| b.mean_confidence.is_finite() && b.accuracy.is_finite())
    }
}

/// Equal-width confidence bins used for the ECE (15, as in Guo et al. 2017).
pub const ECE_BINS: usize = 15;

/// ECE, MCE, NLL and reliability bins from probabilities and true classes.
pub fn calibration(probs: &[Vec<f32>], truth: &[usize], bins: usize) -> CalibrationStats {
    let mut count = vec![0usize; bins];
    let mut conf = vec![0f64; bins];
    let mut correct = vec![0f64; bins];
    let mut nll = 0.0;
    for (p, &t) in probs.iter().zip(truth) {
        let (pred, c) = crate::prob::top1(p);
        let c = f64::from(c);
        let b = ((c * bins as f64) as usize).min(bins - 1);
        count[b] += 1;
        conf[b] += c;
        if pred == t {
            correct[b] += 1.0;
        }
        nll -= f64::from(p.get(t).copied().unwrap_or(0.0)).max(1e-12).ln();
    }
    let n = probs.len().max(1) as f64;
    let mut ece = 0.0;
    let mut mce: f64 = 0.0;
    let bins: Vec<ReliabilityBin> = (0..bins)
        .map(|b| {
            let m = count[b].max(1) as f64;
            let bin = ReliabilityBin {
                low: b as f64 / bins as f64,
                high: (b + 1) as f64 / bins as f64,
                count: count[b],
                mean_confidence: conf[b] / m,
                accuracy: correct[b] / m,
            };
            if count[b] > 0 {
                let gap = (bin.accuracy - bin.mean_confidence).abs();
                ece += count[b] as f64 / n * gap;
                mce = mce.max(gap);
            }
            bin
        })
        .collect();
    CalibrationStats {
        ece,
        mce,
        nll: nll / n,
        bins,
    }
}

/// Mean negative log-likelihood of the true classes under temperature `t`.
pub fn nll_at(logits: &[Vec<f32>], truth: &[usize], t: f64) -> f64 {
    let n = logits.len().max(1) as f64;
    logits
        .iter()
        .zip(truth)
        .map(|(z, &y)| {
            let s: Vec<f64> = z.iter().map(|&v| f64::from(v) / t).collect();
            let max = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let lse = max + s.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
            lse - s[y]
        })
        .sum::<f64>()
        / n
}

/// The temperature in `[0.05, 20]` that minimises the NLL (Guo et al. 2017, "On Calibration of
/// Modern Neural Networks"). The NLL is convex in `1/T`, so a golden-section search over `1/T`
/// finds the minimum.
pub fn fit_temperature(logits: &[Vec<f32>], truth: &[usize]) -> f64 {
    let f = |beta: f64| nll_at(logits, truth, 1.0 / beta);
    let (mut a, mut b) = (0.05, 20.0);
    let g = (5f64.sqrt() - 1.0) / 2.0;
    let mut c = b - g * (b - a);
    let mut d = a + g * (b - a);
    let (mut fc, mut fd) = (f(c), f(d));
    for _ in 0..80 {
        if fc < fd {
            b = d;
            d = c;
            fd = fc;
            c = b - g * (b - a);
            fc = f(c);
        } else {
            a = c;
            c = d;
            fc = fd;
            d = a + g * (b - a);
            fd = f(d);
        }
    }
    2.0 / (a + b)
}

/// Accuracy among the images whose top-1 probability reaches `threshold` and the share of
/// images that do (the rest are referred to a person).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CoveragePoint {
    pub threshold: f64,
    pub coverage: f64,
    /// Accuracy on the covered images (`None` when none are covered).
    pub accuracy: Option<f64>,
    pub covered: usize,
}

/// Thresholds reported in every coverage table.
pub const COVERAGE_THRESHOLDS: [f64; 8] = [0.0, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99];

/// Coverage and selective accuracy at `threshold` from `(top-1 probability, correct)`.
pub fn coverage_at(conf_correct: &[(f64, bool)], threshold: f64) -> CoveragePoint {
    let kept: Vec<bool> = conf_correct
        .iter()
        .filter(|(c, _)| *c >= threshold)
        .map(|(_, ok)| *ok)
        .collect();
    let covered = kept.len();
    CoveragePoint {
        threshold,
        coverage: covered as f64 / conf_correct.len().max(1) as f64,
        accuracy: (covered > 0)
            .then(|| kept.iter().filter(|&&k| k).count() as f64 / covered as f64),
        covered,
    }
}

/// The coverage curve over every distinct confidence (for plotting), highest first.
pub fn coverage_curve(conf_correct: &[(f64, bool)]) -> Curve {
    let mut v = conf_correct.to_vec();
    v.sort_by(|a, b| b.0.total_cmp(&a.0));
    let n = v.len().max(1) as f64;
    let mut right = 0.0;
    v.iter()
        .enumerate()
        .map(|(i, (_, ok))| {
            if *ok {
                right += 1.0;
            }
            ((i + 1) as f64 / n, right / (i + 1) as f64)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-9, "{a} vs {b}");
    }

    #[test]
    fn roc_and_average_precision_match_scikit_learn() {
        // sklearn docs: roc_auc_score([0,0,1,1], [.1,.4,.35,.8]) = 0.75,
        // average_precision_score(same) = 0.8333...
        let s = [0.1, 0.4, 0.35, 0.8];
        let y = [false, false, true, true];
        close(roc_auc(&s, &y).unwrap(), 0.75);
        close(average_precision(&s, &y).unwrap(), 5.0 / 6.0);
        let c = roc_curve(&s, &y).unwrap();
        assert_eq!(
            c,
            vec![(0.0, 0.0), (0.0, 0.5), (0.5, 0.5), (0.5, 1.0), (1.0, 1.0)]
        );
        // Ties count half: one positive and one negative at the same score.
        close(roc_auc(&[0.5, 0.5], &[true, false]).unwrap(), 0.5);
        // Perfect and reversed rankings; undefined without negatives.
        close(roc_auc(&[0.9, 0.1], &[true, false]).unwrap(), 1.0);
        close(roc_auc(&[0.1, 0.9], &[true, false]).unwrap(), 0.0);
        assert!(roc_auc(&[0.3, 0.6], &[true, true]).is_none());
        assert!(average_precision(&[0.3, 0.6], &[false, false]).is_none());
    }

    #[test]
    fn auc_equals_the_mann_whitney_statistic() {
        // Independent reference: share of (positive, negative) pairs ranked right, ties half.
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let s: Vec<f64> = (0..300)
            .map(|_| (rng.random_range(0..20) as f64) / 20.0)
            .collect();
        let y: Vec<bool> = s
            .iter()
            .map(|&v| rng.random::<f64>() < 0.2 + 0.6 * v)
            .collect();
        let mut num = 0.0;
        let mut den = 0.0;
        for i in 0..s.len() {
            for j in 0..s.len() {
                if y[i] && !y[j] {
                    den += 1.0;
                    num += if s[i] > s[j] {
                        1.0
                    } else if s[i] == s[j] {
                        0.5
                    } else {
                        0.0
                    };
                }
            }
        }
        close(roc_auc(&s, &y).unwrap(), num / den);
    }

    #[test]
    fn separation_averages_defined_classes() {
        let probs = vec![
            vec![0.8f32, 0.1, 0.1],
            vec![0.6, 0.3, 0.1],
            vec![0.2, 0.7, 0.1],
            vec![0.5, 0.4, 0.1],
        ];
        let truth = [0, 0, 1, 1];
        let s = separation(&probs, &truth, 3);
        // class 0 scores: pos {.8,.6}, neg {.2,.5}: all 4 pairs right.
        close(s.roc_auc[0].unwrap(), 1.0);
        // class 1 scores: pos {.7,.4}, neg {.1,.3}: all right.
        close(s.roc_auc[1].unwrap(), 1.0);
        assert!(s.roc_auc[2].is_none()); // no positives
        close(s.macro_roc_auc.unwrap(), 1.0);
    }

    #[test]
    fn bootstrap_is_seeded_and_brackets_the_estimate() {
        let classes: Vec<String> = vec!["a".into(), "b".into()];
        let pairs: Vec<(usize, usize)> = (0..200)
            .map(|i| (i % 2, if i % 10 == 0 { 1 - i % 2 } else { i % 2 }))
            .collect();
        let a = bootstrap(&classes, &pairs, 500, 7);
        let b = bootstrap(&classes, &pairs, 500, 7);
        let c = bootstrap(&classes, &pairs, 500, 8);
        assert_eq!(a, b);
        assert_ne!(a, c);
        close(a.accuracy.estimate, 0.9);
        assert!(a.accuracy.low < 0.9 && a.accuracy.high > 0.9);
        // Normal approximation: sd = sqrt(.9 * .1 / 200) = 0.0212; 95% half-width ~ 0.042.
        let half = (a.accuracy.high - a.accuracy.low) / 2.0;
        assert!((half - 0.0416).abs() < 0.01, "{half}");
        assert_eq!(a.recall.len(), 2);
    }

    #[test]
    fn quantile_interpolates_like_numpy() {
        let v = [1.0, 2.0, 3.0, 4.0];
        close(quantile(&v, 0.5), 2.5);
        close(quantile(&v, 0.025), 1.075);
        close(quantile(&v, 1.0), 4.0);
    }

    #[test]
    fn ece_by_hand() {
        // Two images at confidence 0.9 (one right), two at 0.6 (both right), 3 bins:
        // bin [2/3, 1): conf 0.9, acc 0.5, gap 0.4; bin [1/3, 2/3): conf 0.6, acc 1, gap 0.4.
        let probs = vec![
            vec![0.9f32, 0.1],
            vec![0.1, 0.9],
            vec![0.6, 0.4],
            vec![0.6, 0.4],
        ];
        let truth = [0, 0, 0, 0];
        let s = calibration(&probs, &truth, 3);
        assert!((s.ece - 0.4).abs() < 1e-6, "{}", s.ece);
        assert!((s.mce - 0.4).abs() < 1e-6);
        assert_eq!(
            s.bins.iter().map(|b| b.count).collect::<Vec<_>>(),
            vec![0, 2, 2]
        );
        let nll = -(0.9f64.ln() + 0.1f64.ln() + 2.0 * 0.6f64.ln()) / 4.0;
        assert!((s.nll - nll).abs() < 1e-6);
    }

    #[test]
    fn temperature_fit_recovers_the_generating_temperature() {
        // Labels drawn from softmax(z / 2.5): the NLL-optimal temperature is about 2.5.
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let mut logits = Vec::new();
        let mut truth = Vec::new();
        for _ in 0..20_000 {
            let z: Vec<f32> = (0..4).map(|_| rng.random_range(-6.0f32..6.0)).collect();
            let p = softmax_t(&z, 2.5);
            let u: f32 = rng.random();
            let mut acc = 0.0;
            let mut y = 3;
            for (i, q) in p.iter().enumerate() {
                acc += q;
                if u < acc {
                    y = i;
                    break;
                }
            }
            logits.push(z);
            truth.push(y);
        }
        let t = fit_temperature(&logits, &truth);
        assert!((t - 2.5).abs() < 0.1, "{t}");
        assert!(nll_at(&logits, &truth, t) < nll_at(&logits, &truth, 1.0));
    }

    #[test]
    fn coverage_by_hand() {
        let cc = [(0.95, true), (0.9, false), (0.7, true), (0.4, true)];
        let p = coverage_at(&cc, 0.8);
        close(p.coverage, 0.5);
        close(p.accuracy.unwrap(), 0.5);
        assert_eq!(coverage_at(&cc, 0.99).accuracy, None);
        close(coverage_at(&cc, 0.0).accuracy.unwrap(), 0.75);
        let c = coverage_curve(&cc);
        assert_eq!(c.len(), 4);
        close(c[1].1, 0.5);
        close(c[3].1, 0.75);
    }
}
