//! The wasmtime side of Vigil: one [`PolicyEngine`] per process, and a
//! [`Sandbox`] per loaded plugin holding its compiled component and its
//! current instance.
//!
//! A trap poisons a wasmtime `Store` for good, so a faulted instance is never
//! called again: recovery is a fresh `Store` from the kept `InstancePre`,
//! which is cheap (tens of microseconds).
//!
//! Calls are synchronous CPU work and the WASI bindings are the synchronous
//! ones, which `block_on` a tokio runtime of their own: a `Sandbox` must be
//! driven from a plain thread (see [`super::worker`]), never from a tokio
//! worker thread.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store, Trap, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::batching::{self, BatchCap};
use crate::clock::CallClock;
use crate::compile_cache::{CompileCache, Compiled};
use crate::watchdog::{CallBudget, Watchdog};

use super::bindings;
use super::columns::{SessionColumns, VerdictColumns};
use super::convert::LentBatch;
use super::exports::{Plugin, PluginPre, CURRENT_EXPORT, V0_1_EXPORT, V0_2_EXPORT};
pub use super::fault::{CallFault, FaultKind};
use super::limits::{Limiter, SandboxLimits};
use super::output::{PluginLevel, PluginOutput};
use vigil_policy_sdk::{Event, SessionId};

/// The process-wide wasmtime engine: compilation settings, epoch-based
/// interruption and its [`Watchdog`], and the linker every plugin is
/// instantiated against. Cheap to clone.
#[derive(Clone)]
pub struct PolicyEngine {
    engine: Engine,
    watchdog: Watchdog,
    linker: Arc<Linker<StoreState>>,
    compiled: Arc<Mutex<CompiledCache>>,
    disk: Option<Arc<CompileCache>>,
}

/// Recently compiled components by SHA-256, so loading the same plugin again
/// (a rollback, a re-check) skips Cranelift.
#[derive(Default)]
struct CompiledCache {
    by_sha256: HashMap<String, Component>,
    order: VecDeque<String>,
}

impl CompiledCache {
    const CAPACITY: usize = 16;

    fn get(&self, sha256: &str) -> Option<Component> {
        self.by_sha256.get(sha256).cloned()
    }

    fn insert(&mut self, sha256: String, component: Component) {
        if self.by_sha256.insert(sha256.clone(), component).is_none() {
            self.order.push_back(sha256);
        }
        while self.order.len() > Self::CAPACITY {
            if let Some(oldest) = self.order.pop_front() {
                self.by_sha256.remove(&oldest);
            }
        }
    }
}

impl fmt::Debug for PolicyEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyEngine").finish_non_exhaustive()
    }
}

impl PolicyEngine {
    /// Creates the engine and starts its deadline watchdog, which sleeps
    /// while no call runs and stops by itself once every clone of the
    /// engine is gone.
    pub fn new() -> anyhow::Result<Self> {
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            .cranelift_opt_level(wasmtime::OptLevel::Speed);
        let engine = Engine::new(&config)?;

        let mut linker = Linker::<StoreState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        bindings::PolicyPlugin::add_to_linker::<StoreState, HasSelf<StoreState>>(
            &mut linker,
            |state| state,
        )?;
        // The older contracts' `log` and `types` are interfaces of their
        // own (`@0.2.0`, `@0.1.0`), linked beside the current ones.
        bindings::v0_2::PolicyPlugin::add_to_linker::<StoreState, HasSelf<StoreState>>(
            &mut linker,
            |state| state,
        )?;
        bindings::v0_1::PolicyPlugin::add_to_linker::<StoreState, HasSelf<StoreState>>(
            &mut linker,
            |state| state,
        )?;

        let watchdog = Watchdog::start(&engine)?;

        Ok(PolicyEngine {
            engine,
            watchdog,
            linker: Arc::new(linker),
            compiled: Arc::default(),
            disk: None,
        })
    }

    /// This engine, keeping compiled plugins in `dir` across restarts
    /// ([`CompileCache`]).
    pub fn with_compile_cache(mut self, dir: &Path) -> std::io::Result<Self> {
        self.disk = Some(Arc::new(CompileCache::open(dir, &self.engine)?));
        Ok(self)
    }

    /// Compiles a component, or takes it from memory or from disk.
    fn compile(&self, bytes: &[u8], sha256: &str) -> wasmtime::Result<(Component, Compiled)> {
        let cached = self
            .compiled
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(sha256);
        if let Some(component) = cached {
            return Ok((component, Compiled::InMemory));
        }
        let from_disk = self
            .disk
            .as_ref()
            .and_then(|disk| disk.load(&self.engine, sha256));
        let (component, how) = match from_disk {
            Some(component) => (component, Compiled::FromDisk),
            None => {
                let component = Component::new(&self.engine, bytes)?;
                if let Some(disk) = &self.disk {
                    disk.store(sha256, &component);
                }
                (component, Compiled::Fresh)
            }
        };
        self.compiled
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(sha256.to_owned(), component.clone());
        Ok((component, how))
    }
}

/// A plugin as the operator handed it over, before it is compiled.
#[derive(Clone)]
pub struct PluginSource {
    /// Shown in logs and reports: the file name, or `default-policy`.
    pub name: Arc<str>,
    /// Where it came from: a path, or `embedded`.
    pub origin: String,
    /// The component's bytes.
    pub bytes: Arc<[u8]>,
}

impl fmt::Debug for PluginSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PluginSource")
            .field("name", &self.name)
            .field("origin", &self.origin)
            .field("bytes", &self.bytes.len())
            .finish()
    }
}

impl PluginSource {
    /// The default policy built into the `vigil` binary.
    pub fn embedded_default() -> Self {
        PluginSource {
            name: Arc::from("default-policy"),
            origin: "embedded".to_owned(),
            bytes: Arc::from(vigil_plugin_artifacts::DEFAULT_POLICY),
        }
    }

    /// Reads a `.wasm` component from disk.
    pub fn from_file(path: &Path) -> Result<Self, LoadError> {
        let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let name = path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        Ok(PluginSource {
            name: Arc::from(name),
            origin: path.display().to_string(),
            bytes: Arc::from(bytes),
        })
    }

    /// Plugin bytes with a name, e.g. received over an API.
    pub fn from_bytes(name: &str, origin: &str, bytes: Vec<u8>) -> Self {
        PluginSource {
            name: Arc::from(name),
            origin: origin.to_owned(),
            bytes: Arc::from(bytes),
        }
    }

    /// Hex SHA-256 of the bytes: what identifies a plugin build in reports.
    pub fn sha256(&self) -> String {
        let digest = Sha256::digest(&self.bytes);
        digest.iter().map(|byte| format!("{byte:02x}")).collect()
    }
}

/// Why a plugin could not be loaded. Every message names the plugin and says
/// what to do.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read policy plugin {path}: {source}")]
    Read {
        /// The path given.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Not WebAssembly at all.
    #[error("policy plugin {name} is not a WebAssembly file (no `\\0asm` header); expected a component built for wasm32-wasip2")]
    NotWasm {
        /// The plugin's name.
        name: String,
    },
    /// A core module rather than a component.
    #[error("policy plugin {name} is a core WebAssembly module, not a component; build it for the wasm32-wasip2 target (or run `wasm-tools component new`) so it exports {CURRENT_EXPORT}")]
    CoreModule {
        /// The plugin's name.
        name: String,
    },
    /// Wasmtime could not compile it.
    #[error("policy plugin {name} failed to compile: {detail}")]
    Compile {
        /// The plugin's name.
        name: String,
        /// Wasmtime's reason.
        detail: String,
    },
    /// It imports something Vigil does not provide.
    #[error("policy plugin {name} needs imports Vigil does not provide (only vigil:policy/log and WASI 0.2 are linked): {detail}")]
    Imports {
        /// The plugin's name.
        name: String,
        /// Wasmtime's reason.
        detail: String,
    },
    /// It is a component of another world.
    #[error("policy plugin {name} is not a Vigil policy: it does not export {CURRENT_EXPORT} (or the older {V0_2_EXPORT} or {V0_1_EXPORT}) with the expected functions ({detail})")]
    WrongWorld {
        /// The plugin's name.
        name: String,
        /// Wasmtime's reason.
        detail: String,
    },
    /// Instantiation or `configure` trapped, overran or ran out of memory.
    #[error("policy plugin {name} faulted while starting ({kind}): {detail}")]
    Start {
        /// The plugin's name.
        name: String,
        /// How it failed.
        kind: FaultKind,
        /// Wasmtime's reason.
        detail: String,
    },
    /// `configure` refused the configuration.
    #[error("policy plugin {name} rejected its configuration: {message}")]
    Config {
        /// The plugin's name.
        name: String,
        /// The plugin's own explanation.
        message: String,
    },
}

/// What a store carries: WASI state (empty), the limiter, the plugin's output.
pub(crate) struct StoreState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: Limiter,
    output: PluginOutput,
    /// The guest call in progress, if any: what the epoch callback asks.
    call: Option<CallBudget>,
}

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl bindings::vigil::policy::types::Host for StoreState {}
impl bindings::v0_2::vigil::policy::types::Host for StoreState {}
impl bindings::v0_1::vigil::policy::types::Host for StoreState {}

/// A `level` of either contract version's `log` interface, as the host's
/// log names it.
macro_rules! plugin_level {
    ($level:expr, $($log:ident)::+) => {{
        use $($log)::+::Level;
        match $level {
            Level::Trace => PluginLevel::Trace,
            Level::Debug => PluginLevel::Debug,
            Level::Info => PluginLevel::Info,
            Level::Warn => PluginLevel::Warn,
            Level::Error => PluginLevel::Error,
        }
    }};
}

impl bindings::vigil::policy::log::Host for StoreState {
    fn log(&mut self, level: bindings::vigil::policy::log::Level, message: String) {
        let level = plugin_level!(level, bindings::vigil::policy::log);
        self.output.log(level, &message);
    }
}

impl bindings::v0_2::vigil::policy::log::Host for StoreState {
    fn log(&mut self, level: bindings::v0_2::vigil::policy::log::Level, message: String) {
        let level = plugin_level!(level, bindings::v0_2::vigil::policy::log);
        self.output.log(level, &message);
    }
}

impl bindings::v0_1::vigil::policy::log::Host for StoreState {
    fn log(&mut self, level: bindings::v0_1::vigil::policy::log::Level, message: String) {
        let level = plugin_level!(level, bindings::v0_1::vigil::policy::log);
        self.output.log(level, &message);
    }
}

/// One loaded plugin: compiled, linked, and (unless its last call faulted)
/// instantiated and configured.
pub struct Sandbox {
    engine: PolicyEngine,
    pre: PluginPre,
    name: Arc<str>,
    origin: String,
    loaded_at: std::time::SystemTime,
    sha256: String,
    config_json: String,
    limits: SandboxLimits,
    output: PluginOutput,
    live: Option<LiveInstance>,
    /// What the instance's clocks read: the current call's `now-ms`.
    clock: CallClock,
    /// Instances started so far; seeds the next one's randomness.
    instances_started: u64,
    /// Sessions per `assess` call.
    batch: BatchCap,
    /// The cap last logged, so a change is told once.
    batch_cap_logged: usize,
    /// Guest `assess` calls made.
    assess_calls: u64,
}

struct LiveInstance {
    store: Store<StoreState>,
    plugin: Plugin,
}

impl fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sandbox")
            .field("name", &self.name)
            .field("sha256", &self.sha256)
            .field("live", &self.live.is_some())
            .finish_non_exhaustive()
    }
}

fn check_header(name: &str, bytes: &[u8]) -> Result<(), LoadError> {
    const MAGIC: &[u8] = b"\0asm";
    const CORE_VERSION: &[u8] = &[1, 0, 0, 0];
    if bytes.len() < 8 || &bytes[..4] != MAGIC {
        return Err(LoadError::NotWasm {
            name: name.to_owned(),
        });
    }
    if &bytes[4..8] == CORE_VERSION {
        return Err(LoadError::CoreModule {
            name: name.to_owned(),
        });
    }
    Ok(())
}

impl Sandbox {
    /// Compiles, links, instantiates and configures a plugin. Nothing is kept
    /// on failure: a plugin is either fully loaded or not at all.
    pub fn load(
        engine: &PolicyEngine,
        source: &PluginSource,
        config_json: &str,
        limits: SandboxLimits,
    ) -> Result<Sandbox, LoadError> {
        let name = source.name.to_string();
        check_header(&name, &source.bytes)?;
        let sha256 = source.sha256();
        let started = Instant::now();
        let (component, compiled) =
            engine
                .compile(&source.bytes, &sha256)
                .map_err(|e| LoadError::Compile {
                    name: name.clone(),
                    detail: format!("{e:#}"),
                })?;
        let instance_pre =
            engine
                .linker
                .instantiate_pre(&component)
                .map_err(|e| LoadError::Imports {
                    name: name.clone(),
                    detail: format!("{e:#}"),
                })?;
        let pre = PluginPre::new(instance_pre).map_err(|e| LoadError::WrongWorld {
            name: name.clone(),
            detail: format!("{e:#}"),
        })?;
        if pre.contract() != CURRENT_EXPORT {
            tracing::warn!(
                plugin = %name,
                contract = pre.contract(),
                current = CURRENT_EXPORT,
                "policy plugin built for an older contract; it runs, but rebuild it for the current one (plugins/README.md, \"Upgrading from an older contract\")"
            );
        }
        tracing::debug!(
            plugin = %name,
            bytes = source.bytes.len(),
            how = ?compiled,
            ms = started.elapsed().as_secs_f64() * 1e3,
            "policy plugin compiled"
        );
        let mut sandbox = Sandbox {
            engine: engine.clone(),
            pre,
            name: source.name.clone(),
            origin: source.origin.clone(),
            loaded_at: std::time::SystemTime::now(),
            sha256,
            config_json: config_json.to_owned(),
            output: PluginOutput::new(source.name.clone()),
            live: None,
            clock: CallClock::default(),
            instances_started: 0,
            batch: BatchCap::new(limits.call_deadline, limits.max_batch_sessions),
            batch_cap_logged: 0,
            assess_calls: 0,
            limits,
        };
        match sandbox.start() {
            Ok(Ok(())) => Ok(sandbox),
            Ok(Err(message)) => Err(LoadError::Config { name, message }),
            Err(fault) => Err(LoadError::Start {
                name,
                kind: fault.kind,
                detail: fault.detail,
            }),
        }
    }

    /// The plugin's name, for logs and reports.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// Hex SHA-256 of the component.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// The contract interface the plugin exports: the current
    /// `vigil:policy/policy@0.3.0`, or the older `@0.2.0` or `@0.1.0`,
    /// still loaded.
    pub fn contract(&self) -> &'static str {
        self.pre.contract()
    }

    /// Where the plugin came from: a path, `embedded`, or `admin-api`.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// When it was loaded, as Unix time in ms.
    pub fn loaded_at_unix_ms(&self) -> u64 {
        crate::clock::unix_ms(self.loaded_at)
    }

    /// The limits it runs under.
    pub fn limits(&self) -> &SandboxLimits {
        &self.limits
    }

    /// How many sessions one `assess` call carries, and what the plugin's
    /// calls have been measured to cost.
    pub fn batch_cap(&self) -> &BatchCap {
        &self.batch
    }

    /// Guest `assess` calls made so far (a batch above the cap takes
    /// several).
    pub fn assess_calls(&self) -> u64 {
        self.assess_calls
    }

    /// The JSON configuration the plugin was given.
    pub fn config_json(&self) -> &str {
        &self.config_json
    }

    /// Whether an instance is ready to be called (false after a fault until
    /// [`Sandbox::restart`] succeeds).
    pub fn is_live(&self) -> bool {
        self.live.is_some()
    }

    /// Replaces the instance with a fresh one (new store, re-configured): the
    /// recovery after a fault. The plugin's own state starts over.
    pub fn restart(&mut self) -> Result<(), CallFault> {
        self.live = None;
        match self.start()? {
            Ok(()) => Ok(()),
            Err(message) => Err(CallFault {
                kind: FaultKind::Config,
                detail: message,
            }),
        }
    }

    /// Instantiates and configures; the outer error is a fault, the inner one
    /// the plugin's refusal of its configuration.
    fn start(&mut self) -> Result<Result<(), String>, CallFault> {
        let mut store = self.new_store();
        self.instances_started += 1;
        // `configure` has no `now-ms`; it sees time zero.
        self.clock.set(0);
        self.begin_call(&mut store, self.limits.init_deadline);
        let plugin = match self.pre.instantiate(&mut store) {
            Ok(plugin) => plugin,
            Err(error) => return Err(classify(&store, error)),
        };
        let configured = plugin.configure(&mut store, &self.config_json);
        store.data_mut().call = None;
        self.output.flush_partial_lines();
        match configured {
            Ok(Ok(())) => {
                self.live = Some(LiveInstance { store, plugin });
                Ok(Ok(()))
            }
            Ok(Err(message)) => Ok(Err(message)),
            Err(error) => Err(classify(&store, error)),
        }
    }

    fn new_store(&self) -> Store<StoreState> {
        // An empty WASI context: no environment, arguments, stdin, preopened
        // directories, sockets or name lookup. Output goes to the log.
        // The clocks read the call's `now-ms` and the random sources are
        // seeded per instance (`crate::clock`): plugins are deterministic.
        let seed = crate::clock::instance_seed(&self.sha256, self.instances_started);
        let wasi = WasiCtx::builder()
            .wall_clock(crate::clock::PluginWallClock(self.clock.clone()))
            .monotonic_clock(crate::clock::PluginMonotonicClock(self.clock.clone()))
            .secure_random(crate::clock::seeded(seed))
            .insecure_random(crate::clock::seeded(seed.rotate_left(1)))
            .insecure_random_seed(u128::from(seed))
            .stdout(self.output.stdout())
            .stderr(self.output.stderr())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let mut store = Store::new(
            &self.engine.engine,
            StoreState {
                wasi,
                table: ResourceTable::new(),
                limiter: Limiter::new(&self.limits),
                output: self.output.clone(),
                call: None,
            },
        );
        store.limiter(|state| &mut state.limiter);
        // Each time the watchdog advances the epoch, the call in progress
        // decides: stop (its budget is spent) or carry on.
        store.epoch_deadline_callback(|mut context| match context.data_mut().call.as_mut() {
            Some(call) => call.on_epoch(),
            None => Ok(UpdateDeadline::Continue(1)),
        });
        store
    }

    /// Gives the next guest call on `store` `budget` of CPU time: armed
    /// with the watchdog, interrupted at the next epoch it advances.
    fn begin_call(&self, store: &mut Store<StoreState>, budget: Duration) {
        // The deadline first: an epoch advance after it always reaches
        // the call's callback, however late the call starts.
        store.set_epoch_deadline(1);
        store.data_mut().call = Some(CallBudget::start(&self.engine.watchdog, budget));
    }
}

/// Names what stopped a guest call. Checks the limiter first: running out of
/// memory surfaces as a plain error, not a `Trap`.
fn classify(store: &Store<StoreState>, error: wasmtime::Error) -> CallFault {
    {
        let kind = if store.data().limiter.memory_limit_hit() {
            FaultKind::MemoryLimit
        } else {
            match error.downcast_ref::<Trap>() {
                Some(Trap::Interrupt) => FaultKind::Deadline,
                Some(Trap::StackOverflow) => FaultKind::StackOverflow,
                Some(_) => FaultKind::Trap,
                None => FaultKind::Error,
            }
        };
        CallFault {
            kind,
            detail: format!("{error:#}"),
        }
    }
}

impl Sandbox {
    /// Runs one guest call under the call deadline. On any failure the
    /// instance is dropped (its store may be poisoned) and the fault returned.
    fn call<R>(
        &mut self,
        f: impl FnOnce(&mut Store<StoreState>, &Plugin) -> wasmtime::Result<R>,
    ) -> Result<R, CallFault> {
        let Some(live) = self.live.as_mut() else {
            return Err(CallFault {
                kind: FaultKind::NotRunning,
                detail: "no live instance (the last restart failed)".to_owned(),
            });
        };
        live.store.set_epoch_deadline(1);
        live.store.data_mut().call = Some(CallBudget::start(
            &self.engine.watchdog,
            self.limits.call_deadline,
        ));
        let result = f(&mut live.store, &live.plugin);
        live.store.data_mut().call = None;
        match result {
            Ok(value) => Ok(value),
            Err(error) => {
                self.output.flush_partial_lines();
                let fault = classify(&live.store, error);
                self.live = None;
                Err(fault)
            }
        }
    }

    /// Calls the plugin's `assess`, in as many calls as the batch cap
    /// needs, each under the call deadline. The verdicts are not yet
    /// checked against the batch; that is [`super::contract`]'s job.
    pub fn assess(
        &mut self,
        now_ms: u64,
        sessions: &SessionColumns,
    ) -> Result<VerdictColumns, CallFault> {
        self.clock.set(now_ms);
        // At least one call, so an empty batch reaches the plugin too.
        let mut verdicts: Option<VerdictColumns> = None;
        let mut start = 0;
        loop {
            let cap = self.batch.sessions_per_call();
            let end = start + cap.min(sessions.len() - start);
            match self.assess_call(now_ms, &LentBatch::new(sessions, start..end)) {
                Ok(answer) => match verdicts.as_mut() {
                    None => verdicts = Some(answer),
                    Some(verdicts) => verdicts.append(answer),
                },
                // An overrun that halved the cap is retried, on a fresh
                // instance, at the smaller size: a busy machine's pause
                // costs a retry, not the batch. A plugin that overruns
                // down to the smallest size is a fault.
                Err(fault)
                    if fault.kind == FaultKind::Deadline
                        && self.batch.sessions_per_call() < cap =>
                {
                    if self.restart().is_err() {
                        return Err(fault);
                    }
                    continue;
                }
                Err(fault) => return Err(fault),
            }
            if end == sessions.len() {
                return Ok(verdicts.unwrap_or_default());
            }
            start = end;
        }
    }

    /// One guest `assess` call, measured for the batch cap.
    fn assess_call(
        &mut self,
        now_ms: u64,
        facts: &LentBatch<'_>,
    ) -> Result<VerdictColumns, CallFault> {
        self.assess_calls += 1;
        let started = Instant::now();
        let result = self.call(|store, plugin| plugin.assess(store, now_ms, facts));
        match result {
            Ok(verdicts) => {
                self.batch.record(facts.len(), started.elapsed());
                self.tell_batch_cap();
                // The instance answered; a malformed answer breaks the
                // contract but leaves the instance usable.
                verdicts.map_err(CallFault::from)
            }
            Err(fault) => {
                if fault.kind == FaultKind::Deadline {
                    if let Some(cap) = self.batch.deadline_hit(facts.len()) {
                        tracing::warn!(
                            plugin = %self.name,
                            sessions = facts.len(),
                            cap,
                            deadline_ms = self.limits.call_deadline.as_millis() as u64,
                            "policy plugin overran its deadline on this many sessions; its batches are now split into calls of at most {cap}"
                        );
                        self.batch_cap_logged = cap;
                    }
                }
                Err(fault)
            }
        }
    }

    /// Logs the batch cap when it settles somewhere new (twice or half the
    /// last one told), in words an author can act on.
    fn tell_batch_cap(&mut self) {
        let cap = self.batch.sessions_per_call();
        let told = self.batch_cap_logged;
        if told != 0 && cap < told.saturating_mul(2) && cap.saturating_mul(2) > told {
            return;
        }
        self.batch_cap_logged = cap;
        if let Some(cost) = self.batch.cost_per_session() {
            if cap < 100_000 {
                tracing::info!(
                    plugin = %self.name,
                    cost_us_per_session = cost.as_secs_f64() * 1e6,
                    sessions_per_call = cap,
                    deadline_ms = self.limits.call_deadline.as_millis() as u64,
                    "policy plugin's assess batches are split to fit its deadline (set [policy.limits] max_batch_sessions to choose)"
                );
            }
        }
    }

    /// Calls the plugin's `on-events`.
    pub fn on_events(&mut self, events: &[Event]) -> Result<(), CallFault> {
        if let Some(latest) = events.iter().map(|event| event.at_ms).max() {
            self.clock.set(latest);
        }
        self.call(|store, plugin| plugin.on_events(store, events))
    }

    /// Calls the plugin's `select-evictions`. A batch above the batch cap
    /// is chosen from in rounds: each part of at most the cap names its
    /// `excess` candidates, and the candidates go to the next round, until
    /// one call can see them all. For a policy that ranks sessions (the
    /// usual kind) that is the same choice as one call over everything.
    pub fn select_evictions(
        &mut self,
        now_ms: u64,
        sessions: &SessionColumns,
        excess: u32,
    ) -> Result<Vec<SessionId>, CallFault> {
        self.clock.set(now_ms);
        let cap = self
            .batch
            .sessions_per_call()
            .max((excess as usize).saturating_mul(2))
            .max(batching::MIN_CAP);
        if sessions.len() <= cap {
            return self.select_call(now_ms, &LentBatch::new(sessions, 0..sessions.len()), excess);
        }
        let mut pool = sessions.clone();
        while pool.len() > cap {
            let mut chosen = HashSet::new();
            for start in (0..pool.len()).step_by(cap) {
                let part = LentBatch::new(&pool, start..start + cap);
                chosen.extend(self.select_call(now_ms, &part, excess)?);
            }
            let candidates = pool.filter(|id| chosen.contains(&id));
            if candidates.len() >= pool.len() {
                break; // a plugin that keeps choosing everything
            }
            pool = candidates;
        }
        self.select_call(now_ms, &LentBatch::new(&pool, 0..pool.len()), excess)
    }

    fn select_call(
        &mut self,
        now_ms: u64,
        facts: &LentBatch<'_>,
        excess: u32,
    ) -> Result<Vec<SessionId>, CallFault> {
        self.call(|store, plugin| plugin.select_evictions(store, now_ms, facts, excess))
    }
}
