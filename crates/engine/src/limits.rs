//! Upper bounds of the numbers a user sets. Each bounds memory or time that would otherwise
//! grow without limit (a thread pool of 100,000, a billion bootstrap resamples); the libraries'
//! config checks and the command line's value parsers both use them.

/// A bounded count: its flag name (for messages) and inclusive range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub name: &'static str,
    pub min: u64,
    pub max: u64,
}

impl Limit {
    /// `value` if it lies in the range, else a message naming the flag and the range.
    pub fn check(&self, value: u64) -> Result<u64, String> {
        if (self.min..=self.max).contains(&value) {
            Ok(value)
        } else {
            Err(format!(
                "{} {value} is out of range: it must lie between {} and {}",
                self.name, self.min, self.max
            ))
        }
    }

    /// Parses a decimal count and checks it.
    pub fn parse(&self, s: &str) -> Result<u64, String> {
        let v: u64 = s
            .trim()
            .parse()
            .map_err(|_| format!("{} '{s}' is not a whole number", self.name))?;
        self.check(v)
    }
}

/// A [`Limit`] named after its flag.
pub const fn limit(name: &'static str, min: u64, max: u64) -> Limit {
    Limit { name, min, max }
}

/// ONNX Runtime / rayon threads (0 means every core).
pub const THREADS: Limit = limit("--threads", 0, 1024);
/// Bootstrap resamples of the confidence intervals (0 turns them off).
pub const BOOTSTRAP: Limit = limit("--bootstrap", 0, 100_000);
/// Images per batch (training, evaluation, benchmarks).
pub const BATCH: Limit = limit("--batch-size", 1, 4096);
/// Training epochs.
pub const EPOCHS: Limit = limit("--epochs", 1, 100_000);
/// Augmented copies of each image in the feature cache.
pub const CACHE_COPIES: Limit = limit("--cache-copies", 1, 64);
/// Mistakes shown in the report.
pub const WORST: Limit = limit("--worst", 0, 1000);
/// Seeded random inputs of the export check.
pub const EXPORT_CHECK: Limit = limit("--check", 0, 1000);
/// Timed steps of a benchmark.
pub const STEPS: Limit = limit("--steps", 1, 10_000);
/// Folds of a cross-validation.
pub const FOLDS: Limit = limit("--folds", 2, 20);
/// Members of an ensemble of seeds (`train --members`, `cv --members`; 1: a single run).
pub const MEMBERS: Limit = limit("--members", 1, 20);
/// Pixels of one picture (checked before decoding): 1 gigapixel.
pub const MAX_PIXELS: Limit = limit("--max-pixels", 1, 1_000_000_000);

#[cfg(test)]
mod tests {
    #[test]
    fn counts_outside_the_range_are_refused_with_the_flag_named() {
        assert_eq!(super::THREADS.parse("8"), Ok(8));
        let e = super::THREADS.parse("100000").unwrap_err();
        assert!(e.contains("--threads 100000") && e.contains("1024"), "{e}");
        assert!(super::BOOTSTRAP.parse("1000000000").is_err());
        assert!(super::BATCH.parse("0").is_err());
        assert!(
            super::EPOCHS
                .parse("x")
                .unwrap_err()
                .contains("not a whole number")
        );
    }
}
