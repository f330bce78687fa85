//! A loaded guest: its kind, its digest, and its pre-instantiated form.
//!
//! Loading decides the kind from what the binary imports and exports:
//! - a core module importing only `wasi_snapshot_preview1` and exporting
//!   `_start` is a WASI p1 command;
//! - a component exporting `wasi:http/incoming-handler@0.2.x` is a
//!   `wasi:http/proxy` service;
//! - a component exporting `wasi:cli/run@0.2.x` is a WASI p2 command.
//!
//! Anything else is refused with the unknown import or the missing export
//! named. Imports are resolved against the engine's linkers once, here, so
//! every later instantiation is only the cheap `InstancePre` step.

use std::sync::Arc;

use wasmtime::component::Component;
use wasmtime::{InstancePre, Module};
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use crate::cache::CacheOutcome;
use crate::command::{P1State, P2State};
use crate::engine::Linkers;
use crate::error::{Error, Result};
use crate::http::HttpState;

/// What kind of guest an artifact is, which decides how it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ArtifactKind {
    /// A WASI preview 1 core module with a `_start` export: runs to completion.
    CommandModule,
    /// A WASI preview 2 component exporting `wasi:cli/run`: runs to completion.
    CommandComponent,
    /// A component exporting `wasi:http/incoming-handler` (the
    /// `wasi:http/proxy` world): serves HTTP requests.
    HttpProxy,
}

impl ArtifactKind {
    /// A short name for messages.
    pub fn as_str(self) -> &'static str {
        match self {
            ArtifactKind::CommandModule => "wasi-p1-command",
            ArtifactKind::CommandComponent => "wasi-p2-command",
            ArtifactKind::HttpProxy => "wasi-http-proxy",
        }
    }

    /// Whether it runs to completion (as opposed to serving requests).
    pub fn is_command(self) -> bool {
        !matches!(self, ArtifactKind::HttpProxy)
    }
}

impl std::fmt::Display for ArtifactKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Compiled code, before its imports are resolved.
pub(crate) enum Compiled {
    Module(Module),
    Component(Component),
}

/// A guest ready to instantiate: cheap to clone and to share between tasks.
#[derive(Clone)]
pub struct Artifact {
    inner: Arc<Inner>,
}

struct Inner {
    kind: ArtifactKind,
    digest: String,
    cache: CacheOutcome,
    pre: Pre,
}

/// The pre-instantiated form, one per kind.
#[derive(Clone)]
pub(crate) enum Pre {
    P1(InstancePre<P1State>),
    P2(CommandPre<P2State>),
    Http(ProxyPre<HttpState>),
}

impl std::fmt::Debug for Artifact {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Artifact")
            .field("kind", &self.inner.kind)
            .field("digest", &self.inner.digest)
            .field("cache", &self.inner.cache)
            .finish()
    }
}

impl Artifact {
    /// The guest's kind.
    pub fn kind(&self) -> ArtifactKind {
        self.inner.kind
    }

    /// Hex SHA-256 of the source bytes (the compile cache key).
    pub fn digest(&self) -> &str {
        &self.inner.digest
    }

    /// Whether the compiled code came from the compile cache.
    pub fn cache_outcome(&self) -> CacheOutcome {
        self.inner.cache
    }

    pub(crate) fn pre(&self) -> &Pre {
        &self.inner.pre
    }

    /// Checks the compiled code's imports and exports and pre-instantiates it.
    pub(crate) fn prepare(
        linkers: &Linkers,
        engine: &wasmtime::Engine,
        compiled: Compiled,
        digest: String,
        cache: CacheOutcome,
    ) -> Result<Artifact> {
        let (kind, pre) = match compiled {
            Compiled::Module(module) => (
                ArtifactKind::CommandModule,
                prepare_module(linkers, module)?,
            ),
            Compiled::Component(component) => prepare_component(linkers, engine, component)?,
        };
        Ok(Artifact {
            inner: Arc::new(Inner {
                kind,
                digest,
                cache,
                pre,
            }),
        })
    }
}

/// The only core-module import namespace this engine provides.
const P1_NAMESPACE: &str = "wasi_snapshot_preview1";

fn prepare_module(linkers: &Linkers, module: Module) -> Result<Pre> {
    let imports: Vec<String> = module
        .imports()
        .map(|i| format!("{}::{}", i.module(), i.name()))
        .collect();
    if let Some(import) = module.imports().find(|i| i.module() != P1_NAMESPACE) {
        return Err(Error::UnknownImport(format!(
            "{}::{}",
            import.module(),
            import.name()
        )));
    }
    let has_start = module
        .exports()
        .any(|e| e.name() == "_start" && e.ty().func().is_some());
    if !has_start {
        return Err(Error::MissingExport("_start".into()));
    }
    let pre = linkers
        .p1
        .instantiate_pre(&module)
        .map_err(|e| unresolved(e, &imports))?;
    Ok(Pre::P1(pre))
}

/// Export-name prefixes that decide a component's kind (any 0.2.x version).
const HTTP_EXPORT: &str = "wasi:http/incoming-handler@0.2";
const RUN_EXPORT: &str = "wasi:cli/run@0.2";

fn prepare_component(
    linkers: &Linkers,
    engine: &wasmtime::Engine,
    component: Component,
) -> Result<(ArtifactKind, Pre)> {
    let ty = component.component_type();
    let exports: Vec<String> = ty.exports(engine).map(|(n, _)| n.to_string()).collect();
    let imports: Vec<String> = ty.imports(engine).map(|(n, _)| n.to_string()).collect();
    if exports.iter().any(|e| e.starts_with(HTTP_EXPORT)) {
        let pre = linkers
            .http
            .instantiate_pre(&component)
            .map_err(|e| unresolved(e, &imports))?;
        let pre = ProxyPre::new(pre).map_err(|e| Error::MissingExport(format!("{e:#}")))?;
        Ok((ArtifactKind::HttpProxy, Pre::Http(pre)))
    } else if exports.iter().any(|e| e.starts_with(RUN_EXPORT)) {
        let pre = linkers
            .p2
            .instantiate_pre(&component)
            .map_err(|e| unresolved(e, &imports))?;
        let pre = CommandPre::new(pre).map_err(|e| Error::MissingExport(format!("{e:#}")))?;
        Ok((ArtifactKind::CommandComponent, Pre::P2(pre)))
    } else {
        Err(Error::MissingExport(format!(
            "{RUN_EXPORT}.x or {HTTP_EXPORT}.x (component exports: {})",
            if exports.is_empty() {
                "none".to_string()
            } else {
                exports.join(", ")
            }
        )))
    }
}

/// Turns a failed import resolution into the import it failed on, when the
/// message names one of the guest's imports (it always does in practice).
fn unresolved(err: wasmtime::Error, imports: &[String]) -> Error {
    let message = format!("{err:#}");
    // Prefer the longest match: `wasi:http/types@0.2.0` over `wasi:http`.
    let mut named: Vec<&String> = imports
        .iter()
        .filter(|i| message.contains(i.as_str()))
        .collect();
    named.sort_by_key(|i| std::cmp::Reverse(i.len()));
    match named.first() {
        Some(import) => Error::UnknownImport((*import).clone()),
        None => Error::UnknownImport(message),
    }
}

/// Reads the binary's preamble: a core module or a component, or neither.
pub(crate) fn sniff(bytes: &[u8]) -> Result<bool> {
    const MODULE: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];
    const COMPONENT_MAGIC: [u8; 4] = [0x00, 0x61, 0x73, 0x6d];
    if bytes.len() < 8 || bytes[..4] != COMPONENT_MAGIC {
        return Err(Error::InvalidBinary(
            "not a WebAssembly binary (bad magic number)".into(),
        ));
    }
    if bytes[..8] == MODULE {
        return Ok(false);
    }
    // Component preamble: version 0x0d (pre-standard), layer 1.
    if bytes[6..8] == [0x01, 0x00] {
        return Ok(true);
    }
    Err(Error::InvalidBinary(format!(
        "unsupported WebAssembly version/layer {:02x?}",
        &bytes[4..8]
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniff_tells_modules_components_and_junk_apart() {
        assert!(!sniff(b"\0asm\x01\0\0\0").unwrap());
        assert!(sniff(b"\0asm\x0d\0\x01\0").unwrap());
        assert!(matches!(
            sniff(b"hello world"),
            Err(Error::InvalidBinary(_))
        ));
        assert!(matches!(sniff(b"\0asm"), Err(Error::InvalidBinary(_))));
    }
}
