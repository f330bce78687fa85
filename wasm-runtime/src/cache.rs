//! The compile cache on disk: compiled artifacts keyed by the source's SHA-256
//! digest and the engine's compatibility hash.
//!
//! Layout: `<root>/<compat-hash>/<digest>.cwasm`. The compatibility hash
//! (wasmtime's `precompile_compatibility_hash`: version, target, settings)
//! names the folder, so an engine only ever looks at entries it could have
//! written. Each entry is a small header — magic, kind, SHA-256 of the payload —
//! followed by wasmtime's serialized code. Loading checks the header and the
//! checksum before wasmtime checks its own compatibility header, and only then
//! deserializes; an entry failing any check is deleted and the caller
//! recompiles. Entries are written to a temporary file and renamed into place,
//! so a crash never leaves a half-written entry under the final name.

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::{Module, Precompiled};

use crate::artifact::Compiled;
use crate::error::{Error, Result};

const MAGIC: &[u8; 16] = b"FLOTILLA-CWASM\x00\x01";
const KIND_MODULE: u8 = 1;
const KIND_COMPONENT: u8 = 2;
const HEADER_LEN: usize = MAGIC.len() + 1 + 32;

/// Where a loaded artifact's compiled code came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheOutcome {
    /// No cache is configured: compiled in memory.
    Disabled,
    /// Loaded from the cache without compiling.
    Hit,
    /// Not in the cache: compiled and stored.
    Miss,
    /// An entry was there but failed its checks (corrupted, truncated or
    /// incompatible): it was discarded, and the artifact compiled and stored anew.
    Rebuilt,
}

/// A directory of compiled artifacts for one engine configuration.
#[derive(Debug, Clone)]
pub struct CompileCache {
    dir: PathBuf,
}

/// What looking an entry up found.
pub(crate) enum Lookup {
    Found(Compiled),
    Absent,
    /// There was an entry, it failed a check, and it has been removed.
    Discarded,
}

impl CompileCache {
    /// Opens (creating if needed) the cache under `root` for `engine`.
    pub fn open(root: &Path, engine: &wasmtime::Engine) -> Result<CompileCache> {
        let dir = root.join(compatibility_hash(engine));
        std::fs::create_dir_all(&dir).map_err(|e| Error::Cache {
            path: dir.clone(),
            message: format!("cannot create: {e}"),
        })?;
        Ok(CompileCache { dir })
    }

    /// The folder this engine's entries live in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file an artifact with `digest` (hex SHA-256) is stored in.
    pub fn entry_path(&self, digest: &str) -> PathBuf {
        self.dir.join(format!("{digest}.cwasm"))
    }

    /// Looks up `digest`; an entry failing its checks is deleted.
    pub(crate) fn load(&self, engine: &wasmtime::Engine, digest: &str) -> Lookup {
        let path = self.entry_path(digest);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Lookup::Absent,
            Err(e) => return self.discard(&path, format!("unreadable: {e}")),
        };
        match decode(engine, &bytes) {
            Ok(compiled) => Lookup::Found(compiled),
            Err(reason) => self.discard(&path, reason),
        }
    }

    /// Stores the compiled form of an artifact.
    pub(crate) fn store(&self, digest: &str, compiled: &Compiled) -> Result<()> {
        let (kind, payload) = match compiled {
            Compiled::Module(m) => (KIND_MODULE, m.serialize()),
            Compiled::Component(c) => (KIND_COMPONENT, c.serialize()),
        };
        let payload = payload.map_err(|e| Error::Cache {
            path: self.entry_path(digest),
            message: format!("cannot serialize: {e}"),
        })?;
        let path = self.entry_path(digest);
        let io_err = |e: std::io::Error| Error::Cache {
            path: path.clone(),
            message: format!("cannot write: {e}"),
        };
        let mut tmp = tempfile::NamedTempFile::new_in(&self.dir).map_err(io_err)?;
        tmp.write_all(MAGIC).map_err(io_err)?;
        tmp.write_all(&[kind]).map_err(io_err)?;
        tmp.write_all(&Sha256::digest(&payload)).map_err(io_err)?;
        tmp.write_all(&payload).map_err(io_err)?;
        tmp.as_file().sync_all().map_err(io_err)?;
        tmp.persist(&path).map_err(|e| io_err(e.error))?;
        Ok(())
    }

    fn discard(&self, path: &Path, reason: String) -> Lookup {
        tracing::warn!(path = %path.display(), %reason, "discarding compile cache entry");
        if let Err(e) = std::fs::remove_file(path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove cache entry");
        }
        Lookup::Discarded
    }
}

/// Checks an entry and deserializes it, or says why it cannot be used.
fn decode(engine: &wasmtime::Engine, bytes: &[u8]) -> std::result::Result<Compiled, String> {
    if bytes.len() < HEADER_LEN || &bytes[..MAGIC.len()] != MAGIC {
        return Err("bad header".into());
    }
    let kind = bytes[MAGIC.len()];
    let checksum = &bytes[MAGIC.len() + 1..HEADER_LEN];
    let payload = &bytes[HEADER_LEN..];
    if Sha256::digest(payload).as_slice() != checksum {
        return Err("checksum mismatch (corrupted entry)".into());
    }
    let expected = match kind {
        KIND_MODULE => Precompiled::Module,
        KIND_COMPONENT => Precompiled::Component,
        other => return Err(format!("unknown kind byte {other}")),
    };
    if wasmtime::Engine::detect_precompiled(payload) != Some(expected) {
        return Err("payload is not a precompiled artifact of the recorded kind".into());
    }
    deserialize(engine, expected, payload).map_err(|e| format!("incompatible: {e:#}"))
}

/// The one place that turns bytes into executable code.
#[allow(unsafe_code)]
fn deserialize(
    engine: &wasmtime::Engine,
    kind: Precompiled,
    payload: &[u8],
) -> wasmtime::Result<Compiled> {
    // SAFETY: wasmtime requires that deserialized bytes were produced by
    // `serialize` of a compatible engine and not tampered with. The bytes come
    // from our own cache folder, keyed by this engine's compatibility hash, and
    // `decode` has verified the SHA-256 of exactly these bytes against the
    // checksum written next to them when they were serialized, so a truncated
    // or corrupted entry never gets here. wasmtime itself then checks its own
    // version and configuration header and refuses incompatible code.
    unsafe {
        match kind {
            Precompiled::Module => Module::deserialize(engine, payload).map(Compiled::Module),
            Precompiled::Component => {
                Component::deserialize(engine, payload).map(Compiled::Component)
            }
        }
    }
}

/// The engine's compatibility hash as hex: entries made by engines with another
/// hash are never looked at.
pub fn compatibility_hash(engine: &wasmtime::Engine) -> String {
    let mut hasher = Sha256Hasher(Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hex::encode(&hasher.0.finalize()[..16])
}

/// Lets `Hash` implementations feed SHA-256, whose output (unlike
/// `DefaultHasher`'s) is stable across processes and Rust releases.
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        let digest = self.0.clone().finalize();
        u64::from_le_bytes(digest[..8].try_into().expect("8 bytes"))
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAT: &str = r#"(module (func (export "_start")))"#;

    fn module(engine: &wasmtime::Engine) -> Compiled {
        Compiled::Module(Module::new(engine, wat::parse_str(WAT).unwrap()).unwrap())
    }

    #[test]
    fn stored_entry_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        let engine = wasmtime::Engine::default();
        let cache = CompileCache::open(dir.path(), &engine).unwrap();
        cache.store("abc", &module(&engine)).unwrap();
        assert!(matches!(cache.load(&engine, "abc"), Lookup::Found(_)));
        assert!(matches!(cache.load(&engine, "other"), Lookup::Absent));
    }

    #[test]
    fn flipped_payload_byte_is_discarded() {
        let dir = tempfile::tempdir().unwrap();
        let engine = wasmtime::Engine::default();
        let cache = CompileCache::open(dir.path(), &engine).unwrap();
        cache.store("abc", &module(&engine)).unwrap();
        let path = cache.entry_path("abc");
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 100;
        bytes[last] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
        assert!(matches!(cache.load(&engine, "abc"), Lookup::Discarded));
        assert!(!path.exists());
    }

    #[test]
    fn truncated_entry_is_discarded() {
        let dir = tempfile::tempdir().unwrap();
        let engine = wasmtime::Engine::default();
        let cache = CompileCache::open(dir.path(), &engine).unwrap();
        cache.store("abc", &module(&engine)).unwrap();
        let path = cache.entry_path("abc");
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        assert!(matches!(cache.load(&engine, "abc"), Lookup::Discarded));
    }

    #[test]
    fn entry_from_an_incompatible_engine_is_discarded() {
        let dir = tempfile::tempdir().unwrap();
        let engine = wasmtime::Engine::default();
        let mut other_config = wasmtime::Config::new();
        other_config.consume_fuel(true);
        let other = wasmtime::Engine::new(&other_config).unwrap();
        // Written by the other engine, but placed under this engine's folder
        // with a valid checksum: only wasmtime's own check can catch it.
        let cache = CompileCache::open(dir.path(), &engine).unwrap();
        cache.store("abc", &module(&other)).unwrap();
        assert!(matches!(cache.load(&engine, "abc"), Lookup::Discarded));
    }

    #[test]
    fn compatibility_hash_differs_between_configurations() {
        let a = wasmtime::Engine::default();
        let mut config = wasmtime::Config::new();
        config.consume_fuel(true);
        let b = wasmtime::Engine::new(&config).unwrap();
        assert_eq!(compatibility_hash(&a), compatibility_hash(&a.clone()));
        assert_ne!(compatibility_hash(&a), compatibility_hash(&b));
    }
}
