//! Where networks run (`--device`): data-parallel training over replicas, checked on the CPU
//! (`--device cpu,cpu` is two replicas, each on a thread of its own), the device recorded in
//! the run and its report, and the refusals of devices a binary or a machine lacks.
#![allow(clippy::unwrap_used)]

mod common;
use artemis_engine::run::{CONFIG, Run, STATE, TrainState, read_json};
use burn::prelude::Device;
use common::*;
use std::path::Path;

/// `train` of the reference baseline (sigmoid, no BatchNorm, no dropout: the sum of the
/// replicas' shard gradients is then the whole batch's gradient) at 96 px, batch 8.
fn baseline<'a>(
    manifest: &'a Path,
    run: &'a Path,
    epochs: &'a str,
    device: &'a str,
) -> Vec<&'a str> {
    let extra = ["--batch-size", "8", "--seed", "5", "--device", device];
    train_args(manifest, run, ("baseline", "96", epochs), &extra)
}

fn train_ok(args: &[&str]) {
    let o = artemis(args);
    assert!(matches!(o.status.code(), Some(0 | 3)), "{}", text(&o));
}

fn losses(run: &Path) -> Vec<f64> {
    let state: TrainState = read_json(&run.join(STATE)).unwrap();
    state.history.iter().map(|m| m.train_loss).collect()
}

/// Two replicas train like one device (per-epoch training losses within 1e-4 relative of the
/// single-device run: the same gradients, summed in another order), are deterministic (a
/// second two-replica run ends with bit-identical weights), resume bit-identically (stopped
/// after epoch 1, resumed), and the run records where it trained.
#[test]
fn two_replicas_train_like_one_device_and_resume_bit_identically() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, manifest) = tiny_split(tmp.path(), "3");
    let one = tmp.path().join("one");
    train_ok(&baseline(&manifest, &one, "2", "cpu"));
    let two = tmp.path().join("two");
    train_ok(&baseline(&manifest, &two, "2", "cpu,cpu"));
    let (a, b) = (losses(&one), losses(&two));
    assert_eq!(a.len(), 2);
    for (x, y) in a.iter().zip(&b) {
        assert!(((x - y) / x).abs() < 1e-4, "losses {a:?} vs {b:?}");
    }
    let config = json_file(&two.join(CONFIG));
    assert_eq!(config["trained_on"], serde_json::json!(["cpu,cpu"]));

    let again = tmp.path().join("again");
    train_ok(&baseline(&manifest, &again, "2", "cpu,cpu"));
    // Checkpoint files carry random parameter ids: the weights are compared as bits.
    let best = |run: &Path| {
        let r = Run::open(run).unwrap();
        weight_bits(&r.load_best(&Device::flex()).unwrap())
    };
    assert!(best(&two) == best(&again), "two-replica runs differ");

    let resumed = tmp.path().join("resumed");
    let mut first = baseline(&manifest, &resumed, "2", "cpu,cpu");
    first.extend(["--stop-after", "1"]);
    train_ok(&first);
    assert_eq!(losses(&resumed).len(), 1);
    train_ok(&[
        "train",
        "--resume",
        "-o",
        s(&resumed),
        "--device",
        "cpu,cpu",
    ]);
    assert!(best(&two) == best(&resumed), "resumed run differs");
    assert_eq!(losses(&resumed), b);

    // Resumed on one device: recorded as a second entry.
    let o = artemis(&["train", "--resume", "-o", s(&resumed), "--epochs", "3"]);
    assert!(matches!(o.status.code(), Some(0 | 3)), "{}", text(&o));
    let config = json_file(&resumed.join(CONFIG));
    assert_eq!(config["trained_on"], serde_json::json!(["cpu,cpu", "cpu"]));
}

/// A GPU backend this binary was built without, a device list where one device is meant, an
/// ONNX Runtime engine on a device it has no provider for, and a device name that does not
/// exist: each a clear error (exit 1, or 2 for a malformed flag) naming the device, never a
/// panic; nothing is written. `cuda` that neither burn nor ONNX Runtime can reach falls back
/// to the CPU with a notice (refused with `--engine onnx`).
#[test]
fn devices_a_binary_lacks_are_refused_or_fall_back_with_a_notice() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, manifest) = tiny_split(tmp.path(), "3");
    let run = tmp.path().join("run");
    if !cfg!(feature = "vulkan") {
        let o = artemis(&baseline(&manifest, &run, "1", "vulkan"));
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("--device vulkan:0") && err.contains("--features vulkan"),
            "{err}"
        );
        assert!(!err.contains("panicked"), "{err}");
        assert!(!run.exists(), "a refused device wrote the run folder");
    }
    let o = artemis(&baseline(&manifest, &run, "1", "gpu"));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown device 'gpu'"));

    train_ok(&baseline(&manifest, &run, "1", "cpu"));
    let file = data.join(CLASSES[0]).join("img_0.png");
    let o = artemis(&["predict", s(&run), s(&file), "--device", "cpu,cpu"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("runs on one device"));
    let o = artemis(&[
        "predict",
        s(&run),
        s(&file),
        "--engine",
        "onnx",
        "--device",
        "metal",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--engine onnx runs on cpu or cuda"));
    if cfg!(feature = "cuda") {
        return;
    }
    // cuda without burn's CUDA backend and without ONNX Runtime's provider (CI's runtime is
    // the CPU build): predictions on the CPU, said in a notice; refused with --engine onnx.
    let predict = |extra: &[&str]| {
        let mut args = vec!["predict", s(&run), s(&file), "--device", "cuda"];
        args.extend(extra);
        artemis(&args)
    };
    let o = predict(&[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("no current export") && err.contains("running on cpu"),
        "{err}"
    );
    let o = artemis(&["export", "--run", s(&run), "--format", "onnx"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = predict(&[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("CUDA execution provider did not start on cuda:0")
            && err.contains("using burn on cpu"),
        "{err}"
    );
    let o = predict(&["--engine", "onnx"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("did not start on cuda:0"));
}
