//! The node's one wasmtime `Engine` and `Linker`, and compiling components.
//!
//! One engine per node because compiled code, the instance pool and the epoch
//! counter all belong to an engine: every pod shares the pool, and one ticker
//! thread drives every deadline.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::OnceCell;
use wasmtime::component::{Component, InstancePre, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use super::cache::{ArtifactCache, CacheStats};
use super::state::HostState;

/// Sizes the node's engine. Defaults suit a development node.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Live instances the node can hold at once over all its pods: one per
    /// in-flight request of an `http` pod, one per running `command` pod.
    /// Sizes the pooling allocator (its slots are reserved up front, as
    /// address space rather than memory); at least the node's `--pods`.
    pub max_instances: u32,
    /// The most linear memory one instance may grow to, whatever its pod's
    /// budget says. Rounded up to whole 64 KiB wasm pages.
    pub max_memory_per_instance: u64,
    /// How often the epoch advances: the granularity of request deadlines
    /// and how long a guest may run before it yields to other requests.
    pub epoch_tick: Duration,
    /// Where precompiled components are kept across restarts; `None` keeps
    /// them in memory only.
    pub artifact_dir: Option<PathBuf>,
}

impl RuntimeConfig {
    /// Sized for a node that runs up to `pods` pods: a pool slot per pod,
    /// and never fewer than 1000 (wasmtime's default) so a small node still
    /// takes a burst of concurrent requests.
    pub fn for_pods(pods: u32) -> RuntimeConfig {
        RuntimeConfig {
            max_instances: pods.max(1000),
            ..RuntimeConfig::default()
        }
    }
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            max_instances: 1000,
            max_memory_per_instance: 1 << 30,
            epoch_tick: Duration::from_millis(10),
            artifact_dir: None,
        }
    }
}

/// Pool slots per component instance. A Rust `wasm32-wasip2` component is a
/// handful of core instances (the program, the WASI adapter, shims) with one
/// memory and a few tables; these leave room for composed components.
const CORE_INSTANCES_PER_COMPONENT: u32 = 16;
const MEMORIES_PER_COMPONENT: u32 = 2;
const TABLES_PER_COMPONENT: u32 = 8;
const WASM_PAGE: u64 = 64 * 1024;
/// Address space the memory pool may reserve. Each slot defaults to 4 GiB
/// plus guards (so compiled code needs no bounds checks); 10,000 pods' worth
/// of those would not fit in the 128 TiB a process has.
const POOL_ADDRESS_BUDGET: u64 = 32 << 40;
const DEFAULT_MEMORY_SLOT: u64 = (4 << 30) + (64 << 20);

/// Why a component could not be made ready to serve.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error("invalid digest {0:?}: expected \"sha256:\" followed by 64 lower-case hex digits")]
    BadDigest(String),
    #[error("the component's bytes hash to {actual}, not {expected}")]
    DigestMismatch { expected: String, actual: String },
    #[error("not a WebAssembly component: {0}")]
    NotAComponent(String),
    #[error("compiling the component failed: {0}")]
    Compile(String),
    #[error("the component needs imports this node does not provide: {0}")]
    Link(String),
    #[error("the component does not export wasi:http/incoming-handler, so it cannot serve world \"http\" (is it a command? then set world = \"command\"): {0}")]
    NotHttp(String),
    #[error("the component does not export wasi:cli/run, so it cannot run as world \"command\" (is it an http handler? then set world = \"http\"): {0}")]
    NotCommand(String),
}

/// A compiled component, pre-instantiated for `wasi:http/proxy`: imports
/// resolved once, so each request only allocates and initialises.
#[derive(Clone)]
pub struct HttpComponent {
    digest: Arc<str>,
    pub(crate) pre: ProxyPre<HostState>,
}

impl HttpComponent {
    /// The `sha256:<hex>` digest it was compiled from.
    pub fn digest(&self) -> &str {
        &self.digest
    }
}

impl std::fmt::Debug for HttpComponent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpComponent")
            .field("digest", &self.digest)
            .finish_non_exhaustive()
    }
}

/// A compiled component, pre-instantiated for `wasi:cli/command`.
#[derive(Clone)]
pub struct CommandComponent {
    digest: Arc<str>,
    pub(crate) pre: CommandPre<HostState>,
}

impl CommandComponent {
    /// The `sha256:<hex>` digest it was compiled from.
    pub fn digest(&self) -> &str {
        &self.digest
    }
}

impl std::fmt::Debug for CommandComponent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandComponent")
            .field("digest", &self.digest)
            .finish_non_exhaustive()
    }
}

/// The node's wasm runtime. Cheap to clone; all clones share one engine.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    linker: Linker<HostState>,
    /// Compiled components by digest. A cell per digest, so concurrent
    /// requests for one digest compile it once.
    compiled: Mutex<HashMap<String, Arc<OnceCell<Component>>>>,
    artifacts: ArtifactCache,
    _ticker: Ticker,
}

impl Runtime {
    /// Builds the engine and linker and starts the epoch ticker thread.
    pub fn new(config: RuntimeConfig) -> anyhow::Result<Runtime> {
        anyhow::ensure!(config.max_instances > 0, "max_instances must be at least 1");
        anyhow::ensure!(
            !config.epoch_tick.is_zero(),
            "epoch_tick must be longer than zero"
        );
        let engine = Engine::new(&engine_config(&config)?)
            .map_err(to_anyhow)
            .with_context(|| format!("creating a pool of {} instances", config.max_instances))?;
        let mut linker = Linker::new(&engine);
        // Rust std guests import wasi:cli/environment and friends even as
        // HTTP handlers, so link all of WASI p2; the WasiCtx each store gets
        // decides what those imports can actually reach.
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(to_anyhow)?;
        // wasi:filesystem again, through the scratch quota (replacing the above).
        linker.allow_shadowing(true);
        wasmtime_wasi::p2::bindings::filesystem::types::add_to_linker::<
            HostState,
            super::scratch::QuotaFilesystem,
        >(&mut linker, HostState::quota_fs)
        .map_err(to_anyhow)?;
        linker.allow_shadowing(false);
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).map_err(to_anyhow)?;
        let artifacts = ArtifactCache::new(&engine, config.artifact_dir.clone())
            .context("creating the compiled-artifact directory")?;
        let ticker = Ticker::start(engine.clone(), config.epoch_tick)?;
        Ok(Runtime {
            inner: Arc::new(Inner {
                engine,
                linker,
                compiled: Mutex::new(HashMap::new()),
                artifacts,
                _ticker: ticker,
            }),
        })
    }

    /// The engine, for code that compiles or loads artifacts itself.
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// Compiles `wasm` once per digest (memoised in-process) and
    /// pre-instantiates it for `wasi:http/proxy`.
    ///
    /// Compiling takes CPU for ~100 ms and more, so it runs on tokio's
    /// blocking pool; call from within a tokio runtime. `digest` is
    /// `sha256:<hex>` (bare hex is accepted too); it is checked against the
    /// bytes before they are compiled, so the memo can be trusted by digest.
    pub async fn prepare_http(
        &self,
        digest: &str,
        wasm: &[u8],
    ) -> Result<HttpComponent, PrepareError> {
        let (digest, pre) = self.instantiate_pre(digest, wasm).await?;
        let pre = ProxyPre::new(pre).map_err(|e| PrepareError::NotHttp(format!("{e:#}")))?;
        Ok(HttpComponent {
            digest: digest.into(),
            pre,
        })
    }

    /// Compiles `wasm` once per digest, like [`Runtime::prepare_http`], and
    /// pre-instantiates it for `wasi:cli/command`.
    pub async fn prepare_command(
        &self,
        digest: &str,
        wasm: &[u8],
    ) -> Result<CommandComponent, PrepareError> {
        let (digest, pre) = self.instantiate_pre(digest, wasm).await?;
        let pre = CommandPre::new(pre).map_err(|e| PrepareError::NotCommand(format!("{e:#}")))?;
        Ok(CommandComponent {
            digest: digest.into(),
            pre,
        })
    }

    /// The component compiled (or loaded) with its imports resolved; the
    /// world's exports are checked by the caller.
    async fn instantiate_pre(
        &self,
        digest: &str,
        wasm: &[u8],
    ) -> Result<(String, InstancePre<HostState>), PrepareError> {
        let digest = normalise_digest(digest)?;
        let component = self.compile(&digest, wasm).await?;
        let pre = self
            .inner
            .linker
            .instantiate_pre(&component)
            .map_err(|e| PrepareError::Link(format!("{e:#}")))?;
        Ok((digest, pre))
    }

    /// How the on-disk artifact cache has been used since the node started.
    pub fn cache_stats(&self) -> CacheStats {
        self.inner.artifacts.stats()
    }

    /// Where `digest`'s compiled artifact lives, when there is a cache dir.
    pub fn artifact_path(&self, digest: &str) -> Option<PathBuf> {
        let digest = normalise_digest(digest).ok()?;
        self.inner.artifacts.path_of(&digest)
    }

    /// Drops the memoised compilation of `digest`, once no pod needs it.
    /// Pods and components already prepared keep their own reference.
    pub fn forget(&self, digest: &str) {
        if let Ok(digest) = normalise_digest(digest) {
            self.lock_compiled().remove(&digest);
        }
    }

    async fn compile(&self, digest: &str, wasm: &[u8]) -> Result<Component, PrepareError> {
        let cell = self
            .lock_compiled()
            .entry(digest.to_string())
            .or_default()
            .clone();
        let result = cell
            .get_or_try_init(|| async {
                check_bytes(digest, wasm)?;
                let runtime = self.clone();
                let wasm = wasm.to_vec();
                let digest = digest.to_string();
                tokio::task::spawn_blocking(move || {
                    let inner = &runtime.inner;
                    inner
                        .artifacts
                        .load_or_compile(&inner.engine, &digest, &wasm)
                })
                .await
                .map_err(|e| PrepareError::Compile(format!("compile task failed: {e}")))?
            })
            .await
            .cloned();
        if result.is_err() {
            // Keep no entry for bytes that never compiled.
            let mut compiled = self.lock_compiled();
            if compiled
                .get(digest)
                .is_some_and(|c| Arc::ptr_eq(c, &cell) && !c.initialized())
            {
                compiled.remove(digest);
            }
        }
        result
    }

    fn lock_compiled(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, Arc<OnceCell<Component>>>> {
        // The map holds no invariant a panicking holder could break.
        self.inner
            .compiled
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn engine_config(config: &RuntimeConfig) -> anyhow::Result<Config> {
    let max_memory = config.max_memory_per_instance.div_ceil(WASM_PAGE) * WASM_PAGE;
    anyhow::ensure!(
        (WASM_PAGE..=1 << 32).contains(&max_memory),
        "max_memory_per_instance must be between 64 KiB and 4 GiB"
    );
    let n = config.max_instances;
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(n)
        .total_core_instances(n.saturating_mul(CORE_INSTANCES_PER_COMPONENT))
        .total_memories(n.saturating_mul(MEMORIES_PER_COMPONENT))
        .total_tables(n.saturating_mul(TABLES_PER_COMPONENT))
        .total_stacks(n)
        .max_memory_size(usize::try_from(max_memory)?);
    let mut wasm = Config::new();
    wasm.epoch_interruption(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    let memories = u64::from(n.saturating_mul(MEMORIES_PER_COMPONENT));
    if memories * DEFAULT_MEMORY_SLOT > POOL_ADDRESS_BUDGET {
        // Reserve only what an instance may use; loads and stores then carry
        // explicit bounds checks, a small cost for fitting the pool at all.
        anyhow::ensure!(
            memories * max_memory <= POOL_ADDRESS_BUDGET,
            "{n} instances of up to {max_memory} bytes each need more address space than a \
             process has: lower max_instances or max_memory_per_instance"
        );
        wasm.memory_reservation(max_memory);
    }
    Ok(wasm)
}

/// Accepts `sha256:<hex>` or bare hex; returns `sha256:<hex>`.
fn normalise_digest(digest: &str) -> Result<String, PrepareError> {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    let valid = hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if valid {
        Ok(format!("sha256:{hex}"))
    } else {
        Err(PrepareError::BadDigest(digest.to_string()))
    }
}

pub use reef_api::digest_of;

/// Cheap checks before spending a compile: the digest, and whether the bytes
/// are a component at all, so the common mistakes get a message that says
/// what to do instead of a parser error.
fn check_bytes(digest: &str, wasm: &[u8]) -> Result<(), PrepareError> {
    let actual = digest_of(wasm);
    if actual != digest {
        return Err(PrepareError::DigestMismatch {
            expected: digest.to_string(),
            actual,
        });
    }
    match wasm.get(..8) {
        Some([0, b'a', b's', b'm', 0x0d, 0, 1, 0]) => Ok(()),
        Some([0, b'a', b's', b'm', 1, 0, 0, 0]) => Err(PrepareError::NotAComponent(
            "this is a core wasm module; build for wasm32-wasip2 (or wrap it with `wasm-tools component new`)".into(),
        )),
        Some([0, b'a', b's', b'm', ..]) => Err(PrepareError::NotAComponent(
            "unsupported wasm binary version".into(),
        )),
        _ => Err(PrepareError::NotAComponent(format!(
            "{} bytes that do not start with the wasm magic number",
            wasm.len()
        ))),
    }
}

pub(crate) fn to_anyhow(e: wasmtime::Error) -> anyhow::Error {
    anyhow::Error::from_boxed(e.into_boxed_dyn_error())
}

/// Advances the engine's epoch every tick until dropped. A plain thread, not
/// a tokio task, so a busy async runtime cannot delay deadlines.
struct Ticker {
    stop: Arc<AtomicBool>,
}

impl Ticker {
    fn start(engine: Engine, tick: Duration) -> anyhow::Result<Ticker> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        thread::Builder::new()
            .name("reef-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    thread::sleep(tick);
                    engine.increment_epoch();
                }
            })?;
        Ok(Ticker { stop })
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_normalise() {
        let hex = "ab".repeat(32);
        assert_eq!(normalise_digest(&hex).unwrap(), format!("sha256:{hex}"));
        assert_eq!(
            normalise_digest(&format!("sha256:{hex}")).unwrap(),
            format!("sha256:{hex}")
        );
        assert!(normalise_digest("sha256:xyz").is_err());
        assert!(normalise_digest(&"AB".repeat(32)).is_err());
    }

    #[test]
    fn core_modules_and_garbage_are_named() {
        let core = b"\0asm\x01\0\0\0";
        let err = check_bytes(&digest_of(core), core).unwrap_err();
        assert!(err.to_string().contains("core wasm module"), "{err}");
        let junk = b"hello";
        let err = check_bytes(&digest_of(junk), junk).unwrap_err();
        assert!(err.to_string().contains("wasm magic number"), "{err}");
        let err = check_bytes(&digest_of(b"other"), junk).unwrap_err();
        assert!(matches!(err, PrepareError::DigestMismatch { .. }), "{err}");
    }
}
