//! The architecture's rules that no crate boundary can express, checked on
//! the source (ARCHITECTURE.md explains them):
//!
//! - the `vigil` crate's modules sit in four layers — core, HTTP and the
//!   profile seam, profiles, start-up — and a module imports only from its
//!   own layer or the ones below;
//! - no core module names a profile (OneBot);
//! - the core's modules import each other without a cycle;
//! - the crate graph keeps wasmtime out of `vigil` and HTTP out of the
//!   policy runtime.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn source_files(dir: &Path, found: &mut Vec<PathBuf>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) => panic!("cannot read {}: {error}", dir.display()),
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            source_files(&path, found);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            found.push(path);
        }
    }
}

/// Every `.rs` file of the crate, by path under `src/`, with its text.
fn crate_sources() -> BTreeMap<String, String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    source_files(&src, &mut files);
    files
        .into_iter()
        .map(|path| {
            let relative = path
                .strip_prefix(&src)
                .map(|p| p.to_string_lossy().replace('\\', "/"))
                .unwrap_or_default();
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            (relative, text)
        })
        .collect()
}

/// The layer of a top-level module (or file): 1 core, 2 HTTP and the
/// profile seam, 3 profiles, 4 start-up.
fn layer_of_module(module: &str) -> Option<u8> {
    match module {
        "core" => Some(1),
        "http" | "profile" | "cluster" => Some(2),
        "onebot" => Some(3),
        "config" | "startup" | "lib" | "main" => Some(4),
        _ => None,
    }
}

fn top_module(file: &str) -> &str {
    let first = file.split('/').next().unwrap_or(file);
    first.strip_suffix(".rs").unwrap_or(first)
}

/// Code without comments: `//` to the end of a line (doc comments included).
fn code_of(text: &str) -> String {
    text.lines()
        .map(|line| match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The paths following `prefix` in `code`, as segments: `prefix a::b::C`
/// gives `[a, b, C]`, and `prefix a::{b::C, D}` gives `[a, b, C]` and
/// `[a, D]`.
fn paths_after(code: &str, prefix: &str) -> Vec<Vec<String>> {
    fn parse(text: &str, base: &[String], out: &mut Vec<Vec<String>>) -> usize {
        let mut path = base.to_vec();
        let mut at = 0;
        let bytes = text.as_bytes();
        loop {
            let start = at;
            while at < bytes.len() && (bytes[at].is_ascii_alphanumeric() || bytes[at] == b'_') {
                at += 1;
            }
            if at > start {
                path.push(text[start..at].to_owned());
            }
            if text[at..].starts_with("::{") {
                at += 3;
                loop {
                    while text[at..].starts_with([' ', '\n', ',']) {
                        at += 1;
                    }
                    if at >= bytes.len() || bytes[at] == b'}' {
                        return at + 1;
                    }
                    at += parse(&text[at..], &path, out);
                }
            } else if text[at..].starts_with("::") {
                at += 2;
            } else {
                if path.len() > base.len() {
                    out.push(path);
                }
                // Skip to the end of this item (`as x`, a comma, a brace).
                while at < bytes.len() && !matches!(bytes[at], b',' | b'}' | b';' | b'\n') {
                    at += 1;
                }
                return at;
            }
        }
    }
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find(prefix) {
        rest = &rest[at + prefix.len()..];
        parse(rest, &[], &mut out);
    }
    out
}

/// The first segment of every path following `prefix`.
fn names_after(code: &str, prefix: &str) -> BTreeSet<String> {
    paths_after(code, prefix)
        .into_iter()
        .filter_map(|path| path.into_iter().next())
        .collect()
}

#[test]
fn every_module_imports_only_from_its_layer_or_below() {
    let mut violations = Vec::new();
    for (file, text) in crate_sources() {
        let module = top_module(&file);
        let Some(layer) = layer_of_module(module) else {
            violations.push(format!(
                "{file}: not in any layer; add it to ARCHITECTURE.md and this test"
            ));
            continue;
        };
        for used in names_after(&code_of(&text), "crate::") {
            match layer_of_module(&used) {
                Some(used_layer) if used_layer > layer => violations.push(format!(
                    "{file} (layer {layer}) imports crate::{used} (layer {used_layer})"
                )),
                Some(_) => {}
                None => {
                    violations.push(format!("{file} imports crate::{used}, which has no layer"))
                }
            }
        }
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

#[test]
fn no_core_module_names_a_profile() {
    let named: Vec<String> = crate_sources()
        .into_iter()
        .filter(|(file, _)| file.starts_with("core/"))
        .filter(|(_, text)| text.to_ascii_lowercase().contains("onebot"))
        .map(|(file, _)| file)
        .collect();
    assert!(named.is_empty(), "core modules naming OneBot: {named:?}");
}

/// The core module a path under `src/core/` names, longest first:
/// `["session", "queue", "Enqueued"]` is `session::queue` when
/// `core/session/queue.rs` exists, else `session`; `None` when the first
/// segment is no module (a re-export of `core/mod.rs`).
fn core_module(segments: &[String]) -> Option<String> {
    let core = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/core");
    let mut found = None;
    let mut dir = core.clone();
    let mut name = Vec::new();
    for segment in segments {
        let file = dir.join(format!("{segment}.rs"));
        let folder = dir.join(segment);
        if !file.exists() && !folder.is_dir() {
            break;
        }
        name.push(segment.clone());
        found = Some(name.join("::"));
        dir = folder;
    }
    found
}

#[test]
fn the_core_modules_import_each_other_without_a_cycle() {
    // A core file's module: `core/tick.rs` is tick, `core/session/task.rs`
    // is session::task, `core/session/mod.rs` is session. `core/mod.rs` is
    // the table of contents and re-exports: not part of the graph.
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (file, text) in crate_sources() {
        let Some(inner) = file.strip_prefix("core/") else {
            continue;
        };
        if inner == "mod.rs" {
            continue;
        }
        let inner = inner.strip_suffix(".rs").unwrap_or(inner);
        let module = inner
            .strip_suffix("/mod")
            .unwrap_or(inner)
            .replace('/', "::");
        let entry = edges.entry(module.clone()).or_default();
        for path in paths_after(&code_of(&text), "crate::core::") {
            // A name re-exported by core/mod.rs (`crate::core::SessionHost`)
            // is an import of the table of contents, which closes a cycle.
            let Some(used) = core_module(&path) else {
                panic!(
                    "core/{inner} imports `crate::core::{}`: core modules import each other by module path, not through core/mod.rs's re-exports",
                    path.join("::")
                );
            };
            if used != module {
                entry.insert(used);
            }
        }
    }
    // Depth-first search for a back edge.
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match state.get(node) {
            Some(1) => {
                let start = path.iter().position(|n| n == node).unwrap_or(0);
                let mut cycle = path[start..].to_vec();
                cycle.push(node.to_owned());
                return Some(cycle);
            }
            Some(_) => return None,
            None => {}
        }
        state.insert(node.to_owned(), 1);
        path.push(node.to_owned());
        for next in edges.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, edges, state, path) {
                return Some(cycle);
            }
        }
        path.pop();
        state.insert(node.to_owned(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for node in edges.keys() {
        if let Some(cycle) = visit(node, &edges, &mut state, &mut Vec::new()) {
            panic!("import cycle in the core: {}", cycle.join(" -> "));
        }
    }
}

/// The dependency names of a manifest's `[dependencies]` table.
fn dependencies(manifest: &Path) -> BTreeSet<String> {
    let text = match std::fs::read_to_string(manifest) {
        Ok(text) => text,
        Err(error) => panic!("cannot read {}: {error}", manifest.display()),
    };
    let table: toml::Table = match toml::from_str(&text) {
        Ok(table) => table,
        Err(error) => panic!("{} is not TOML: {error}", manifest.display()),
    };
    table
        .get("dependencies")
        .and_then(|deps| deps.as_table())
        .map(|deps| deps.keys().cloned().collect())
        .unwrap_or_default()
}

#[test]
fn wasmtime_lives_only_in_the_policy_runtime_and_it_knows_no_http() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let host = dependencies(&root.join("Cargo.toml"));
    for forbidden in ["wasmtime", "wasmtime-wasi"] {
        assert!(
            !host.contains(forbidden),
            "the session host depends on {forbidden}: only vigil-policy-runtime may"
        );
    }
    let runtime = dependencies(&root.join("policy-runtime/Cargo.toml"));
    assert!(runtime.contains("wasmtime"));
    for forbidden in [
        "axum",
        "hyper",
        "http",
        "reqwest",
        "tokio-tungstenite",
        "tower",
    ] {
        assert!(
            !runtime.contains(forbidden),
            "the policy runtime depends on {forbidden}: it must know nothing of HTTP or sockets"
        );
    }
}
