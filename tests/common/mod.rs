//! Helpers shared by the CLI test binaries: run the binary, draw a tiny data set.
#![allow(dead_code, clippy::unwrap_used)]

use image::{Rgb, RgbImage};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn artemis(args: &[&str]) -> Output {
    artemis_env(args, &[])
}

/// [`artemis`] with extra environment variables.
pub fn artemis_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_artemis"))
        .args(args)
        .env("ARTEMIS_NO_PROGRESS", "1")
        .envs(env.iter().copied())
        .output()
        .expect("run artemis")
}

pub fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A synthetic slice: an ellipse ("head") with a bright blob whose place and the overall
/// brightness depend on the class, plus per-image jitter.
pub fn slice(class: usize, i: usize) -> RgbImage {
    let (bx, by) = [(0.3, 0.3), (0.7, 0.4), (0.5, 0.75)][class];
    let jitter = i as f32 * 0.01;
    RgbImage::from_fn(120, 110, |x, y| {
        let (fx, fy) = (x as f32 / 120.0, y as f32 / 110.0);
        let e = ((fx - 0.5) / 0.42).powi(2) + ((fy - 0.5) / 0.45).powi(2);
        let b = ((fx - bx - jitter).powi(2) + (fy - by).powi(2)).sqrt();
        let v = if b < 0.12 {
            240.0
        } else if e < 1.0 {
            60.0 + 40.0 * class as f32 + 20.0 * ((fx + fy) * 12.0 + i as f32).sin()
        } else {
            3.0
        };
        Rgb([v.clamp(0.0, 255.0) as u8; 3])
    })
}

pub const CLASSES: [&str; 3] = ["glioma_coronal", "no_sagittal", "pituitary_transverse"];

/// `<root>/<class>/img_<i>.png`, 10 per class, plus one corrupt file.
pub fn make_dataset(root: &Path) {
    for (c, name) in CLASSES.iter().enumerate() {
        let d = root.join(name);
        fs::create_dir_all(&d).unwrap();
        for i in 0..10 {
            slice(c, i).save(d.join(format!("img_{i}.png"))).unwrap();
        }
    }
    fs::write(
        root.join("no_sagittal/broken.jpg"),
        b"\xff\xd8\xff\xe0 truncated",
    )
    .unwrap();
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `artemis data split DATA --seed SEED -o MANIFEST EXTRA...`, which must write the manifest
/// (exit 0, or 3 when it skipped unreadable files, as the tiny data set's broken file); its
/// output is returned for the messages.
pub fn split(data: &Path, manifest: &Path, seed: &str, extra: &[&str]) -> Output {
    let mut args = vec!["data", "split", s(data), "--seed", seed, "-o", s(manifest)];
    args.extend_from_slice(extra);
    let o = artemis(&args);
    assert!(matches!(o.status.code(), Some(0 | 3)), "{}", text(&o));
    assert!(manifest.exists(), "{}", text(&o));
    o
}

/// The tiny data set in `dir/data` and its clean split (20% validation, 20% test, `seed`) in
/// `dir/m.tsv`: `(data folder, manifest)`.
pub fn tiny_split(dir: &Path, seed: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let data = dir.join("data");
    make_dataset(&data);
    let manifest = dir.join("m.tsv");
    split(
        &data,
        &manifest,
        seed,
        &["--val-fraction", "0.2", "--test-fraction", "0.2"],
    );
    (data, manifest)
}

/// Arguments of `artemis train` for `model` at `size` px for `epochs` epochs into `run`,
/// followed by `extra`.
pub fn train_args<'a>(
    manifest: &'a Path,
    run: &'a Path,
    (model, size, epochs): (&'a str, &'a str, &'a str),
    extra: &[&'a str],
) -> Vec<&'a str> {
    let mut args = vec![
        "train",
        "--manifest",
        s(manifest),
        "--model",
        model,
        "--input-size",
        size,
        "--epochs",
        epochs,
        "-o",
        s(run),
    ];
    args.extend_from_slice(extra);
    args
}

/// Arguments of `artemis train` for `baseline-relu-bn` at `size` px for `epochs` epochs
/// (batch 8) into `run`, followed by `extra`.
pub fn baseline_args<'a>(
    manifest: &'a Path,
    run: &'a Path,
    size: &'a str,
    epochs: &'a str,
    extra: &[&'a str],
) -> Vec<&'a str> {
    let model = ("baseline-relu-bn", size, epochs);
    train_args(
        manifest,
        run,
        model,
        &[&["--batch-size", "8"], extra].concat(),
    )
}

/// Trains `baseline-relu-bn` ([`baseline_args`]), which must succeed.
pub fn train_baseline(manifest: &Path, run: &Path, size: &str, epochs: &str, extra: &[&str]) {
    let o = artemis(&baseline_args(manifest, run, size, epochs, extra));
    assert!(o.status.success(), "{}", text(&o));
}

/// `artemis export --run RUN --quantize int8 --calibration-images IMAGES EXTRA...`.
pub fn quantize_int8(run: &Path, images: &str, extra: &[&str]) -> Output {
    let args = [
        "export",
        "--run",
        s(run),
        "--quantize",
        "int8",
        "--calibration-images",
        images,
    ];
    artemis(&[&args[..], extra].concat())
}

/// `artemis export --run RUN --format web -o OUT EXTRA...` (the in-browser page's folder).
pub fn export_web(run: &Path, out: &Path, extra: &[&str]) -> Output {
    let args = ["export", "--run", s(run), "--format", "web", "-o", s(out)];
    artemis(&[&args[..], extra].concat())
}

/// A JSON file the command wrote (a report, a manifest of folds, an ensemble).
pub fn json_file(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
}

/// `artemis eval RUN EXTRA...`, which must succeed: the `report.json` it wrote in RUN.
pub fn eval_report(run: &Path, extra: &[&str]) -> serde_json::Value {
    let o = artemis(&[&["eval", s(run)][..], extra].concat());
    assert!(o.status.success(), "{}", text(&o));
    json_file(&run.join("report.json"))
}

/// `artemis predict RUN INPUT --json`, which must succeed: its document.
pub fn predict_json(run: &Path, input: &Path) -> serde_json::Value {
    let o = artemis(&["predict", s(run), s(input), "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// DICOM and NIfTI files the tests write themselves (dicom-rs and the `nifti` crate).
pub mod formats {
    use dicom_core::value::PixelFragmentSequence;
    use dicom_core::{DataElement, PrimitiveValue, VR};
    use dicom_dictionary_std::{tags, uids};
    use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
    use std::path::Path;

    /// Pixel data of a DICOM test file.
    pub enum Pixels {
        U8(Vec<u8>),
        U16(Vec<u16>),
        I16(Vec<i16>),
        /// An encapsulated (compressed) bitstream, one fragment per frame.
        Encapsulated(Vec<Vec<u8>>),
    }

    /// What to put in a DICOM test file.
    pub struct Dicom<'a> {
        pub rows: u16,
        pub cols: u16,
        pub frames: u32,
        pub photometric: &'a str,
        pub samples: u16,
        pub bits: u16,
        pub signed: bool,
        pub rescale: Option<(f64, f64)>,
        pub window: Option<(f64, f64)>,
        pub transfer_syntax: &'a str,
        pub pixels: Pixels,
    }

    impl Default for Dicom<'_> {
        fn default() -> Self {
            Dicom {
                rows: 64,
                cols: 64,
                frames: 1,
                photometric: "MONOCHROME2",
                samples: 1,
                bits: 8,
                signed: false,
                rescale: None,
                window: None,
                transfer_syntax: uids::EXPLICIT_VR_LITTLE_ENDIAN,
                pixels: Pixels::U8(vec![0; 64 * 64]),
            }
        }
    }

    fn put(o: &mut InMemDicomObject, tag: dicom_core::Tag, vr: VR, v: impl Into<PrimitiveValue>) {
        o.put(DataElement::new(tag, vr, v.into()));
    }

    /// Writes a DICOM Part 10 file with made-up patient identifiers
    /// (`Doe^Jane`, `SECRET-123`) that must never appear in output by default.
    pub fn write_dicom(path: &Path, d: Dicom<'_>) {
        let mut o = InMemDicomObject::new_empty();
        put(&mut o, tags::SOP_CLASS_UID, VR::UI, uids::MR_IMAGE_STORAGE);
        put(&mut o, tags::SOP_INSTANCE_UID, VR::UI, "2.25.1234567890");
        put(&mut o, tags::STUDY_INSTANCE_UID, VR::UI, "2.25.42");
        put(&mut o, tags::PATIENT_NAME, VR::PN, "Doe^Jane");
        put(&mut o, tags::PATIENT_ID, VR::LO, "SECRET-123");
        put(&mut o, tags::MODALITY, VR::CS, "MR");
        put(&mut o, tags::ROWS, VR::US, d.rows);
        put(&mut o, tags::COLUMNS, VR::US, d.cols);
        put(&mut o, tags::SAMPLES_PER_PIXEL, VR::US, d.samples);
        put(
            &mut o,
            tags::PHOTOMETRIC_INTERPRETATION,
            VR::CS,
            d.photometric,
        );
        put(&mut o, tags::BITS_ALLOCATED, VR::US, d.bits);
        put(&mut o, tags::BITS_STORED, VR::US, d.bits);
        put(&mut o, tags::HIGH_BIT, VR::US, d.bits - 1);
        put(
            &mut o,
            tags::PIXEL_REPRESENTATION,
            VR::US,
            u16::from(d.signed),
        );
        if d.samples == 3 {
            put(&mut o, tags::PLANAR_CONFIGURATION, VR::US, 0u16);
        }
        if d.frames > 1 {
            put(&mut o, tags::NUMBER_OF_FRAMES, VR::IS, d.frames.to_string());
        }
        if let Some((slope, intercept)) = d.rescale {
            put(&mut o, tags::RESCALE_SLOPE, VR::DS, slope.to_string());
            put(
                &mut o,
                tags::RESCALE_INTERCEPT,
                VR::DS,
                intercept.to_string(),
            );
        }
        if let Some((c, w)) = d.window {
            put(&mut o, tags::WINDOW_CENTER, VR::DS, c.to_string());
            put(&mut o, tags::WINDOW_WIDTH, VR::DS, w.to_string());
        }
        let pixel = match d.pixels {
            Pixels::U8(v) => {
                DataElement::new(tags::PIXEL_DATA, VR::OB, PrimitiveValue::U8(v.into()))
            }
            Pixels::U16(v) => {
                DataElement::new(tags::PIXEL_DATA, VR::OW, PrimitiveValue::U16(v.into()))
            }
            Pixels::I16(v) => DataElement::new(
                tags::PIXEL_DATA,
                VR::OW,
                PrimitiveValue::U16(v.iter().map(|&x| x as u16).collect()),
            ),
            Pixels::Encapsulated(frames) => DataElement::new(
                tags::PIXEL_DATA,
                VR::OB,
                dicom_core::value::Value::from(PixelFragmentSequence::new_fragments(frames)),
            ),
        };
        o.put(pixel);
        let file = o
            .with_meta(FileMetaTableBuilder::new().transfer_syntax(d.transfer_syntax))
            .expect("meta");
        file.write_to_file(path).expect("write dicom");
    }

    /// Writes a NIfTI volume (`.nii` or `.nii.gz` by the path) from `data[[i, j, k]]`, with
    /// the given sform rows (voxel to RAS world).
    pub fn write_nifti(path: &Path, data: &ndarray::Array3<f32>, srow: [[f32; 4]; 3]) {
        let h = nifti::NiftiHeader {
            sform_code: 1,
            srow_x: srow[0],
            srow_y: srow[1],
            srow_z: srow[2],
            ..Default::default()
        };
        nifti::writer::WriterOptions::new(path)
            .reference_header(&h)
            .write_nifti(data)
            .expect("write nifti");
    }
}

/// The browser for the browser tests: `$ARTEMIS_CHROMIUM`, else Debian's.
#[allow(dead_code)] // not every test binary drives a browser
pub fn chromium() -> Option<PathBuf> {
    tool(
        "ARTEMIS_CHROMIUM",
        &["/usr/bin/chromium", "/usr/bin/chromium-browser"],
    )
}

/// Its WebDriver: `$ARTEMIS_CHROMEDRIVER`, else Debian's.
#[allow(dead_code)]
pub fn chromedriver() -> Option<PathBuf> {
    tool("ARTEMIS_CHROMEDRIVER", &["/usr/bin/chromedriver"])
}

#[allow(dead_code)]
fn tool(var: &str, defaults: &[&str]) -> Option<PathBuf> {
    match std::env::var_os(var) {
        Some(p) if !p.is_empty() => Some(PathBuf::from(p)).filter(|p| p.exists()),
        _ => defaults.iter().map(PathBuf::from).find(|p| p.exists()),
    }
}

/// A folder of `../shared/data`.
pub fn shared(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/data")
        .join(name)
}

/// Copies the first `n` files (sorted) of every class folder under `from` into `to/<class>`,
/// renaming classes through `rename`.
pub fn copy_subset(from: &Path, to: &Path, n: usize, rename: impl Fn(&str) -> String) {
    let mut classes: Vec<_> = fs::read_dir(from).unwrap().map(|e| e.unwrap()).collect();
    classes.sort_by_key(|e| e.file_name());
    for c in classes {
        let name = c.file_name().to_string_lossy().into_owned();
        let dst = to.join(rename(&name));
        fs::create_dir_all(&dst).unwrap();
        let mut files: Vec<_> = fs::read_dir(c.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for f in files.into_iter().take(n) {
            fs::copy(&f, dst.join(f.file_name().unwrap())).unwrap();
        }
    }
}

/// Arguments of `artemis train` for the head of MobileNetV2 from the ImageNet checkpoint at
/// `weights`, at 128 px, batch 16, rate 0.003, seed 3, with its feature cache in `cache`, for
/// `epochs` epochs into `run`, followed by `extra`.
pub fn head_args<'a>(
    manifest: &'a Path,
    run: &'a Path,
    weights: &'a Path,
    cache: &'a Path,
    epochs: &'a str,
    extra: &[&'a str],
) -> Vec<&'a str> {
    let head = [
        "--pretrained",
        "imagenet",
        "--weights",
        s(weights),
        "--strategy",
        "head",
        "--batch-size",
        "16",
        "--lr",
        "0.003",
        "--seed",
        "3",
        "--cache-dir",
        s(cache),
    ];
    let model = ("mobilenetv2", "128", epochs);
    train_args(manifest, run, model, &[&head[..], extra].concat())
}

/// Every float a module holds (parameters and running statistics), as bits, in visit order.
pub fn weight_bits(net: &artemis_models::Network) -> Vec<Vec<u32>> {
    struct Collect(Vec<Vec<u32>>);
    impl burn::module::ModuleVisitor for Collect {
        fn visit_float<const D: usize>(
            &mut self,
            p: &burn::module::Param<burn::prelude::Tensor<D>>,
        ) {
            let v: Vec<f32> = p
                .val()
                .into_data()
                .convert::<f32>()
                .try_to_vec::<f32>()
                .unwrap();
            self.0.push(v.iter().map(|x| x.to_bits()).collect());
        }
    }
    let mut c = Collect(Vec::new());
    burn::module::Module::visit(net, &mut c);
    c.0
}
