//! Output buffers that are not zeroed before a kernel writes them.
//!
//! `vec![0.0; len]` on memory the allocator hands back (training frees and reallocates the
//! same large buffers every step) is a `memset` over the whole buffer, a write pass through
//! main memory that the kernel then reads back cold: 3.3% of the samples of a MobileNetV2
//! training profile at 160 px. Here a buffer is handed out in chunks (an image, a plane) of
//! `MaybeUninit<f32>`, and each chunk must come back initialised: as the `&mut [f32]` that
//! one of this file's initialisers (or `gemm.rs`'s `gemm_into`) returns for that very
//! chunk. Safe code cannot make such a slice without writing every element, so a buffer
//! whose chunks all came back is initialised; a chunk returned as any other slice panics.
//! Where a kernel accumulates into its output, the chunk is zeroed while it is in cache.
//!
//! In builds with debug assertions (the tests) every element starts as NaN, so a kernel
//! that skipped an element through a future unsafe path would fail its tests against burn.
#![allow(unsafe_code)]

use rayon::prelude::*;
use std::mem::MaybeUninit;

/// A chunk's memory, viewed as the floats an initialiser just wrote.
///
/// # Safety
/// Every element of `s` must be initialised.
unsafe fn written(s: &mut [MaybeUninit<f32>]) -> &mut [f32] {
    // SAFETY: `MaybeUninit<f32>` has the layout of `f32`, and the caller guarantees that
    // every element is initialised; the borrow is carried over.
    unsafe { &mut *(s as *mut [MaybeUninit<f32>] as *mut [f32]) }
}

/// A vector of `len` floats (`len` a multiple of `chunk`, or the last chunk shorter),
/// chunk `i` initialised by `init(scratch, i, chunk)` in parallel, with one `scratch` per
/// rayon task, as `for_each_init` makes them.
///
/// # Panics
/// If `init` returns a slice other than the chunk it was handed.
pub(crate) fn par_init<T>(
    len: usize,
    chunk: usize,
    scratch: impl Fn() -> T + Sync + Send,
    init: impl for<'a> Fn(&mut T, usize, &'a mut [MaybeUninit<f32>]) -> &'a mut [f32] + Sync + Send,
) -> Vec<f32> {
    let mut buf: Box<[MaybeUninit<f32>]> = Box::new_uninit_slice(len);
    if cfg!(debug_assertions) {
        buf.iter_mut().for_each(|v| {
            v.write(f32::NAN);
        });
    }
    let done: usize = buf
        .par_chunks_mut(chunk.max(1))
        .enumerate()
        .map_init(scratch, |s, (i, c)| {
            let (at, n) = (c.as_ptr() as usize, c.len());
            let out = init(s, i, c);
            assert!(
                out.as_ptr() as usize == at && out.len() == n,
                "par_init: chunk {i} was not returned initialised"
            );
            n
        })
        .sum();
    assert_eq!(done, len, "par_init: chunks missing");
    // SAFETY: every chunk was returned as the `&mut [f32]` of its own memory, which safe
    // code can only make by initialising it (checked above: same address and length), and
    // the chunks cover the buffer.
    unsafe { buf.assume_init() }.into_vec()
}

/// `s` filled with `v`.
#[inline(always)]
pub(crate) fn init_fill(s: &mut [MaybeUninit<f32>], v: f32) -> &mut [f32] {
    s.iter_mut().for_each(|d| {
        d.write(v);
    });
    // SAFETY: every element was written just above.
    unsafe { written(s) }
}

/// `s` zeroed (a chunk that a kernel accumulates into, zeroed while it is in cache).
#[inline(always)]
pub(crate) fn init_zeros(s: &mut [MaybeUninit<f32>]) -> &mut [f32] {
    init_fill(s, 0.0)
}

/// `s[i] = f(src[i])`.
///
/// # Panics
/// If the lengths differ.
#[inline(always)]
pub(crate) fn init_map<'a>(
    s: &'a mut [MaybeUninit<f32>],
    src: &[f32],
    f: impl Fn(f32) -> f32,
) -> &'a mut [f32] {
    assert_eq!(s.len(), src.len(), "init_map: lengths differ");
    for (d, x) in s.iter_mut().zip(src) {
        d.write(f(*x));
    }
    // SAFETY: `s` and `src` have the same length, so the loop wrote every element of `s`.
    unsafe { written(s) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_come_back_initialised() {
        let v = par_init(10, 4, || (), |_, i, c| init_fill(c, i as f32));
        assert_eq!(v, [0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 2.0, 2.0]);
        let src: Vec<f32> = (0..6).map(|i| i as f32).collect();
        let v = par_init(
            6,
            3,
            || (),
            |_, i, c| init_map(c, &src[i * 3..][..3], |x| 2.0 * x),
        );
        assert_eq!(v, [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
    }

    #[test]
    #[should_panic(expected = "was not returned initialised")]
    fn a_chunk_returned_in_part_is_refused() {
        par_init(8, 4, || (), |_, _, c| &mut init_zeros(c)[..2]);
    }
}
