//! The evaluation report end to end on real scans: a MobileNetV2 (ImageNet) run on a small
//! subset of `../shared/data/artemis-planes`, evaluated with intervals and calibration, on an
//! external 4-class folder (Kaggle names, a label map, planted duplicates of training images),
//! compared with the published figures, and its HTML report rendered in headless Chromium.
//!
//! The browser check needs Debian's `chromium` (`.ci/run` installs it and sets
//! `ARTEMIS_REQUIRE_BROWSER=1`, which turns a missing browser into a failure; elsewhere the
//! check is skipped with a message).

#![allow(clippy::unwrap_used)] // tests may panic on broken fixtures

use std::fs;
use std::path::Path;
use std::process::Command;

mod common;
use common::*;

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn mobilenetv2_report_with_intervals_calibration_external_data_and_browser() {
    let weights = artemis_models::mobilenetv2::weights::CHECKPOINT.default_path();
    assert!(
        weights.is_file(),
        "{}: {}",
        weights.display(),
        artemis_models::mobilenetv2::weights::CHECKPOINT.how_to_get
    );
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("planes");
    copy_subset(
        &shared("artemis-planes/Training"),
        &data,
        14,
        str::to_string,
    );
    let manifest = tmp.path().join("m.tsv");
    split(
        &data,
        &manifest,
        "5",
        &[
            "--protocol",
            "reference",
            "--val-fraction",
            "0.2",
            "--test-fraction",
            "0.2",
        ],
    );
    let run = tmp.path().join("run");
    let cache = tmp.path().join("cache");
    let o = artemis(&head_args(&manifest, &run, &weights, &cache, "6", &[]));
    assert!(o.status.success(), "{}", text(&o));

    // eval: intervals, areas, calibration fitted on val and saved with the run.
    let o = artemis(&["eval", s(&run), "--abstain", "0.8"]);
    assert!(o.status.success(), "{}", text(&o));
    let r = json(&run.join("report.json"));
    assert_eq!(r["schema"], "artemis.eval/2");
    let m = &r["metrics"];
    let acc = m["accuracy"].as_f64().unwrap();
    let ci = &m["bootstrap"]["accuracy"];
    let (lo, hi) = (ci["low"].as_f64().unwrap(), ci["high"].as_f64().unwrap());
    assert!(lo <= acc && acc <= hi && lo < hi, "{ci}");
    assert!(
        acc > 1.0 / 12.0 + 0.1,
        "head on ImageNet features should beat chance: {acc}"
    );
    let auc = m["separation"]["macro_roc_auc"].as_f64().unwrap();
    assert!((0.5..=1.0).contains(&auc), "{auc}");
    assert_eq!(m["bootstrap"]["recall"].as_array().unwrap().len(), 12);
    for view in ["type_view", "plane_view"] {
        assert!(r[view]["separation"]["macro_pr_auc"].as_f64().unwrap() > 0.0);
    }
    let cal = json(&run.join("calibration.json"));
    let t = cal["temperature"].as_f64().unwrap();
    assert!(t > 0.05 && t < 20.0 && t != 1.0, "{t}");
    assert!(cal["after"]["nll"].as_f64().unwrap() <= cal["before"]["nll"].as_f64().unwrap() + 1e-9);
    assert_eq!(r["calibration"]["temperature"].as_f64().unwrap(), t);
    assert!(r["abstain"]["coverage"].as_f64().unwrap() <= 1.0);
    assert_eq!(r["coverage"][0]["coverage"].as_f64().unwrap(), 1.0);
    let md = fs::read_to_string(run.join("report.md")).unwrap();
    assert!(md.contains("ROC-AUC") && md.contains("Temperature") && md.contains("95%"));
    // Same seed, same intervals; the saved temperature is reused.
    let first = m["bootstrap"].clone();
    let o = artemis(&["eval", s(&run), "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let again: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(again["metrics"]["bootstrap"], first);
    assert_eq!(again["calibration"]["temperature"].as_f64().unwrap(), t);
    let o = artemis(&["eval", s(&run), "--json", "--seed", "9", "--no-calibration"]);
    let other: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_ne!(other["metrics"]["bootstrap"], first);
    assert_eq!(other["calibration"]["temperature"].as_f64().unwrap(), 1.0);
    // Test-time augmentation (on the validation split, so the test report stays as is):
    // recorded, and the probabilities differ from the plain ones.
    let val = |extra: &[&str]| -> serde_json::Value {
        let mut args = vec![
            "eval",
            s(&run),
            "--split",
            "val",
            "--json",
            "--bootstrap",
            "0",
        ];
        args.extend_from_slice(extra);
        let o = artemis(&args);
        assert!(o.status.success(), "{}", text(&o));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let (plain, tta) = (val(&[]), val(&["--tta"]));
    assert_eq!(
        (plain["tta"].clone(), tta["tta"].clone()),
        (false.into(), true.into())
    );
    assert!(tta["metrics"]["bootstrap"].is_null());
    assert_ne!(
        tta["predictions"][0]["confidence"],
        plain["predictions"][0]["confidence"]
    );
    // Its report lies beside the plain one, which it leaves as it was.
    let on_disk = |p: &str| json_file(&run.join(p));
    assert_eq!(on_disk("eval-val/tta/report.json")["tta"], true);
    assert_eq!(on_disk("eval-val/report.json")["tta"], false);

    // predict reports calibrated probabilities.
    let doc = predict_json(&run, &data.join("glioma_coronal"));
    assert_eq!(doc["temperature"].as_f64().unwrap(), t);
    assert!(
        doc["rows"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["calibrated"] == true)
    );

    // An external 4-class folder: Kaggle names, one folder named by a label map, and two
    // planted copies of training images (one byte-identical, one resized and re-encoded).
    let ext = tmp.path().join("external");
    copy_subset(&shared("sartaj-brain-tumor-mri/Testing"), &ext, 5, |c| {
        if c == "no_tumor" {
            "Normal".into()
        } else {
            c.into()
        }
    });
    let train_img = {
        let mf = fs::read_to_string(&manifest).unwrap();
        let line = mf
            .lines()
            .find(|l| l.starts_with("train\tglioma_coronal/"))
            .unwrap();
        data.join(line.split('\t').nth(1).unwrap())
    };
    fs::copy(&train_img, ext.join("glioma_tumor/copy.jpg")).unwrap();
    let img = image::open(&train_img).unwrap();
    img.resize(
        img.width() * 9 / 10,
        img.height() * 9 / 10,
        image::imageops::FilterType::Triangle,
    )
    .to_rgb8()
    .save_with_format(
        ext.join("glioma_tumor/reencoded.png"),
        image::ImageFormat::Png,
    )
    .unwrap();
    let map = tmp.path().join("labels.tsv");
    fs::write(&map, "# our names\nNormal\tno_tumor\n").unwrap();
    let ext_eval = |extra: &[&str]| {
        let mut args = vec![
            "eval",
            s(&run),
            "--data",
            s(&ext),
            "--label-map",
            s(&map),
            "--json",
        ];
        args.extend_from_slice(extra);
        artemis(&args)
    };
    let o = ext_eval(&[]);
    assert!(o.status.success(), "{}", text(&o));
    let e: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        e["metrics"].is_null(),
        "a 4-class folder has no 12-class metrics"
    );
    let tv = &e["type_view"];
    assert_eq!(tv["n"], 22);
    assert_eq!(tv["per_class"][2]["class"], "no_tumor");
    assert_eq!(tv["per_class"][2]["support"], 5);
    let ov = &e["overlap"];
    let kinds: Vec<(String, String)> = ov["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let p = f["path"].as_str().unwrap();
            (
                p.rsplit('/').next().unwrap().to_string(),
                f["kind"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        kinds.contains(&("copy.jpg".into(), "exact".into())),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&("reencoded.png".into(), "near".into())),
        "{kinds:?}"
    );
    let o = ext_eval(&["--exclude-duplicates"]);
    assert!(o.status.success(), "{}", text(&o));
    let x: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(x["overlap"]["excluded"], true);
    let dropped = ov["files"].as_array().unwrap().len() as u64;
    assert_eq!(x["type_view"]["n"].as_u64().unwrap(), 22 - dropped);
    assert!(ext.exists() && run.join("eval-external/report.html").exists());
    // Without the map the unknown folder is skipped; a bad map names its line.
    let o = artemis(&["eval", s(&run), "--data", s(&ext), "--json"]);
    let y: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(y["type_view"]["n"], 17);
    fs::write(&map, "Normal\tkitten\n").unwrap();
    let o = artemis(&["eval", s(&run), "--data", s(&ext), "--label-map", s(&map)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("labels.tsv:1") && text(&o).contains("kitten"),
        "{}",
        text(&o)
    );

    // compare: the run beside the published figures.
    let cmp = tmp.path().join("cmp");
    let o = artemis(&["compare", s(&run), "-o", s(&cmp)]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(out.matches("(published)").count(), 3, "{out}");
    assert!(out.contains(&format!("{:.1}% [", 100.0 * acc)), "{out}");
    assert!(
        fs::read_to_string(cmp.join("compare.html"))
            .unwrap()
            .contains("<table>")
    );
    let o = artemis(&["compare", s(&tmp.path().join("nope"))]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("artemis eval"), "{}", text(&o));

    // The HTML report: one file, pictures embedded, and they render in a browser.
    let html = fs::read_to_string(run.join("report.html")).unwrap();
    assert!(html.contains("not a medical device"));
    assert!(
        html.matches("src=\"data:image/png;base64,").count() >= 6,
        "plots embedded"
    );
    assert!(
        html.contains("data:image/jpeg;base64,"),
        "mistake thumbnails embedded"
    );
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no external resource"
    );
    browser_renders_plots(&run.join("report.html"), tmp.path());
}

/// Opens the report in headless Chromium, screenshots the whole page and checks that the
/// embedded plots were decoded and drawn: the confusion matrices' colour-ramp ends and the
/// reliability bars' blue must cover many pixels, which no text or table can.
fn browser_renders_plots(report: &Path, tmp: &Path) {
    let Some(browser) = chromium() else {
        assert!(
            std::env::var("ARTEMIS_REQUIRE_BROWSER").is_err(),
            "ARTEMIS_REQUIRE_BROWSER is set but no chromium was found"
        );
        eprintln!("skipping the browser check: no chromium (install Debian's `chromium`)");
        return;
    };
    let shot = tmp.join("report.png");
    let o = Command::new(&browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--window-size=1300,7000",
        ])
        .arg(format!(
            "--user-data-dir={}",
            tmp.join("chromium-profile").display()
        ))
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("file://{}", report.display()))
        .output()
        .expect("start chromium");
    assert!(shot.exists(), "no screenshot: {}", text(&o));
    if let Ok(dir) = std::env::var("ARTEMIS_ARTIFACTS") {
        let _ = fs::create_dir_all(&dir);
        let _ = fs::copy(&shot, Path::new(&dir).join("report-screenshot.png"));
    }
    let img = image::open(&shot).unwrap().to_rgb8();
    let near = |c: [u8; 3], tol: i32| {
        img.pixels()
            .filter(|p| (0..3).all(|i| (i32::from(p.0[i]) - i32::from(c[i])).abs() <= tol))
            .count()
    };
    let dark = near([68, 1, 84], 12); // colour ramp at 0 (empty confusion cells)
    let bars = near([87, 153, 199], 10); // reliability bars: palette blue at 75% over white
    let white = near([255, 255, 255], 0);
    let total = (img.width() * img.height()) as usize;
    eprintln!(
        "screenshot: {dark} ramp-dark px, {bars} reliability-bar px, {white} white of {total}"
    );
    assert!(white < total * 97 / 100, "the page is blank");
    assert!(dark > 20_000, "confusion matrices not drawn ({dark} px)");
    assert!(bars > 2_000, "reliability diagram not drawn ({bars} px)");
}
