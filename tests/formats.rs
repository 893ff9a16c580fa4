//! DICOM and NIfTI input: files the tests write themselves with dicom-rs and the `nifti`
//! crate (several photometric interpretations and bit depths, rescale and window, a
//! multi-frame file, a JPEG-compressed file, volumes in several orientations), read through
//! the library and predicted on through the CLI; and a corpus of broken files that must give a
//! clear error naming the file, never a panic.

#![allow(clippy::unwrap_used)] // tests may panic on broken fixtures

use artemis_data::dicom::{DicomOptions, Windowing, read_dicom, window_linear};
use artemis_data::labels::Plane;
use artemis_data::volume::{SliceAxis, VolumeOptions, read_volume};
use dicom_dictionary_std::uids;
use std::fs;
use std::path::Path;

mod common;
use common::formats::{Dicom, Pixels, write_dicom, write_nifti};
use common::*;

const OPTS: DicomOptions = DicomOptions {
    max_pixels: 10_000_000,
    identifiers: false,
};

/// A horizontal ramp: value = x * scale + offset.
fn ramp<T>(w: usize, h: usize, f: impl Fn(usize) -> T) -> Vec<T> {
    (0..h).flat_map(|_| (0..w).map(&f)).collect::<Vec<T>>()
}

fn grey(img: &image::RgbImage, x: u32, y: u32) -> u8 {
    img.get_pixel(x, y).0[0]
}

#[test]
fn dicom_photometric_interpretations_bit_depths_and_frames() {
    let tmp = tempfile::tempdir().unwrap();
    let p = |n: &str| tmp.path().join(n);

    // MONOCHROME2, 8 bit, no window: percentile window, dark left, bright right.
    write_dicom(
        &p("m2.dcm"),
        Dicom {
            pixels: Pixels::U8(ramp(64, 64, |x| (x * 4) as u8)),
            ..Dicom::default()
        },
    );
    let d = read_dicom(&p("m2.dcm"), &OPTS).unwrap();
    assert_eq!(
        (d.frames.len(), d.photometric.as_str(), d.bits_stored),
        (1, "MONOCHROME2", 8)
    );
    let f = &d.frames[0];
    assert!(matches!(f.windowing, Windowing::Percentile { .. }));
    assert!(grey(&f.image, 0, 10) < 10 && grey(&f.image, 63, 10) > 245);
    assert!(d.identifiers.is_none());

    // MONOCHROME1, 16 bit: the same ramp is shown inverted (low values white).
    write_dicom(
        &p("m1.dcm"),
        Dicom {
            photometric: "MONOCHROME1",
            bits: 16,
            pixels: Pixels::U16(ramp(64, 64, |x| (x * 1000) as u16)),
            ..Dicom::default()
        },
    );
    let d = read_dicom(&p("m1.dcm"), &OPTS).unwrap();
    let f = &d.frames[0].image;
    assert!(
        grey(f, 0, 5) > 245 && grey(f, 63, 5) < 10,
        "MONOCHROME1 not inverted"
    );

    // 12-bit-like data in 16 bits with rescale slope/intercept and a window: every pixel is
    // window_linear(stored * slope + intercept).
    write_dicom(
        &p("rescale.dcm"),
        Dicom {
            bits: 16,
            rescale: Some((2.0, -1000.0)),
            window: Some((40.0, 400.0)),
            pixels: Pixels::U16(ramp(64, 64, |x| (300 + x * 5) as u16)),
            ..Dicom::default()
        },
    );
    let d = read_dicom(&p("rescale.dcm"), &OPTS).unwrap();
    assert_eq!(
        d.frames[0].windowing,
        Windowing::File {
            center: 40.0,
            width: 400.0
        }
    );
    for x in [0u32, 20, 40, 63] {
        let hu = f64::from(300 + x * 5) * 2.0 - 1000.0;
        assert_eq!(
            grey(&d.frames[0].image, x, 3),
            window_linear(hu, 40.0, 400.0),
            "x={x}"
        );
    }

    // Signed 16 bit with negative values, no window: min black, max white.
    write_dicom(
        &p("signed.dcm"),
        Dicom {
            bits: 16,
            signed: true,
            pixels: Pixels::I16(ramp(64, 64, |x| (x as i16 - 32) * 100)),
            ..Dicom::default()
        },
    );
    let d = read_dicom(&p("signed.dcm"), &OPTS).unwrap();
    assert!(grey(&d.frames[0].image, 0, 0) < 5 && grey(&d.frames[0].image, 63, 0) > 250);

    // RGB, 8 bit: colours kept.
    write_dicom(
        &p("rgb.dcm"),
        Dicom {
            photometric: "RGB",
            samples: 3,
            pixels: Pixels::U8((0..64 * 64).flat_map(|_| [200u8, 30, 90]).collect()),
            ..Dicom::default()
        },
    );
    let d = read_dicom(&p("rgb.dcm"), &OPTS).unwrap();
    assert_eq!(d.frames[0].image.get_pixel(5, 5).0, [200, 30, 90]);
    assert_eq!(d.frames[0].windowing, Windowing::Colour);

    // Multi-frame: three frames, three pictures, each its own.
    let frames: Vec<u8> = (0..3u8)
        .flat_map(|k| {
            ramp(64, 64, move |x| {
                if x < 20 * (usize::from(k) + 1) {
                    250
                } else {
                    10
                }
            })
        })
        .collect();
    write_dicom(
        &p("multi.dcm"),
        Dicom {
            frames: 3,
            pixels: Pixels::U8(frames),
            ..Dicom::default()
        },
    );
    let d = read_dicom(&p("multi.dcm"), &OPTS).unwrap();
    assert_eq!(d.frames.len(), 3);
    let bright = |i: usize| {
        (0..64)
            .filter(|&x| grey(&d.frames[i].image, x, 1) > 128)
            .count()
    };
    assert_eq!((bright(0), bright(1), bright(2)), (20, 40, 60));

    // JPEG baseline (compressed transfer syntax): decodes close to the source.
    let src = image::GrayImage::from_fn(64, 64, |x, _| image::Luma([(x * 4) as u8]));
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 95)
        .encode_image(&src)
        .unwrap();
    write_dicom(
        &p("jpeg.dcm"),
        Dicom {
            transfer_syntax: uids::JPEG_BASELINE8_BIT,
            pixels: Pixels::Encapsulated(vec![jpeg]),
            ..Dicom::default()
        },
    );
    let d = read_dicom(&p("jpeg.dcm"), &OPTS).unwrap();
    assert_eq!(d.transfer_syntax, uids::JPEG_BASELINE8_BIT);
    let f = &d.frames[0].image;
    assert!(grey(f, 2, 30) < 30 && grey(f, 61, 30) > 225);

    // Identifiers only when asked.
    let d = read_dicom(
        &p("m2.dcm"),
        &DicomOptions {
            identifiers: true,
            ..OPTS
        },
    )
    .unwrap();
    let ids = d.identifiers.unwrap();
    assert_eq!(ids.patient_id.as_deref(), Some("SECRET-123"));
    assert_eq!(ids.patient_name.as_deref(), Some("Doe^Jane"));
}

/// `data[[i, j, k]]`: 10 everywhere but a bright cube of side 4 from voxel `at` (so the
/// robust window maps the background to black and the cube to white).
fn volume_with_marker(n: [usize; 3], at: [usize; 3]) -> ndarray::Array3<f32> {
    ndarray::Array3::from_shape_fn((n[0], n[1], n[2]), |(i, j, k)| {
        let inside = (0..3).all(|a| {
            let v = [i, j, k][a];
            v >= at[a] && v < at[a] + 4
        });
        if inside { 1000.0 } else { 10.0 }
    })
}

fn bright_centre(img: &image::RgbImage) -> (f32, f32) {
    let (mut sx, mut sy, mut n) = (0.0, 0.0, 0.0);
    for (x, y, p) in img.enumerate_pixels() {
        if p.0[0] > 200 {
            sx += x as f32;
            sy += y as f32;
            n += 1.0;
        }
    }
    assert!(n > 0.0, "marker not visible");
    (sx / n, sy / n)
}

#[test]
fn nifti_axes_orientation_ranges_and_gzip() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = |axis| VolumeOptions {
        axis,
        range: None,
        max_voxels: 100_000_000,
    };
    // RAS identity: i = x (to the patient's right), j = y (anterior), k = z (superior).
    // Marker at high i (right) and high j (anterior), in slice k = 10..14.
    let n = [40, 30, 20];
    let data = volume_with_marker(n, [34, 24, 10]);
    let ras = [
        [1.0, 0.0, 0.0, 0.0],
        [0.0, 1.0, 0.0, 0.0],
        [0.0, 0.0, 1.0, 0.0],
    ];
    for name in ["ras.nii", "ras.nii.gz"] {
        let path = tmp.path().join(name);
        write_nifti(&path, &data, ras);
        let v = read_volume(&path, &opts(SliceAxis::Auto)).unwrap();
        assert_eq!(
            (v.dims, v.axis, v.plane),
            ([40, 30, 20], 2, Some(Plane::Transverse))
        );
        assert_eq!(v.orientation, "sform");
        assert_eq!(v.slices.len(), 20);
        let s = &v.slices[11].image;
        assert_eq!(s.dimensions(), (40, 30));
        // Radiological display: the patient's right on the image's left, anterior at the top.
        let (cx, cy) = bright_centre(s);
        assert!(cx < 8.0 && cy < 8.0, "marker at ({cx}, {cy})");
        assert!(v.slices[0].image.pixels().all(|p| p.0[0] < 200));
    }
    // Coronal and sagittal cuts of the same volume.
    let path = tmp.path().join("ras.nii");
    let v = read_volume(&path, &opts(SliceAxis::Plane(Plane::Coronal))).unwrap();
    assert_eq!(
        (v.axis, v.slices.len(), v.slices[0].image.dimensions()),
        (1, 30, (40, 20))
    );
    let (cx, cy) = bright_centre(&v.slices[25].image);
    assert!(
        cx < 8.0 && (cy - 7.5).abs() < 3.0,
        "coronal marker at ({cx}, {cy})"
    ); // superior at the top: k 10..14 of 20 -> rows 6..9
    let v = read_volume(&path, &opts(SliceAxis::Plane(Plane::Sagittal))).unwrap();
    assert_eq!((v.axis, v.slices[0].image.dimensions()), (0, (30, 20)));
    // A range.
    let v = read_volume(
        &path,
        &VolumeOptions {
            range: Some((5, 8)),
            ..opts(SliceAxis::Voxel(2))
        },
    )
    .unwrap();
    assert_eq!(
        v.slices.iter().map(|s| s.index).collect::<Vec<_>>(),
        vec![5, 6, 7]
    );
    // Permuted axes: i runs inferior (-z), j runs right (+x), k runs anterior (+y).
    // Auto picks voxel axis i for transverse slices.
    let perm = [
        [0.0, 1.0, 0.0, 0.0],
        [0.0, 0.0, 1.0, 0.0],
        [-1.0, 0.0, 0.0, 0.0],
    ];
    let pdata = volume_with_marker([20, 40, 30], [6, 34, 24]);
    let ppath = tmp.path().join("perm.nii.gz");
    write_nifti(&ppath, &pdata, perm);
    let v = read_volume(&ppath, &opts(SliceAxis::Auto)).unwrap();
    assert_eq!((v.axis, v.plane), (0, Some(Plane::Transverse)));
    let s = &v.slices[7].image;
    assert_eq!(s.dimensions(), (40, 30));
    let (cx, cy) = bright_centre(s);
    assert!(cx < 8.0 && cy < 8.0, "permuted marker at ({cx}, {cy})");
}

#[test]
fn broken_dicom_and_nifti_files_give_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let good = tmp.path().join("good.dcm");
    write_dicom(
        &good,
        Dicom {
            pixels: Pixels::U8(ramp(64, 64, |x| x as u8)),
            ..Dicom::default()
        },
    );
    let bytes = fs::read(&good).unwrap();
    let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
    for cut in [0, 10, 131, 132, 200, 300, bytes.len() / 2, bytes.len() - 1] {
        cases.push((format!("cut{cut}.dcm"), bytes[..cut].to_vec()));
    }
    let mut garbage = vec![0u8; 128];
    garbage.extend_from_slice(b"DICM");
    garbage.extend((0..500u32).map(|i| (i * 7919 % 251) as u8));
    cases.push(("garbage.dcm".into(), garbage));
    let mut n = 0;
    for (name, b) in &cases {
        let p = tmp.path().join(name);
        fs::write(&p, b).unwrap();
        match read_dicom(&p, &OPTS) {
            Err(e) => {
                assert!(e.to_string().contains(name.as_str()), "{e}");
                n += 1;
            }
            Ok(_) => panic!("{name} was accepted"),
        }
    }
    // No pixel data; too few pixels for the size; over the pixel limit.
    let nopix = tmp.path().join("nopix.dcm");
    {
        use dicom_core::{DataElement, PrimitiveValue, VR};
        use dicom_dictionary_std::tags;
        let mut o = dicom_object::InMemDicomObject::new_empty();
        o.put(DataElement::new(
            tags::SOP_CLASS_UID,
            VR::UI,
            PrimitiveValue::from(uids::MR_IMAGE_STORAGE),
        ));
        o.put(DataElement::new(
            tags::SOP_INSTANCE_UID,
            VR::UI,
            PrimitiveValue::from("2.25.9"),
        ));
        o.put(DataElement::new(
            tags::ROWS,
            VR::US,
            PrimitiveValue::from(8u16),
        ));
        o.put(DataElement::new(
            tags::COLUMNS,
            VR::US,
            PrimitiveValue::from(8u16),
        ));
        o.with_meta(
            dicom_object::FileMetaTableBuilder::new()
                .transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN),
        )
        .unwrap()
        .write_to_file(&nopix)
        .unwrap();
    }
    let e = read_dicom(&nopix, &OPTS).unwrap_err().to_string();
    assert!(
        e.contains("nopix.dcm") && e.contains("no pixel data"),
        "{e}"
    );
    let short = tmp.path().join("short.dcm");
    write_dicom(
        &short,
        Dicom {
            rows: 64,
            cols: 64,
            pixels: Pixels::U8(vec![1; 100]),
            ..Dicom::default()
        },
    );
    let e = read_dicom(&short, &OPTS).unwrap_err().to_string();
    assert!(e.contains("short.dcm"), "{e}");
    let big = tmp.path().join("big.dcm");
    write_dicom(
        &big,
        Dicom {
            rows: 60000,
            cols: 60000,
            pixels: Pixels::U8(vec![1; 16]),
            ..Dicom::default()
        },
    );
    let e = read_dicom(&big, &OPTS).unwrap_err().to_string();
    assert!(e.contains("big.dcm") && e.contains("over the limit"), "{e}");
    n += 3;

    // NIfTI: truncated, garbage, impossible dimensions, 4-D with several time points.
    let vol = tmp.path().join("v.nii");
    write_nifti(
        &vol,
        &volume_with_marker([16, 16, 8], [2, 2, 2]),
        [
            [1.0, 0.0, 0.0, 0.0],
            [0.0, 1.0, 0.0, 0.0],
            [0.0, 0.0, 1.0, 0.0],
        ],
    );
    let vb = fs::read(&vol).unwrap();
    let opts = VolumeOptions {
        axis: SliceAxis::Auto,
        range: None,
        max_voxels: 100_000_000,
    };
    let mut bad_volumes: Vec<(String, Vec<u8>)> = vec![
        ("empty.nii".into(), vec![]),
        ("header-only.nii".into(), vb[..300].to_vec()),
        ("half.nii".into(), vb[..vb.len() / 2].to_vec()),
        ("garbage.nii.gz".into(), b"\x1f\x8bnot really gzip".to_vec()),
    ];
    let mut huge = vb.clone();
    huge[42..44].copy_from_slice(&30000u16.to_le_bytes()); // dim[1]
    bad_volumes.push(("huge.nii".into(), huge));
    let mut zero = vb.clone();
    zero[44..46].copy_from_slice(&0u16.to_le_bytes()); // dim[2]
    bad_volumes.push(("zero.nii".into(), zero));
    let mut four = vb.clone();
    four[40..42].copy_from_slice(&4u16.to_le_bytes()); // dim[0]
    four[48..50].copy_from_slice(&3u16.to_le_bytes()); // dim[4] = 3 time points
    bad_volumes.push(("4d.nii".into(), four));
    for (name, b) in &bad_volumes {
        let p = tmp.path().join(name);
        fs::write(&p, b).unwrap();
        let e = read_volume(&p, &opts).map(|_| ()).unwrap_err().to_string();
        assert!(e.contains(name.as_str()), "{name}: {e}");
        n += 1;
    }
    eprintln!("broken-file corpus: {n} cases, {n} clear errors, 0 panics");
}

#[test]
fn predict_on_dicom_and_nifti_with_heat_maps_and_tta() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    make_dataset(&data);
    let manifest = tmp.path().join("m.tsv");
    split(&data, &manifest, "2", &[]);
    let run = tmp.path().join("run");
    train_baseline(&manifest, &run, "128", "1", &[]);

    let inputs = tmp.path().join("scans");
    fs::create_dir_all(&inputs).unwrap();
    let slice = slice(1, 3);
    let grey8: Vec<u8> = slice.pixels().map(|p| p.0[0]).collect();
    write_dicom(
        &inputs.join("single.dcm"),
        Dicom {
            rows: 110,
            cols: 120,
            pixels: Pixels::U8(grey8.clone()),
            ..Dicom::default()
        },
    );
    write_dicom(
        &inputs.join("cine"), // no extension: recognised by its DICM magic
        Dicom {
            rows: 110,
            cols: 120,
            frames: 2,
            pixels: Pixels::U8([grey8.clone(), grey8].concat()),
            ..Dicom::default()
        },
    );
    let vol = volume_with_marker([48, 40, 6], [10, 10, 2]);
    write_nifti(
        &inputs.join("head.nii.gz"),
        &vol,
        [
            [1.0, 0.0, 0.0, 0.0],
            [0.0, 1.0, 0.0, 0.0],
            [0.0, 0.0, 1.0, 0.0],
        ],
    );
    slice.save(inputs.join("plain.png")).unwrap();
    fs::write(inputs.join("broken.dcm"), b"not a dicom file at all").unwrap();
    let heat = tmp.path().join("heat");
    let o = artemis(&[
        "predict",
        s(&run),
        s(&inputs),
        "--json",
        "--explain",
        s(&heat),
        "--tta",
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        !out.contains("SECRET-123") && !out.contains("Doe^Jane"),
        "identifiers leaked"
    );
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["schema"], "artemis.predict/2");
    let rows = doc["rows"].as_array().unwrap();
    // single (1) + cine (2 frames) + 6 slices + plain (1) + broken (error row).
    assert_eq!(rows.len(), 11, "{rows:?}");
    let frames: Vec<u64> = rows
        .iter()
        .filter(|r| r["input"].as_str().unwrap().ends_with("cine"))
        .map(|r| r["frame"].as_u64().unwrap())
        .collect();
    assert_eq!(frames, vec![0, 1]);
    let slices: Vec<u64> = rows.iter().filter_map(|r| r["slice"].as_u64()).collect();
    assert_eq!(slices, (0..6).collect::<Vec<u64>>());
    let ok: Vec<&serde_json::Value> = rows.iter().filter(|r| r["error"].is_null()).collect();
    assert_eq!(ok.len(), 10);
    for r in &ok {
        assert_eq!(r["tta"], true);
        let h = Path::new(r["heatmap"].as_str().unwrap());
        assert!(h.starts_with(&heat) && h.exists(), "{h:?}");
        let img = image::open(h).unwrap().to_rgb8();
        assert!(img.width() >= 256);
        assert!(r["identifiers"].is_null());
    }
    let err = rows.iter().find(|r| !r["error"].is_null()).unwrap();
    assert!(err["error"].as_str().unwrap().contains("broken.dcm"));
    assert_eq!(fs::read_dir(&heat).unwrap().count(), 10);
    let vols = doc["volumes"].as_array().unwrap();
    assert_eq!(vols.len(), 1);
    assert_eq!(vols[0]["slices"], 6);
    assert_eq!(vols[0]["plane"], "transverse");
    let counted: u64 = vols[0]["class_counts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c[1].as_u64().unwrap())
        .sum();
    assert_eq!(counted, 6);
    assert!(!vols[0]["most_confident"].as_array().unwrap().is_empty());

    // Identifiers only on request; an unknown class to explain is refused by name.
    let o = artemis(&[
        "predict",
        s(&run),
        s(&inputs.join("single.dcm")),
        "--json",
        "--show-identifiers",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("SECRET-123"));
    let o = artemis(&[
        "predict",
        s(&run),
        s(&inputs.join("plain.png")),
        "--explain",
        s(&heat),
        "--explain-class",
        "kitten",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("kitten") && text(&o).contains("glioma_coronal"),
        "{}",
        text(&o)
    );
    // Table output names frames and slices.
    let o = artemis(&[
        "predict",
        s(&run),
        s(&inputs.join("cine")),
        s(&inputs.join("head.nii.gz")),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let t = String::from_utf8_lossy(&o.stdout);
    assert!(
        t.contains("[frame 1]") && t.contains("[slice 5]") && t.contains("volume "),
        "{t}"
    );
}
