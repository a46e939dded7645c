//! The one `wasmtime::Engine` of a process and the thread that drives its epoch.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, OptLevel, PoolingAllocationConfig,
};

use crate::error::{Error, chain};

/// How the sandbox's engine is built. The host fills this from its own
/// configuration; the runtime reads no environment and no files of its own.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Where compiled artifacts are kept across restarts; `None` keeps them in
    /// memory only.
    pub cache_dir: Option<PathBuf>,
    /// Instances that may exist at once (the pooling allocator's slots).
    pub max_instances: u32,
    /// The largest memory cap any run may ask for, in bytes: the size of each
    /// pooled memory slot.
    pub max_memory_bytes: u64,
    /// How often the epoch advances: the granularity of deadlines,
    /// cancellation and of yielding a busy guest back to tokio.
    pub epoch_tick: Duration,
    /// Compiled artifacts kept ready to instantiate in memory.
    pub artifact_cache_entries: usize,
    /// A language runtime whose instantiation takes at least this long gets
    /// its next instance made ahead, off the run's path (see `warm.rs`);
    /// `None` never does.
    pub prewarm_above: Option<Duration>,
    /// What a module or component may contain before it is compiled.
    pub compile_limits: crate::CompileLimits,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            cache_dir: None,
            max_instances: 128,
            max_memory_bytes: 1 << 30,
            epoch_tick: Duration::from_millis(5),
            artifact_cache_entries: 256,
            // CPython takes ~0.5 ms, QuickJS ~0.03 ms: only Python is worth
            // a thread hop.
            prewarm_above: Some(Duration::from_micros(250)),
            compile_limits: crate::CompileLimits::default(),
        }
    }
}

/// Fuel units between voluntary yields to the async executor, so a guest
/// metered by fuel also lets other tasks on its worker thread run.
pub(crate) const FUEL_YIELD_INTERVAL: u64 = 1_000_000;

/// Core instances per component: a Rust wasip2 command has a handful (its
/// module, the preview1 adapter, shims); language runtimes a few more.
const MAX_CORE_INSTANCES_PER_COMPONENT: u32 = 32;
const MAX_MEMORIES_PER_COMPONENT: u32 = 4;
const MAX_TABLES_PER_COMPONENT: u32 = 8;
/// Per slot, at most this much of a memory a run wrote stays mapped (see
/// `build_engine`).
const MEMORY_KEEP_RESIDENT_SCANNED: usize = 16 << 20;
const MEMORY_KEEP_RESIDENT_PLAIN: usize = 64 << 10;
/// Tables are small (a CPython runtime's function table is a few hundred KiB).
const TABLE_KEEP_RESIDENT: usize = 1 << 20;

/// Builds the engine: Cranelift, component model, async, fuel, epochs and the
/// pooling allocator with copy-on-write memory images.
///
/// # Errors
///
/// [`Error::Engine`] when the configuration is refused or the pool cannot be
/// reserved.
pub(crate) fn build_engine(options: &EngineOptions) -> Result<Engine, Error> {
    let pool = pool(options)?;
    let mut config = config();
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&config).map_err(|e| Error::Engine(chain(&e)))
}

/// An engine that only compiles, for a process of its own (see
/// `compile_into_cache`): the same code settings as [`build_engine`], so
/// the same compatibility digest, and no pool to reserve; on one thread
/// unless `parallel`.
pub(crate) fn build_compile_engine(parallel: bool) -> Result<Engine, Error> {
    let mut config = config();
    config.parallel_compilation(parallel);
    Engine::new(&config).map_err(|e| Error::Engine(chain(&e)))
}

/// The settings that shape compiled code; every engine of Kiln shares them.
fn config() -> Config {
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .consume_fuel(true)
        .epoch_interruption(true)
        .memory_init_cow(true)
        .cranelift_opt_level(OptLevel::Speed)
        // On by default in wasmtime 48, used by none of the guests Kiln runs
        // (Rust, C, QuickJS, CPython), and each is compiler and runtime code
        // a hostile module could reach.
        .wasm_gc(false)
        .wasm_exceptions(false)
        .wasm_threads(false)
        .wasm_memory64(false);
    config
}

/// The pooling allocator: slots for every instance, memory and table.
fn pool(options: &EngineOptions) -> Result<PoolingAllocationConfig, Error> {
    let max_memory = usize::try_from(options.max_memory_bytes)
        .map_err(|_| Error::Engine("max_memory_bytes does not fit this platform".into()))?;
    // Instances made ahead, and used ones the warm thread has yet to drop,
    // hold slots of their own.
    let instances = options
        .max_instances
        .max(1)
        .saturating_add((crate::warm::MAX_WARM + crate::warm::MAX_RETIRING) as u32);
    // Every instance may hold its component's most of each kind: totals
    // any smaller would let a few components built to the maximum keep
    // everyone else's runs from starting. Slots that are not used are
    // address space only.
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(instances)
        .total_core_instances(instances.saturating_mul(MAX_CORE_INSTANCES_PER_COMPONENT))
        .total_memories(instances.saturating_mul(MAX_MEMORIES_PER_COMPONENT))
        .total_tables(instances.saturating_mul(MAX_TABLES_PER_COMPONENT))
        .total_stacks(instances)
        .max_core_instances_per_component(MAX_CORE_INSTANCES_PER_COMPONENT)
        .max_memories_per_component(MAX_MEMORIES_PER_COMPONENT)
        .max_tables_per_component(MAX_TABLES_PER_COMPONENT)
        .max_memory_size(max_memory)
        .table_keep_resident(TABLE_KEEP_RESIDENT);
    // With PAGEMAP_SCAN (Linux 6.7+) a returned slot resets only the pages the
    // run wrote, by copying them back from the image, and they stay mapped:
    // the next run of the same runtime in that slot takes no page faults on
    // them (a warm Python run writes a few hundred scattered pages). Without
    // it, keeping memory resident means resetting its low bytes wholesale,
    // which costs a large runtime more than the faults it saves.
    //
    // Not with swap: the scan finds written pages that are present, so a
    // written page that was swapped out would be neither reset nor dropped,
    // and the next guest in the slot could read it.
    let pagemap_scan = PoolingAllocationConfig::is_pagemap_scan_available() && swap_is_off();
    tracing::info!(
        pagemap_scan,
        "pool slots keep written pages resident when scanning"
    );
    if pagemap_scan {
        pool.pagemap_scan(Enabled::Auto)
            .linear_memory_keep_resident(MEMORY_KEEP_RESIDENT_SCANNED);
    } else {
        pool.linear_memory_keep_resident(MEMORY_KEEP_RESIDENT_PLAIN);
    }
    Ok(pool)
}

/// Whether the host has no swap configured (`/proc/swaps` lists none); false
/// when that cannot be read.
fn swap_is_off() -> bool {
    std::fs::read_to_string("/proc/swaps").is_ok_and(|swaps| lists_no_swap(&swaps))
}

/// `/proc/swaps` is a header line and then one line per swap area.
fn lists_no_swap(swaps: &str) -> bool {
    swaps.lines().skip(1).all(|line| line.trim().is_empty())
}

/// Increments the engine's epoch every tick until dropped.
pub(crate) struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    pub(crate) fn start(engine: &Engine, tick: Duration) -> Result<Self, Error> {
        let weak = engine.weak();
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = stop.clone();
        let thread = std::thread::Builder::new()
            .name("kiln-epoch".into())
            .spawn(move || {
                while !thread_stop.load(Ordering::Relaxed) {
                    std::thread::sleep(tick);
                    // A weak reference, so the ticker never keeps a dropped
                    // engine alive.
                    match weak.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })
            .map_err(|e| Error::Engine(format!("cannot start the epoch thread: {e}")))?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A stable digest of everything that makes compiled code incompatible
/// between engines (wasmtime version, target, settings): part of every
/// artifact key, so a cache written by another engine is never loaded.
pub(crate) fn compatibility_digest(engine: &Engine) -> [u8; 32] {
    use std::hash::Hash;
    let mut hasher = Blake3Hasher(blake3::Hasher::new());
    engine.precompile_compatibility_hash().hash(&mut hasher);
    *hasher.0.finalize().as_bytes()
}

/// Feeds `std::hash::Hash` into BLAKE3, which unlike `DefaultHasher` is the
/// same in every build.
struct Blake3Hasher(blake3::Hasher);

impl std::hash::Hasher for Blake3Hasher {
    fn finish(&self) -> u64 {
        let mut first = [0u8; 8];
        first.copy_from_slice(&self.0.finalize().as_bytes()[..8]);
        u64::from_le_bytes(first)
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Components built to the per-component maximum of core instances and
    /// memories, as many as the pool has instances, all at once: none is
    /// refused (with totals of a quarter and a half of that, the third was).
    #[tokio::test]
    async fn the_pool_holds_every_instance_at_its_per_component_maximum() {
        let options = EngineOptions {
            max_instances: 4,
            max_memory_bytes: 1 << 20,
            ..EngineOptions::default()
        };
        let engine = build_engine(&options).unwrap();
        let mut text = String::from("(component (core module $m (memory 1)) (core module $e)");
        for _ in 0..MAX_MEMORIES_PER_COMPONENT {
            text.push_str("(core instance (instantiate $m))");
        }
        for _ in MAX_MEMORIES_PER_COMPONENT..MAX_CORE_INSTANCES_PER_COMPONENT {
            text.push_str("(core instance (instantiate $e))");
        }
        text.push(')');
        let component =
            wasmtime::component::Component::new(&engine, wat::parse_str(&text).unwrap()).unwrap();
        let linker = wasmtime::component::Linker::<()>::new(&engine);
        let mut held = Vec::new();
        let slots =
            options.max_instances as usize + crate::warm::MAX_WARM + crate::warm::MAX_RETIRING;
        for i in 0..slots {
            let mut store = wasmtime::Store::new(&engine, ());
            store.set_fuel(u64::MAX).unwrap();
            let instance = linker.instantiate_async(&mut store, &component).await;
            assert!(instance.is_ok(), "instance {i}: {:?}", instance.err());
            held.push(store);
        }
    }

    #[test]
    fn the_compile_engine_makes_code_the_pooled_engine_accepts() {
        let compile = build_compile_engine(true).unwrap();
        assert_eq!(
            compatibility_digest(&compile),
            compatibility_digest(&build_compile_engine(false).unwrap())
        );
        for max_memory_bytes in [1 << 20, 1 << 30] {
            let options = EngineOptions {
                max_instances: 4,
                max_memory_bytes,
                ..EngineOptions::default()
            };
            let pooled = build_engine(&options).unwrap();
            assert_eq!(
                compatibility_digest(&compile),
                compatibility_digest(&pooled)
            );
        }
        // What the parent does with a child's artifact: the audited read of
        // the disk cache, wasmtime's own compatibility check included.
        let dir = tempfile::tempdir().unwrap();
        let cache = crate::cache::ArtifactCache::new(Some(dir.path().to_path_buf()), 1).unwrap();
        let key = crate::ArtifactKey::new(b"(component)", &compatibility_digest(&compile));
        let component =
            wasmtime::component::Component::new(&compile, wat::parse_str("(component)").unwrap())
                .unwrap();
        cache.write_disk(&key, &component).unwrap();
        let pooled = build_engine(&EngineOptions::default()).unwrap();
        assert!(cache.read_disk(&pooled, &key).is_some());
    }

    #[test]
    fn a_swap_area_after_the_header_counts_as_swap() {
        let header = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n";
        assert!(lists_no_swap(header));
        assert!(lists_no_swap(""));
        assert!(!lists_no_swap(&format!(
            "{header}/swapfile                               file\t\t4194300\t\t0\t\t-2\n"
        )));
        assert!(!lists_no_swap(&format!(
            "{header}/dev/zram0                              partition\t8388604\t\t0\t\t100\n"
        )));
    }
}
