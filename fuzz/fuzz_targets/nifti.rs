//! NIfTI reading as predict and serve do it (header checks, voxel limit, gzip limit,
//! orientation, slicing), through the input layer, from bytes. Inputs that start with the gzip
//! magic are decompressed as `.nii.gz` are.
#![no_main]

use artemis_data::guard::skip_guarded_panics;
use artemis_data::input::{Format, InputOptions, open_bytes};
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    // libFuzzer aborts on any panic; those the decoder guard turns into errors go on.
    skip_guarded_panics();
    let opts = InputOptions {
        max_pixels: 1 << 16, // 64 times as many voxels: 1 << 22
        ..InputOptions::default()
    };
    if let Ok(o) = open_bytes(data.to_vec(), Path::new("fuzz.nii"), &opts) {
        assert_eq!(o.format, Format::Nifti);
        let v = o.volume.expect("a volume's geometry");
        assert!(v.dims.iter().all(|&d| d > 0));
        for p in &o.pictures {
            assert!(p.image.width() > 0 && p.image.height() > 0);
        }
    }
});
