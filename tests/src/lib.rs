//! Shared helpers for Vigil's integration tests: one wasm engine, plugin
//! loading, deterministic fact generation, log capture, and spawning the real
//! `vigil` program.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use vigil::policy::{
    LoadError, PluginSource, PolicyEngine, Sandbox, SandboxLimits, Supervisor, SupervisorConfig,
};

pub use vigil::policy::scenarios::generated_facts;
pub use vigil_plugin_artifacts::test_plugins;
pub use vigil_plugin_artifacts::{DEFAULT_POLICY, DEFAULT_POLICY_PATH};

/// The workspace's target directory.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target")))
}

/// `XDG_CACHE_HOME` for the `vigil` processes the tests start: their
/// compile cache lives under the target directory, shared with
/// [`engine`]'s, never in the user's home.
pub fn cache_home() -> PathBuf {
    target_dir().join("test-cache-home")
}

/// One engine for the whole test binary, as in the host, with the compile
/// cache the test processes share (an 18 MB Python plugin is compiled
/// once, not by every test).
pub fn engine() -> &'static PolicyEngine {
    static ENGINE: OnceLock<PolicyEngine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let engine = match PolicyEngine::new() {
            Ok(engine) => engine,
            Err(error) => panic!("cannot start the wasm engine: {error:#}"),
        };
        let dir = vigil::core::config::compile_cache_under(&cache_home());
        match engine.with_compile_cache(&dir) {
            Ok(engine) => engine,
            Err(error) => panic!("cannot open the compile cache {}: {error}", dir.display()),
        }
    })
}

/// A Python or JavaScript plugin under `plugins/` (`python-policy`,
/// `test-plugins/js-hostile`, ...), built by `plugins/polyglot/build.sh`
/// with the pinned toolchains (installed on first need); the path of the
/// component. Builds run one at a time and each once per test binary.
pub fn polyglot_plugin(dir: &str) -> PathBuf {
    static BUILT: Mutex<Vec<(String, PathBuf)>> = Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((_, path)) = built.iter().find(|(name, _)| name == dir) {
        return path.clone();
    }
    let root = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    let output = Command::new("bash")
        .arg(root.join("plugins/polyglot/build.sh"))
        .arg(root.join("plugins").join(dir))
        .stdin(Stdio::null())
        .output();
    let output = match output {
        Ok(output) => output,
        Err(error) => panic!("cannot run plugins/polyglot/build.sh: {error}"),
    };
    if !output.status.success() {
        panic!(
            "building plugins/{dir} failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let Some(path) = stdout.lines().last().map(PathBuf::from) else {
        panic!("plugins/polyglot/build.sh printed no path")
    };
    built.push((dir.to_owned(), path.clone()));
    path
}

/// The bytes of [`polyglot_plugin`].
pub fn polyglot_bytes(dir: &str) -> Vec<u8> {
    let path = polyglot_plugin(dir);
    match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(error) => panic!("cannot read {}: {error}", path.display()),
    }
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
