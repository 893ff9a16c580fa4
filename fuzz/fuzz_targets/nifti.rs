//! NIfTI reading as predict and serve do it (header checks, voxel limit, gzip limit,
//! orientation, slicing), through the input layer, from bytes. Inputs that start with the gzip
//! magic are decompressed as `.nii.gz` are.
#![no_main]

use artemis_data::guard::skip_guarded_panics;
use artemis_data::input::{Format, InputOptions, open_bytes};
use libfuzzer_sys::fuzz_target;
use std::path::Path;
use std::sync::Once;

/// libFuzzer's hook aborts before any `catch_unwind` can act; a panic inside the `nifti` crate
/// comes back as an error naming the file, so that hook is kept for every other panic only.
static HOOK: Once = Once::new();

fuzz_target!(|data: &[u8]| {
    HOOK.call_once(|| skip_guarded_panics(std::panic::take_hook()));
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
