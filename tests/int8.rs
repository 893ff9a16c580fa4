//! int8 export (`artemis export --quantize int8`) and its use (`--precision int8`), through the
//! binary on the tiny generated data set. Needs ONNX Runtime (`scripts/setup`; CI runs it).
#![allow(clippy::unwrap_used)]

mod common;
use common::*;
use std::fs;
use std::path::Path;

/// Per file (in the folder's order), the probabilities of `predict --json` with `extra`.
fn probabilities(run: &Path, data: &Path, extra: &[&str]) -> Vec<Vec<f64>> {
    let mut args = vec!["predict", s(run), s(data), "--json", "--engine", "onnx"];
    args.extend(extra);
    let o = artemis(&args);
    assert!(matches!(o.status.code(), Some(0 | 3)), "{}", text(&o));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    (doc["rows"].as_array().unwrap().iter())
        .filter_map(|r| r["probabilities"].as_array())
        .map(|p| p.iter().map(|c| c[1].as_f64().unwrap()).collect())
        .collect()
}

/// The int8 graph is written beside the float one with its hash and settings, is under 40%
/// of its size, and predicts what the float graph predicts (same top class on at least 90% of
/// the pictures, probabilities within 0.1); it is refused when damaged, with burn, and falls
/// back with a notice when missing.
#[test]
fn the_int8_graph_predicts_like_the_float_one() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, manifest) = tiny_split(tmp.path(), "3");
    let run = tmp.path().join("run");
    train_baseline(&manifest, &run, "96", "3", &[]);
    let o = artemis(&["predict", s(&run), s(&data), "--precision", "int8"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("has no int8 graph") && err.contains("using burn"),
        "{}",
        text(&o)
    );
    let o = quantize_int8(&run, "16", &[]);
    assert!(o.status.success(), "{}", text(&o));
    let export = run.join("export");
    let (float, int8) = (
        fs::metadata(export.join("model.onnx")).unwrap().len(),
        fs::metadata(export.join("model-int8.onnx")).unwrap().len(),
    );
    // 35.5% measured: the float head (Gemm) is a large share of this small network's
    // weights (MobileNetV2's int8 graph is 29% of its float one).
    assert!(
        int8 * 100 <= float * 40,
        "int8 graph {int8} bytes of {float}"
    );
    let record = json_file(&export.join("export.json"));
    assert!(record["files"]["model-int8.onnx"].is_string(), "{record}");
    assert_eq!(record["int8"]["calibration_images"], 16);
    // The float graph's metadata (the checkpoint's hash among it) plus the settings.
    let graph =
        String::from_utf8_lossy(&fs::read(export.join("model-int8.onnx")).unwrap()).into_owned();
    let checkpoint = record["checkpoint_blake3"].as_str().unwrap();
    assert!(graph.contains(checkpoint) && graph.contains("artemis.quantization"));

    let (f, q) = (
        probabilities(&run, &data, &[]),
        probabilities(&run, &data, &["--precision", "int8"]),
    );
    assert_eq!(f.len(), q.len());
    assert!(f.len() >= 20);
    let top = |p: &Vec<f64>| (0..p.len()).max_by(|&a, &b| p[a].total_cmp(&p[b])).unwrap();
    let same = f.iter().zip(&q).filter(|(a, b)| top(a) == top(b)).count();
    assert!(
        same * 10 >= f.len() * 9,
        "top class agrees on {same} of {}",
        f.len()
    );
    let worst = (f.iter().flatten().zip(q.iter().flatten()))
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(worst < 0.1, "probabilities differ by up to {worst}");
    assert!(
        f != q,
        "the int8 graph gave the float graph's exact probabilities"
    );

    // eval: the int8 report beside the float one, compared side by side.
    for extra in [&[][..], &["--precision", "int8"][..]] {
        let mut args = vec!["eval", s(&run), "--engine", "onnx", "--bootstrap", "0"];
        args.extend(extra);
        let o = artemis(&args);
        assert!(matches!(o.status.code(), Some(0 | 3)), "{}", text(&o));
    }
    let engine = |p: &Path| json_file(&p.join("report.json"))["engine"].to_string();
    assert!(
        engine(&run).contains("export/model.onnx"),
        "{}",
        engine(&run)
    );
    assert!(engine(&run.join("int8")).contains("export/model-int8.onnx"));
    let o = artemis(&["compare", s(&run), s(&run.join("int8")), "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let ours = (rows.as_array().unwrap().iter())
        .filter(|r| r["published"] != serde_json::json!(true))
        .count();
    assert_eq!(ours, 2, "{rows}");
    // The same two reports image by image: the paired figures are each report's accuracy.
    let o = artemis(&[
        "compare",
        "--paired",
        s(&run),
        s(&run.join("int8")),
        "--json",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let views = &doc["views"];
    let acc = |p: &Path| json_file(&p.join("report.json"))["metrics"]["accuracy"].as_f64();
    let score = &views[0]["score"];
    assert_eq!(score["a_accuracy"].as_f64(), acc(&run), "{views}");
    assert_eq!(
        score["b_accuracy"].as_f64(),
        acc(&run.join("int8")),
        "{views}"
    );
    let (a_only, b_only) = (
        score["a_only"].as_f64().unwrap(),
        score["b_only"].as_f64().unwrap(),
    );
    let n = score["n"].as_f64().unwrap();
    let d = score["difference"]["estimate"].as_f64().unwrap();
    assert!((d - (b_only - a_only) / n).abs() < 1e-12, "{views}");

    // --keep-float: recorded; an unknown layer is refused, naming it.
    let quantize = |keep: &str| quantize_int8(&run, "16", &["--keep-float", keep]);
    let o = quantize("stem,last");
    assert!(o.status.success(), "{}", text(&o));
    let record = json_file(&export.join("export.json"));
    assert_eq!(
        record["int8"]["float_layers"],
        serde_json::json!(["stem", "last"])
    );
    assert_eq!(record["int8"]["weight_rounding"], "sum-preserving");
    // --weight-rounding nearest: recorded, and other int8 weights than the default's.
    let weights = || std::fs::read(export.join("model-int8.onnx")).unwrap();
    let o = quantize_int8(&run, "16", &[]);
    assert!(o.status.success(), "{}", text(&o));
    let sum = weights();
    let o = quantize_int8(&run, "16", &["--weight-rounding", "nearest"]);
    assert!(o.status.success(), "{}", text(&o));
    let record = json_file(&export.join("export.json"));
    assert_eq!(record["int8"]["weight_rounding"], "nearest");
    assert_ne!(sum, weights(), "the two roundings wrote the same graph");
    let o = quantize("conv_nope");
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("conv_nope"), "{}", text(&o));

    let o = artemis(&[
        "predict",
        s(&run),
        s(&data),
        "--precision",
        "int8",
        "--engine",
        "burn",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let mut bytes = fs::read(export.join("model-int8.onnx")).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    fs::write(export.join("model-int8.onnx"), bytes).unwrap();
    let o = artemis(&["predict", s(&run), s(&data), "--precision", "int8"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("damaged"),
        "{}",
        text(&o)
    );
}
