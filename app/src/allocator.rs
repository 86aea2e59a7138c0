//! How the process's allocator keeps memory between forward passes. A pass allocates and frees
//! buffers of megabytes in every layer (activations, attention, the host copies a trace keeps);
//! glibc's defaults hand many of them straight back to the system and fault them in again page
//! by page on the next layer. Measured with `headwise bench trace --device cpu --tokens 512`,
//! MiniLM with its attention materialised: 150–157 ms a pass by default, 78–92 ms with freed
//! memory kept, the same peak memory (246 and 247 MiB); SmolLM2: 777 → 627 ms.

/// Keeps freed memory for reuse: blocks up to 32 MiB come from the heap rather than their own
/// mappings, and up to 1 GiB freed at the heap's top stays there. The peak is unchanged; what
/// stays resident after a pass is at most that much more. Only glibc on Linux; elsewhere the
/// allocator's defaults stand.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // glibc's malloc.h: M_TRIM_THRESHOLD is -1, M_MMAP_THRESHOLD is -3.
        const M_TRIM_THRESHOLD: i32 = -1;
        const M_MMAP_THRESHOLD: i32 = -3;
        unsafe extern "C" {
            fn mallopt(param: i32, value: i32) -> i32;
        }
        // SAFETY: mallopt only sets two of the allocator's thresholds; called once at start,
        // before any thread is spawned.
        unsafe {
            mallopt(M_MMAP_THRESHOLD, 32 << 20);
            mallopt(M_TRIM_THRESHOLD, 1 << 30);
        }
    }
}
