//! End-to-end tests of the `artemis` binary on a tiny data set the tests draw themselves, in a
//! temporary folder.

#![allow(clippy::unwrap_used)] // tests may panic on broken fixtures

use std::fs;
use std::path::{Path, PathBuf};

mod common;
use common::*;

#[test]
fn check_split_train_resume_eval_predict() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    make_dataset(&data);

    // data check: the broken file is reported, the run goes on, exit code 3 (partial).
    let o = artemis(&["data", "check", s(&data), "--json"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let rep: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(rep["files"], 31);
    assert_eq!(rep["decoded"], 30);
    assert!(
        rep["unreadable"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("broken.jpg")
    );

    // data split: same seed, same bytes.
    let m1 = tmp.path().join("m1.tsv");
    let m2 = tmp.path().join("m2.tsv");
    for m in [&m1, &m2] {
        let o = artemis(&[
            "data",
            "split",
            s(&data),
            "--protocol",
            "clean",
            "--seed",
            "3",
            "--val-fraction",
            "0.2",
            "--test-fraction",
            "0.2",
            "-o",
            s(m),
        ]);
        // Exit 3: finished, the broken file skipped (and named).
        assert_eq!(o.status.code(), Some(3), "{}", text(&o));
        assert!(text(&o).contains("broken.jpg"), "{}", text(&o));
    }
    assert_eq!(fs::read(&m1).unwrap(), fs::read(&m2).unwrap());
    let manifest = fs::read_to_string(&m1).unwrap();
    assert!(manifest.contains("excluded\tno_sagittal/broken.jpg"));

    // train 2 epochs in two calls (stop after 1, then resume) ...
    let run = tmp.path().join("run");
    let train = |extra: &[&str]| {
        let mut args = vec![
            "train",
            "--manifest",
            s(&m1),
            "--model",
            "baseline-relu-bn",
            "--input-size",
            "96",
            "--epochs",
            "2",
            "--batch-size",
            "8",
            "--lr",
            "0.003",
            "--augment",
            "standard",
            "--blur",
            "1",
            "--weight-decay",
            "0.05",
            "--label-smoothing",
            "0.1",
            "--seed",
            "9",
        ];
        args.extend_from_slice(extra);
        artemis(&args)
    };
    let o = train(&["-o", s(&run), "--stop-after", "1"]);
    assert!(o.status.success(), "{}", text(&o));
    let state: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(run.join("state.json")).unwrap()).unwrap();
    assert_eq!(state["epochs_done"], 1);
    // The regularisation is recorded, so --resume (which reads the run's config) keeps it.
    let config: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(run.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["train"]["weight_decay"], 0.05, "{config}");
    assert_eq!(config["train"]["label_smoothing"], 0.1, "{config}");
    assert_eq!(config["augment"]["blur"], 1.0, "{config}");
    // ... a second training into the same folder without --resume is refused ...
    let o = train(&["-o", s(&run)]);
    assert!(!o.status.success());
    assert!(text(&o).contains("--resume"), "{}", text(&o));
    let o = artemis(&["train", "--resume", "-o", s(&run), "--epochs", "2"]);
    assert!(o.status.success(), "{}", text(&o));
    // ... and ends where an uninterrupted run with the same seed ends.
    let straight = tmp.path().join("straight");
    let o = train(&["-o", s(&straight)]);
    assert!(o.status.success(), "{}", text(&o));
    let hist = |dir: &Path| -> Vec<(f64, f64)> {
        let st: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(dir.join("state.json")).unwrap()).unwrap();
        st["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["train_loss"].as_f64().unwrap(),
                    m["val_loss"].as_f64().unwrap(),
                )
            })
            .collect()
    };
    let (a, b) = (hist(&run), hist(&straight));
    assert_eq!(a.len(), 2);
    for (x, y) in a.iter().zip(&b) {
        assert!(
            (x.0 - y.0).abs() < 1e-5 && (x.1 - y.1).abs() < 1e-5,
            "{a:?} vs {b:?}"
        );
    }
    let csv = fs::read_to_string(run.join("metrics.csv")).unwrap();
    assert_eq!(csv.lines().count(), 3, "{csv}");
    let files: Vec<String> = fs::read_dir(&run)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(files.contains(&"model-best.bpk".into()), "{files:?}");
    assert!(files.contains(&"ckpt-0002.model.bpk".into()), "{files:?}");
    assert!(
        !files
            .iter()
            .any(|f| f.contains(".tmp") || f.starts_with("ckpt-0001")),
        "{files:?}"
    );

    // eval on the test split writes the reports and pictures.
    let o = artemis(&["eval", s(&run)]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("not a medical device"));
    let report: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(run.join("report.json")).unwrap()).unwrap();
    let acc = report["metrics"]["accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&acc));
    assert_eq!(report["metrics"]["per_class"].as_array().unwrap().len(), 12);
    assert!(report["type_view"]["accuracy"].is_number());
    assert!(report["plane_view"]["accuracy"].is_number());
    assert!(report["metrics"]["separation"]["macro_roc_auc"].is_number());
    assert!(report["metrics"]["bootstrap"]["accuracy"]["low"].is_number());
    let recipe = report["description"].as_str().unwrap();
    for part in [
        "blur up to 1 px",
        "AdamW (weight decay 0.05)",
        "label smoothing 0.1",
    ] {
        assert!(recipe.contains(part), "{recipe}");
    }
    for f in [
        "report.md",
        "report.html",
        "roc.png",
        "reliability.png",
        "calibration.json",
        "confusion.png",
        "confusion-type.png",
        "confusion-plane.png",
        "curves.png",
    ] {
        assert!(run.join(f).exists(), "{f} missing");
    }

    // predict: a folder with a broken file and a missing path; the rest are classified.
    let missing = tmp.path().join("nope.png");
    let o = artemis(&[
        "predict",
        s(&run),
        s(&data.join("no_sagittal")),
        s(&missing),
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["schema"], "artemis.predict/2");
    let rows = doc["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 12);
    let errors: Vec<&serde_json::Value> = rows.iter().filter(|r| !r["error"].is_null()).collect();
    assert_eq!(errors.len(), 2);
    assert!(
        errors
            .iter()
            .any(|r| r["error"].as_str().unwrap().contains("broken.jpg"))
    );
    assert!(
        errors
            .iter()
            .any(|r| r["input"].as_str().unwrap().ends_with("nope.png"))
    );
    for r in rows.iter().filter(|r| r["error"].is_null()) {
        let p: f64 = r["probabilities"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x[1].as_f64().unwrap())
            .sum();
        assert!((p - 1.0).abs() < 1e-4);
    }
}

#[test]
fn bad_arguments_give_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let missing: PathBuf = tmp.path().join("missing");
    let o = artemis(&["data", "check", s(&missing)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains(s(&missing)), "{}", text(&o));
    let o = artemis(&["predict", s(tmp.path()), "x.png"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("not an artemis run folder"),
        "{}",
        text(&o)
    );
    let bad = tmp.path().join("bad.tsv");
    fs::write(&bad, "# artemis split manifest v1\nhello\n").unwrap();
    let o = artemis(&[
        "train",
        "--manifest",
        s(&bad),
        "-o",
        s(&tmp.path().join("r")),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("bad.tsv:2"), "{}", text(&o));
}

/// `artemis export`, then predict and eval through ONNX Runtime with burn's results; burn with
/// a one-line notice when the runtime is missing or the export is older than the weights.
#[test]
fn export_and_onnx_runtime_inference_with_fallbacks() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, manifest) = tiny_split(tmp.path(), "5");
    let run = tmp.path().join("run");
    train_baseline(&manifest, &run, "96", "2", &["--seed", "4"]);
    let folder = data.join("glioma_coronal");
    let predict = |env: &[(&str, &str)], extra: &[&str]| {
        let mut args = vec!["predict", s(&run), s(&folder), "--json"];
        args.extend_from_slice(extra);
        artemis_env(&args, env)
    };
    let probs = |o: &std::process::Output| -> Vec<Vec<f64>> {
        let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        doc["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                r["probabilities"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p[1].as_f64().unwrap())
                    .collect()
            })
            .collect()
    };
    let engine = |o: &std::process::Output| -> String {
        let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        doc["engine"].as_str().unwrap().to_string()
    };
    let close = |a: &[Vec<f64>], b: &[Vec<f64>]| {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            for (p, q) in x.iter().zip(y) {
                assert!((p - q).abs() < 1e-4, "{x:?} vs {y:?}");
            }
        }
    };

    // No export yet: burn, silently.
    let burn = predict(&[], &[]);
    assert!(burn.status.success(), "{}", text(&burn));
    assert!(engine(&burn).starts_with("burn"), "{}", text(&burn));
    assert!(!text(&burn).contains("notice:"), "{}", text(&burn));

    let o = artemis(&["export", "--run", s(&run), "--format", "onnx"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("checked with ONNX Runtime"),
        "{}",
        text(&o)
    );
    for f in ["model.onnx", "backbone.onnx"] {
        assert!(run.join("export").join(f).metadata().unwrap().len() > 10_000);
    }

    // With the export: ONNX Runtime, the same probabilities.
    let ort = predict(&[], &["--threads", "1"]);
    assert!(ort.status.success(), "{}", text(&ort));
    assert!(engine(&ort).contains("ONNX Runtime"), "{}", text(&ort));
    assert!(engine(&ort).contains("1 threads"), "{}", text(&ort));
    close(&probs(&burn), &probs(&ort));
    // (No calibration: predictions below compare raw probabilities with the first ones.)
    let o = artemis(&["eval", s(&run), "--bootstrap", "0", "--no-calibration"]);
    assert!(o.status.success(), "{}", text(&o));
    let report: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(run.join("report.json")).unwrap()).unwrap();
    assert!(report["engine"].as_str().unwrap().contains("ONNX Runtime"));
    assert!(
        fs::read_to_string(run.join("report.md"))
            .unwrap()
            .contains("- inference: ONNX Runtime")
    );

    // Runtime missing: burn with one notice line; --engine onnx refuses.
    let gone = [("ARTEMIS_ORT_LIB", "/nonexistent/libonnxruntime.so")];
    let o = predict(&gone, &[]);
    assert!(o.status.success(), "{}", text(&o));
    let stderr = String::from_utf8_lossy(&o.stderr);
    let notices: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("notice:"))
        .collect();
    assert_eq!(notices.len(), 1, "{stderr}");
    assert!(
        notices[0].contains("/nonexistent/libonnxruntime.so") && notices[0].contains("using burn")
    );
    assert!(engine(&o).starts_with("burn"));
    close(&probs(&burn), &probs(&o));
    let o = predict(&gone, &["--engine", "onnx"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("not found"), "{}", text(&o));

    // Weights changed after the export (another run's best checkpoint copied in): burn, and
    // the notice says to export again.
    let other = tmp.path().join("other");
    train_baseline(&manifest, &other, "96", "1", &["--seed", "8"]);
    fs::copy(other.join("model-best.bpk"), run.join("model-best.bpk")).unwrap();
    let o = predict(&[], &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(engine(&o).starts_with("burn"), "{}", text(&o));
    assert!(text(&o).contains("artemis export"), "{}", text(&o));
}

/// Every key path of a JSON document (`a.b[].c`), array elements merged: the shape a
/// consumer of the document relies on, without its values.
fn key_paths(v: &serde_json::Value, prefix: &str, out: &mut std::collections::BTreeSet<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                let p = format!("{prefix}.{k}");
                out.insert(p.clone());
                key_paths(x, &p, out);
            }
        }
        serde_json::Value::Array(a) => {
            for x in a {
                key_paths(x, &format!("{prefix}[]"), out);
            }
        }
        _ => {}
    }
}

/// `report.json` and the `predict --json` document keep their shape across refactors: their
/// key paths are compared with the lists in `tests/schema/` (written from the documents of
/// this data set; `ARTEMIS_BLESS=1` rewrites them after a deliberate schema change, which
/// also bumps the document's `schema` version).
#[test]
fn report_and_predict_documents_keep_their_shape() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, manifest) = tiny_split(tmp.path(), "9");
    let run = tmp.path().join("run");
    train_baseline(&manifest, &run, "96", "1", &[]);
    let o = artemis(&["eval", s(&run), "--bootstrap", "10"]);
    assert!(o.status.success(), "{}", text(&o));
    let report = json_file(&run.join("report.json"));
    let predict = predict_json(&run, &data.join("glioma_coronal"));
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schema");
    for (name, doc) in [("report.keys", &report), ("predict.keys", &predict)] {
        let mut keys = std::collections::BTreeSet::new();
        key_paths(doc, "", &mut keys);
        let got: String = keys.iter().map(|k| format!("{k}\n")).collect();
        let path = dir.join(name);
        if std::env::var_os("ARTEMIS_BLESS").is_some() {
            fs::create_dir_all(&dir).unwrap();
            fs::write(&path, &got).unwrap();
        }
        let want = fs::read_to_string(&path).unwrap_or_default();
        assert_eq!(
            got,
            want,
            "{name}: the document's keys changed (ARTEMIS_BLESS=1 rewrites {})",
            path.display()
        );
    }
}

/// The lines of a JSON Lines file.
fn jsonl(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Batch prediction sharded over a cluster: 1, 3 and 7 shards of a folder of real scans merge
/// to exactly the rows of one unsharded run; a shard killed halfway (its partial file torn in
/// a line) and rerun neither repeats nor loses a file; a complete shard is not redone; the
/// merge refuses a missing shard, a shard given twice, a missing file and a doubled one,
/// naming it.
#[test]
fn sharded_prediction_merges_to_the_unsharded_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, manifest) = tiny_split(tmp.path(), "4");
    let run = tmp.path().join("run");
    train_baseline(&manifest, &run, "96", "1", &[]);
    let scans = tmp.path().join("scans");
    copy_subset(
        &shared("artemis-planes/Training"),
        &scans,
        4,
        str::to_string,
    );
    let predict_to = |out: &Path, shard: Option<String>| {
        let mut args = vec!["predict", s(&run), s(&scans), "--out", s(out)];
        let spec = shard.unwrap_or_default();
        if !spec.is_empty() {
            args.extend(["--shard", spec.as_str()]);
        }
        let o = artemis(&args);
        assert!(o.status.success(), "{}", text(&o));
        text(&o)
    };
    let merge = |files: &[PathBuf], out: &Path| {
        let mut args = vec!["predict-merge"];
        args.extend(files.iter().map(|f| s(f)));
        args.extend(["-o", s(out)]);
        artemis(&args)
    };
    let whole = tmp.path().join("whole.jsonl");
    predict_to(&whole, None);
    let all = tmp.path().join("all.jsonl");
    assert!(merge(std::slice::from_ref(&whole), &all).status.success());
    let rows = jsonl(&all);
    assert_eq!(rows.len(), 48, "12 classes x 4 scans");
    let mut shard_files = Vec::new();
    for n in [1, 3, 7] {
        let files: Vec<PathBuf> = (0..n)
            .map(|i| {
                let f = tmp.path().join(format!("s{n}-{i}.jsonl"));
                predict_to(&f, Some(format!("{i}/{n}")));
                f
            })
            .collect();
        let merged = tmp.path().join(format!("m{n}.jsonl"));
        let o = merge(&files, &merged);
        assert!(o.status.success(), "{}", text(&o));
        assert_eq!(jsonl(&merged), rows, "{n} shards");
        shard_files.push(files);
    }
    let three = &shard_files[1];
    for f in three {
        assert!(jsonl(f).len() > 1, "{}: no rows", f.display());
    }

    // Killed halfway: the shard's rows cut inside a line, left as the partial file.
    let lines = jsonl(&three[0]);
    assert!(lines.len() > 4, "shard 0 of 3 has {} lines", lines.len());
    let cut = lines[..lines.len() / 2].join("\n") + "\n" + &lines[lines.len() / 2][..20];
    let killed = tmp.path().join("killed.jsonl");
    fs::write(tmp.path().join("killed.jsonl.partial"), cut).unwrap();
    let said = predict_to(&killed, Some("0/3".into()));
    assert!(said.contains("resuming after"), "{said}");
    assert_eq!(
        jsonl(&killed),
        lines,
        "resumed shard differs from the straight one"
    );
    assert!(!tmp.path().join("killed.jsonl.partial").exists());
    // A complete shard is left as it is.
    let said = predict_to(&killed, Some("0/3".into()));
    assert!(said.contains("already complete"), "{said}");

    // The merge refuses, naming what is wrong.
    let refused = |files: &[PathBuf], want: &str| {
        let o = merge(files, &tmp.path().join("refused.jsonl"));
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        assert!(text(&o).contains(want), "{want}: {}", text(&o));
    };
    refused(&three[..2], "shard 2 of 3 missing");
    refused(
        &[three[0].clone(), three[0].clone(), three[1].clone()],
        "shard 0 again",
    );
    let first_input = |line: &str| -> String {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        v["input"].as_str().unwrap().to_string()
    };
    // A file missing: its row dropped from shard 1 (the trailer still lists it).
    let one = jsonl(&three[1]);
    let lost = tmp.path().join("lost.jsonl");
    fs::write(&lost, one[1..].join("\n") + "\n").unwrap();
    refused(
        &[three[0].clone(), lost, three[2].clone()],
        &format!("{} missing", first_input(&one[0])),
    );
    // A file doubled: shard 1's first row also in shard 2.
    let two = jsonl(&three[2]);
    let doubled = tmp.path().join("doubled.jsonl");
    let mut with = vec![one[0].clone()];
    with.extend(two.iter().cloned());
    fs::write(&doubled, with.join("\n") + "\n").unwrap();
    refused(
        &[three[0].clone(), three[1].clone(), doubled],
        &format!("{} doubled", first_input(&one[0])),
    );
    assert!(!tmp.path().join("refused.jsonl").exists());
    // A bad shard is a usage error naming the flag.
    for spec in ["3/3", "x", "auto"] {
        let o = artemis(&[
            "predict",
            s(&run),
            s(&scans),
            "--out",
            "x.jsonl",
            "--shard",
            spec,
        ]);
        assert_eq!(o.status.code(), Some(2), "{spec}: {}", text(&o));
        assert!(text(&o).contains("--shard"), "{spec}: {}", text(&o));
    }
}

#[test]
fn cross_validation_tests_every_image_once_and_continues_where_it_stopped() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, manifest) = tiny_split(tmp.path(), "4");
    let out = tmp.path().join("cv");
    let cv = |folds: &str| {
        let mut args = baseline_args(&manifest, &out, "96", "1", &["--folds", folds]);
        args[0] = "cv";
        args.extend(["--bootstrap", "50"]);
        artemis(&args)
    };
    let o = cv("3");
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("Pooled out-of-fold"), "{}", text(&o));
    let report = json_file(&out.join("cv.json"));
    let pooled_rows = fs::read_to_string(&manifest)
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("train\t") || l.starts_with("val\t") || l.starts_with("test\t"))
        .count();
    let predictions = report["predictions"].as_array().unwrap();
    let mut paths: Vec<&str> = predictions
        .iter()
        .map(|p| p[1]["path"].as_str().unwrap())
        .collect();
    paths.sort();
    paths.dedup();
    assert_eq!(
        (predictions.len(), paths.len()),
        (pooled_rows, pooled_rows),
        "every pooled image predicted exactly once"
    );
    let folds = report["folds"].as_array().unwrap();
    assert_eq!(folds.len(), 3);
    let tested: u64 = folds
        .iter()
        .map(|f| f["test_images"].as_u64().unwrap())
        .sum();
    assert_eq!(tested as usize, pooled_rows);
    let acc = report["pooled"]["accuracy"]["estimate"].as_f64().unwrap();
    let correct = predictions
        .iter()
        .filter(|p| p[1]["correct"].as_bool().unwrap())
        .count();
    assert!((acc - correct as f64 / pooled_rows as f64).abs() < 1e-9);
    let html = fs::read_to_string(out.join("cv.html")).unwrap();
    assert!(html.contains("not a medical device"), "the notice");
    // The folds as one model.
    let ensemble = json_file(&out.join("ensemble/ensemble.json"));
    assert_eq!(ensemble["members"].as_array().unwrap().len(), 3);
    assert_eq!(ensemble["members"][0]["run"], "../fold-1/run");

    // compare --paired reads the out-of-fold predictions: the recipe against itself differs
    // on no image; the same pair given twice pools each image's two rows as one group.
    let paired = |dirs: &[&Path]| {
        let mut args = vec!["compare", "--paired", "--json"];
        args.extend(dirs.iter().map(|d| d.to_str().unwrap()));
        artemis(&args)
    };
    let o = paired(&[&out, &out]);
    assert!(o.status.success(), "{}", text(&o));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let views = &doc["views"];
    let score = &views[0]["score"];
    assert_eq!(score["n"].as_u64(), Some(pooled_rows as u64), "{views}");
    assert_eq!(
        (score["a_only"].as_u64(), score["b_only"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(
        score["a_accuracy"].as_f64(),
        Some(correct as f64 / pooled_rows as f64)
    );
    assert_eq!(score["mcnemar_p"].as_f64(), Some(1.0));
    assert_eq!(
        views[1]["view"], "tumor type",
        "12-class rows get a type view"
    );
    let o = paired(&[&out, &out, &out, &out]);
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let views = &doc["views"];
    let score = &views[0]["score"];
    assert_eq!(score["n"].as_u64(), Some(2 * pooled_rows as u64), "{views}");
    assert_eq!(score["groups"].as_u64(), Some(pooled_rows as u64));
    assert!(score["mcnemar_p"].is_null());
    assert_eq!(doc["pairs"].as_array().map(Vec::len), Some(2), "{doc}");
    let o = paired(&[&out, &out, &out]);
    assert!(!o.status.success());
    assert!(text(&o).contains("two at a time"), "{}", text(&o));

    // The same command again keeps the finished folds; other folds are refused.
    let again = cv("3");
    assert!(again.status.success(), "{}", text(&again));
    let report2 = json_file(&out.join("cv.json"));
    assert_eq!(report2["pooled"], report["pooled"]);
    let other = cv("2");
    assert!(!other.status.success());
    assert!(text(&other).contains("differs"), "{}", text(&other));

    // --fold-seed: another training seed on the same folds.
    let out2 = tmp.path().join("cv-seed7");
    let extra = ["--folds", "3", "--seed", "7", "--fold-seed", "42"];
    let mut args = baseline_args(&manifest, &out2, "96", "1", &extra);
    args[0] = "cv";
    args.extend(["--bootstrap", "50"]);
    let o = artemis(&args);
    assert!(o.status.success(), "{}", text(&o));
    for k in 1..=3 {
        let fold = format!("fold-{k}/manifest.tsv");
        assert_eq!(
            fs::read(out.join(&fold)).unwrap(),
            fs::read(out2.join(&fold)).unwrap(),
            "{fold}: the same folds"
        );
    }
    let r2 = json_file(&out2.join("cv.json"));
    assert_eq!(
        (r2["seed"].as_u64(), r2["train_seed"].as_u64()),
        (Some(42), Some(7))
    );
    assert_eq!(report["train_seed"].as_u64(), Some(42));
    assert!(text(&o).contains("dealt with seed 42, the recipe trained with seed 7"));

    // scripts/cv-ensembles averages the two cross-validations image by image; each alone
    // scores what its cv.json says.
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/cv-ensembles");
    let o = std::process::Command::new("python3")
        .arg(&script)
        .arg(format!("A={}", out.display()))
        .arg(format!("B={}", out2.display()))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(
        table.contains("3 combinations, paired against A+B"),
        "{table}"
    );
    let alone: f64 = (table.lines())
        .find_map(|l| l.strip_prefix("| A | "))
        .and_then(|rest| rest.split('%').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no row for A in {table}"));
    assert!((alone - 100.0 * acc).abs() < 0.006, "{alone} vs {acc}");
    assert!(table.contains("| A+B | "), "{table}");
}

/// `train --members N`: N runs of the recipe with consecutive seeds in OUT/member-K, and OUT
/// their ensemble, scored on the split they all held out; the same command again keeps the
/// finished members; a folder holding a single run is refused. `cv --members` makes each
/// fold's model an ensemble of seeds, and the folds' ensemble lists every member.
#[test]
fn members_train_one_recipe_with_several_seeds_as_one_ensemble() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, manifest) = tiny_split(tmp.path(), "4");
    let ens = tmp.path().join("seeds");
    let two_seeds = || {
        artemis(&baseline_args(
            &manifest,
            &ens,
            "96",
            "1",
            &["--members", "2"],
        ))
    };
    let o = two_seeds();
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("2 members"), "{}", text(&o));
    let file = json_file(&ens.join("ensemble.json"));
    let runs: Vec<&str> = (file["members"].as_array().unwrap().iter())
        .map(|m| m["run"].as_str().unwrap())
        .collect();
    assert_eq!(runs, ["member-1", "member-2"]);
    let seed = |k: usize| {
        json_file(&ens.join(format!("member-{k}/config.json")))["train"]["seed"].as_u64()
    };
    assert_eq!((seed(1), seed(2)), (Some(42), Some(43)));
    let weights = |k: usize| fs::read(ens.join(format!("member-{k}/model-best.bpk"))).unwrap();
    assert_ne!(weights(1), weights(2), "the seeds train different networks");
    for k in [1, 2] {
        let cal = ens.join(format!("member-{k}/calibration.json"));
        assert!(
            cal.exists(),
            "member {k} calibrated when the ensemble is made"
        );
    }
    let before = weights(2);
    // Exported with the members' temperatures, the graph is still current after eval.
    let o = artemis(&["export", "--run", s(&ens)]);
    assert!(o.status.success(), "{}", text(&o));
    // --quantize int8: each member's int8 graph, averaged like the float ones.
    let o = quantize_int8(&ens, "8", &[]);
    assert!(o.status.success(), "{}", text(&o));
    let record = json_file(&ens.join("export/export.json"));
    assert_eq!(
        record["int8"]["weight_rounding"], "sum-preserving",
        "{record}"
    );
    for k in [1, 2] {
        let member = ens.join(format!("member-{k}/export/model-int8.onnx"));
        assert!(member.exists(), "member {k} quantized");
    }
    let o = artemis(&["eval", s(&ens), "--bootstrap", "0", "--precision", "int8"]);
    assert!(o.status.success(), "{}", text(&o));
    let int8 = json_file(&ens.join("int8/report.json"));
    let engine = int8["engine"].as_str().unwrap();
    assert!(
        engine.contains("model-int8.onnx") && engine.contains("ensemble of 2"),
        "{engine}"
    );
    // ... and the page that classifies in the browser carries that graph.
    let web_int8 = |dir: &str| {
        let dir = tmp.path().join(dir);
        artemis(&[
            "export",
            "--run",
            s(&ens),
            "--format",
            "web",
            "--precision",
            "int8",
            "-o",
            s(&dir),
        ])
    };
    let web = tmp.path().join("web");
    let o = web_int8("web");
    assert!(o.status.success(), "{}", text(&o));
    let card = json_file(&web.join("model.json"));
    assert_eq!(card["graph"]["precision"], "int8", "{card}");
    // A member quantized again on its own makes the averaged int8 graph stale: each member
    // runs its own graph instead, with a notice naming it, and the page refuses it.
    assert_eq!(record["int8"]["member_graphs"].as_array().unwrap().len(), 2);
    let o = quantize_int8(
        &ens.join("member-2"),
        "8",
        &["--weight-rounding", "nearest"],
    );
    assert!(o.status.success(), "{}", text(&o));
    let o = artemis(&["eval", s(&ens), "--bootstrap", "0", "--precision", "int8"]);
    assert!(o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("member-2") && err.contains("quantized again"),
        "{}",
        text(&o)
    );
    let engine = json_file(&ens.join("int8/report.json"))["engine"].to_string();
    assert!(
        !engine.contains("the mean of") && engine.contains("each on"),
        "{engine}"
    );
    let o = web_int8("web2");
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("quantized again"), "{}", text(&o));
    let report = eval_report(&ens, &["--bootstrap", "0"]);
    assert!(
        report["model"]
            .as_str()
            .unwrap()
            .starts_with("ensemble: baseline-relu-bn x2")
    );
    assert!(
        report["engine"]
            .as_str()
            .unwrap()
            .contains("the mean of an ensemble of 2"),
        "{report}"
    );
    let o = two_seeds();
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(weights(2), before, "a finished member is kept as it is");
    let single = tmp.path().join("single");
    train_baseline(&manifest, &single, "96", "1", &[]);
    // --subsample: the run trains on a seeded share of each class of the training split.
    let train_images = |o: &std::process::Output| -> usize {
        let t = text(o);
        let at = t.find(" train / ").expect("the closing line");
        t[..at].rsplit('(').next().unwrap().parse().unwrap()
    };
    let half = tmp.path().join("half");
    let o = artemis(&baseline_args(
        &manifest,
        &half,
        "96",
        "1",
        &["--subsample", "0.5"],
    ));
    assert!(o.status.success(), "{}", text(&o));
    let all = artemis(&baseline_args(&manifest, &single, "96", "1", &["--resume"]));
    let (n_half, n_all) = (train_images(&o), train_images(&all));
    // Each class's half rounds up: at most one image a class (12 classes) over half.
    assert!(
        n_half * 2 >= n_all && n_half * 2 <= n_all + 12 && n_half < n_all,
        "{n_half} of {n_all}"
    );
    assert_eq!(
        json_file(&half.join("config.json"))["train"]["subsample"],
        0.5
    );
    let o = artemis(&baseline_args(
        &manifest,
        &single,
        "96",
        "1",
        &["--members", "2"],
    ));
    assert!(!o.status.success());
    assert!(text(&o).contains("single run"), "{}", text(&o));
    let o = artemis(&baseline_args(
        &manifest,
        &ens,
        "96",
        "1",
        &["--members", "0"],
    ));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));

    let cv = tmp.path().join("cv");
    let mut args = baseline_args(&manifest, &cv, "96", "1", &["--members", "2"]);
    args[0] = "cv";
    args.extend(["--folds", "2", "--bootstrap", "20"]);
    let o = artemis(&args);
    assert!(o.status.success(), "{}", text(&o));
    let report = json_file(&cv.join("cv.json"));
    assert_eq!(report["members"].as_u64(), Some(2));
    assert!(
        report["recipe"]
            .as_str()
            .unwrap()
            .starts_with("ensemble of 2")
    );
    let all = json_file(&cv.join("ensemble/ensemble.json"));
    let runs: Vec<&str> = (all["members"].as_array().unwrap().iter())
        .map(|m| m["run"].as_str().unwrap())
        .collect();
    assert_eq!(
        runs,
        [
            "../fold-1/run/member-1",
            "../fold-1/run/member-2",
            "../fold-2/run/member-1",
            "../fold-2/run/member-2"
        ]
    );
}

/// The only file in a folder.
fn only_file(dir: &Path) -> PathBuf {
    let files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    files[0].clone()
}

/// Members that make their pictures differently (as decoded at 96 px, as decoded at 100 px,
/// cropped to the head at 96 px) join one ensemble: each prepares its own input from the
/// decoded picture, so the ensemble's probabilities are the mean of what each member gives
/// alone; its heat map lies over the decoded picture; `export` writes each member's graph
/// (there is no single one), which `predict` then runs.
#[test]
fn members_that_frame_the_picture_differently_each_prepare_their_own() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, manifest) = tiny_split(tmp.path(), "4");
    let runs: Vec<PathBuf> = ["a", "b", "c"].iter().map(|n| tmp.path().join(n)).collect();
    train_baseline(&manifest, &runs[0], "96", "1", &[]);
    train_baseline(&manifest, &runs[1], "100", "1", &["--seed", "7"]);
    train_baseline(&manifest, &runs[2], "96", "1", &["--framing", "head"]);
    let ens = tmp.path().join("ens");
    let o = artemis(&[
        "ensemble",
        s(&runs[0]),
        s(&runs[1]),
        s(&runs[2]),
        "-o",
        s(&ens),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let img = data.join("pituitary_transverse").join("img_3.png");
    let heat = |run: &Path, name: &str| {
        let dir = tmp.path().join(name);
        let o = artemis(&["predict", s(run), s(&img), "--json", "--explain", s(&dir)]);
        assert!(o.status.success(), "{}", text(&o));
        let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        (
            first_probabilities(&doc),
            image::image_dimensions(only_file(&dir)).unwrap(),
        )
    };
    let alone: Vec<_> = (runs.iter().enumerate())
        .map(|(i, r)| heat(r, &format!("heat-{i}")))
        .collect();
    let (pe, size) = heat(&ens, "heat-ens");
    for (k, p) in pe.iter().enumerate() {
        let mean = alone.iter().map(|(q, _)| q[k]).sum::<f64>() / 3.0;
        assert!((p - mean).abs() < 1e-5, "class {k}: {p} vs {mean}");
    }
    // Drawn over the decoded picture (as the as-decoded member's), not over the head's crop.
    assert_eq!(size, alone[0].1);
    assert_ne!(
        alone[2].1, alone[0].1,
        "the head member's map lies over its crop"
    );
    let report = eval_report(&ens, &["--bootstrap", "0"]);
    assert!(report["model"].as_str().unwrap().contains("x3"), "{report}");
    // Its worst mistakes show the decoded picture, not the first member's input.
    let html = fs::read_to_string(ens.join("report.html")).unwrap();
    assert!(
        html.contains("class=mistake") && html.contains("The picture as decoded"),
        "the mistakes' caption"
    );

    let o = artemis(&["export", "--run", s(&ens)]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("prepare their pictures differently"),
        "{}",
        text(&o)
    );
    assert!(!ens.join("export").exists(), "no single graph");
    for r in &runs {
        assert!(r.join("export/model.onnx").exists(), "{}", r.display());
    }
    let po = predict_json(&ens, &img);
    assert!(
        po["engine"].as_str().unwrap().contains("ONNX Runtime"),
        "{po}"
    );
    for (k, p) in first_probabilities(&po).iter().enumerate() {
        assert!((p - pe[k]).abs() < 1e-4, "class {k}: {p} vs {}", pe[k]);
    }
}

/// A run made with relative paths records its manifest and data root absolute, so it is
/// evaluated from any working directory (cv's fold runs recorded `cv/fold-1/manifest.tsv`,
/// which only resolved where cv had run).
#[test]
fn a_run_made_with_relative_paths_is_evaluated_from_anywhere() {
    let tmp = tempfile::tempdir().unwrap();
    tiny_split(tmp.path(), "4");
    let rel = Path::new("m.tsv");
    let mut args = baseline_args(rel, Path::new("rel"), "96", "1", &[]);
    args.extend(["--data", "data"]);
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_artemis"))
        .current_dir(tmp.path())
        .args(&args)
        .env("ARTEMIS_NO_PROGRESS", "1")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let run = tmp.path().join("rel");
    let config = json_file(&run.join("config.json"));
    for key in ["manifest", "data_root"] {
        let p = PathBuf::from(config[key].as_str().unwrap());
        assert!(p.is_absolute() && p.exists(), "{key}: {}", p.display());
    }
    eval_report(&run, &["--bootstrap", "0"]);
}

/// Probabilities of the first row of a predict document.
fn first_probabilities(doc: &serde_json::Value) -> Vec<f64> {
    doc["rows"][0]["probabilities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[1].as_f64().unwrap())
        .collect()
}

/// Two runs as one: after `eval` has calibrated each member on its own validation split, the
/// ensemble's probabilities are the mean of its members' calibrated ones; it draws heat maps,
/// is scored on the split both members held out, and refuses a member whose weights changed
/// and a member that does not fit.
#[test]
fn an_ensemble_is_the_mean_of_its_calibrated_members() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, manifest) = tiny_split(tmp.path(), "4");
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    train_baseline(&manifest, &a, "96", "1", &[]);
    train_baseline(&manifest, &b, "96", "1", &["--seed", "7"]);
    let ens = tmp.path().join("ens");
    let o = artemis(&["ensemble", s(&a), s(&b), "-o", s(&ens)]);
    assert!(o.status.success(), "{}", text(&o));
    let report = eval_report(&ens, &["--bootstrap", "20"]);
    assert!(
        report["model"]
            .as_str()
            .unwrap()
            .starts_with("ensemble: baseline-relu-bn x2")
    );
    for member in [&a, &b] {
        assert!(
            member.join("calibration.json").exists(),
            "each member calibrated"
        );
    }
    // On a folder: every training and validation image of the members is found in it.
    let o = artemis(&["eval", s(&ens), "--data", s(&data), "--bootstrap", "0"]);
    assert!(matches!(o.status.code(), Some(0 | 3)), "{}", text(&o));
    let folder = json_file(&ens.join("eval-data/report.json"));
    let held_in = fs::read_to_string(&manifest)
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("train\t") || l.starts_with("val\t"))
        .count();
    assert_eq!(
        folder["overlap"]["files"].as_array().unwrap().len(),
        held_in
    );
    let img = data.join("glioma_coronal").join("img_0.png");
    let (pa, pb) = (predict_json(&a, &img), predict_json(&b, &img));
    let heat = tmp.path().join("heat");
    let o = artemis(&["predict", s(&ens), s(&img), "--json", "--explain", s(&heat)]);
    assert!(o.status.success(), "{}", text(&o));
    let pe: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(pe["rows"][0]["calibrated"], true);
    assert!(pe["engine"].as_str().unwrap().starts_with("ensemble of 2"));
    let (va, vb, ve) = (
        first_probabilities(&pa),
        first_probabilities(&pb),
        first_probabilities(&pe),
    );
    for k in 0..ve.len() {
        assert!(
            (ve[k] - (va[k] + vb[k]) / 2.0).abs() < 1e-5,
            "class {k}: {ve:?} vs {va:?} {vb:?}"
        );
    }
    assert_eq!(fs::read_dir(&heat).unwrap().count(), 1, "one heat map");

    // One ONNX graph averaging the members: ONNX Runtime then computes the same mean.
    let o = artemis(&["export", "--run", s(&ens)]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("max |probability difference|"),
        "{}",
        text(&o)
    );
    let po = predict_json(&ens, &img);
    assert!(
        po["engine"]
            .as_str()
            .unwrap()
            .contains("the mean of an ensemble of 2"),
        "{po}"
    );
    for (k, p) in first_probabilities(&po).iter().enumerate() {
        assert!((p - ve[k]).abs() < 1e-4, "class {k}: {p} vs {}", ve[k]);
    }
    // Other temperatures than the export's (here none): the export is stale, and the members
    // are averaged instead.
    let o = artemis(&["eval", s(&ens), "--no-calibration", "--bootstrap", "0"]);
    assert!(o.status.success(), "{}", text(&o));
    let r = json_file(&ens.join("report.json"));
    assert!(
        r["engine"]
            .as_str()
            .unwrap()
            .starts_with("ensemble of 2, each on"),
        "{r}"
    );

    // A member retrained in place is refused, naming the ensemble file.
    fs::write(
        b.join("model-best.bpk"),
        fs::read(a.join("model-best.bpk")).unwrap(),
    )
    .unwrap();
    let o = artemis(&["predict", s(&ens), s(&img)]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("other weights than when the ensemble was made"),
        "{}",
        text(&o)
    );
    // Runs of other classes cannot be averaged.
    let c = tmp.path().join("c");
    train_baseline(&manifest, &c, "96", "1", &["--task", "plane"]);
    let o = artemis(&["ensemble", s(&a), s(&c), "-o", s(&tmp.path().join("e2"))]);
    assert!(!o.status.success());
    assert!(text(&o).contains("other classes"), "{}", text(&o));
    // An ensemble is not a run to train further, nor a member of another.
    let o = artemis(&["train", "--resume", "-o", s(&ens)]);
    assert!(
        text(&o).contains("is an ensemble, not a run"),
        "{}",
        text(&o)
    );
    let o = artemis(&["ensemble", s(&ens), s(&a), "-o", s(&tmp.path().join("e3"))]);
    assert!(text(&o).contains("is itself an ensemble"), "{}", text(&o));
    // A run that has not completed its epochs (still training, or stopped) is refused: its
    // best weights may still change.
    let state = b.join("state.json");
    let mut st = json_file(&state);
    st["epochs_done"] = 0.into();
    fs::write(&state, st.to_string()).unwrap();
    let e4 = tmp.path().join("e4");
    let o = artemis(&["ensemble", s(&a), s(&b), "-o", s(&e4)]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("has completed 0 of its 1 epochs"),
        "{}",
        text(&o)
    );
    assert!(!e4.exists(), "nothing written");
}
