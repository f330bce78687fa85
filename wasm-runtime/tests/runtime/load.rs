//! Loading: each kind is recognised, everything else refused with a reason.

use flotilla_wasm::{ArtifactKind, Error};

use crate::common::*;

#[test]
fn p1_module_is_a_command_module() {
    let engine = engine();
    let artifact = engine
        .load_file(sample("hello-wasi/hello-wasi.wasm"))
        .expect("loads");
    assert_eq!(artifact.kind(), ArtifactKind::CommandModule);
    assert_eq!(artifact.digest().len(), 64);
}

#[test]
fn c_module_is_a_command_module() {
    let engine = engine();
    let artifact = engine
        .load_file(sample("hello-c/hello-c.wasm"))
        .expect("loads");
    assert_eq!(artifact.kind(), ArtifactKind::CommandModule);
}

#[test]
fn p2_command_component_is_a_command_component() {
    let engine = engine();
    let artifact = engine
        .load_file(sample("hello-wasi/hello-wasi-p2.wasm"))
        .expect("loads");
    assert_eq!(artifact.kind(), ArtifactKind::CommandComponent);
}

#[test]
fn wasi_http_component_is_an_http_proxy() {
    let engine = engine();
    let artifact = engine
        .load_file(sample("hello-http/hello-http.wasm"))
        .expect("loads");
    assert_eq!(artifact.kind(), ArtifactKind::HttpProxy);
}

#[test]
fn the_hello_http_sample_carries_no_wasi_p1_adapter() {
    // A guest with WASI p1 imports gets wrapped in the p1 adapter, which brings its own core
    // module and imports (the filesystem, `wasi:cli/exit`) that a `wasi:http` service does not
    // use, and costs every per-request instantiation their wiring. samples/build.sh keeps
    // hello-http free of them; this notices a rebuild that brings them back.
    let engine = wasmtime::Engine::default();
    let component =
        wasmtime::component::Component::from_file(&engine, sample("hello-http/hello-http.wasm"))
            .expect("compiles");
    let imports: Vec<String> = component
        .component_type()
        .imports(&engine)
        .map(|(name, _)| name.to_string())
        .collect();
    assert!(
        !imports
            .iter()
            .any(|n| n.starts_with("wasi:filesystem/") || n.starts_with("wasi:cli/exit")),
        "{imports:?}"
    );
}

#[test]
fn junk_is_an_invalid_binary() {
    let engine = engine();
    for name in ["invalid.wasm", "truncated.wasm"] {
        let err = engine.load_file(fixture(name)).unwrap_err();
        assert!(matches!(err, Error::InvalidBinary(_)), "{name}: {err}");
    }
}

#[test]
fn unknown_import_is_named() {
    let engine = engine();
    let err = engine
        .load_bytes(&wat_fixture("unknown_import.wat"))
        .unwrap_err();
    match err {
        Error::UnknownImport(name) => assert_eq!(name, "env::launch_missiles"),
        other => panic!("expected an unknown import, got {other}"),
    }
}

#[test]
fn unknown_wasi_function_is_named() {
    let engine = engine();
    let bytes = wat(r#"(module
        (import "wasi_snapshot_preview1" "teleport" (func))
        (memory (export "memory") 1)
        (func (export "_start")))"#);
    match engine.load_bytes(&bytes).unwrap_err() {
        Error::UnknownImport(name) => assert_eq!(name, "wasi_snapshot_preview1::teleport"),
        other => panic!("expected an unknown import, got {other}"),
    }
}

#[test]
fn module_without_start_is_missing_its_export() {
    let engine = engine();
    match engine.load_bytes(&wat_fixture("no_start.wat")).unwrap_err() {
        Error::MissingExport(name) => assert_eq!(name, "_start"),
        other => panic!("expected a missing export, got {other}"),
    }
}

#[test]
fn component_exporting_nothing_known_is_missing_its_export() {
    let engine = engine();
    let err = engine.load_bytes(&wat("(component)")).unwrap_err();
    assert!(matches!(err, Error::MissingExport(_)), "{err}");
}

/// A p2 command component (no toolchain needed) whose `run` returns `code`
/// (0 = ok), optionally importing an interface nobody provides.
pub fn run_component(ok: bool, extra_import: bool) -> Vec<u8> {
    let import = if extra_import {
        r#"(import "acme:missiles/launch@1.0.0" (instance (export "fire" (func))))"#
    } else {
        ""
    };
    wat(&format!(
        r#"(component
            {import}
            (core module $m (func (export "run") (result i32) i32.const {code}))
            (core instance $i (instantiate $m))
            (func $run (result (result)) (canon lift (core func $i "run")))
            (instance $run_instance (export "run" (func $run)))
            (export "wasi:cli/run@0.2.0" (instance $run_instance)))"#,
        code = if ok { 0 } else { 1 }
    ))
}

#[test]
fn component_with_unknown_import_is_named() {
    let engine = engine();
    match engine.load_bytes(&run_component(true, true)).unwrap_err() {
        Error::UnknownImport(name) => assert_eq!(name, "acme:missiles/launch@1.0.0"),
        other => panic!("expected an unknown import, got {other}"),
    }
}

#[test]
fn minimal_run_component_is_a_command_component() {
    let engine = engine();
    let artifact = engine
        .load_bytes(&run_component(true, false))
        .expect("loads");
    assert_eq!(artifact.kind(), ArtifactKind::CommandComponent);
}

#[tokio::test]
async fn command_artifact_cannot_be_served() {
    let engine = engine();
    let artifact = load_wat(&engine, "exit3.wat");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = engine
        .serve_http(&artifact, listener, Default::default())
        .unwrap_err();
    assert!(matches!(err, Error::WrongKind { .. }), "{err}");
}
