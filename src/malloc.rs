//! Tuning glibc's allocator for a long-running console holding a large fleet in memory.
//!
//! glibc gives each thread that allocates its own arena and keeps what each one freed; the
//! console's threads (runtime workers, one per SQLite connection) all allocate. At 100,000 agents
//! the extra arenas held a fifth of the memory: 84 MiB resident after heartbeats with the default,
//! 63 MiB with one arena, with no less throughput (requests mostly allocate on the two runtime
//! workers anyway). mimalloc was tried instead and measured worse (88 MiB). Bursts (a group commit
//! of every agent after a restart) leave free memory inside the heap that glibc keeps; [`trim`]
//! hands it back. Elsewhere than glibc both are no-ops.
#![allow(unsafe_code)]

/// One malloc arena for the whole process. Call first thing in `main`, before any thread starts.
pub fn one_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; no other thread exists yet.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
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
