//! JPEG/PNG decoding as every command does it: header check against the pixel limit, decode,
//! EXIF orientation, resize to a network input. Any panic that escapes, abort or runaway
//! allocation is a bug.
#![no_main]

use artemis_data::guard::skip_guarded_panics;
use artemis_data::image_io::{ResizeMode, decode_rgb, resize_rgb};
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    // libFuzzer aborts on any panic; those the decoder guard turns into errors go on.
    skip_guarded_panics();
    // 4 megapixels: enough for any real slice, small enough that libFuzzer's memory limit
    // is never the first thing to trip.
    if let Ok(img) = decode_rgb(data, Path::new("fuzz-input"), 1 << 22) {
        let out = resize_rgb(&img, 32, 24, ResizeMode::KeepAspect);
        assert_eq!(out.dimensions(), (32, 24));
    }
});
