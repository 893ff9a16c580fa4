//! The bad-input corpus: what folders exported from scanners and PACS hold, generated here
//! (no binary blobs in the repository) and put in front of `data check`, `data split`,
//! `train`, `eval` and `predict`.
//!
//! Every case must end in one of two documented outcomes: the file is used (formats that are
//! odd but valid: 16-bit, palette, grey+alpha, CMYK, progressive, EXIF-rotated) or it is
//! skipped with a message that names the file and the problem, the command going on and
//! exiting with code 3 (README "Exit codes"). Nothing may panic (exit code 101, "panicked").
//!
//! With `ARTEMIS_FUZZ_SEEDS=DIR` the generated files are also written to `DIR/<target>/` as
//! seeds for the fuzz targets (`.ci/run` does this before fuzzing).

use crate::common::formats::{Dicom, Pixels, write_dicom, write_nifti};
use crate::common::*;
use std::collections::BTreeMap;
use std::fs;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::process::Output;

/// What must happen to a case.
#[derive(Clone, Debug)]
enum Expect {
    /// Read and used.
    Used,
    /// Skipped with a message naming the file and holding one of these phrases.
    Skipped(&'static [&'static str]),
}

struct Case {
    kind: &'static str,
    path: PathBuf,
    expect: Expect,
}

fn png(img: &image::DynamicImage) -> Vec<u8> {
    let mut out = Vec::new();
    img.write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

fn jpeg(img: &image::RgbImage) -> Vec<u8> {
    let mut out = Vec::new();
    image::DynamicImage::ImageRgb8(img.clone())
        .write_to(&mut Cursor::new(&mut out), image::ImageFormat::Jpeg)
        .unwrap();
    out
}

/// A JPEG written by jpeg-encoder (CMYK, progressive and APP segments, which `image` cannot
/// write).
fn jpeg_encoder(
    img: &image::RgbImage,
    cmyk: bool,
    progressive: bool,
    app1: Option<Vec<u8>>,
) -> Vec<u8> {
    let mut out = Vec::new();
    let mut enc = jpeg_encoder::Encoder::new(&mut out, 90);
    enc.set_progressive(progressive);
    if let Some(seg) = app1 {
        enc.add_app_segment(1, seg).unwrap();
    }
    let (w, h) = (img.width() as u16, img.height() as u16);
    if cmyk {
        // Ink amounts (jpeg-encoder writes them inverted, the Adobe way): grey content is
        // black ink only.
        let data: Vec<u8> = img.pixels().flat_map(|p| [0, 0, 0, 255 - p.0[0]]).collect();
        enc.encode(&data, w, h, jpeg_encoder::ColorType::Cmyk)
            .unwrap();
    } else {
        enc.encode(img.as_raw(), w, h, jpeg_encoder::ColorType::Rgb)
            .unwrap();
    }
    out
}

/// An EXIF block (APP1 payload) holding only Orientation = `o`.
fn exif_orientation(o: u16) -> Vec<u8> {
    let mut v = b"Exif\0\0II*\0".to_vec();
    v.extend_from_slice(&8u32.to_le_bytes()); // IFD0 offset
    v.extend_from_slice(&1u16.to_le_bytes()); // one entry
    v.extend_from_slice(&0x0112u16.to_le_bytes()); // Orientation
    v.extend_from_slice(&3u16.to_le_bytes()); // SHORT
    v.extend_from_slice(&1u32.to_le_bytes()); // count
    v.extend_from_slice(&o.to_le_bytes());
    v.extend_from_slice(&[0, 0]); // value padding
    v.extend_from_slice(&0u32.to_le_bytes()); // no next IFD
    v
}

/// A palette (indexed) PNG of a grey picture, written by the `png` crate.
fn palette_png(img: &image::RgbImage) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, img.width(), img.height());
        enc.set_color(png::ColorType::Indexed);
        enc.set_depth(png::BitDepth::Eight);
        enc.set_palette((0..=255u8).flat_map(|g| [g, g, g]).collect::<Vec<u8>>());
        let mut w = enc.write_header().unwrap();
        let idx: Vec<u8> = img.pixels().map(|p| p.0[0]).collect();
        w.write_image_data(&idx).unwrap();
    }
    out
}

/// A PNG whose header claims `w` x `h` pixels, followed by a few bytes of image data: a
/// decompression bomb as far as the header goes.
fn png_claiming(w: u32, h: u32) -> Vec<u8> {
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]); // 8-bit grey
    let mut v = b"\x89PNG\r\n\x1a\n".to_vec();
    v.extend_from_slice(&13u32.to_be_bytes());
    v.extend_from_slice(&ihdr);
    v.extend_from_slice(&crc32(&ihdr).to_be_bytes());
    let idat = b"IDAT\x78\x9c\x63\x00\x00\x00\x01\x00\x01";
    v.extend_from_slice(&((idat.len() - 4) as u32).to_be_bytes());
    v.extend_from_slice(idat);
    v.extend_from_slice(&crc32(idat).to_be_bytes());
    v
}

/// A JPEG whose frame header claims `w` x `h` pixels (a real small JPEG with its SOF0 size
/// rewritten).
fn jpeg_claiming(small: &[u8], w: u16, h: u16) -> Vec<u8> {
    let mut v = small.to_vec();
    let sof = v.windows(2).position(|p| p == [0xFF, 0xC0]).unwrap();
    v[sof + 5..sof + 7].copy_from_slice(&h.to_be_bytes());
    v[sof + 7..sof + 9].copy_from_slice(&w.to_be_bytes());
    v
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Deterministic noise.
fn noise(n: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).max(1);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn grey(c: usize, i: usize) -> image::RgbImage {
    slice(c, i)
}

/// Builds the corpus under `root` (12-class layout, three classes with eight good slices
/// each) and returns its cases. `seeds` collects valid and broken files per fuzz target.
fn build_corpus(
    root: &Path,
    seeds: &mut BTreeMap<&'static str, Vec<(String, Vec<u8>)>>,
) -> Vec<Case> {
    let mut cases = Vec::new();
    for (c, name) in CLASSES.iter().enumerate() {
        fs::create_dir_all(root.join(name)).unwrap();
        for i in 0..8 {
            slice(c, i)
                .save(root.join(name).join(format!("img_{i}.png")))
                .unwrap();
        }
    }
    let mut add =
        |kind: &'static str, rel: &str, bytes: &[u8], expect: Expect, target: &'static str| {
            let path = root.join(rel);
            fs::write(&path, bytes).unwrap();
            seeds
                .entry(target)
                .or_default()
                .push((kind.replace(' ', "-"), bytes.to_vec()));
            cases.push(Case { kind, path, expect });
        };
    const DECODE: &[&str] = &["cannot decode image"];
    const TRUNCATED: &[&str] = &["truncated", "cannot decode image"];
    const TOO_BIG: &[&str] = &["over the limit"];

    // Odd but valid: each must be used.
    let g = grey(0, 20);
    let g16 =
        image::ImageBuffer::<image::Luma<u16>, Vec<u16>>::from_fn(g.width(), g.height(), |x, y| {
            image::Luma([u16::from(g.get_pixel(x, y).0[0]) * 257])
        });
    add(
        "16-bit grey PNG",
        "glioma_coronal/ok-grey16.png",
        &png(&image::DynamicImage::ImageLuma16(g16)),
        Expect::Used,
        "image_decode",
    );
    let rgb16 = image::DynamicImage::ImageRgb8(grey(1, 20)).into_rgb16();
    add(
        "16-bit RGB PNG",
        "no_sagittal/ok-rgb16.png",
        &png(&image::DynamicImage::ImageRgb16(rgb16)),
        Expect::Used,
        "image_decode",
    );
    add(
        "palette PNG",
        "pituitary_transverse/ok-palette.png",
        &palette_png(&grey(2, 20)),
        Expect::Used,
        "image_decode",
    );
    let la = image::DynamicImage::ImageRgb8(grey(0, 21)).into_luma_alpha8();
    add(
        "grey+alpha PNG",
        "glioma_coronal/ok-grey-alpha.png",
        &png(&image::DynamicImage::ImageLumaA8(la)),
        Expect::Used,
        "image_decode",
    );
    add(
        "CMYK JPEG",
        "no_sagittal/ok-cmyk.jpg",
        &jpeg_encoder(&grey(1, 21), true, false, None),
        Expect::Used,
        "image_decode",
    );
    // A CMYK frame whose scan carries three of its four components, behind an extension
    // marker (JPG0) that libjpeg-turbo refuses: it goes on to `image`'s decoder, whose panic
    // on it (zune-jpeg 0.5.15; found by the fuzzer) must come back as a skipped file.
    let mut split = jpeg_encoder(&grey(0, 23), true, false, None);
    let at = |b: &[u8], m: u8| b.windows(2).position(|w| w == [0xFF, m]).unwrap();
    let sof = at(&split, 0xC0);
    split[sof + 14] = 0x22;
    let sos = at(&split, 0xDA);
    split[sos + 3] -= 2;
    split[sos + 4] = 3;
    split.drain(sos + 11..sos + 13);
    split.splice(sos..sos, [0xFF, 0xF0, 0, 4, 0, 0]);
    add(
        "JPEG that image's decoder panics on",
        "glioma_coronal/decoder-panic.jpg",
        &split,
        Expect::Skipped(&["the image decoder failed"]),
        "image_decode",
    );
    add(
        "progressive JPEG",
        "pituitary_transverse/ok-progressive.jpg",
        &jpeg_encoder(&grey(2, 21), false, true, None),
        Expect::Used,
        "image_decode",
    );
    add(
        "EXIF-rotated JPEG",
        "glioma_coronal/ok-exif-rotated.jpg",
        &jpeg_encoder(&grey(0, 22), false, false, Some(exif_orientation(6))),
        Expect::Used,
        "image_decode",
    );

    // Truncated files, cut at many offsets (never after the last scan / IDAT).
    let full_jpeg = jpeg(&grey(1, 30));
    for (k, f) in [0.002, 0.01, 0.05, 0.2, 0.4, 0.6, 0.8, 0.95, 0.99]
        .iter()
        .enumerate()
    {
        let cut = ((full_jpeg.len() as f64 * f) as usize).clamp(1, full_jpeg.len() - 3);
        add(
            "truncated JPEG",
            &format!("no_sagittal/cut{k}.jpg"),
            &full_jpeg[..cut],
            Expect::Skipped(TRUNCATED),
            "image_decode",
        );
    }
    let full_png = png(&image::DynamicImage::ImageRgb8(grey(2, 30)));
    let iend = full_png.len() - 12;
    for (k, f) in [0.01, 0.05, 0.2, 0.4, 0.6, 0.8, 0.95, 0.99]
        .iter()
        .enumerate()
    {
        let cut = ((full_png.len() as f64 * f) as usize).clamp(1, iend - 13);
        add(
            "truncated PNG",
            &format!("pituitary_transverse/cut{k}.png"),
            &full_png[..cut],
            Expect::Skipped(DECODE),
            "image_decode",
        );
    }
    add(
        "zero-byte JPEG",
        "glioma_coronal/empty.jpg",
        b"",
        Expect::Skipped(&["empty"]),
        "image_decode",
    );
    add(
        "zero-byte PNG",
        "no_sagittal/empty.png",
        b"",
        Expect::Skipped(&["empty"]),
        "image_decode",
    );
    add(
        "random bytes as .jpg",
        "glioma_coronal/noise.jpg",
        &noise(5000, 1),
        Expect::Skipped(&["not a recognised image format"]),
        "image_decode",
    );
    add(
        "random bytes as .png",
        "no_sagittal/noise.png",
        &noise(5000, 2),
        Expect::Skipped(&["not a recognised image format"]),
        "image_decode",
    );
    let mut after_magic = b"\x89PNG\r\n\x1a\n".to_vec();
    after_magic.extend(noise(3000, 3));
    add(
        "PNG signature then noise",
        "pituitary_transverse/magic-noise.png",
        &after_magic,
        Expect::Skipped(DECODE),
        "image_decode",
    );
    let mut jpeg_noise = vec![0xFF, 0xD8, 0xFF];
    jpeg_noise.extend(noise(3000, 4));
    add(
        "JPEG start then noise",
        "glioma_coronal/magic-noise.jpg",
        &jpeg_noise,
        Expect::Skipped(&["cannot decode image", "truncated"]),
        "image_decode",
    );
    add(
        "PNG claiming 100000x100000",
        "glioma_coronal/bomb.png",
        &png_claiming(100_000, 100_000),
        Expect::Skipped(TOO_BIG),
        "image_decode",
    );
    add(
        "JPEG claiming 65000x65000",
        "no_sagittal/bomb.jpg",
        &jpeg_claiming(&full_jpeg, 65_000, 65_000),
        Expect::Skipped(TOO_BIG),
        "image_decode",
    );

    // DICOM and NIfTI where slices are expected (predict gives the format's own reason).
    let dcm = |path: &Path, d: Dicom<'_>| {
        write_dicom(path, d);
        fs::read(path).unwrap()
    };
    let tmp = tempfile::tempdir().unwrap();
    let good_dcm = dcm(
        &tmp.path().join("g.dcm"),
        Dicom {
            pixels: Pixels::U8((0..64 * 64).map(|i| (i % 251) as u8).collect()),
            ..Dicom::default()
        },
    );
    let valid_dicom = good_dcm;
    let short = dcm(
        &tmp.path().join("s.dcm"),
        Dicom {
            rows: 64,
            cols: 64,
            pixels: Pixels::U8(vec![7; 100]),
            ..Dicom::default()
        },
    );
    add(
        "DICOM, pixel data shorter than rows x columns",
        "glioma_coronal/short.dcm",
        &short,
        Expect::Skipped(&["inconsistent sizes", "DICOM file"]),
        "dicom",
    );
    // Fuzzing regression: a 4 kB file declaring a 3 GB value (dicom-rs would allocate it).
    let mut claims = valid_dicom.clone();
    claims.extend_from_slice(&[0xE1, 0x7F, 0x10, 0x00, b'O', b'B', 0, 0]);
    claims.extend_from_slice(&0xC000_0000u32.to_le_bytes());
    claims.extend_from_slice(&[0; 64]);
    add(
        "DICOM element declaring 3 GB",
        "glioma_coronal/claims.dcm",
        &claims,
        Expect::Skipped(&["declares 3221225472 bytes", "DICOM file"]),
        "dicom",
    );
    // A header asking the decoder for 65535 samples a pixel.
    let samples = dcm(
        &tmp.path().join("spp.dcm"),
        Dicom {
            samples: 65535,
            pixels: Pixels::U8(vec![7; 64 * 64]),
            ..Dicom::default()
        },
    );
    add(
        "DICOM claiming 65535 samples per pixel",
        "pituitary_transverse/samples.dcm",
        &samples,
        Expect::Skipped(&["samples per pixel not supported", "DICOM file"]),
        "dicom",
    );
    let nopix = {
        use dicom_core::{DataElement, PrimitiveValue, VR};
        use dicom_dictionary_std::{tags, uids};
        let mut o = dicom_object::InMemDicomObject::new_empty();
        for (tag, vr, v) in [
            (
                tags::SOP_CLASS_UID,
                VR::UI,
                PrimitiveValue::from(uids::MR_IMAGE_STORAGE),
            ),
            (
                tags::SOP_INSTANCE_UID,
                VR::UI,
                PrimitiveValue::from("2.25.9"),
            ),
            (tags::ROWS, VR::US, PrimitiveValue::from(8u16)),
            (tags::COLUMNS, VR::US, PrimitiveValue::from(8u16)),
        ] {
            o.put(DataElement::new(tag, vr, v));
        }
        let p = tmp.path().join("n.dcm");
        o.with_meta(
            dicom_object::FileMetaTableBuilder::new()
                .transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN),
        )
        .unwrap()
        .write_to_file(&p)
        .unwrap();
        fs::read(&p).unwrap()
    };
    add(
        "DICOM without pixel data",
        "no_sagittal/nopixels.dcm",
        &nopix,
        Expect::Skipped(&["no pixel data", "DICOM file"]),
        "dicom",
    );
    let vol = tmp.path().join("v.nii");
    write_nifti(
        &vol,
        &ndarray::Array3::from_shape_fn((12, 10, 6), |(i, j, k)| (i + j * k) as f32),
        [
            [1.0, 0.0, 0.0, 0.0],
            [0.0, 1.0, 0.0, 0.0],
            [0.0, 0.0, 1.0, 0.0],
        ],
    );
    let vb = fs::read(&vol).unwrap();
    let valid_nifti = vb.clone();
    let mut neg = vb.clone();
    neg[42..44].copy_from_slice(&(-5i16).to_le_bytes()); // dim[1] < 0
    add(
        "NIfTI with a negative dimension",
        "pituitary_transverse/negative.nii",
        &neg,
        Expect::Skipped(&["impossible dimensions", "not a recognised image format"]),
        "nifti",
    );
    let mut huge = vb.clone();
    huge[40..42].copy_from_slice(&3u16.to_le_bytes());
    for d in 0..3 {
        huge[42 + 2 * d..44 + 2 * d].copy_from_slice(&30000u16.to_le_bytes());
    }
    add(
        "NIfTI claiming 30000^3 voxels",
        "glioma_coronal/huge.nii",
        &huge,
        Expect::Skipped(&[
            "impossible dimensions",
            "over the limit",
            "not a recognised image format",
        ]),
        "nifti",
    );
    seeds
        .entry("dicom")
        .or_default()
        .push(("valid".into(), valid_dicom));
    seeds
        .entry("nifti")
        .or_default()
        .push(("valid".into(), valid_nifti));
    cases
}

/// File-system oddities that cannot be written as bytes: names, links, permissions, FIFOs.
fn add_fs_cases(root: &Path, cases: &mut Vec<Case>) {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::{PermissionsExt, symlink};
    let bad_name = root
        .join("no_sagittal")
        .join(std::ffi::OsStr::from_bytes(b"scan-\xff\xfe.png"));
    slice(1, 40).save(&bad_name).unwrap();
    cases.push(Case {
        kind: "file name not UTF-8",
        path: bad_name,
        expect: Expect::Skipped(&["not UTF-8"]),
    });

    let locked = root.join("glioma_coronal/locked.png");
    slice(0, 41).save(&locked).unwrap();
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o000)).unwrap();
    // Root reads anything: then the file is simply used.
    let expect = if fs::read(&locked).is_ok() {
        Expect::Used
    } else {
        Expect::Skipped(&["ermission denied"])
    };
    cases.push(Case {
        kind: "unreadable file (mode 000)",
        path: locked,
        expect,
    });

    // Unreadable even for root: reading /proc/self/mem at offset 0 fails with EIO.
    let eio = root.join("pituitary_transverse/io-error.png");
    symlink("/proc/self/mem", &eio).unwrap();
    cases.push(Case {
        kind: "read fails with an I/O error",
        path: eio,
        expect: Expect::Skipped(&["Input/output error", "not a regular file", "empty"]),
    });

    let selfloop = root.join("no_sagittal/self-loop.jpg");
    symlink("self-loop.jpg", &selfloop).unwrap();
    cases.push(Case {
        kind: "symlink to itself",
        path: selfloop,
        expect: Expect::Skipped(&["symbolic link"]),
    });
    let dangling = root.join("glioma_coronal/dangling.jpg");
    symlink("does-not-exist.jpg", &dangling).unwrap();
    cases.push(Case {
        kind: "dangling symlink",
        path: dangling,
        expect: Expect::Skipped(&["symbolic link"]),
    });
    let dirloop = root.join("pituitary_transverse/loop");
    symlink("..", &dirloop).unwrap();
    cases.push(Case {
        kind: "symlink loop to a parent folder",
        path: dirloop,
        expect: Expect::Skipped(&["not followed"]),
    });

    let fifo = root.join("glioma_coronal/pipe.png");
    let ok = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "mkfifo failed");
    cases.push(Case {
        kind: "FIFO named like an image",
        path: fifo,
        expect: Expect::Skipped(&["not a regular file"]),
    });

    fs::create_dir_all(root.join("meningioma_sagittal")).unwrap();
    cases.push(Case {
        kind: "empty class folder",
        path: root.join("meningioma_sagittal"),
        expect: Expect::Skipped(&["holds no files"]),
    });
}

/// The panic check every command's output goes through.
fn no_panic(what: &str, o: &Output) {
    let t = text(o);
    assert_ne!(o.status.code(), Some(101), "{what} panicked:\n{t}");
    assert!(!t.contains("panicked"), "{what} panicked:\n{t}");
    assert!(
        o.status.code().is_some(),
        "{what} was killed by a signal:\n{t}"
    );
}

/// Whether `message` names `path` (its file name) and gives one of the expected reasons.
fn names(message: &str, path: &Path, phrases: &[&str]) -> bool {
    let name = path.file_name().unwrap().to_string_lossy();
    (message.contains(name.as_ref()) || message.contains(&path.display().to_string()))
        && phrases.iter().any(|p| message.contains(p))
}

/// Checks each case against a command's messages; returns (used, skipped) counts.
fn tally(
    what: &str,
    cases: &[&Case],
    messages: &[String],
    outcome: &mut BTreeMap<String, [usize; 2]>,
) {
    for c in cases {
        let key = format!("{}:", c.path.display());
        let hit = messages.iter().find(|m| m.contains(&key));
        match (&c.expect, hit) {
            (Expect::Used, None) => outcome.entry(what.into()).or_default()[0] += 1,
            (Expect::Used, Some(m)) => panic!(
                "{what}: {} ({}) should be used, got: {m}",
                c.kind,
                c.path.display()
            ),
            (Expect::Skipped(p), Some(m)) => {
                assert!(
                    names(m, &c.path, p),
                    "{what}: {} ({}): unclear message: {m} (expected one of {p:?})",
                    c.kind,
                    c.path.display()
                );
                outcome.entry(what.into()).or_default()[1] += 1;
            }
            (Expect::Skipped(_), None) => panic!(
                "{what}: {} ({}) was not reported; messages:\n{}",
                c.kind,
                c.path.display(),
                messages.join("\n")
            ),
        }
    }
}

fn stderr_lines(o: &Output) -> Vec<String> {
    String::from_utf8_lossy(&o.stderr)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn hostile_inputs_meet_clear_messages_and_documented_exit_codes() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut seeds = BTreeMap::new();
    let mut cases = build_corpus(&data, &mut seeds);
    add_fs_cases(&data, &mut cases);
    // Text seeds for the parsers: a manifest written by `data split` (of a clean copy of the
    // three classes) and a label map.
    let clean = tmp.path().join("clean");
    for (c, name) in CLASSES.iter().enumerate() {
        fs::create_dir_all(clean.join(name)).unwrap();
        for i in 0..6 {
            slice(c, i)
                .save(clean.join(format!("{name}/{i}.png")))
                .unwrap();
        }
    }
    let clean_manifest = tmp.path().join("clean.tsv");
    split(&clean, &clean_manifest, "3", &[]);
    seeds.insert(
        "manifest",
        vec![("split".into(), fs::read(&clean_manifest).unwrap())],
    );
    seeds.insert(
        "label_map",
        vec![(
            "map".into(),
            b"# folder<TAB>label\nTraining_glioma\tglioma\nmen, meningioma_coronal\nscouts\t-\n"
                .to_vec(),
        )],
    );
    if let Ok(dir) = std::env::var("ARTEMIS_FUZZ_SEEDS") {
        for (target, files) in &seeds {
            let d = Path::new(&dir).join(target);
            fs::create_dir_all(&d).unwrap();
            for (k, (name, bytes)) in files.iter().enumerate() {
                fs::write(d.join(format!("{k:02}-{name}")), bytes).unwrap();
            }
        }
    }
    // Folder-level cases are reported by data check / eval / predict's scans; file-level
    // cases by every command that reads the file.
    let file_cases: Vec<&Case> = cases
        .iter()
        .filter(|c| c.kind != "empty class folder")
        .collect();
    let mut outcome: BTreeMap<String, [usize; 2]> = BTreeMap::new();

    // data check: every case in the JSON report, exit 3.
    let o = artemis(&["data", "check", s(&data), "--json"]);
    no_panic("data check", &o);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let rep: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let mut messages: Vec<String> = Vec::new();
    for key in ["unreadable", "skipped"] {
        for p in rep[key].as_array().unwrap() {
            messages.push(format!(
                "{}: {}",
                p["path"].as_str().unwrap(),
                p["reason"].as_str().unwrap()
            ));
        }
    }
    let all: Vec<&Case> = cases.iter().collect();
    tally("data check", &all, &messages, &mut outcome);
    let used = cases
        .iter()
        .filter(|c| matches!(c.expect, Expect::Used))
        .count();
    assert_eq!(
        rep["decoded"].as_u64().unwrap() as usize,
        24 + used,
        "{}",
        text(&o)
    );

    // The EXIF-rotated JPEG (32 wide, 30 tall as stored? no: slices are 120x110) is used
    // upright: orientation 6 turns 120x110 into 110x120.
    let rotated =
        artemis_data::image_io::read_rgb(&data.join("glioma_coronal/ok-exif-rotated.jpg"), 1 << 24)
            .unwrap();
    assert_eq!(rotated.dimensions(), (110, 120));
    // The CMYK file keeps its picture (grey content in K): bright blob where the slice has it.
    let cmyk =
        artemis_data::image_io::read_rgb(&data.join("no_sagittal/ok-cmyk.jpg"), 1 << 24).unwrap();
    let want = slice(1, 21);
    let diff: f64 = cmyk
        .pixels()
        .zip(want.pixels())
        .map(|(a, b)| (f64::from(a.0[0]) - f64::from(b.0[0])).abs())
        .sum::<f64>()
        / f64::from(want.width() * want.height());
    assert!(
        diff < 12.0,
        "CMYK JPEG decoded {diff} grey levels off on average"
    );

    // A pixel limit a user sets applies before decoding (the 120x110 slices are 13200 pixels).
    let o = artemis(&["data", "check", s(&data), "--json", "--max-pixels", "10000"]);
    no_panic("data check --max-pixels", &o);
    let rep: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(rep["decoded"], 0, "{}", text(&o));

    // data split: unreadable files become `excluded` rows, each reported; exit 3.
    let manifest = tmp.path().join("m.tsv");
    let o = split(
        &data,
        &manifest,
        "1",
        &["--val-fraction", "0.25", "--test-fraction", "0.25"],
    );
    no_panic("data split", &o);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    tally("data split", &all, &stderr_lines(&o), &mut outcome);
    let m = fs::read_to_string(&manifest).unwrap();
    for c in &file_cases {
        let name = c.path.file_name().unwrap().to_string_lossy().into_owned();
        if matches!(c.expect, Expect::Skipped(_))
            && !c.kind.contains("UTF-8")
            && !c.kind.contains("symlink")
            && !c.kind.contains("FIFO")
        {
            let row = m
                .lines()
                .find(|l| l.contains(&name))
                .unwrap_or_else(|| panic!("{name} not in the manifest"));
            assert!(row.starts_with("excluded"), "{row}");
        }
    }

    // train: files damaged after the split (as on a flaky share) are skipped and reported,
    // training goes on, exit 3. Replace three training files with broken ones.
    let train_rows: Vec<&str> = m
        .lines()
        .filter(|l| l.starts_with("train\t"))
        .map(|l| l.split('\t').nth(1).unwrap())
        .filter(|r| r.contains("/img_"))
        .collect();
    assert!(train_rows.len() >= 6);
    let damaged = [
        (data.join(train_rows[0]), full_truncated_jpeg()),
        (data.join(train_rows[1]), Vec::new()),
        (data.join(train_rows[2]), png_claiming(90_000, 90_000)),
    ];
    for (p, b) in &damaged {
        fs::write(p, b).unwrap();
    }
    let run = tmp.path().join("run");
    let o = artemis(&baseline_args(&manifest, &run, "96", "1", &[]));
    no_panic("train", &o);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let lines = stderr_lines(&o);
    for (p, _) in &damaged {
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("skipped") && l.contains(&p.display().to_string())),
            "{} not reported:\n{}",
            p.display(),
            text(&o)
        );
    }
    assert!(run.join("model-best.bpk").exists());
    outcome.insert(
        "train (files damaged after split)".into(),
        [0, damaged.len()],
    );

    // eval on the corpus folder: every file case skipped and listed; exit 3.
    let o = artemis(&["eval", s(&run), "--data", s(&data), "--bootstrap", "10"]);
    no_panic("eval --data", &o);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    tally("eval --data", &all, &stderr_lines(&o), &mut outcome);
    // Every file used as valid is among the report's scored predictions.
    let report: serde_json::Value =
        serde_json::from_slice(&fs::read(run.join("eval-data/report.json")).unwrap()).unwrap();
    let scored: std::collections::HashSet<String> = report["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["path"].as_str().unwrap().to_string())
        .collect();
    for c in cases.iter().filter(|c| matches!(c.expect, Expect::Used)) {
        let p = c.path.to_string_lossy().into_owned();
        assert!(
            scored.contains(&p),
            "eval --data: {} ({p}) was not scored",
            c.kind
        );
    }
    // eval on the manifest's test split after damage there too.
    let test_rel = m
        .lines()
        .find(|l| l.starts_with("test\t") && l.contains("/img_"))
        .unwrap()
        .split('\t')
        .nth(1)
        .unwrap();
    fs::write(data.join(test_rel), b"\x89PNG\r\n\x1a\n").unwrap();
    let o = artemis(&["eval", s(&run), "--bootstrap", "10"]);
    no_panic("eval", &o);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains(test_rel), "{}", text(&o));

    // predict on the folder: a row per file, the failed ones with their reason; exit 3.
    let o = artemis(&["predict", s(&run), s(&data), "--json"]);
    no_panic("predict", &o);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let mut messages = Vec::new();
    for r in doc["rows"].as_array().unwrap() {
        if let Some(e) = r["error"].as_str() {
            messages.push(format!("{}: {e}", r["input"].as_str().unwrap()));
        }
    }
    tally("predict", &file_cases, &messages, &mut outcome);
    // Every file used as valid has a classified row (not only no error message).
    let classified: std::collections::HashSet<String> = doc["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["class"].is_string())
        .map(|r| r["input"].as_str().unwrap().to_string())
        .collect();
    let used_cases: Vec<&Case> = file_cases
        .iter()
        .copied()
        .filter(|c| matches!(c.expect, Expect::Used))
        .collect();
    for c in &used_cases {
        let p = c.path.to_string_lossy().into_owned();
        assert!(
            classified.contains(&p),
            "predict: {} ({p}) has no classified row",
            c.kind
        );
    }
    // Predict names a FIFO given directly, without blocking on it.
    let fifo = data.join("glioma_coronal/pipe.png");
    let o = artemis(&["predict", s(&run), s(&fifo)]);
    no_panic("predict FIFO", &o);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));

    // A data set with one class: check and split work; train refuses with the reason.
    let one = tmp.path().join("one-class");
    fs::create_dir_all(one.join("glioma_coronal")).unwrap();
    for i in 0..8 {
        slice(0, i)
            .save(one.join(format!("glioma_coronal/{i}.png")))
            .unwrap();
    }
    let o = artemis(&["data", "check", s(&one)]);
    no_panic("data check (one class)", &o);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let m1 = tmp.path().join("one.tsv");
    let o = artemis(&[
        "data",
        "split",
        s(&one),
        "-o",
        s(&m1),
        "--val-fraction",
        "0.25",
        "--test-fraction",
        "0.25",
    ]);
    no_panic("data split (one class)", &o);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let run1 = tmp.path().join("run1");
    let o = artemis(&baseline_args(&m1, &run1, "96", "1", &[]));
    no_panic("train (one class)", &o);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("single class (glioma_coronal)"),
        "{}",
        text(&o)
    );
    outcome.insert("one-class data set (train refuses)".into(), [0, 1]);

    // No class folders at all, and only empty class folders: a clear error, exit 1.
    let none = tmp.path().join("none");
    fs::create_dir_all(none.join("cats")).unwrap();
    let empty = tmp.path().join("empty-classes");
    fs::create_dir_all(empty.join("glioma_coronal")).unwrap();
    for (root, phrase) in [(&none, "no class folders"), (&empty, "no image files")] {
        for cmd in [&["data", "check"][..], &["data", "split"][..]] {
            let mut args = cmd.to_vec();
            args.push(s(root));
            let out = tmp.path().join("x.tsv");
            if cmd[1] == "split" {
                args.extend(["-o", s(&out)]);
            }
            let o = artemis(&args);
            no_panic("empty data set", &o);
            assert_eq!(o.status.code(), Some(1), "{}", text(&o));
            assert!(
                text(&o).contains(phrase) && text(&o).contains(s(root)),
                "{}",
                text(&o)
            );
        }
    }
    outcome.insert("no class folders / only empty ones".into(), [0, 2]);

    let total: usize = outcome.values().map(|v| v[0] + v[1]).sum();
    eprintln!(
        "bad-input corpus: {} cases ({} used as valid, {} skipped with a reason)",
        cases.len(),
        used,
        cases.len() - used
    );
    for (what, [u, k]) in &outcome {
        eprintln!("  {what:<40} used {u:>3}  skipped with message {k:>3}");
    }
    eprintln!("  {total} outcomes checked, 0 panics");
}

/// A JPEG cut in the middle of its scan.
fn full_truncated_jpeg() -> Vec<u8> {
    let j = jpeg(&grey(0, 50));
    j[..j.len() / 2].to_vec()
}
