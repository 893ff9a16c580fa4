//! JPEG/PNG decoding as every command does it: header check against the pixel limit, decode,
//! EXIF orientation, resize to a network input. Any panic that escapes, abort or runaway
//! allocation is a bug.
#![no_main]

use artemis_data::guard::skip_guarded_panics;
use artemis_data::image_io::{ResizeMode, decode_rgb, resize_rgb};
use libfuzzer_sys::fuzz_target;
use std::path::Path;
use std::sync::Once;

/// libfuzzer-sys's panic hook aborts at once, before any `catch_unwind` can act. `decode_rgb`
/// deliberately turns a panic inside `image`'s decoder (others' code meeting hostile bytes)
/// into an error naming the file, so that hook is kept for every other panic only.
static HOOK: Once = Once::new();

fuzz_target!(|data: &[u8]| {
    HOOK.call_once(|| skip_guarded_panics(std::panic::take_hook()));
    // 4 megapixels: enough for any real slice, small enough that libFuzzer's memory limit
    // is never the first thing to trip.
    if let Ok(img) = decode_rgb(data, Path::new("fuzz-input"), 1 << 22) {
        let out = resize_rgb(&img, 32, 24, ResizeMode::KeepAspect);
        assert_eq!(out.dimensions(), (32, 24));
    }
});
