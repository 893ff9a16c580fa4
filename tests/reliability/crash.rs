//! Crash-safe training: `artemis train` is killed with SIGKILL at random moments and resumed
//! each time. After every kill the run folder must hold only whole files (every JSON parses,
//! the metrics table matches the committed state, every checkpoint loads), no committed epoch
//! may be lost, and the run that was killed and resumed must end bit-identical to an
//! uninterrupted run with the same seed: same weights (byte-equal checkpoint files), same
//! per-epoch losses and accuracies.

use crate::common::*;
use artemis_engine::run::{CONFIG, METRICS, Run, STATE, TrainState, load_module, read_json};
use burn::prelude::Device;
use rand::{Rng, SeedableRng};
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const EPOCHS: usize = 4;
/// SIGKILLs aimed at the run that ends: one inside a checkpoint write, one right after a
/// commit, then random moments until this many have landed.
const KILLS: usize = 5;

fn train_args<'a>(manifest: &'a Path, run: &'a Path, resume: bool) -> Vec<&'a str> {
    if resume {
        return vec!["train", "--resume", "-o", s(run)];
    }
    let extra = ["--lr", "0.003", "--augment", "standard", "--seed", "11"];
    baseline_args(manifest, run, "96", "4", &extra)
}

/// Every file of the run folder is whole: returns the committed state (None before the first
/// commit).
fn check_folder(run: &Path) -> Option<TrainState> {
    if !run.join(CONFIG).exists() {
        // Killed before the run's configuration was written: nothing else may be there but
        // temporary files.
        if run.exists() {
            for e in fs::read_dir(run).unwrap() {
                let name = e.unwrap().file_name().to_string_lossy().into_owned();
                assert!(
                    artemis_data::fsutil::is_temp_name(&name),
                    "{name} without config.json"
                );
            }
        }
        return None;
    }
    let r = Run::open(run).unwrap();
    if !run.join(STATE).exists() {
        return None;
    }
    let state: TrainState = read_json(&run.join(STATE)).unwrap();
    assert_eq!(state.history.len(), state.epochs_done);
    let device = Device::flex();
    let ckpt = run.join(format!("{}.model.bpk", state.checkpoint));
    load_module(r.config.model.init(&device).unwrap(), &ckpt)
        .unwrap_or_else(|e| panic!("{}: {e}", ckpt.display()));
    let optim = run.join(format!("{}.optim.bpk", state.checkpoint));
    assert!(fs::metadata(&optim).unwrap().len() > 0);
    r.load_best(&device).unwrap();
    // metrics.csv is written right after state.json: the committed epochs or one fewer.
    let rows =
        fs::read_to_string(run.join(METRICS)).map_or(0, |t| t.lines().count().saturating_sub(1));
    assert!(
        rows == state.epochs_done || rows + 1 == state.epochs_done,
        "metrics.csv has {rows} rows for {} committed epochs",
        state.epochs_done
    );
    Some(state)
}

/// History without the wall-clock seconds.
fn figures(state: &TrainState) -> Vec<[u64; 6]> {
    state
        .history
        .iter()
        .map(|m| {
            [
                m.epoch as u64,
                m.lr.to_bits(),
                m.train_loss.to_bits(),
                m.train_accuracy.to_bits(),
                m.val_loss.to_bits(),
                m.val_accuracy.to_bits(),
            ]
        })
        .collect()
}

/// Starts the run with paused writes and SIGKILLs it while a temporary file of epoch 2's
/// checkpoint exists; returns that file's name.
fn kill_inside_checkpoint_write(manifest: &Path, run: &Path, tmp: &Path) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_artemis"))
        .args(train_args(manifest, run, false))
        .env("ARTEMIS_NO_PROGRESS", "1")
        .env(artemis_data::fsutil::TEST_WRITE_PAUSE, "400")
        .stdout(Stdio::null())
        .stderr(fs::File::create(tmp.join("train-write-kill.log")).unwrap())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let seen = loop {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before epoch 2's checkpoint write"
        );
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "no checkpoint write seen"
        );
        let temp = fs::read_dir(run).ok().and_then(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .find(|n| n.starts_with(".ckpt-0002.") && artemis_data::fsutil::is_temp_name(n))
        });
        if let Some(name) = temp {
            break name;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    child.kill().unwrap(); // SIGKILL, with the temporary file written but not renamed
    child.wait().unwrap();
    assert!(
        run.join(&seen).exists(),
        "{seen} was renamed before the kill landed"
    );
    seen
}

/// Resumes the run and SIGKILLs it as soon as `state.json` shows a commit past `committed`
/// (polled every 2 ms), so one kill lands mid-training however fast the epochs run; returns
/// the epochs committed at the kill.
fn kill_after_next_commit(manifest: &Path, run: &Path, tmp: &Path, committed: usize) -> usize {
    let mut child = Command::new(env!("CARGO_BIN_EXE_artemis"))
        .args(train_args(manifest, run, true))
        .env("ARTEMIS_NO_PROGRESS", "1")
        .stdout(Stdio::null())
        .stderr(fs::File::create(tmp.join("train-commit-kill.log")).unwrap())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before a commit was seen"
        );
        assert!(start.elapsed() < Duration::from_secs(600), "no commit seen");
        // state.json is replaced by a rename: a read sees the old or the new file, whole.
        let done = read_json::<TrainState>(&run.join(STATE)).map_or(0, |s| s.epochs_done);
        if done > committed {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    check_folder(run).map_or(0, |s| s.epochs_done)
}

#[test]
fn training_killed_at_random_moments_resumes_to_the_same_end() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, manifest) = tiny_split(tmp.path(), "4");

    // The uninterrupted run, timed: kills are drawn over its duration.
    let straight = tmp.path().join("straight");
    let t0 = Instant::now();
    let o = artemis(&train_args(&manifest, &straight, false));
    let span = t0.elapsed();
    assert!(matches!(o.status.code(), Some(0 | 3)), "{}", text(&o));
    let reference: TrainState = read_json(&straight.join(STATE)).unwrap();
    assert_eq!(reference.epochs_done, EPOCHS);
    // Start-up cost (process, data loading): resuming the finished run trains nothing.
    let t0 = Instant::now();
    let o = artemis(&train_args(&manifest, &straight, true));
    assert!(matches!(o.status.code(), Some(0 | 3)), "{}", text(&o));
    let startup = t0.elapsed().min(span);
    let per_epoch = (span - startup) / EPOCHS as u32;

    let run = tmp.path().join("killed");
    // First a kill aimed inside a checkpoint write: writes pause between the temporary file
    // and its rename, and the process is killed while epoch 2's checkpoint is half-written.
    let temp_seen = kill_inside_checkpoint_write(&manifest, &run, tmp.path());
    let state = check_folder(&run).expect("epoch 1 committed before epoch 2's checkpoint");
    assert_eq!(
        state.epochs_done, 1,
        "killed writing {temp_seen}: epoch 1 committed"
    );
    // Then a kill right after the next commit: mid-training whatever the machine's speed
    // (the random kills below may all land in start-up when epochs take milliseconds).
    let after_commit = kill_after_next_commit(&manifest, &run, tmp.path(), 1);
    assert!(
        (2..EPOCHS).contains(&after_commit),
        "killed after epoch 2's commit with {after_commit} epochs committed"
    );
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(20261128);
    let (mut kills, mut committed, mut attempts) = (2, after_commit, 0);
    let mut kill_log = vec![
        format!("killed inside the write of {temp_seen}, 1 epoch committed"),
        format!("killed after a commit with {after_commit} epochs committed"),
    ];
    loop {
        attempts += 1;
        assert!(attempts < 40, "the run did not finish: {kill_log:?}");
        let resume = run.join(CONFIG).exists();
        // After KILLS kills of this run, let it finish. Before: a kill moment within what is
        // left of the run (start-up plus the epochs not committed yet), landing in start-up,
        // an epoch or a write.
        let left = startup + per_epoch * (EPOCHS - committed) as u32;
        let after = (kills < KILLS).then(|| left.mul_f64(rng.random_range(0.02..0.95)));
        let log = tmp.path().join(format!("train-{attempts}.log"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_artemis"))
            .args(train_args(&manifest, &run, resume))
            .env("ARTEMIS_NO_PROGRESS", "1")
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let start = Instant::now();
        let finished = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if after.is_some_and(|a| start.elapsed() >= a) {
                break None;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        match finished {
            Some(status) => {
                let err = fs::read_to_string(&log).unwrap();
                assert!(matches!(status.code(), Some(0 | 3)), "resume failed: {err}");
                // A kill moment drawn past the run's end (timing varies on a busy machine):
                // the two aimed kills above have landed on this run all the same.
                break;
            }
            None => {
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
                kills += 1;
            }
        }
        let state = check_folder(&run);
        let done = state.as_ref().map_or(0, |s| s.epochs_done);
        assert!(
            done >= committed,
            "a committed epoch was lost: {committed} -> {done}"
        );
        committed = done;
        kill_log.push(format!(
            "killed at {:.2}s with {done} epochs committed",
            after.unwrap_or_default().as_secs_f64()
        ));
    }
    eprintln!(
        "uninterrupted run {:.1}s; {kills} SIGKILLs, {attempts} starts: {}",
        span.as_secs_f64(),
        kill_log.join("; ")
    );

    // Same end as the uninterrupted run, to the bit.
    let resumed: TrainState = read_json(&run.join(STATE)).unwrap();
    assert_eq!(figures(&resumed), figures(&reference));
    assert_eq!(resumed.best_epoch, reference.best_epoch);
    // Checkpoint files carry random parameter ids, so weights are compared value by value
    // (every parameter and BatchNorm statistic, as bits).
    let (a, b) = (Run::open(&run).unwrap(), Run::open(&straight).unwrap());
    let device = Device::flex();
    for name in [
        "model-best.bpk".to_string(),
        format!("{}.model.bpk", reference.checkpoint),
    ] {
        let load =
            |r: &Run| load_module(r.config.model.init(&device).unwrap(), &r.path(&name)).unwrap();
        let (wa, wb) = (weight_bits(&load(&a)), weight_bits(&load(&b)));
        assert!(!wa.is_empty());
        assert!(
            wa == wb,
            "{name}: weights differ from the uninterrupted run's"
        );
    }
    // (Optimizer files vary in length with their ids too; the optimizer state is covered by
    // the weights: a lost or replayed Adam moment would change them.)
    assert_eq!(
        fs::read_to_string(run.join(METRICS))
            .unwrap()
            .lines()
            .count(),
        EPOCHS + 1
    );
    // Nothing left behind by the kills.
    for e in fs::read_dir(&run).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            !artemis_data::fsutil::is_temp_name(&name),
            "{name} left behind"
        );
        assert!(
            !name.starts_with("ckpt-") || name.starts_with(&reference.checkpoint),
            "{name} left behind"
        );
    }
}
