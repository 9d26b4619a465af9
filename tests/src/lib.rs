//! Shared helpers for Vigil's integration tests: one wasm engine, plugin
//! loading, deterministic fact generation, log capture, and spawning the real
//! `vigil` program.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use vigil::policy::{
    LoadError, PluginSource, PolicyEngine, Sandbox, SandboxLimits, Supervisor, SupervisorConfig,
};

pub use vigil::policy::scenarios::generated_facts;
pub use vigil_plugin_artifacts::test_plugins;
pub use vigil_plugin_artifacts::{DEFAULT_POLICY, DEFAULT_POLICY_PATH};

/// One engine for the whole test binary, as in the host.
pub fn engine() -> &'static PolicyEngine {
    static ENGINE: OnceLock<PolicyEngine> = OnceLock::new();
    ENGINE.get_or_init(|| match PolicyEngine::new() {
        Ok(engine) => engine,
        Err(error) => panic!("cannot start the wasm engine: {error:#}"),
    })
}

/// Loads plugin bytes with a config and the default limits.
pub fn load(name: &str, bytes: &[u8], config: &str) -> Result<Sandbox, LoadError> {
    load_with_limits(name, bytes, config, SandboxLimits::default())
}

/// Loads plugin bytes with a config and the given limits.
pub fn load_with_limits(
    name: &str,
    bytes: &[u8],
    config: &str,
    limits: SandboxLimits,
) -> Result<Sandbox, LoadError> {
    let source = PluginSource::from_bytes(name, "test", bytes.to_vec());
    Sandbox::load(engine(), &source, config, limits)
}

/// Loads a plugin that must load, under the default fault settings.
pub fn supervise(name: &str, bytes: &[u8], config: &str) -> Supervisor {
    match load(name, bytes, config) {
        Ok(sandbox) => Supervisor::new(sandbox, SupervisorConfig::default()),
        Err(error) => panic!("{name} should load: {error}"),
    }
}

/// Collects what `tracing` logs on the current thread while it is installed.
#[derive(Clone, Default)]
pub struct LogCapture(Arc<Mutex<Vec<u8>>>);

impl LogCapture {
    /// Runs `f` with this thread's log going into the capture.
    pub fn during<R>(&self, f: impl FnOnce() -> R) -> R {
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(self.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, f)
    }

    /// Everything captured so far.
    pub fn text(&self) -> String {
        let bytes = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

impl Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogCapture {
    type Writer = LogCapture;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}
