//! Decoders written by others meeting hostile bytes: a panic inside one becomes an error for
//! that file, so that one file never ends a run over thousands.
//!
//! A panic hook still runs before the unwind is caught; [`in_guarded_decode`] lets a hook
//! (the binary's, the fuzz targets') leave these panics unprinted, since the error that
//! follows names the file and carries the panic's message.

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};

thread_local! {
    /// Whether this thread is inside [`catch_panic`].
    static GUARDED: Cell<bool> = const { Cell::new(false) };
}

/// Whether the current thread is decoding inside [`catch_panic`].
pub fn in_guarded_decode() -> bool {
    GUARDED.with(Cell::get)
}

/// Wraps the current panic hook (the first call only; later calls do nothing) so that it runs
/// for every panic except those [`catch_panic`] is about to turn into an error. The binary
/// calls it at start; a fuzz target calls it on each input, after libFuzzer has installed its
/// aborting hook.
pub fn skip_guarded_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let other = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !in_guarded_decode() {
                other(info)
            }
        }));
    });
}

/// `decode()`, or the message of the panic that ended it.
pub(crate) fn catch_panic<T>(decode: impl FnOnce() -> T) -> Result<T, String> {
    let outer = GUARDED.with(|g| g.replace(true));
    let run = catch_unwind(AssertUnwindSafe(decode));
    GUARDED.with(|g| g.set(outer));
    run.map_err(|panic| {
        let what = (panic.downcast_ref::<String>().map(String::as_str))
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("no message");
        what.to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_comes_back_as_its_message_and_the_flag_is_reset() {
        assert!(!in_guarded_decode());
        let inside = catch_panic(in_guarded_decode).unwrap();
        assert!(inside);
        let out: Result<(), String> = catch_panic(|| panic!("index {} out of range", 120));
        assert_eq!(out.unwrap_err(), "index 120 out of range");
        assert!(!in_guarded_decode());
        assert_eq!(catch_panic(|| 7).unwrap(), 7);
    }
}
