//! DICOM reading as predict does it (file meta, pixel limit, pixel data decoding, windowing).
//! The input is written to a file because the reader takes a path, as the commands do.
#![no_main]

use artemis_data::dicom::{DicomOptions, read_dicom};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = std::env::temp_dir().join(format!("artemis-fuzz-{}.dcm", std::process::id()));
    if std::fs::write(&path, data).is_err() {
        return;
    }
    let opts = DicomOptions {
        max_pixels: 1 << 22,
        identifiers: true,
    };
    if let Ok(d) = read_dicom(&path, &opts) {
        for f in &d.frames {
            assert!(f.image.width() > 0 && f.image.height() > 0);
        }
    }
});
