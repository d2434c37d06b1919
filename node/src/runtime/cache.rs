//! Precompiled components on disk, so a restarted node serves what it already
//! ran without compiling it again (compiling costs ~100 ms of CPU and more per
//! component; loading an artifact well under 1 ms).
//!
//! An artifact is keyed by the component's digest and the engine's settings
//! (wasmtime's compatibility hash: version, target, tunables), so a node whose
//! engine changed compiles afresh instead of loading code built for another.
//! Each file starts with the sha256 of the rest: a torn or corrupted file is
//! detected, deleted and rebuilt, never handed to wasmtime.

use std::hash::{Hash as _, Hasher as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use sha2::{Digest as _, Sha256};
use wasmtime::component::Component;
use wasmtime::Engine;

use super::engine::PrepareError;

const CHECKSUM_LEN: usize = 32;

/// How the cache has been used since the node started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Components loaded from an artifact on disk.
    pub hits: u64,
    /// Components compiled (no artifact yet, or no cache directory).
    pub compiled: u64,
    /// Artifacts found damaged or unloadable, deleted and rebuilt.
    pub rebuilt: u64,
}

#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    compiled: AtomicU64,
    rebuilt: AtomicU64,
}

/// Where compiled artifacts live; `None` keeps nothing on disk.
pub(crate) struct ArtifactCache {
    dir: Option<PathBuf>,
    /// Hex of the engine's compatibility hash, part of every file name.
    engine_key: String,
    counters: Counters,
}

impl ArtifactCache {
    pub(crate) fn new(engine: &Engine, dir: Option<PathBuf>) -> std::io::Result<ArtifactCache> {
        if let Some(dir) = &dir {
            std::fs::create_dir_all(dir)?;
            // Half-written artifacts of a process that crashed mid-store.
            for entry in std::fs::read_dir(dir)?.flatten() {
                let name = entry.file_name();
                if name.to_string_lossy().contains(".tmp") {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Ok(ArtifactCache {
            dir,
            engine_key: format!("{:016x}", hasher.finish()),
            counters: Counters::default(),
        })
    }

    pub(crate) fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.counters.hits.load(Ordering::Relaxed),
            compiled: self.counters.compiled.load(Ordering::Relaxed),
            rebuilt: self.counters.rebuilt.load(Ordering::Relaxed),
        }
    }

    /// The artifact file for `digest` (`sha256:<hex>`, already validated).
    pub(crate) fn path_of(&self, digest: &str) -> Option<PathBuf> {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        let dir = self.dir.as_ref()?;
        Some(dir.join(format!("{hex}-{}.cwasm", self.engine_key)))
    }

    /// Loads `digest`'s artifact if there is a sound one, else compiles `wasm`
    /// and stores the artifact for next time. Blocking: run off the async threads.
    pub(crate) fn load_or_compile(
        &self,
        engine: &Engine,
        digest: &str,
        wasm: &[u8],
    ) -> Result<Component, PrepareError> {
        let Some(path) = self.path_of(digest) else {
            self.counters.compiled.fetch_add(1, Ordering::Relaxed);
            return compile(engine, digest, wasm);
        };
        match load(engine, &path) {
            Ok(Some(component)) => {
                self.counters.hits.fetch_add(1, Ordering::Relaxed);
                tracing::info!(digest, "loaded compiled component from the cache");
                return Ok(component);
            }
            Ok(None) => {}
            Err(why) => {
                self.counters.rebuilt.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(digest, path = %path.display(), "discarding a bad compiled artifact and compiling again: {why}");
                let _ = std::fs::remove_file(&path);
            }
        }
        self.counters.compiled.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let artifact = engine
            .precompile_component(wasm)
            .map_err(|e| PrepareError::Compile(format!("{e:#}")))?;
        tracing::info!(digest, bytes = wasm.len(), elapsed = ?started.elapsed(), "compiled component");
        if let Err(e) = store(&path, &artifact) {
            // Still runs; the next start compiles again.
            tracing::warn!(path = %path.display(), "cannot store the compiled artifact: {e}");
        }
        deserialize(engine, &artifact).map_err(PrepareError::Compile)
    }
}

fn compile(engine: &Engine, digest: &str, wasm: &[u8]) -> Result<Component, PrepareError> {
    let started = Instant::now();
    let component =
        Component::new(engine, wasm).map_err(|e| PrepareError::Compile(format!("{e:#}")))?;
    tracing::info!(digest, bytes = wasm.len(), elapsed = ?started.elapsed(), "compiled component");
    Ok(component)
}

/// `Ok(None)`: no artifact yet. `Err`: one exists but cannot be trusted.
fn load(engine: &Engine, path: &Path) -> Result<Option<Component>, String> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("reading it failed: {e}")),
    };
    if bytes.len() < CHECKSUM_LEN {
        return Err(format!(
            "{} bytes is too short to be an artifact",
            bytes.len()
        ));
    }
    let (checksum, artifact) = bytes.split_at(CHECKSUM_LEN);
    if Sha256::digest(artifact).as_slice() != checksum {
        return Err("its checksum does not match its contents".into());
    }
    deserialize(engine, artifact).map(Some)
}

/// Writes checksum + artifact to a temporary file, syncs it, then renames it
/// into place, so a crash leaves either no file or a whole one.
fn store(path: &Path, artifact: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(&Sha256::digest(artifact))?;
    file.write_all(artifact)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// The one place reef runs `unsafe` code.
#[allow(unsafe_code)]
fn deserialize(engine: &Engine, artifact: &[u8]) -> Result<Component, String> {
    // SAFETY: wasmtime requires that the bytes be an artifact it produced
    // itself, for this engine's settings, not altered since: anything else
    // may run arbitrary machine code. Every caller passes either bytes that
    // `precompile_component` just returned, or bytes read back from a file
    // this node wrote whose sha256 (stored with it) still matches, under a
    // name that includes this engine's compatibility hash. wasmtime also
    // checks the version and settings recorded in the artifact itself.
    unsafe { Component::deserialize(engine, artifact) }.map_err(|e| format!("{e:#}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifacts_are_named_by_digest_and_engine() {
        let engine = Engine::default();
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = ArtifactCache::new(&engine, Some(dir.path().to_path_buf())).expect("cache");
        let digest = format!("sha256:{}", "ab".repeat(32));
        let path = cache.path_of(&digest).expect("a path");
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        assert!(name.starts_with(&"ab".repeat(32)), "{name}");
        assert!(name.ends_with(".cwasm"), "{name}");
        let none = ArtifactCache::new(&engine, None).expect("cache");
        assert!(none.path_of(&digest).is_none());
    }

    #[test]
    fn a_short_or_altered_file_is_refused() {
        let engine = Engine::default();
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.cwasm");
        std::fs::write(&path, b"short").expect("write");
        assert!(load(&engine, &path).unwrap_err().contains("too short"));
        store(&path, b"not really an artifact").expect("store");
        let mut bytes = std::fs::read(&path).expect("read");
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).expect("write");
        assert!(load(&engine, &path).unwrap_err().contains("checksum"));
        assert!(matches!(
            load(&engine, &dir.path().join("absent")),
            Ok(None)
        ));
    }
}
