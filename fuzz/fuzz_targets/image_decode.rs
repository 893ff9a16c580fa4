//! JPEG/PNG decoding as every command does it: header check against the pixel limit, decode,
//! EXIF orientation, resize to a network input. Any panic that escapes, abort or runaway
//! allocation is a bug.
#![no_main]

use artemis_data::image_io::{ResizeMode, decode_rgb, in_guarded_decode, resize_rgb};
use libfuzzer_sys::fuzz_target;
use std::path::Path;
use std::sync::Once;

/// libfuzzer-sys installs a panic hook that aborts at once, before any `catch_unwind` can act.
/// `decode_rgb` deliberately catches a panic inside `image`'s decoder (a dependency meeting
/// hostile bytes) and reports the file instead, so the hook here lets exactly those go on
/// unwinding (`in_guarded_decode`) and aborts on every other panic, as libfuzzer-sys's does.
static HOOK: Once = Once::new();

fuzz_target!(|data: &[u8]| {
    HOOK.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            if !in_guarded_decode() {
                eprintln!("{info}");
                std::process::abort();
            }
        }))
    });
    // 4 megapixels: enough for any real slice, small enough that libFuzzer's memory limit
    // is never the first thing to trip.
    if let Ok(img) = decode_rgb(data, Path::new("fuzz-input"), 1 << 22) {
        let out = resize_rgb(&img, 32, 24, ResizeMode::KeepAspect);
        assert_eq!(out.dimensions(), (32, 24));
    }
});
