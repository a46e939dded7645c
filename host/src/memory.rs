//! Handing memory the allocator keeps but no longer uses back to the OS.
//!
//! mimalloc purges freed pages lazily, only when a later allocation or free
//! passes by after its purge delay; a server that goes quiet never passes by,
//! so the start-up's transient memory (Argon2id's 19 MiB, the compiled
//! runtimes being read in) and a burst's working set would stay resident
//! (benches/README.md, "Edge node").

use std::sync::Arc;
use std::time::Duration;

use crate::jobs::Jobs;

/// How often an idle server gives memory back.
const IDLE_CHECK: Duration = Duration::from_secs(5);

/// Frees the calling thread's unused pages and carries out every purge the
/// arenas have delayed, now (mimalloc cannot reach other threads' caches,
/// which stay until those threads allocate again). A no-op with the system
/// allocator, which returns memory on its own.
pub fn release_unused() {
    #[cfg(feature = "mimalloc")]
    // SAFETY: mi_collect takes no arguments that point anywhere and may be
    // called from any thread at any time; it only frees what is already free.
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_collect(true);
    }
}

/// Every few seconds, if nothing has run since the last check and nothing is
/// running or queued now, releases what the last burst left behind.
pub async fn release_when_idle(jobs: Arc<Jobs>) {
    let mut tick = tokio::time::interval(IDLE_CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick releases what start-up left behind.
    let mut released_at = None;
    loop {
        tick.tick().await;
        let finished = jobs.finished_count();
        if jobs.running() == 0 && jobs.queued() == 0 && released_at != Some(finished) {
            released_at = Some(finished);
            tokio::task::spawn_blocking(release_unused);
        }
    }
}
