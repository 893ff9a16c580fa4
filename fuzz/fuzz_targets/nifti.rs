//! NIfTI reading as predict does it (header checks, voxel limit, orientation, slicing). Inputs
//! that start with the gzip magic are read as `.nii.gz`.
#![no_main]

use artemis_data::volume::{SliceAxis, VolumeOptions, read_volume};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let ext = if data.starts_with(&[0x1f, 0x8b]) { "nii.gz" } else { "nii" };
    let path = std::env::temp_dir().join(format!("artemis-fuzz-{}.{ext}", std::process::id()));
    if std::fs::write(&path, data).is_err() {
        return;
    }
    let opts = VolumeOptions {
        axis: SliceAxis::Auto,
        range: None,
        max_voxels: 1 << 22,
    };
    if let Ok(v) = read_volume(&path, &opts) {
        assert!(v.dims.iter().all(|&d| d > 0));
        for s in &v.slices {
            assert!(s.image.width() > 0 && s.image.height() > 0);
        }
    }
});
