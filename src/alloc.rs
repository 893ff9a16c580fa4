//! The binary's allocator and its one setting: mimalloc, and training's choice to keep the
//! memory it frees committed.

/// mimalloc instead of glibc's allocator. glibc returns every freed block over its mmap
/// threshold (32 MB at most) to the OS, so each training step faulted in fresh pages for its
/// large activations and gradients, which cost about as much as the kernels: MobileNetV2 at
/// 160 px, batch 32 (`artemis bench --train-only`), trained at 14.2 and 12.1 images/s with
/// glibc against 17.1 and 14.9 with mimalloc, in two alternating runs of the two builds.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (`mimalloc.h` v2, the version libmimalloc-sys 0.1.49
/// builds by default; its Rust bindings name no constant for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keeps memory that training frees committed for reuse instead of returning it to the OS
/// after mimalloc's default 10 ms: each step frees and allocates the same large activation
/// and gradient buffers, and re-faulting them cost the kernel's page zeroing (15% of a
/// short profile of MobileNetV2 training at 160 px). `main` calls it for the commands that
/// train (`Command::keeps_freed_memory`); a long-lived server keeps the default, so what it
/// frees goes back to the OS. An explicit `MIMALLOC_PURGE_DELAY` in the environment is left
/// to rule.
#[allow(unsafe_code)]
pub fn keep_freed_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: sets one integer option of the allocator (-1 is a documented value: "no purging
    // at all"). Called at the start of a command, on the main thread, before the command
    // starts any other thread, so no allocator call runs while the option is written.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) }
}
