//! Seed ensembles: one recipe trained several times on the same manifest, with seeds `s`,
//! `s + 1`, ..., and kept as one ensemble folder (see [`crate::ensemble`]).
//!
//! The members live in `RUN/member-1`, `RUN/member-2`, ...; `RUN` itself becomes the ensemble
//! (`ensemble.json` and `config.json`) once every member has finished, so `eval`, `predict`,
//! `serve` and `export` take it like a run, and `eval` scores it on the manifest's test split
//! (every member trained on the same splits). The members differ in their seed only: the
//! head's initialisation, the order of the batches and the augmentation draws. A member that
//! is already there is resumed (or left as it is when finished), so an interrupted command is
//! simply run again. With the default recipe the members share the feature cache (same
//! frozen stages, same pictures), so each member after the first costs its epochs only.
//!
//! An ensemble averages its members' calibrated probabilities, so each member's temperature
//! is fitted on the validation split (as `eval` would) when the ensemble is made: an exported
//! ensemble graph, which holds the temperatures, then stays current when `eval` runs.

use crate::ensemble::EnsembleFile;
use crate::error::{EngineError, Result};
use crate::infer::Classifier;
use crate::run::{CONFIG, Run};
use crate::train::{TrainConfig, TrainSummary, train};
use std::path::{Path, PathBuf};

/// The folder of member `k` (1-based) of the ensemble in `dir`.
pub fn member_dir(dir: &Path, k: usize) -> PathBuf {
    dir.join(format!("member-{k}"))
}

/// Refuses what the member runs cannot honour: too few or too many members, `--resume` and
/// `--stop-after` (members resume on their own; a half-trained member must not join the
/// ensemble), and a folder that already holds a single run.
pub fn check(recipe: &TrainConfig, members: usize) -> Result<()> {
    crate::limits::MEMBERS
        .check(members as u64)
        .map_err(EngineError::Config)?;
    if members < 2 {
        return Err(EngineError::Config(
            "an ensemble of seeds needs at least two members".into(),
        ));
    }
    if recipe.resume || recipe.stop_after.is_some() {
        return Err(EngineError::Config(
            "--members resumes each member on its own: rerun the same command (no --resume or \
             --stop-after)"
                .into(),
        ));
    }
    let dir = &recipe.run_dir;
    if dir.join(CONFIG).exists() && !crate::ensemble::is_ensemble(dir) {
        return Err(EngineError::Config(format!(
            "{} already holds a single run; choose another folder for an ensemble of seeds",
            dir.display()
        )));
    }
    Ok(())
}

/// Trains (or resumes) `members` runs of `recipe` in `recipe.run_dir/member-K` with seeds
/// `seed + K - 1`, then makes `recipe.run_dir` their ensemble (unless it already is).
pub fn train_members(recipe: &TrainConfig, members: usize) -> Result<Vec<TrainSummary>> {
    check(recipe, members)?;
    let dir = &recipe.run_dir;
    let mut summaries = Vec::with_capacity(members);
    for k in 1..=members {
        let mut member = recipe.clone();
        member.run_dir = member_dir(dir, k);
        member.settings.seed = recipe.settings.seed.wrapping_add(k as u64 - 1);
        member.resume = member.run_dir.join(CONFIG).exists();
        eprintln!(
            "member {k}/{members} (seed {}) in {}",
            member.settings.seed,
            member.run_dir.display()
        );
        summaries.push(train(&member)?);
    }
    if !crate::ensemble::is_ensemble(dir) {
        let runs: Vec<PathBuf> = (1..=members).map(|k| member_dir(dir, k)).collect();
        let how = Calibrate {
            engine: recipe.engine,
            data_root: recipe.data_root.clone(),
            batch_size: recipe.settings.batch_size,
            max_pixels: recipe.max_pixels,
        };
        assemble(dir, &runs, &how)?;
    }
    Ok(summaries)
}

/// How members' temperatures are fitted on their validation splits.
#[derive(Debug, Clone)]
pub struct Calibrate {
    pub engine: crate::onnx::EngineOptions,
    /// Where the members' manifest files live (default: each run's data root).
    pub data_root: Option<PathBuf>,
    pub batch_size: usize,
    pub max_pixels: u64,
}

impl Default for Calibrate {
    /// The default engine, batches of 64, the default pixel bound; each run's data root.
    fn default() -> Self {
        Calibrate {
            engine: Default::default(),
            data_root: None,
            batch_size: 64,
            max_pixels: artemis_data::image_io::DEFAULT_MAX_PIXELS,
        }
    }
}

/// Makes `dir` the ensemble of `runs` ([`crate::ensemble::create`]), then fits the
/// temperature of each member that has none for its weights, as `eval` would: the ensemble
/// averages calibrated probabilities and its exported graph holds the temperatures, so they
/// are fitted once, when it is made. A member whose validation split cannot be scored stays
/// uncalibrated, with a warning, as under `eval`.
pub fn assemble(dir: &Path, runs: &[PathBuf], how: &Calibrate) -> Result<EnsembleFile> {
    let file = crate::ensemble::create(dir, runs)?;
    for run in runs {
        let mut clf = Classifier::open_with(Run::open(run)?, how.engine)?;
        if clf.calibration.is_some() {
            continue;
        }
        let root = how.data_root.as_deref();
        let fitted = crate::eval::calibrate_on_val(&mut clf, root, how.batch_size, how.max_pixels);
        if let Err(e) = fitted {
            tracing::warn!("{}: no calibration: {e}", run.display());
        }
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recipe(dir: &Path) -> TrainConfig {
        let mut r = crate::train::test_recipe();
        r.run_dir = dir.to_path_buf();
        r
    }

    #[test]
    fn refuses_what_members_cannot_honour() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("ens");
        let r = recipe(&dir);
        let refused = |r: &TrainConfig, n: usize| check(r, n).unwrap_err().to_string();
        assert!(refused(&r, 1).contains("two"));
        assert!(refused(&r, 1000).contains("--members"));
        let mut resumed = r.clone();
        resumed.resume = true;
        assert!(refused(&resumed, 3).contains("--resume"));
        let mut stopped = r.clone();
        stopped.stop_after = Some(1);
        assert!(check(&stopped, 3).is_err());
        check(&r, 3).unwrap();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(CONFIG), "{}").unwrap();
        let e = refused(&r, 3);
        assert!(e.contains("single run") && e.contains("ens"), "{e}");
    }
}
