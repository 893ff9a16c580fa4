//! Ensembles: a folder that names several trained runs (the folds of a `cv`, or runs of
//! different architectures) and is used like a run. Its prediction is the mean of the members'
//! probabilities, each with its own temperature when `eval` fitted one (calibrated
//! probabilities); its heat map is the mean of the members' Grad-CAM maps for the ensemble's
//! class.
//!
//! The folder holds `ensemble.json` (schema [`SCHEMA`]: each member's folder, relative to the
//! ensemble's when it can be, and the BLAKE3 hash of the weights it had when the ensemble was
//! made) and a `config.json` (the first member's, with the description of the whole), so
//! commands that read a run's classes and preprocessing read the ensemble's the same way. A
//! member whose weights changed since is refused, not silently used.
//!
//! Members must agree on the task and the classes in order. Their input may differ: each
//! member scales its own pixels, and when members frame or size the picture differently
//! (`--framing`, `--input-size`, `--resize`) each prepares its own input from the decoded
//! picture (`Classifier::prepares_per_member`): its Grad-CAM map is then placed over the
//! decoded picture before the maps are averaged, and `artemis export` writes each member's
//! graph rather than one (each member runs its own); the in-browser page gets one graph with
//! an input per way of making the picture (`Classifier::picture_groups`).

use crate::error::{EngineError, Result};
use crate::run::{BEST, CONFIG, Run, RunConfig, STATE, read_json, write_json};
use artemis_data::transform::Preprocess;
use serde::{Deserialize, Serialize};
use std::path::{Component, Path, PathBuf};

/// The file that makes a folder an ensemble.
pub const ENSEMBLE: &str = "ensemble.json";
/// Version of `ensemble.json`.
pub const SCHEMA: &str = "artemis.ensemble/1";

/// One member run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    /// The member's run folder, relative to the ensemble folder unless it is on another root.
    pub run: PathBuf,
    /// BLAKE3 of the member's `model-best.bpk` when the ensemble was made.
    pub weights_hash: String,
    /// The member's architecture (for people reading the file).
    pub model: String,
}

/// `ensemble.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnsembleFile {
    pub schema: String,
    pub members: Vec<Member>,
}

/// Whether `dir` is an ensemble folder.
pub fn is_ensemble(dir: &Path) -> bool {
    dir.join(ENSEMBLE).is_file()
}

/// Reads an ensemble's member list.
pub fn read(dir: &Path) -> Result<EnsembleFile> {
    let path = dir.join(ENSEMBLE);
    let file: EnsembleFile = read_json(&path)?;
    if file.schema != SCHEMA {
        return Err(EngineError::Json {
            path,
            reason: format!("schema {} (this artemis reads {SCHEMA})", file.schema),
        });
    }
    if file.members.len() < 2 {
        return Err(EngineError::Json {
            path,
            reason: "an ensemble needs at least two members".into(),
        });
    }
    Ok(file)
}

/// The members of the ensemble in `dir` as the file records them, with their runs (their
/// configurations; [`check_weights`] checks the weights when they are loaded).
pub fn members(dir: &Path) -> Result<Vec<(Member, Run)>> {
    (read(dir)?.members.into_iter())
        .map(|m| {
            // As the system resolves it (`ens/../runs/a` read as `runs/a` in messages); as
            // recorded when it cannot be resolved, so that the error names it.
            let path = dir.join(&m.run);
            let path = std::fs::canonicalize(&path).unwrap_or(path);
            Run::open(&path).map(|run| (m, run))
        })
        .collect()
}

/// The member runs of the ensemble in `dir`.
pub fn member_runs(dir: &Path) -> Result<Vec<Run>> {
    Ok(members(dir)?.into_iter().map(|(_, run)| run).collect())
}

/// Refuses a member whose loaded weights (BLAKE3 `loaded`) are not the ones it had when the
/// ensemble in `dir` was made.
pub fn check_weights(dir: &Path, member: &Member, run: &Run, loaded: &str) -> Result<()> {
    if member.weights_hash == loaded {
        return Ok(());
    }
    Err(EngineError::Config(format!(
        "{}: member {} has other weights than when the ensemble was made (BLAKE3 {} now, {} \
         then); make the ensemble again",
        dir.join(ENSEMBLE).display(),
        run.dir.display(),
        &loaded[..12.min(loaded.len())],
        &member.weights_hash[..12.min(member.weights_hash.len())]
    )))
}

/// The architecture of a run, or of an ensemble's members (`ensemble: mobilenetv2 x5`).
pub fn model_name(run: &Run) -> String {
    match read(&run.dir) {
        Ok(f) => {
            let mut models: Vec<&str> = f.members.iter().map(|m| m.model.as_str()).collect();
            models.sort_unstable();
            let mut parts: Vec<String> = Vec::new();
            for m in models.chunk_by(|a, b| a == b) {
                parts.push(format!("{} x{}", m[0], m.len()));
            }
            format!("ensemble: {}", parts.join(" + "))
        }
        Err(_) => run.config.model.architecture.name().into(),
    }
}

fn weights_hash(run: &Run) -> Result<String> {
    let path = run.path(BEST);
    let bytes = std::fs::read(&path).map_err(|e| EngineError::io(&path, e))?;
    Ok(artemis_data::hash::content_hash(&bytes))
}

/// The ways an ensemble's members (their preprocessing `pres`, in member order) make their
/// input pictures (framing, input size, resize mode; pixel scaling aside, which each member
/// applies to its own input), in the order members first need them, each as the first member
/// that needs it prepares and scales it; and which of them each member takes. One for most
/// ensembles; several when members prepare their own pictures from the decoded one.
pub fn picture_groups<'a>(pres: impl IntoIterator<Item = &'a Preprocess>) -> PictureGroups {
    let rule = |p: &Preprocess| (p.width, p.height, p.resize, p.framing);
    let mut groups = PictureGroups::default();
    for pre in pres {
        match (groups.rules.iter()).position(|g| rule(g) == rule(pre)) {
            Some(g) => groups.reads.push(g),
            None => {
                groups.reads.push(groups.rules.len());
                groups.rules.push(*pre);
            }
        }
    }
    groups
}

/// What [`picture_groups`] finds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PictureGroups {
    /// Each way of making the picture (an averaged graph's inputs, in order).
    pub rules: Vec<Preprocess>,
    /// Per member, the index in `rules` of the picture it takes.
    pub reads: Vec<usize>,
}

/// Why `artemis export` of the ensemble in `dir` writes each member's graph rather than one
/// averaging graph, if it does: its members make their input pictures differently, so each
/// prepares its own (the in-browser page's graph then takes an input per picture).
pub fn per_member_input(dir: &Path) -> Result<Option<String>> {
    let runs = member_runs(dir)?;
    let groups = picture_groups(runs.iter().map(|r| &r.config.preprocess));
    let Some(k) = groups.reads.iter().position(|&g| g > 0) else {
        return Ok(None);
    };
    let describe = |r: &Run| {
        let p = &r.config.preprocess;
        let (w, h, resize, framing) = (p.width, p.height, p.resize, p.framing);
        format!(
            "{}: {w}x{h} {resize:?}, framing {framing:?}",
            r.dir.display()
        )
    };
    Ok(Some(format!(
        "the members of {} prepare their pictures differently ({}; {}), so each runs its own \
         graph",
        dir.display(),
        describe(&runs[0]),
        describe(&runs[k])
    )))
}

/// Why `b` cannot join an ensemble whose first member is `a`, if it cannot.
fn mismatch(a: &RunConfig, b: &RunConfig) -> Option<String> {
    (a.task != b.task || a.classes != b.classes)
        .then(|| format!("other classes ({:?} vs {:?})", b.classes, a.classes))
}

/// Makes the ensemble folder `dir` of the runs `members` (at least two, agreeing on classes and
/// input). Refuses a folder that already holds a run or an ensemble.
pub fn create(dir: &Path, members: &[PathBuf]) -> Result<EnsembleFile> {
    if members.len() < 2 {
        return Err(EngineError::Config(
            "an ensemble needs at least two runs".into(),
        ));
    }
    if dir.join(CONFIG).exists() {
        return Err(EngineError::Config(format!(
            "{} already holds a run or an ensemble; choose another folder",
            dir.display()
        )));
    }
    if let Some(nested) = members.iter().find(|m| is_ensemble(m)) {
        return Err(EngineError::Config(format!(
            "{} is itself an ensemble; list its members instead",
            nested.display()
        )));
    }
    let runs = members
        .iter()
        .map(|m| Run::open(m))
        .collect::<Result<Vec<_>>>()?;
    for r in &runs {
        refuse_unfinished(r)?;
    }
    for r in &runs[1..] {
        if let Some(why) = mismatch(&runs[0].config, &r.config) {
            return Err(EngineError::Config(format!(
                "{} cannot join an ensemble with {}: {why}",
                r.dir.display(),
                runs[0].dir.display()
            )));
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| EngineError::io(dir, e))?;
    let file = EnsembleFile {
        schema: SCHEMA.into(),
        members: runs
            .iter()
            .map(|r| {
                Ok(Member {
                    run: relative_to(dir, &r.dir)?,
                    weights_hash: weights_hash(r)?,
                    model: r.config.model.architecture.name().into(),
                })
            })
            .collect::<Result<_>>()?,
    };
    // The member list first: a folder with config.json but no ensemble.json would pass for a
    // run without weights.
    write_json(&dir.join(ENSEMBLE), &file)?;
    write_json(&dir.join(CONFIG), &runs[0].config)?;
    Ok(file)
}

/// Refuses a run that has not completed the epochs it was started with (still training, or
/// stopped): its best weights may still change, and the ensemble would then refuse it. A run
/// without `state.json` (made elsewhere) is taken as it is.
fn refuse_unfinished(run: &Run) -> Result<()> {
    if !run.path(STATE).exists() {
        return Ok(());
    }
    let (done, planned) = (run.state()?.epochs_done, run.config.train.epochs);
    if done < planned {
        return Err(EngineError::Config(format!(
            "{} has completed {done} of its {planned} epochs (still training, or stopped): its \
             best weights may still change. Let it finish, or continue it with `artemis train \
             --resume -o {}`",
            run.dir.display(),
            run.dir.display()
        )));
    }
    Ok(())
}

/// `target` as a path relative to `base` (both made absolute, with links and `..` resolved
/// where the paths exist, as the system resolves them when the member is opened), or absolute
/// when they share no root.
fn relative_to(base: &Path, target: &Path) -> Result<PathBuf> {
    let (base, target) = (crate::run::canonical(base)?, crate::run::canonical(target)?);
    let (b, t): (Vec<Component>, Vec<Component>) =
        (base.components().collect(), target.components().collect());
    let common = b.iter().zip(&t).take_while(|(x, y)| x == y).count();
    if common == 0 {
        return Ok(target);
    }
    let mut out: PathBuf = b[common..].iter().map(|_| Component::ParentDir).collect();
    out.extend(&t[common..]);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_are_grouped_by_the_picture_they_take() {
        use artemis_data::framing::Framing;
        use artemis_data::transform::Scaling;
        let base = Preprocess {
            width: 96,
            height: 96,
            resize: artemis_data::image_io::ResizeMode::Squash,
            scaling: Scaling::Imagenet,
            framing: Framing::AsIs,
        };
        let head = Preprocess {
            framing: Framing::Head,
            ..base
        };
        // Another pixel scaling takes the same picture; another framing does not.
        let lite = Preprocess {
            scaling: Scaling::Lite,
            ..base
        };
        let g = picture_groups([&base, &lite, &head, &base]);
        assert_eq!(g.rules, vec![base, head]);
        assert_eq!(g.reads, vec![0, 0, 1, 0]);
        assert_eq!(picture_groups([&head, &head]).rules.len(), 1);
    }

    #[test]
    fn member_paths_are_relative_to_the_ensemble() {
        let r = |b: &str, t: &str| relative_to(Path::new(b), Path::new(t)).unwrap();
        assert_eq!(
            r("/a/cv/ensemble", "/a/cv/fold-1/run"),
            Path::new("../fold-1/run")
        );
        assert_eq!(r("/a/ens", "/a/ens/m1"), Path::new("m1"));
        assert_eq!(r("/x/e", "/y/r"), Path::new("../../y/r"));
    }

    /// A `..` after a link in the ensemble's path is resolved as the system resolves it (a
    /// lexical count of the components pointed outside the tree).
    #[cfg(unix)]
    #[test]
    fn member_paths_resolve_links_and_parent_components() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        for d in ["a/cv/fold-1/run", "b"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::os::unix::fs::symlink(root.join("b"), root.join("a/link")).unwrap();
        std::fs::create_dir_all(root.join("a/link/../ens")).unwrap();
        let base = root.join("a/link/../ens");
        let member = root.join("a/cv/fold-1/run");
        let rel = relative_to(&base, &member).unwrap();
        assert_eq!(rel, Path::new("../a/cv/fold-1/run"));
        assert_eq!(base.join(&rel).canonicalize().unwrap(), member);
    }
}
