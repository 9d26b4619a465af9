//! Builds the policy plugins under `plugins/` for `wasm32-wasip2` with a
//! nested cargo, and copies the components into `OUT_DIR`.
//!
//! The nested build uses its own target directory (`<target>/wasm`): sharing
//! the outer one deadlocks on cargo's build lock, silently, since build-script
//! output is captured. Flags meant for the host build (RUSTFLAGS, wrappers such
//! as clippy's) are removed from its environment.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const WASM_TARGET: &str = "wasm32-wasip2";

/// (cargo package, component file stem)
const DEFAULT_PLUGINS: &[(&str, &str)] = &[("vigil-default-policy", "vigil_default_policy")];
const TEST_PLUGINS: &[(&str, &str)] = &[
    ("vigil-strict-policy", "vigil_strict_policy"),
    ("vigil-lenient-policy", "vigil_lenient_policy"),
    ("vigil-capacity-policy", "vigil_capacity_policy"),
    ("vigil-test-noop", "vigil_test_noop"),
    ("vigil-test-misbehaving", "vigil_test_misbehaving"),
    ("vigil-test-wrong-world", "vigil_test_wrong_world"),
    ("vigil-test-old-contract", "vigil_test_old_contract"),
    ("vigil-test-contract-0-2", "vigil_test_contract_0_2"),
    ("vigil-test-clock-reader", "vigil_test_clock_reader"),
    ("vigil-test-frame-counter", "vigil_test_frame_counter"),
];

fn main() {
    if let Err(message) = run() {
        // One clear line, not a backtrace: this is what a newcomer sees.
        eprintln!("error: {message}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let manifest_dir = PathBuf::from(env_var("CARGO_MANIFEST_DIR")?);
    let root = manifest_dir
        .parent()
        .ok_or("plugin-artifacts has no parent directory")?
        .to_path_buf();
    let plugins_dir = root.join("plugins");
    let out_dir = PathBuf::from(env_var("OUT_DIR")?);

    // Every member of the plugins' workspace, so no test runs a stale
    // component: read from the directory, not listed by hand.
    for watched in plugin_sources(&plugins_dir)? {
        println!("cargo:rerun-if-changed={}", watched.display());
    }
    println!("cargo:rerun-if-changed={}", root.join("wit").display());
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_DIR");

    let mut plugins: Vec<(&str, &str)> = DEFAULT_PLUGINS.to_vec();
    if env::var_os("CARGO_FEATURE_TEST_PLUGINS").is_some() {
        plugins.extend_from_slice(TEST_PLUGINS);
    }

    ensure_wasm_target()?;

    let wasm_target_dir = match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir).join("wasm"),
        None => root.join("target").join("wasm"),
    };
    build_plugins(&plugins_dir, &wasm_target_dir, &plugins)?;

    let built = wasm_target_dir.join(WASM_TARGET).join("release");
    for (_, stem) in &plugins {
        let from = built.join(format!("{stem}.wasm"));
        let to = out_dir.join(format!("{stem}.wasm"));
        std::fs::copy(&from, &to)
            .map_err(|e| format!("copying {} to {}: {e}", from.display(), to.display()))?;
    }
    Ok(())
}

/// What the plugins are built from: the workspace manifest and lock file,
/// and every directory beside them (each a plugin, the SDK, or a folder of
/// test plugins); cargo watches directories recursively.
fn plugin_sources(plugins_dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut sources = vec![
        plugins_dir.join("Cargo.toml"),
        plugins_dir.join("Cargo.lock"),
    ];
    let entries = std::fs::read_dir(plugins_dir)
        .map_err(|e| format!("reading {}: {e}", plugins_dir.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("reading {}: {e}", plugins_dir.display()))?;
        // A `target/` of a build run by hand inside plugins/ is output.
        if entry.file_type().is_ok_and(|kind| kind.is_dir()) && entry.file_name() != "target" {
            sources.push(entry.path());
        }
    }
    sources.sort();
    Ok(sources)
}

fn env_var(name: &str) -> Result<String, String> {
    env::var(name).map_err(|_| format!("cargo did not set {name}"))
}

/// Installs the `wasm32-wasip2` standard library with rustup when it is
/// missing, or says exactly what to run when rustup is not there.
fn ensure_wasm_target() -> Result<(), String> {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .map_err(|e| format!("running `{rustc} --print sysroot`: {e}"))?;
    let sysroot = PathBuf::from(String::from_utf8_lossy(&sysroot.stdout).trim());
    if sysroot.join("lib/rustlib").join(WASM_TARGET).exists() {
        return Ok(());
    }
    let hint = format!(
        "the Rust target `{WASM_TARGET}` is not installed; it is needed to build Vigil's \
         policy plugins. Install it with: rustup target add {WASM_TARGET}"
    );
    println!("cargo:warning=installing the `{WASM_TARGET}` target with rustup (needed for the policy plugins)");
    let status = Command::new("rustup")
        .args(["target", "add", WASM_TARGET])
        .status()
        .map_err(|_| hint.clone())?;
    if !status.success() {
        return Err(format!(
            "`rustup target add {WASM_TARGET}` failed ({status}); {hint}"
        ));
    }
    Ok(())
}

fn build_plugins(
    plugins_dir: &Path,
    target_dir: &Path,
    plugins: &[(&str, &str)],
) -> Result<(), String> {
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut command = Command::new(&cargo);
    command
        .arg("build")
        .arg("--manifest-path")
        .arg(plugins_dir.join("Cargo.toml"))
        .args(["--target", WASM_TARGET, "--release"])
        .arg("--target-dir")
        .arg(target_dir);
    for (package, _) in plugins {
        command.args(["-p", package]);
    }
    for (name, _) in env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        let inherited_for_host_only = matches!(
            name,
            "CARGO_ENCODED_RUSTFLAGS"
                | "RUSTFLAGS"
                | "CARGO_ENCODED_RUSTDOCFLAGS"
                | "RUSTDOCFLAGS"
                | "RUSTC_WRAPPER"
                | "RUSTC_WORKSPACE_WRAPPER"
                | "CARGO_TARGET_DIR"
                | "CARGO_INCREMENTAL"
                | "CARGO_LLVM_COV"
        ) || name.starts_with("CARGO_BUILD_")
            || name.starts_with("CARGO_PROFILE_")
            || name.starts_with("CARGO_FEATURE_")
            || name.starts_with("CARGO_CFG_")
            || name.starts_with("CARGO_LLVM_COV_");
        if inherited_for_host_only {
            command.env_remove(name);
        }
    }
    let output = command
        .output()
        .map_err(|e| format!("running `{cargo}` for the policy plugins: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "building the policy plugins for {WASM_TARGET} failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(())
}
