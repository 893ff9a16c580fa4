//! Runtime CPU-feature dispatch for the direct loops. A release build targets baseline
//! x86-64 (SSE2); `vectorized` runs its closure in a function compiled for AVX2 + FMA when
//! the CPU has them (pulp's `Arch`, the dispatch gemm itself uses), so the loops inside,
//! written as fixed-width lane arrays, vectorise 8 wide. Results do not change with the
//! dispatch: each lane sums the same elements in the same order.

/// Runs `f` with the widest instruction set this CPU offers. Loops inside must be inlined
/// into `f` (`#[inline(always)]` helpers) to benefit, and so must `f` itself: pass the
/// closure as `vectorized(#[inline(always)] || ...)`. Without the attribute a profile showed
/// the closures compiled as functions of their own, for baseline SSE2, outside the AVX2 one.
#[inline(always)]
pub(crate) fn vectorized<R>(f: impl FnOnce() -> R) -> R {
    pulp::Arch::new().dispatch(f)
}
