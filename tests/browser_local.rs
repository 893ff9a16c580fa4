//! The page that classifies in the browser, end to end in headless Chromium
//! (`scripts/browser-local.py`, through ChromeDriver), served by `artemis serve` under
//! `/local/` and as the static folder of `artemis export --format web` behind a plain static
//! file server (Python's `http.server`):
//!
//! - the tensor the page builds equals artemis's bit for bit (head framing: crop and
//!   stretch; PNG: up- and downscaled, odd sizes, keep-aspect padding, ImageNet scaling; JPEG
//!   real scans, which the browser and artemis both decode with libjpeg-turbo);
//! - the page's probabilities for real scans of `../shared/data` match `artemis predict` to
//!   1e-3;
//! - the server's access log shows the page, its model and runtime fetched, and no POST;
//! - the static folder gives the same probabilities;
//! - an ensemble whose members make their pictures differently (head framing and
//!   keep-aspect; as decoded and squashed): the page makes a tensor per input of its graph,
//!   and its probabilities match `artemis predict` to 1e-3.
//!
//! Needs Debian's `chromium` and `chromium-driver` and ONNX Runtime Web (all from
//! `scripts/setup`); CI sets `ARTEMIS_REQUIRE_BROWSER=1` so that their absence fails.

#![allow(clippy::unwrap_used)] // tests may panic on broken fixtures

use base64::Engine as _;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

mod common;
use common::*;

/// What the page computed for one picture.
struct PageResult {
    file: String,
    probabilities: Vec<f64>,
    tensor: Vec<f32>,
}

/// `browser-local.py URL`: the page's results for `images` (every one must classify).
fn classify_in_page(
    url: &str,
    images: &[PathBuf],
    shot: &Path,
) -> (serde_json::Value, Vec<PageResult>) {
    let (browser, driver) = (chromium().unwrap(), chromedriver().unwrap());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/browser-local.py");
    let o = Command::new("python3")
        .arg(script)
        .args([url, s(shot)])
        .args(images)
        .env("ARTEMIS_CHROMIUM", browser)
        .env("ARTEMIS_CHROMEDRIVER", driver)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        o.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let results = v["results"].as_array().unwrap().iter().map(|r| {
        assert!(
            r["error"].is_null(),
            "the page failed on {}: {}",
            r["file"],
            r["error"]
        );
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(r["tensor"].as_str().unwrap())
            .unwrap();
        PageResult {
            file: r["file"].as_str().unwrap().to_string(),
            probabilities: (r["probabilities"].as_array().unwrap().iter())
                .map(|p| p.as_f64().unwrap())
                .collect(),
            tensor: (bytes.chunks_exact(4))
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
        }
    });
    let results: Vec<PageResult> = results.collect();
    assert_eq!(results.len(), images.len(), "{out}");
    (v, results)
}

/// [`classify_in_page`] on a static folder behind Python's `http.server`.
fn classify_static(
    dir: &Path,
    images: &[PathBuf],
    shot: &Path,
) -> (serde_json::Value, Vec<PageResult>) {
    let mut http = Command::new("python3");
    let args = [
        "-u",
        "-m",
        "http.server",
        "0",
        "--bind",
        "127.0.0.1",
        "--directory",
    ];
    http.args(args).arg(dir);
    let (mut host, url) = start(&mut http);
    let out = classify_in_page(&format!("{url}/"), images, shot);
    let _ = host.kill();
    let _ = host.wait();
    out
}

/// artemis's own network input for `image` with the run's preprocessing.
fn artemis_tensor(run: &Path, image: &Path) -> Vec<f32> {
    let pre = artemis_engine::run::Run::open(run)
        .unwrap()
        .config
        .preprocess;
    let img = artemis_data::image_io::read_rgb(image, u64::MAX).unwrap();
    let mut out = vec![0f32; pre.tensor_len()];
    pre.write_chw(&pre.resize(&img), &mut out);
    out
}

/// `artemis predict --json EXTRA`'s probabilities, per input.
fn predicted(run: &Path, images: &[PathBuf], extra: &[&str]) -> Vec<Vec<f64>> {
    let mut args = vec!["predict", s(run), "--json"];
    args.extend(extra);
    args.extend(images.iter().map(|p| s(p)));
    let o = artemis(&args);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    (v["rows"].as_array().unwrap().iter())
        .map(|r| {
            (r["probabilities"].as_array().unwrap().iter())
                .map(|p| p[1].as_f64().unwrap())
                .collect()
        })
        .collect()
}

/// The largest |difference| between two probability rows.
fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    (a.iter().zip(b))
        .map(|(p, q)| (p - q).abs())
        .fold(0.0, f64::max)
}

/// `run` quantized (`export --quantize int8`, 32 calibration pictures) and its static page
/// folder with the int8 graph in `out`, which it returns.
fn int8_web_folder(run: &Path, out: &Path) -> PathBuf {
    let o = quantize_int8(run, "32", &[]);
    assert!(o.status.success(), "{}", text(&o));
    let o = export_web(run, out, &["--precision", "int8"]);
    assert!(o.status.success(), "{}", text(&o));
    let card = json_file(&out.join("model.json"));
    assert_eq!(card["graph"]["precision"], "int8", "{card}");
    out.to_path_buf()
}

/// The page's int8 probabilities against `artemis predict --precision int8`'s. ONNX Runtime
/// Web's int8 kernels (WebAssembly) and the native library's do not always round alike: on
/// the small head-trained network of these tests the probabilities differ by up to about 0.12
/// (measured 3e-8 to 0.12 on its seven pictures; on the quickstart's run, 2.3e-7 on 48 scans),
/// so the check is the predicted class and a bound well above that, not 1e-3 as for the float
/// graph.
fn assert_int8_close(page: &[PageResult], want: &[Vec<f64>], label: &str) {
    let top = |p: &[f64]| (0..p.len()).max_by(|&a, &b| p[a].total_cmp(&p[b]));
    for (r, want) in page.iter().zip(want) {
        let diff = max_diff(&r.probabilities, want);
        eprintln!(
            "{} ({label}): probabilities differ by at most {diff:.1e}",
            r.file
        );
        assert_eq!(
            top(&r.probabilities),
            top(want),
            "{}: {label} page and predict disagree on the class",
            r.file
        );
        assert!(
            diff <= 0.25,
            "{}: {label} page vs predict differ by {diff}",
            r.file
        );
    }
}

/// Starts a server and returns it with the first `http://127.0.0.1:PORT` it prints.
fn start(cmd: &mut Command) -> (Child, String) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    while !line.contains("http://") {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "the server printed no address"
        );
    }
    let url = (line.split(|c: char| c.is_whitespace() || c == '(' || c == ')'))
        .find(|w| w.starts_with("http://"))
        .unwrap()
        .trim_end_matches('/')
        .to_string();
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    (child, url)
}

/// The pictures: real scans (JPEG) and PNGs of artemis's own decoding, at odd sizes.
fn pictures(dir: &Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let mut jpegs = Vec::new();
    for class in [
        "glioma_coronal",
        "meningioma_sagittal",
        "no_transverse",
        "pituitary_sagittal",
    ] {
        let mut files: Vec<PathBuf> =
            std::fs::read_dir(shared("artemis-planes/Testing").join(class))
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
        files.sort();
        jpegs.push(files[0].clone());
    }
    // artemis's decoding of each scan, saved losslessly; one cropped to odd sizes
    // (downscaled, with keep-aspect padding), and a small synthetic slice (upscaled).
    let decoded: Vec<_> = (jpegs.iter())
        .map(|j| artemis_data::image_io::read_rgb(j, u64::MAX).unwrap())
        .collect();
    let scan = &decoded[0];
    let mut pngs: Vec<_> = (decoded.iter().enumerate())
        .map(|(i, img)| (img.clone(), format!("scan-{i}.png")))
        .collect();
    pngs.extend([
        (
            image::imageops::crop_imm(scan, 13, 40, 301, 187).to_image(),
            "crop-301x187.png".into(),
        ),
        (
            image::imageops::crop_imm(scan, 100, 7, 97, 389).to_image(),
            "crop-97x389.png".into(),
        ),
        (slice(1, 3), "synthetic-120x110.png".into()),
    ]);
    let pngs = (pngs.into_iter())
        .map(|(img, name)| {
            let p = dir.join(name);
            img.save(&p).unwrap();
            p
        })
        .collect();
    (jpegs, pngs)
}

/// MobileNetV2 from ImageNet, its head trained on a few real scans (a network that has
/// learned something, as a user's would), with head framing (crop and stretch), keep-aspect
/// resizing and ImageNet scaling, the paths the page must copy exactly.
fn trained_run(dir: &Path, run: &Path) {
    let weights = artemis_models::mobilenetv2::weights::CHECKPOINT.default_path();
    assert!(weights.is_file(), "{} (scripts/setup)", weights.display());
    let data = dir.join("planes");
    copy_subset(&shared("artemis-planes/Training"), &data, 6, str::to_string);
    let manifest = dir.join("m.tsv");
    split(
        &data,
        &manifest,
        "5",
        &["--val-fraction", "0.2", "--test-fraction", "0.1"],
    );
    let cache = dir.join("cache");
    let extra = ["--resize", "keep-aspect", "--framing", "head"];
    let o = artemis(&head_args(&manifest, run, &weights, &cache, "4", &extra));
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn the_page_classifies_in_the_browser_as_artemis_does() {
    let ort_web = artemis_serve::web::default_ort_web_dir(&artemis_models::weights::cache_dir());
    let have_ort = ort_web
        .join(artemis_serve::web::ORT_WEB_FILES[1].0)
        .is_file();
    if chromium().is_none() || chromedriver().is_none() || !have_ort {
        assert!(
            std::env::var("ARTEMIS_REQUIRE_BROWSER").is_err(),
            "ARTEMIS_REQUIRE_BROWSER is set but chromium, chromedriver or {} is missing",
            ort_web.display()
        );
        eprintln!("skipping: no chromium/chromedriver or ONNX Runtime Web (scripts/setup)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    trained_run(tmp.path(), &run);
    let (jpegs, pngs) = pictures(tmp.path());
    let images: Vec<PathBuf> = jpegs.iter().chain(&pngs).cloned().collect();
    let expected = predicted(&run, &images, &[]);

    let log = tmp.path().join("access.log");
    let mut serve = Command::new(env!("CARGO_BIN_EXE_artemis"));
    serve.args([
        "serve",
        "--run",
        s(&run),
        "--addr",
        "127.0.0.1:0",
        "--access-log",
        s(&log),
    ]);
    let (mut server, url) = start(&mut serve);
    let shot = tmp.path().join("local.png");
    let (page, served) = classify_in_page(&format!("{url}/local/"), &images, &shot);
    let _ = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status();
    assert!(server.wait().unwrap().success());
    assert_eq!(page["isolated"], true, "{page}");
    if let Ok(dir) = std::env::var("ARTEMIS_ARTIFACTS") {
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::copy(&shot, Path::new(&dir).join("local-page.png"));
    }

    for ((r, image), want) in served.iter().zip(&images).zip(&expected) {
        let diff = max_diff(&r.probabilities, want);
        let mine = artemis_tensor(&run, image);
        assert_eq!(r.tensor.len(), mine.len());
        let differ = (r.tensor.iter().zip(&mine)).filter(|(a, b)| a != b).count();
        // PNG and JPEG alike: the same pixels (artemis and Chromium both decode JPEG with
        // libjpeg-turbo), the same tensor bit for bit, and the same probabilities.
        assert_eq!(
            differ, 0,
            "{}: the page's tensor differs from artemis's",
            r.file
        );
        assert!(
            diff <= 1e-3,
            "{}: page vs artemis predict differ by {diff}",
            r.file
        );
        eprintln!(
            "{}: {differ} of {} input values differ; probabilities differ by at most {diff:.1e}",
            r.file,
            mine.len()
        );
    }

    // The server saw the page fetch its files, and no upload.
    let lines = std::fs::read_to_string(&log).unwrap();
    for path in [
        "/local/",
        "/local/model.json",
        "/local/model.onnx",
        "/local/ort/ort-wasm-simd-threaded.wasm",
    ] {
        assert!(
            lines.contains(&format!(" GET {path} 200 ")),
            "{path} not fetched:\n{lines}"
        );
    }
    assert!(
        !lines.lines().any(|l| !l.contains(" GET ")),
        "not only GETs:\n{lines}"
    );

    // The static folder, behind a plain static file server.
    let web = tmp.path().join("web");
    let o = export_web(&run, &web, &[]);
    assert!(o.status.success(), "{}", text(&o));
    for f in [
        "index.html",
        "preprocess.js",
        "model.json",
        "model.onnx",
        "ort/ort.wasm.bundle.min.mjs",
    ] {
        assert!(web.join(f).is_file(), "{f} missing");
    }
    let (page, statics) = classify_static(&web, &images, &shot);
    assert_eq!(page["isolated"], false, "{page}");
    for (a, b) in statics.iter().zip(&served) {
        assert_eq!(a.tensor, b.tensor, "{}", a.file);
        for (p, q) in a.probabilities.iter().zip(&b.probabilities) {
            assert!((p - q).abs() < 1e-5, "{}: static {p} vs served {q}", a.file);
        }
    }

    // Opened straight from disk, Chromium refuses the page's modules: it says so.
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/browser-local.py");
    let o = Command::new("python3")
        .arg(script)
        .args([
            &format!("file://{}", web.join("index.html").display()),
            s(&shot),
        ])
        .env("ARTEMIS_CHROMIUM", chromium().unwrap())
        .env("ARTEMIS_CHROMEDRIVER", chromedriver().unwrap())
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        !o.status.success() && out.contains("serve the folder instead"),
        "{out}"
    );

    // The int8 graph in the page (a static folder): about a third of the float download,
    // and the probabilities of `artemis predict --precision int8` on the same pixels.
    let web8 = int8_web_folder(&run, &tmp.path().join("web-int8"));
    let (f8, f32) = (
        std::fs::metadata(web8.join("model.onnx")).unwrap().len(),
        std::fs::metadata(web.join("model.onnx")).unwrap().len(),
    );
    assert!(f8 * 100 <= f32 * 35, "int8 graph {f8} bytes, float {f32}");
    let pngs: Vec<PathBuf> = (images.iter())
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .cloned()
        .collect();
    let want = predicted(&run, &pngs, &["--precision", "int8", "--engine", "onnx"]);
    let (_, int8) = classify_static(&web8, &pngs, &shot);
    assert_int8_close(&int8, &want, "int8");

    // An ensemble of that run (head framing, keep-aspect) and one that takes the picture as
    // decoded (squashed): the page's graph has an input per way of making the picture, the
    // page makes each from the decoded one, and its probabilities are `artemis predict`'s.
    let plain = tmp.path().join("plain");
    let weights = artemis_models::mobilenetv2::weights::CHECKPOINT.default_path();
    let cache = tmp.path().join("cache-plain");
    let manifest = tmp.path().join("m.tsv");
    let o = artemis(&head_args(&manifest, &plain, &weights, &cache, "4", &[]));
    assert!(o.status.success(), "{}", text(&o));
    let ens = tmp.path().join("ens");
    let o = artemis(&["ensemble", s(&run), s(&plain), "-o", s(&ens)]);
    assert!(o.status.success(), "{}", text(&o));
    let web_ens = tmp.path().join("web-ens");
    let o = export_web(&ens, &web_ens, &[]);
    assert!(o.status.success(), "{}", text(&o));
    let card = json_file(&web_ens.join("model.json"));
    assert_eq!(card["inputs"].as_array().unwrap().len(), 2, "{card}");
    let want = predicted(&ens, &images, &[]);
    let (_, got) = classify_static(&web_ens, &images, &shot);
    for (r, want) in got.iter().zip(&want) {
        let diff = max_diff(&r.probabilities, want);
        eprintln!(
            "{} (ensemble): probabilities differ by at most {diff:.1e}",
            r.file
        );
        assert!(diff <= 1e-3, "{}: page vs predict differ by {diff}", r.file);
    }
    // Its int8 graph for the page: the members' int8 graphs averaged, an input per picture.
    let web_ens8 = int8_web_folder(&ens, &tmp.path().join("web-ens-int8"));
    let want = predicted(&ens, &pngs, &["--precision", "int8", "--engine", "onnx"]);
    let (_, int8) = classify_static(&web_ens8, &pngs, &shot);
    assert_int8_close(&int8, &want, "ensemble, int8");
}

#[test]
fn a_web_export_without_the_runtime_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, manifest) = tiny_split(tmp.path(), "3");
    let run = tmp.path().join("run");
    train_baseline(&manifest, &run, "96", "1", &[]);
    let web = tmp.path().join("web");
    let missing = tmp.path().join("no-runtime");
    let o = export_web(&run, &web, &["--ort-web", s(&missing)]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("ort.wasm.bundle.min.mjs") && text(&o).contains("scripts/setup"),
        "{}",
        text(&o)
    );
    assert!(!web.join("index.html").exists());
    // --format web needs --out.
    let o = artemis(&["export", "--run", s(&run), "--format", "web"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}
