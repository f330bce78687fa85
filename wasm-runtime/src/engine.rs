//! The engine: one wasmtime `Engine` per process with the pooling allocator and
//! epoch interruption, the epoch clock (a ticker thread that sleeps while no instance exists;
//! `clock.rs`), the linkers for each guest kind, and loading (through the compile
//! cache) into [`Artifact`]s.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::{InstanceAllocationStrategy, Module, PoolingAllocationConfig};

use crate::artifact::{self, Artifact, Compiled};
use crate::cache::{CacheOutcome, CompileCache, Lookup};
use crate::clock::EpochClock;
use crate::command::{P1State, P2State};
use crate::command_pool::CommandPool;
use crate::error::{Error, Result};
use crate::http::HttpState;
use crate::limits::Throttle;

/// How the engine is set up. The defaults suit a node running many pods.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Root folder of the compile cache; `None` compiles in memory every time.
    pub cache_dir: Option<PathBuf>,
    /// How often the epoch advances: the resolution of CPU budgets and of
    /// forced stops. 1 ms by default.
    pub epoch_tick: Duration,
    /// Most component (or p1 module) instances alive at once on this engine:
    /// the size of the instance pool. Core instances, memories and tables are
    /// sized from it, since one component holds several of each.
    pub max_instances: u32,
    /// Pool slot size for one linear memory, the ceiling for every per-instance
    /// memory limit. 1 GiB by default.
    pub max_memory_bytes: u64,
    /// Pool slot size for one table, in elements: the ceiling for every
    /// per-instance table limit.
    pub max_table_elements: usize,
    /// Largest wasm stack a guest may use before it traps with a stack overflow.
    pub max_wasm_stack: usize,
    /// How many long-running guests may run wasm at once (0: no limit). The
    /// default is one fewer than the machine's cores, so hostile or batch
    /// guests never occupy every core and short requests stay fast.
    pub background_slots: usize,
    /// wasm time after which a guest (a command, or one request) counts as
    /// long-running and needs a background slot to go on. 10 ms by default.
    pub long_running_after: Duration,
    /// Threads that run guest commands (WASI p1 modules and p2 command
    /// components); one per core by default. HTTP requests run on the
    /// caller's tokio runtime instead.
    pub command_threads: usize,
    /// The nice value of the command threads (Linux): 10 by default, so that
    /// batch and hostile commands yield the CPU to HTTP requests and to the
    /// rest of the process the moment those wake up. 0 keeps normal priority.
    pub command_nice: i32,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            cache_dir: None,
            epoch_tick: Duration::from_millis(1),
            max_instances: 1000,
            max_memory_bytes: 1 << 30,
            max_table_elements: 100_000,
            max_wasm_stack: 512 << 10,
            background_slots: std::thread::available_parallelism()
                .map(|n| n.get().saturating_sub(1).max(1))
                .unwrap_or(1),
            long_running_after: Duration::from_millis(10),
            command_threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            command_nice: 10,
        }
    }
}

/// Core instances, memories and tables per component the pool is sized for.
/// A Rust `wasi:http` component has about five core instances and two
/// memories; componentize-py output has more.
const PER_COMPONENT: u32 = 20;

/// The linkers, one per guest kind, built once per engine.
pub(crate) struct Linkers {
    pub(crate) p1: wasmtime::Linker<P1State>,
    pub(crate) p2: wasmtime::component::Linker<P2State>,
    pub(crate) http: wasmtime::component::Linker<HttpState>,
}

/// The wasmtime engine with everything a pod needs. Cheap to clone: clones
/// share one engine, one pool, one ticker and one cache.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) wasmtime: wasmtime::Engine,
    pub(crate) linkers: Linkers,
    pub(crate) clock: EpochClock,
    pub(crate) throttle: Option<Arc<Throttle>>,
    pub(crate) commands: CommandPool,
    cache: Option<CompileCache>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.clock.stop();
    }
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("tick", &self.inner.clock.tick())
            .field("cache", &self.inner.cache)
            .finish()
    }
}

impl Engine {
    /// Builds the engine and starts its epoch ticker thread and its command
    /// threads (they end when the last clone of the engine is dropped).
    pub fn new(config: EngineConfig) -> Result<Engine> {
        let wasmtime = wasmtime::Engine::new(&wasmtime_config(&config)).map_err(Error::engine)?;
        let linkers = build_linkers(&wasmtime).map_err(Error::engine)?;
        let cache = match &config.cache_dir {
            Some(dir) => Some(CompileCache::open(dir, &wasmtime)?),
            None => None,
        };
        let clock = EpochClock::start(wasmtime.clone(), config.epoch_tick)?;
        Ok(Engine {
            inner: Arc::new(Inner {
                wasmtime,
                linkers,
                clock,
                throttle: (config.background_slots > 0).then(|| {
                    Throttle::new(
                        config.background_slots,
                        config.long_running_after,
                        config.epoch_tick,
                    )
                }),
                commands: CommandPool::new(config.command_threads, config.command_nice)?,
                cache,
            }),
        })
    }

    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }

    /// The underlying wasmtime engine (for callers that need wasmtime APIs).
    pub fn wasmtime(&self) -> &wasmtime::Engine {
        &self.inner.wasmtime
    }

    /// The compile cache, when one is configured.
    pub fn cache(&self) -> Option<&CompileCache> {
        self.inner.cache.as_ref()
    }

    /// This engine's compatibility hash as hex (the cache folder's name).
    pub fn compatibility_hash(&self) -> String {
        crate::cache::compatibility_hash(&self.inner.wasmtime)
    }

    /// Reads a `.wasm` file and loads it (see [`Engine::load_bytes`]).
    pub fn load_file(&self, path: impl AsRef<Path>) -> Result<Artifact> {
        let path = path.as_ref();
        let bytes =
            std::fs::read(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        self.load_bytes(&bytes)
    }

    /// Loads a module or component from its bytes: from the compile cache when
    /// an entry for its digest exists and passes its checks, else compiled (and
    /// stored). The result says which kind of guest it is; a binary that is no
    /// known kind is refused with the unknown import or missing export named.
    ///
    /// Compiling is CPU-heavy; async callers should run this in
    /// `spawn_blocking`.
    pub fn load_bytes(&self, bytes: &[u8]) -> Result<Artifact> {
        let is_component = artifact::sniff(bytes)?;
        let digest = hex::encode(Sha256::digest(bytes));
        let engine = &self.inner.wasmtime;
        let (compiled, outcome) = match &self.inner.cache {
            None => (
                compile(engine, bytes, is_component)?,
                CacheOutcome::Disabled,
            ),
            Some(cache) => match cache.load(engine, &digest) {
                Lookup::Found(compiled)
                    if is_component == matches!(compiled, Compiled::Component(_)) =>
                {
                    (compiled, CacheOutcome::Hit)
                }
                lookup => {
                    let outcome = match lookup {
                        Lookup::Absent => CacheOutcome::Miss,
                        _ => CacheOutcome::Rebuilt,
                    };
                    let compiled = compile(engine, bytes, is_component)?;
                    if let Err(e) = cache.store(&digest, &compiled) {
                        // A cache that cannot be written only costs speed.
                        tracing::warn!(error = %e, "cannot store compiled artifact");
                    }
                    (compiled, outcome)
                }
            },
        };
        Artifact::prepare(&self.inner.linkers, engine, compiled, digest, outcome)
    }
}

fn compile(engine: &wasmtime::Engine, bytes: &[u8], is_component: bool) -> Result<Compiled> {
    let compiled = if is_component {
        Component::new(engine, bytes).map(Compiled::Component)
    } else {
        Module::new(engine, bytes).map(Compiled::Module)
    };
    compiled.map_err(|e| Error::InvalidBinary(format!("{e:#}")))
}

/// Bytes of a linear memory kept resident (reset with memset) when its pool slot is freed.
const KEEP_RESIDENT: usize = 128 << 10;

fn wasmtime_config(config: &EngineConfig) -> wasmtime::Config {
    let n = config.max_instances.max(1);
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(n)
        .total_core_instances(n * PER_COMPONENT)
        .total_memories(n * 2)
        .total_tables(n * 4)
        .total_stacks(n)
        .max_core_instances_per_component(PER_COMPONENT * 4)
        .max_memories_per_component(PER_COMPONENT)
        .max_tables_per_component(PER_COMPONENT)
        .max_memory_size(config.max_memory_bytes as usize)
        .table_elements(config.max_table_elements)
        .max_core_instance_size(4 << 20)
        .max_component_instance_size(4 << 20)
        // A request's instance touches a few pages (stack, heap start, data); resetting them
        // with memset, found through PAGEMAP_SCAN where the kernel has it (6.7+), keeps the
        // next instance in that slot from faulting them in again. Bounded per slot, so warm
        // slots hold at most this much each.
        .pagemap_scan(wasmtime::Enabled::Auto)
        .linear_memory_keep_resident(KEEP_RESIDENT)
        .table_keep_resident(KEEP_RESIDENT / 8);
    let mut cfg = wasmtime::Config::new();
    cfg.allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
        .epoch_interruption(true)
        .wasm_component_model(true)
        .wasm_backtrace_details(wasmtime::WasmBacktraceDetails::Disable)
        .max_wasm_stack(config.max_wasm_stack)
        .async_stack_size(config.max_wasm_stack + (1 << 20));
    cfg
}

fn build_linkers(engine: &wasmtime::Engine) -> wasmtime::Result<Linkers> {
    let mut p1 = wasmtime::Linker::new(engine);
    wasmtime_wasi::p1::add_to_linker_async(&mut p1, |s: &mut P1State| &mut s.wasi)?;
    let mut p2 = wasmtime::component::Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut p2)?;
    // Services get all of WASI p2 besides wasi:http, like `wasmtime serve
    // -Scli`: language runtimes (componentize-py, for one) import
    // `wasi:cli/environment` and `wasi:filesystem` even in the proxy world.
    // With no preopens and no network granted, these give no extra reach.
    let mut http = wasmtime::component::Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut http)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut http)?;
    Ok(Linkers { p1, p2, http })
}
