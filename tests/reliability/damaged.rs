//! Damaged runs and hostile flags, each with its exact outcome (the hostile probe's list):
//! weights, export and calibration files damaged in place, weights that compute NaN, a run
//! folder that lost its `state.json`, flags without bounds, and the smaller cases of `predict`
//! and `eval` (missing inputs, a folder named like a picture, a PNG with a bad CRC, a JPEG with
//! garbage in its scan, a changed manifest, a test file replaced by another picture).

use crate::common::*;
use artemis_engine::run::{BEST, Run, load_module, save_module};
use burn::module::{Module, ModuleMapper, Param};
use burn::prelude::{Device, Tensor};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

/// Overwrites `len` bytes at the middle of a file with a seeded pattern, keeping its size (as
/// `dd conv=notrunc` would).
fn overwrite_middle(path: &Path, len: usize) {
    let mut bytes = fs::read(path).unwrap();
    let n = bytes.len();
    let start = n / 2 - len.min(n / 2) / 2;
    for (i, b) in bytes[start..(start + len).min(n)].iter_mut().enumerate() {
        *b = (i.wrapping_mul(2_654_435_761) >> 7) as u8;
    }
    fs::write(path, bytes).unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            fs::copy(e.path(), target).unwrap();
        }
    }
}

fn assert_exit(o: &Output, code: i32, phrases: &[&str]) {
    let t = text(o);
    assert!(!t.contains("panicked"), "{t}");
    assert_eq!(o.status.code(), Some(code), "{t}");
    for p in phrases {
        assert!(t.contains(p), "expected {p:?} in:\n{t}");
    }
}

/// Every weight of a network times NaN, saved with a valid seal: a checkpoint that is intact
/// as a file but computes NaN.
struct Nan;
impl ModuleMapper for Nan {
    fn map_float<const D: usize>(&mut self, p: Param<Tensor<D>>) -> Param<Tensor<D>> {
        p.map(|t| t.mul_scalar(f32::NAN))
    }
}

fn a_scan(data: &Path) -> PathBuf {
    data.join("glioma_coronal/img_0.png")
}

#[test]
fn damaged_runs_are_refused_and_hostile_flags_bounded() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, manifest) = tiny_split(tmp.path(), "5");
    let run = tmp.path().join("run");
    let o = artemis(&baseline_args(&manifest, &run, "96", "2", &[]));
    assert!(matches!(o.status.code(), Some(0 | 3)), "{}", text(&o));
    let o = artemis(&[
        "export",
        "--run",
        s(&run),
        "--format",
        "onnx",
        "--check",
        "1",
    ]);
    assert_exit(&o, 0, &[]);
    let scan = a_scan(&data);

    // 1. model-best.bpk overwritten in the middle: refused by predict and eval, naming the
    // file; eval writes no calibration.
    let w = tmp.path().join("run-weights");
    copy_dir(&run, &w);
    overwrite_middle(&w.join(BEST), 4096);
    assert_exit(
        &artemis(&["predict", s(&w), s(&scan)]),
        1,
        &["model-best.bpk", "damaged"],
    );
    assert_exit(
        &artemis(&["eval", s(&w), "--bootstrap", "10"]),
        1,
        &["model-best.bpk", "damaged"],
    );
    assert!(!w.join("calibration.json").exists());

    // Weights intact as a file but computing NaN: an error, never a prediction.
    let nan = tmp.path().join("run-nan");
    copy_dir(&run, &nan);
    fs::remove_dir_all(nan.join("export")).unwrap();
    let r = Run::open(&nan).unwrap();
    let net = r.load_best(&Device::flex()).unwrap().map(&mut Nan);
    save_module(net, &nan.join(BEST)).unwrap();
    load_module(
        r.config.model.init(&Device::flex()).unwrap(),
        &nan.join(BEST),
    )
    .unwrap();
    assert_exit(
        &artemis(&["predict", s(&nan), s(&scan), "--json"]),
        1,
        &["model-best.bpk", "non-finite"],
    );
    assert_exit(
        &artemis(&["eval", s(&nan), "--bootstrap", "10"]),
        1,
        &["non-finite"],
    );
    assert!(!nan.join("calibration.json").exists());

    // The exported graph overwritten: refused with --engine onnx and with auto (never used,
    // never silently replaced); --engine burn still works.
    let x = tmp.path().join("run-export");
    copy_dir(&run, &x);
    overwrite_middle(&x.join("export/model.onnx"), 2048);
    for engine in ["onnx", "auto"] {
        assert_exit(
            &artemis(&["predict", s(&x), s(&scan), "--engine", engine]),
            1,
            &["model.onnx", "damaged"],
        );
    }
    assert_exit(
        &artemis(&["predict", s(&x), s(&scan), "--engine", "burn"]),
        0,
        &[],
    );

    // A calibration holding null: reported and ignored; --no-calibration and --recalibrate
    // work, and the refit file is finite.
    let c = tmp.path().join("run-calibration");
    copy_dir(&run, &c);
    assert_exit(&artemis(&["eval", s(&c), "--bootstrap", "10"]), 0, &[]);
    let cal = c.join("calibration.json");
    let mut v: serde_json::Value = serde_json::from_slice(&fs::read(&cal).unwrap()).unwrap();
    v["temperature"] = serde_json::Value::Null;
    fs::write(&cal, v.to_string()).unwrap();
    let o = artemis(&["predict", s(&c), s(&scan), "--json"]);
    assert_exit(&o, 0, &["calibration.json"]);
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["rows"][0]["calibrated"], false);
    assert!(doc["rows"][0]["class"].is_string());
    let no_cal = ["eval", s(&c), "--bootstrap", "10", "--no-calibration"];
    assert_exit(&artemis(&no_cal), 0, &[]);
    let refit = ["eval", s(&c), "--bootstrap", "10", "--recalibrate"];
    assert_exit(&artemis(&refit), 0, &[]);
    let v: serde_json::Value = serde_json::from_slice(&fs::read(&cal).unwrap()).unwrap();
    assert!(v["temperature"].as_f64().unwrap().is_finite(), "{v}");

    // 4. Flags without bounds: a usage error naming the flag, before any work.
    for (args, flag) in [
        (
            vec!["predict", s(&run), s(&scan), "--threads", "100000"],
            "--threads",
        ),
        (
            vec!["eval", s(&run), "--bootstrap", "1000000000"],
            "--bootstrap",
        ),
        (
            vec!["eval", s(&run), "--batch-size", "100000000"],
            "--batch-size",
        ),
        (
            vec!["cv", "--manifest", s(&scan), "--folds", "1", "-o", s(&run)],
            "--folds",
        ),
        (
            vec![
                "train",
                "--manifest",
                s(&scan),
                "--batch-size-from",
                "1:64",
                "-o",
                s(&run),
            ],
            "--batch-size-from",
        ),
    ] {
        assert_exit(&artemis(&args), 2, &[flag]);
    }

    // 6. A run that lost state.json but holds epoch 2's checkpoint: resume refuses and touches
    // nothing.
    let st = tmp.path().join("run-state");
    copy_dir(&run, &st);
    fs::remove_file(st.join("state.json")).unwrap();
    let before: Vec<(PathBuf, Vec<u8>)> = ["ckpt-0002.model.bpk", "ckpt-0002.optim.bpk", BEST]
        .iter()
        .map(|n| (st.join(n), fs::read(st.join(n)).unwrap()))
        .collect();
    assert_exit(
        &artemis(&["train", "--resume", "-o", s(&st)]),
        1,
        &["state.json", "ckpt-0002", "refusing"],
    );
    for (p, bytes) in &before {
        assert_eq!(&fs::read(p).unwrap(), bytes, "{} changed", p.display());
    }

    // 7. predict: every error line names its file.
    let missing = tmp.path().join("no-such-scan.jpg");
    let folder = tmp.path().join("x.jpg");
    fs::create_dir_all(&folder).unwrap();
    for (input, phrase) in [
        (&missing, "No such file"),
        (&folder, "no files to classify"),
    ] {
        let o = artemis(&["predict", s(&run), s(input)]);
        assert_exit(&o, 3, &[phrase]);
        let line = String::from_utf8_lossy(&o.stderr)
            .lines()
            .find(|l| l.starts_with("error:"))
            .map(str::to_owned)
            .unwrap_or_default();
        assert!(line.contains(s(input)), "{}", text(&o));
    }
    // A PNG with a bad CRC: words, not Rust debug text.
    let bad_crc = tmp.path().join("bad-crc.png");
    let mut png = fs::read(&scan).unwrap();
    png[32] ^= 0x40; // the last byte of the IHDR chunk's CRC
    fs::write(&bad_crc, &png).unwrap();
    let o = artemis(&["predict", s(&run), s(&bad_crc)]);
    assert_exit(&o, 3, &["bad-crc.png", "CRC"]);
    assert!(
        !text(&o).contains("ChunkType") && !text(&o).contains('{'),
        "{}",
        text(&o)
    );
    // A JPEG with garbage in the middle of its scan: classified, with the decoder's warning in
    // the row.
    let garbled = tmp.path().join("garbled.jpg");
    let noisy = image::RgbImage::from_fn(256, 256, |x, y| {
        image::Rgb([
            ((x * 7 + y * 13) % 256) as u8,
            (x ^ y) as u8,
            ((x * y) % 256) as u8,
        ])
    });
    noisy.save(&garbled).unwrap();
    overwrite_middle(&garbled, 4096);
    let o = artemis(&["predict", s(&run), s(&garbled), "--json"]);
    assert_exit(&o, 0, &[]);
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let row = &doc["rows"][0];
    assert!(row["class"].is_string(), "{row}");
    assert!(
        row["warning"].as_str().unwrap_or("").contains("damaged"),
        "{row}"
    );
    let o = artemis(&["predict", s(&run), s(&garbled)]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("warning: "),
        "{}",
        text(&o)
    );

    // eval: a test file replaced by another valid picture is skipped, naming it (the
    // manifest holds its content hash); then a manifest changed since training is refused.
    let m = fs::read_to_string(&manifest).unwrap();
    let test_rel = m
        .lines()
        .find(|l| l.starts_with("test\t"))
        .unwrap()
        .split('\t')
        .nth(1)
        .unwrap()
        .to_string();
    let mut other = slice(2, 7);
    other.put_pixel(0, 0, image::Rgb([1, 2, 3]));
    other.save(data.join(&test_rel)).unwrap();
    assert_exit(
        &artemis(&["eval", s(&run), "--bootstrap", "10"]),
        3,
        &[&test_rel, "contents changed"],
    );
    fs::write(&manifest, format!("{m}# edited\n")).unwrap();
    assert_exit(
        &artemis(&["eval", s(&run), "--bootstrap", "10"]),
        1,
        &["changed since run", s(&manifest)],
    );
}
