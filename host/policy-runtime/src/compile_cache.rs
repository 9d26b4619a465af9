//! Compiled plugins on disk, so an 18 MB CPython or SpiderMonkey component
//! is compiled once, not at every start and swap. An entry is keyed by the
//! component's SHA-256 and by the engine's compatibility hash (wasmtime's
//! version and every setting that changes generated code), so a different
//! engine never reads another's code.
//!
//! Loading compiled code runs it, so an entry is used only if it is exactly
//! what this host wrote: the file starts with [`MAGIC`] and the SHA-256 of
//! the rest, checked before wasmtime sees a byte; wasmtime then checks the
//! engine's compatibility itself. The directory is created private to the
//! user (0700) and must stay so: whoever can write to it can run code in
//! the host. Every failure here (unreadable, corrupt, full disk) falls back
//! to compiling, with a warning.

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::Engine;

/// The first bytes of every entry: the format and its version.
const MAGIC: &[u8; 8] = b"VIGILCW1";

/// A directory of compiled components for one engine configuration.
#[derive(Debug)]
pub struct CompileCache {
    dir: PathBuf,
    engine_key: String,
}

/// Where a component came from when it was loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compiled {
    /// Compiled now (and written to the cache, if there is one).
    Fresh,
    /// Read from the on-disk cache.
    FromDisk,
    /// Already in this process's memory.
    InMemory,
}

impl CompileCache {
    /// Opens (creating when needed) `dir` for `engine`'s code.
    pub fn open(dir: &Path, engine: &Engine) -> std::io::Result<Self> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode_private()
            .create(dir)?;
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Ok(CompileCache {
            dir: dir.to_owned(),
            engine_key: format!("{:016x}", hasher.finish()),
        })
    }

    fn entry(&self, sha256: &str) -> PathBuf {
        self.dir.join(format!("{sha256}-{}.cwasm", self.engine_key))
    }

    /// The component compiled from the bytes with `sha256`, if this cache
    /// holds a sound entry for it. The one `unsafe` of the workspace:
    /// wasmtime cannot check that compiled code is its own, so this does.
    #[allow(unsafe_code)]
    pub fn load(&self, engine: &Engine, sha256: &str) -> Option<Component> {
        let path = self.entry(sha256);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return None,
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "cannot read a compiled plugin; compiling instead");
                return None;
            }
        };
        let Some(code) = verified(&bytes) else {
            tracing::warn!(path = %path.display(), "a compiled plugin in the cache is corrupt; compiling instead");
            let _ = std::fs::remove_file(&path);
            return None;
        };
        // SAFETY: `code` is byte for byte what `Component::serialize` gave
        // this host (its checksum, written beside it, matches), in a
        // directory private to this user, and keyed by this engine's
        // compatibility hash; wasmtime checks that compatibility again.
        match unsafe { Component::deserialize(engine, code) } {
            Ok(component) => Some(component),
            Err(error) => {
                tracing::warn!(path = %path.display(), error = %format!("{error:#}"), "a compiled plugin in the cache does not fit this engine; compiling instead");
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    /// Writes `component`'s code for `sha256`, atomically (a reader sees
    /// the whole entry or none).
    pub fn store(&self, sha256: &str, component: &Component) {
        let path = self.entry(sha256);
        let written = component
            .serialize()
            .map_err(|error| std::io::Error::other(format!("{error:#}")))
            .and_then(|code| {
                let temporary = self
                    .dir
                    .join(format!(".{sha256}.{}.tmp", std::process::id()));
                let mut file = std::fs::File::create(&temporary)?;
                file.write_all(MAGIC)?;
                file.write_all(&Sha256::digest(&code))?;
                file.write_all(&code)?;
                file.sync_all()?;
                std::fs::rename(&temporary, &path)
            });
        if let Err(error) = written {
            tracing::warn!(path = %path.display(), %error, "cannot write a compiled plugin to the cache; the next start compiles it again");
        }
    }
}

/// The code of an entry whose header and checksum are sound.
fn verified(bytes: &[u8]) -> Option<&[u8]> {
    let rest = bytes.strip_prefix(MAGIC.as_slice())?;
    if rest.len() < 32 {
        return None;
    }
    let (digest, code) = rest.split_at(32);
    (Sha256::digest(code).as_slice() == digest).then_some(code)
}

/// `DirBuilder::mode(0o700)` where there are modes.
trait PrivateDir {
    fn mode_private(&mut self) -> &mut Self;
}

impl PrivateDir for std::fs::DirBuilder {
    #[cfg(unix)]
    fn mode_private(&mut self) -> &mut Self {
        use std::os::unix::fs::DirBuilderExt;
        self.mode(0o700)
    }

    #[cfg(not(unix))]
    fn mode_private(&mut self) -> &mut Self {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_entry_with_its_own_checksum_is_trusted() {
        let code = b"compiled code".to_vec();
        let mut entry = MAGIC.to_vec();
        entry.extend_from_slice(&Sha256::digest(&code));
        entry.extend_from_slice(&code);
        assert_eq!(verified(&entry), Some(code.as_slice()));

        let mut flipped = entry.clone();
        if let Some(last) = flipped.last_mut() {
            *last ^= 1;
        }
        assert_eq!(verified(&flipped), None, "one changed byte");
        assert_eq!(verified(&entry[..20]), None, "truncated");
        assert_eq!(verified(b"not an entry at all"), None);
    }
}
