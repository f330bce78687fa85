//! The compile cache through the engine: hits skip compiling, bad entries are
//! rebuilt and never run.

use flotilla_wasm::{CacheOutcome, CommandSpec, Engine, EngineConfig, Error};

use crate::common::*;

fn cached_engine(dir: &std::path::Path) -> Engine {
    Engine::new(EngineConfig {
        cache_dir: Some(dir.to_path_buf()),
        ..test_config()
    })
    .unwrap()
}

#[tokio::test]
async fn second_load_is_a_hit_and_runs() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = wat_fixture("exit3.wat");
    let first = cached_engine(dir.path()).load_bytes(&bytes).unwrap();
    assert_eq!(first.cache_outcome(), CacheOutcome::Miss);

    // A new engine (a restarted node agent) finds the entry.
    let engine = cached_engine(dir.path());
    let second = engine.load_bytes(&bytes).unwrap();
    assert_eq!(second.cache_outcome(), CacheOutcome::Hit);
    assert_eq!(second.digest(), first.digest());
    let err = within(
        engine
            .run_command(&second, CommandSpec::default())
            .unwrap()
            .wait(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::Exit(3)), "{err}");
}

#[test]
fn http_component_round_trips_through_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let path = sample("hello-http/hello-http.wasm");
    assert_eq!(
        cached_engine(dir.path())
            .load_file(&path)
            .unwrap()
            .cache_outcome(),
        CacheOutcome::Miss
    );
    let hit = cached_engine(dir.path()).load_file(&path).unwrap();
    assert_eq!(hit.cache_outcome(), CacheOutcome::Hit);
    assert_eq!(hit.kind(), flotilla_wasm::ArtifactKind::HttpProxy);
}

#[tokio::test]
async fn corrupted_entry_is_rebuilt_not_executed() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = wat_fixture("exit3.wat");
    let engine = cached_engine(dir.path());
    let artifact = engine.load_bytes(&bytes).unwrap();
    let entry = engine.cache().unwrap().entry_path(artifact.digest());
    let mut stored = std::fs::read(&entry).unwrap();
    let middle = stored.len() / 2;
    stored[middle] ^= 0x55;
    std::fs::write(&entry, &stored).unwrap();

    let engine = cached_engine(dir.path());
    let rebuilt = engine.load_bytes(&bytes).unwrap();
    assert_eq!(rebuilt.cache_outcome(), CacheOutcome::Rebuilt);
    let err = within(
        engine
            .run_command(&rebuilt, CommandSpec::default())
            .unwrap()
            .wait(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::Exit(3)), "{err}");
    // The entry was rewritten and is good again.
    assert_eq!(
        cached_engine(dir.path())
            .load_bytes(&bytes)
            .unwrap()
            .cache_outcome(),
        CacheOutcome::Hit
    );
}

#[test]
fn garbage_entry_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = wat_fixture("exit3.wat");
    let engine = cached_engine(dir.path());
    let digest = engine.load_bytes(&bytes).unwrap().digest().to_string();
    std::fs::write(engine.cache().unwrap().entry_path(&digest), b"garbage").unwrap();
    let again = cached_engine(dir.path()).load_bytes(&bytes).unwrap();
    assert_eq!(again.cache_outcome(), CacheOutcome::Rebuilt);
}

#[test]
fn entries_live_in_a_folder_named_by_the_engine_compatibility_hash() {
    let dir = tempfile::tempdir().unwrap();
    let engine = cached_engine(dir.path());
    let artifact = engine.load_bytes(&wat_fixture("exit3.wat")).unwrap();
    let entry = engine.cache().unwrap().entry_path(artifact.digest());
    assert!(entry.exists());
    assert_eq!(
        entry.parent().unwrap(),
        dir.path().join(engine.compatibility_hash())
    );
}
