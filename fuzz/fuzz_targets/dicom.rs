//! DICOM reading as predict and serve do it (file meta, pixel limit, pixel data decoding,
//! windowing) from bytes, with `decode_dicom` as the input layer calls it.
#![no_main]

use artemis_data::dicom::{DicomOptions, decode_dicom};
use artemis_data::guard::skip_guarded_panics;
use libfuzzer_sys::fuzz_target;
use std::path::Path;
use std::sync::Once;

/// libfuzzer-sys's panic hook aborts at once, before any `catch_unwind` can act;
/// `decode_dicom` turns a panic inside a pixel data decoder into an error naming the file, so
/// that hook is kept for every other panic only.
static HOOK: Once = Once::new();

fuzz_target!(|data: &[u8]| {
    HOOK.call_once(|| skip_guarded_panics(std::panic::take_hook()));
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
