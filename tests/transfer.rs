//! Transfer learning from the genuine ImageNet MobileNetV2 checkpoint, end to end through the
//! binary on a tiny generated data set: frozen stages stay bit-identical after training (with
//! the feature cache and without it), trainable ones move, the cache is reused and rebuilt
//! when corrupt, and eval/predict work on the run.
//!
//! Needs the checkpoint (`scripts/setup`; CI runs it first).
#![allow(clippy::unwrap_used)]

mod common;
use artemis_models::mobilenetv2::weights;
use artemis_models::{Architecture, ModelSpec, Network};
use burn::prelude::*;
use burn::store::ModuleSnapshot;
use common::*;
use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

/// `name -> bytes` of every tensor of `stages` (MobileNetV2 stage numbering) of a network.
fn stage_tensors(net: &Network, stages: std::ops::Range<usize>) -> BTreeMap<String, Vec<u8>> {
    let Network::MobileNetV2(m) = net else {
        panic!("not a MobileNetV2")
    };
    let mut out = BTreeMap::new();
    let mut add = |prefix: String, ts: Vec<burn::store::burn_pack::Tensor>| {
        for t in ts {
            out.insert(
                format!("{prefix}.{}", t.name),
                t.to_bytes().unwrap().to_vec(),
            );
        }
    };
    for st in stages {
        match st {
            0 => add("stem".into(), m.stem.collect(None, None, true)),
            18 => add("last".into(), m.last.collect(None, None, true)),
            b if b < 18 => add(
                format!("block{b}"),
                m.blocks[b - 1].collect(None, None, true),
            ),
            _ => {}
        }
    }
    assert!(!out.is_empty());
    out
}

fn load_run(run: &Path) -> Network {
    let cfg: serde_json::Value =
        serde_json::from_slice(&fs::read(run.join("config.json")).unwrap()).unwrap();
    let spec: ModelSpec = serde_json::from_value(cfg["model"].clone()).unwrap();
    let net = spec.init(&Device::flex()).unwrap();
    let bytes = fs::read(run.join("model-best.bpk")).unwrap();
    let rec =
        burn::store::ModuleRecord::from_bytes(burn::tensor::Bytes::from_bytes_vec(bytes)).unwrap();
    net.load_record(rec)
}

/// `artemis train --manifest M --epochs 1 --batch-size 8 --lr 0.01 --cache-dir C -o OUT
/// EXTRA...`.
fn train_one_epoch(
    manifest: &Path,
    cache: &Path,
    out: &Path,
    extra: &[&str],
) -> std::process::Output {
    let mut args = vec![
        "train",
        "--manifest",
        s(manifest),
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--lr",
        "0.01",
        "--cache-dir",
        s(cache),
        "-o",
        s(out),
    ];
    args.extend_from_slice(extra);
    artemis(&args)
}

/// A temporary folder with the generated data set (`data/`) and its reference-protocol
/// manifest (`m.tsv`, seed 1).
fn dataset_with_manifest() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    make_dataset(&data);
    let manifest = tmp.path().join("m.tsv");
    split(&data, &manifest, "1", &["--protocol", "reference"]);
    (tmp, data, manifest)
}

#[test]
fn frozen_stages_stay_bit_identical_and_the_cache_is_reused() {
    let weights_path = weights::CHECKPOINT.default_path();
    assert!(
        weights_path.is_file(),
        "{}: {}",
        weights_path.display(),
        weights::CHECKPOINT.how_to_get
    );
    let (tmp, data, manifest) = dataset_with_manifest();
    let cache = tmp.path().join("cache");
    let model_args = [
        "--model",
        "mobilenetv2",
        "--pretrained",
        "imagenet",
        "--weights",
        s(&weights_path),
        "--input-size",
        "64",
    ];
    let train = |out: &Path, extra: &[&str]| {
        let o = train_one_epoch(&manifest, &cache, out, &[&model_args[..], extra].concat());
        assert!(o.status.success(), "{}", text(&o));
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    // Head only, cached features, two augmented copies per training image.
    let head_args = [
        "--strategy",
        "head",
        "--augment",
        "standard",
        "--cache-copies",
        "2",
    ];
    let pretrained = ModelSpec::new(Architecture::MobileNetV2, 3, (64, 64))
        .init_pretrained(&weights_path, &Device::flex())
        .unwrap();

    // Head only, on cached features: the whole backbone is the checkpoint's, bit for bit.
    let head = tmp.path().join("head");
    let err = train(&head, &head_args);
    assert!(err.contains("train features, copy 2/2: Built"), "{err}");
    let net = load_run(&head);
    assert_eq!(
        stage_tensors(&net, 0..19),
        stage_tensors(&pretrained, 0..19)
    );
    let Network::MobileNetV2(m) = &net else {
        unreachable!()
    };
    assert_eq!(m.classifier.weight.dims(), [1280, 12]); // the 12-class task, not ImageNet's 1000

    // The same run again: every cache file is a hit.
    let again = tmp.path().join("head2");
    let err = train(&again, &head_args);
    assert_eq!(err.matches(": Hit").count(), 3, "{err}");
    // Same inputs, same seed: the same trained head.
    let head_of = |n: &Network| match n {
        Network::MobileNetV2(m) => m.classifier.weight.val().into_data(),
        _ => unreachable!(),
    };
    assert_eq!(head_of(&load_run(&again)), head_of(&net));

    // A corrupt cache file is rebuilt, not used.
    let files: Vec<_> = fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 3, "{files:?}");
    for f in &files {
        let mut b = fs::read(f).unwrap();
        let n = b.len();
        b[n - 3] ^= 0x55;
        fs::write(f, b).unwrap();
    }
    let err = train(&tmp.path().join("head3"), &head_args);
    assert_eq!(err.matches(": Rebuilt").count(), 3, "{err}");

    // Fine-tuning from features.16 without the cache: the frozen prefix runs every batch on
    // the training device, and must neither learn nor update its BatchNorm statistics.
    let part = tmp.path().join("from16");
    train(
        &part,
        &[
            "--strategy",
            "from:16",
            "--no-cache",
            "--backbone-lr",
            "0.001",
        ],
    );
    let net = load_run(&part);
    assert_eq!(
        stage_tensors(&net, 0..16),
        stage_tensors(&pretrained, 0..16)
    );
    assert_ne!(
        stage_tensors(&net, 16..19),
        stage_tensors(&pretrained, 16..19)
    );

    // eval and predict work on a transfer run as on any other.
    let o = artemis(&["eval", s(&part), "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = artemis(&["predict", s(&part), s(&data.join("glioma_coronal"))]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("img_0.png"));
}

#[test]
fn pretrained_errors_are_clear() {
    let (tmp, _, manifest) = dataset_with_manifest();
    let missing = tmp.path().join("nope.pth");
    // (extra arguments, what the error must say)
    let cases: [(&[&str], &[&str]); 3] = [
        (
            &[
                "--model",
                "mobilenetv2",
                "--pretrained",
                "imagenet",
                "--weights",
                s(&missing),
            ],
            &["nope.pth", "scripts/setup"],
        ),
        (
            &[
                "--model",
                "mobilenetv2",
                "--pretrained",
                "imagenet",
                "--width",
                "0.5",
            ],
            &["width 1.0"],
        ),
        (
            &["--model", "baseline", "--strategy", "head"],
            &["strategy"],
        ),
    ];
    for (i, (extra, needles)) in cases.iter().enumerate() {
        let out = tmp.path().join(format!("r{i}"));
        let mut args = vec!["train", "--manifest", s(&manifest), "-o", s(&out)];
        args.extend_from_slice(extra);
        let o = artemis(&args);
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(needles.iter().all(|n| err.contains(n)), "{}", text(&o));
        assert!(
            !out.join("config.json").exists(),
            "a refused run writes nothing"
        );
    }
}

#[test]
fn bench_prints_time_to_accuracy() {
    let (_tmp, _, manifest) = dataset_with_manifest();
    let o = artemis(&[
        "bench",
        "--manifest",
        s(&manifest),
        "--strategy",
        "head",
        "--epochs",
        "2",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    let rows: Vec<Vec<&str>> = out
        .lines()
        .filter(|l| l.starts_with("head"))
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 3, "{out}");
    assert_eq!((rows[0][1], rows[1][1], rows[2][1]), ("setup", "1", "2"));
    let t: Vec<f64> = rows.iter().map(|r| r[2].parse().unwrap()).collect();
    assert!(t[0] > 0.0 && t[0] <= t[1] && t[1] <= t[2], "{out}");
    let acc: f64 = rows[2][3].parse().unwrap();
    assert!((0.0..=1.0).contains(&acc), "{out}");
}

/// Whether stages `0..to` of two networks give bit-identical activations on a fixed input.
fn same_prefix(a: &Network, b: &Network, to: usize, side: usize) -> bool {
    let device = Device::flex();
    let n = 2 * 3 * side * side;
    let x: Vec<f32> = (0..n)
        .map(|i| ((i * 7919) % 255) as f32 / 64.0 - 2.0)
        .collect();
    let x = Tensor::<4>::from_data(TensorData::new(x, [2, 3, side, side]), &device);
    let run = |net: &Network| net.forward_stages(x.clone(), 0, to).into_data();
    run(a) == run(b)
}

#[test]
fn efficientnet_lite0_fine_tunes_and_inceptionv3_trains_from_scratch() {
    let (tmp, data, manifest) = dataset_with_manifest();
    let cache = tmp.path().join("cache");
    let train = |model: &str, out: &Path, extra: &[&str]| {
        train_one_epoch(
            &manifest,
            &cache,
            out,
            &[&["--model", model][..], extra].concat(),
        )
    };

    // EfficientNet-Lite0 from its ImageNet checkpoint, stages 12.. trained on cached
    // activations of the frozen stages 0..12.
    let lite = Architecture::EfficientNetLite0;
    let w = lite.checkpoint().unwrap().default_path();
    assert!(
        w.is_file(),
        "{}: {}",
        w.display(),
        lite.checkpoint().unwrap().how_to_get
    );
    let run = tmp.path().join("lite");
    let extra = [
        "--pretrained",
        "imagenet",
        "--strategy",
        "from:12",
        "--input-size",
        "64",
    ];
    let o = train("efficientnet-lite0", &run, &extra);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("train features, copy 1/1: Built"),
        "{}",
        text(&o)
    );
    let net = load_run(&run);
    let imagenet = ModelSpec::new(lite, 12, (64, 64))
        .init_pretrained(&w, &Device::flex())
        .unwrap();
    assert!(
        same_prefix(&net, &imagenet, 12, 64),
        "frozen stages changed"
    );
    assert!(
        !same_prefix(&net, &imagenet, 18, 64),
        "trainable stages did not move"
    );
    let cfg: serde_json::Value =
        serde_json::from_slice(&fs::read(run.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["preprocess"]["scaling"], "lite");

    // InceptionV3 from scratch at its smallest input; eval, and predict with heat maps.
    let inc = tmp.path().join("inception");
    let o = train("inceptionv3", &inc, &["--input-size", "75"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = artemis(&["eval", s(&inc), "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let maps = tmp.path().join("maps");
    let o = artemis(&[
        "predict",
        s(&inc),
        s(&data.join("glioma_coronal/img_0.png")),
        "--explain",
        s(&maps),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let pngs = fs::read_dir(&maps)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "png")
        })
        .count();
    assert_eq!(pngs, 1);

    // The InceptionV3 ImageNet checkpoint cannot be fetched here: asking for it without the
    // file fails before anything is written, naming the file and where to get it.
    let missing = tmp.path().join("nowhere/inception_v3_google-0cc3c7bd.pth");
    for (out, weights) in [("inc-a", Some(&missing)), ("inc-b", None)] {
        let out = tmp.path().join(out);
        let mut args = vec![
            "train",
            "--manifest",
            s(&manifest),
            "--model",
            "inceptionv3",
            "--pretrained",
            "imagenet",
            "-o",
            s(&out),
        ];
        if let Some(w) = weights {
            args.extend(["--weights", s(w)]);
        }
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_artemis"))
            .args(&args)
            .env("ARTEMIS_CACHE", tmp.path().join("empty-cache"))
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        let e = text(&o);
        assert!(
            e.contains("inception_v3_google-0cc3c7bd.pth")
                && e.contains("download.pytorch.org")
                && e.contains("file not found"),
            "{e}"
        );
        assert!(!out.exists(), "a refused run wrote {}", out.display());
    }
}

/// A copy of a manifest with the labels of its training and validation rows dealt out
/// again in the order of their content hashes: labels that carry no information.
fn shuffle_labels(manifest: &Path, out: &Path) {
    let text = fs::read_to_string(manifest).unwrap();
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut head = String::new();
    for line in text.lines() {
        if line.starts_with('#') || line.starts_with("split\t") {
            head += line;
            head.push('\n');
        } else {
            rows.push(line.split('\t').map(str::to_string).collect());
        }
    }
    let fitted: Vec<usize> = (0..rows.len())
        .filter(|&i| matches!(rows[i][0].as_str(), "train" | "val"))
        .collect();
    let labels: Vec<String> = fitted.iter().map(|&i| rows[i][4].clone()).collect();
    let mut by_hash = fitted.clone();
    by_hash.sort_by(|&a, &b| rows[a][2].cmp(&rows[b][2]));
    for (&i, label) in by_hash.iter().zip(labels) {
        rows[i][4] = label;
    }
    let body: Vec<String> = rows.iter().map(|r| r.join("\t")).collect();
    fs::write(out, head + &body.join("\n") + "\n").unwrap();
}

/// Trains the head of MobileNetV2 (ImageNet) on cached features, with augmentation copies
/// and a cosine schedule with warm-up, and returns `(accuracy, n)` on the test split.
fn head_test_accuracy(manifest: &Path, run: &Path, cache: &Path) -> (f64, u64) {
    let weights = weights::CHECKPOINT.default_path();
    let extra = [
        "--schedule",
        "cosine",
        "--warmup",
        "1",
        "--augment",
        "standard",
        "--cache-copies",
        "2",
    ];
    let o = artemis(&head_args(manifest, run, &weights, cache, "10", &extra));
    assert!(o.status.success(), "{}", text(&o));
    let o = artemis(&["eval", s(run), "--no-calibration"]);
    assert!(o.status.success(), "{}", text(&o));
    let r: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(run.join("report.json")).unwrap()).unwrap();
    let m = &r["metrics"];
    (m["accuracy"].as_f64().unwrap(), m["n"].as_u64().unwrap())
}

/// Training learns: the head on cached ImageNet features of 360 real scans (the first 30 of
/// each class of the 12-class set) must score far above chance (1/12) on held-out scans of
/// the clean protocol, and the same training on labels dealt out at random must not; a
/// broken optimiser, augmentation, schedule, feature cache or label mapping stays near the
/// second figure.
#[test]
fn head_training_on_real_scans_beats_a_fixed_accuracy() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("planes");
    copy_subset(
        &shared("artemis-planes/Training"),
        &data,
        30,
        str::to_string,
    );
    let manifest = tmp.path().join("m.tsv");
    let o = split(
        &data,
        &manifest,
        "7",
        &["--val-fraction", "0.15", "--test-fraction", "0.25"],
    );
    assert!(o.status.success(), "{}", text(&o));
    let cache = tmp.path().join("cache");
    let (acc, n) = head_test_accuracy(&manifest, &tmp.path().join("run"), &cache);
    let shuffled = tmp.path().join("shuffled.tsv");
    shuffle_labels(&manifest, &shuffled);
    let (noise, _) = head_test_accuracy(&shuffled, &tmp.path().join("noise"), &cache);
    eprintln!(
        "head, 12 classes, {n} held-out scans: accuracy {acc:.3}; labels shuffled {noise:.3}"
    );
    // Measured (2 cores): 0.846 and 0.055 (chance 0.083).
    assert!(
        acc >= 0.70 && noise <= 0.30,
        "accuracy {acc:.3}, shuffled labels {noise:.3} ({n} scans)"
    );
}
