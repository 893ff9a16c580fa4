//! DICOM reading as predict and serve do it (file meta, pixel limit, pixel data decoding,
//! windowing) from bytes, with `decode_dicom` as the input layer calls it.
#![no_main]

use artemis_data::dicom::{DicomOptions, decode_dicom};
use artemis_data::guard::skip_guarded_panics;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    // libFuzzer aborts on any panic; those the decoder guard turns into errors go on.
    skip_guarded_panics();
    let opts = DicomOptions {
        max_pixels: 1 << 22,
        identifiers: true,
    };
    if let Ok(d) = decode_dicom(data.to_vec(), Path::new("fuzz.dcm"), &opts) {
        for f in &d.frames {
            assert!(f.image.width() > 0 && f.image.height() > 0);
        }
    }
});
