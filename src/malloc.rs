//! Tuning glibc's allocator for a long-running console holding a large fleet in memory.
//!
//! glibc gives each thread that allocates its own arena and keeps what each one freed; the
//! console's threads (runtime workers, one per SQLite connection) all allocate. At 100,000 agents
//! the extra arenas held a fifth of the memory: 84 MiB resident after heartbeats with the default,
//! 63 MiB with one arena, with no less throughput (requests mostly allocate on the two runtime
//! workers anyway). mimalloc was tried instead and measured worse (88 MiB).
//!
//! Blocks of 64 KiB and more get their own mapping, returned to the system when freed. glibc
//! starts at 128 KiB and raises the limit each time such a block is freed (up to 32 MiB), after
//! which the big transient buffers (a group commit's JSON, the snapshot's batches) come from the
//! heap and stay there: under heartbeats right after enrollment the peak was 73 MiB with the moving
//! limit and 67 MiB with it fixed at 64 KiB, and the idle console 58 against 53 MiB.
//!
//! Bursts (a group commit of every agent after a restart) still leave free memory inside the heap
//! that glibc keeps; [`trim`] hands it back. Elsewhere than glibc these are no-ops.
#![allow(unsafe_code)]

/// One malloc arena for the whole process, and big blocks mapped on their own. Call first thing
/// in `main`, before any thread starts.
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; no other thread exists yet.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 * 1024);
    }
}

/// Returns the free pages inside the heap to the system.
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases memory the allocator holds free; callable from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}
