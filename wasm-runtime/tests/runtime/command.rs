//! Commands: args, env, preopens, stdin, logs, exit codes, traps, limits, stop.

use std::time::{Duration, Instant};

use bytes::Bytes;
use flotilla_wasm::{BoundedLog, CommandSpec, Error, Limits, Preopen, Stdin};

use crate::common::*;

fn spec_with_log() -> (CommandSpec, std::sync::Arc<BoundedLog>) {
    let log = BoundedLog::new(64 << 10);
    let spec = CommandSpec {
        log: Some(log.clone()),
        ..CommandSpec::default()
    };
    (spec, log)
}

#[tokio::test]
async fn hello_wasi_prints_args_env_and_a_mounted_file() {
    let engine = engine();
    let artifact = engine
        .load_file(sample("hello-wasi/hello-wasi.wasm"))
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("hello.txt"), "mounted content\n").unwrap();
    let (mut spec, log) = spec_with_log();
    spec.args = vec!["hello".into(), "one".into(), "two".into()];
    spec.env = vec![("GREETING".into(), "hi".into())];
    spec.preopens = vec![Preopen {
        guest_path: "/data".into(),
        host_path: data.path().into(),
        read_only: true,
    }];
    let handle = engine.run_command(&artifact, spec).unwrap();
    within(handle.wait()).await.expect("exits 0");
    let out = log.stdout_text();
    assert!(out.contains("args: hello one two"), "{out}");
    assert!(out.contains("env: GREETING=hi"), "{out}");
    assert!(
        out.contains("file /data/hello.txt: mounted content"),
        "{out}"
    );
}

#[tokio::test]
async fn a_running_guest_sees_a_file_a_symlink_swap_replaced() {
    // Kubelet's layout for ConfigMap volumes: `hello.txt -> ..data/hello.txt`, `..data -> v1`,
    // then `..data` renamed over to point at `v2`. A guest that opened the directory before
    // must read the new content at its next open.
    let engine = engine();
    let artifact = engine
        .load_file(sample("hello-wasi/hello-wasi.wasm"))
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let dir = data.path();
    std::fs::create_dir(dir.join("v1")).unwrap();
    std::fs::write(dir.join("v1/hello.txt"), "version one\n").unwrap();
    std::os::unix::fs::symlink("v1", dir.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/hello.txt", dir.join("hello.txt")).unwrap();
    let (mut spec, log) = spec_with_log();
    spec.env = vec![("HELLO_REPEAT_MS".into(), "20".into())];
    spec.preopens = vec![Preopen {
        guest_path: "/data".into(),
        host_path: dir.into(),
        read_only: true,
    }];
    let handle = engine.run_command(&artifact, spec).unwrap();
    let saw = |text: &'static str| {
        let log = log.clone();
        async move {
            while !log.stdout_text().contains(text) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    within(saw("file /data/hello.txt: version one")).await;
    std::fs::create_dir(dir.join("v2")).unwrap();
    std::fs::write(dir.join("v2/hello.txt"), "version two\n").unwrap();
    std::os::unix::fs::symlink("v2", dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    std::fs::remove_dir_all(dir.join("v1")).unwrap();
    within(saw("file /data/hello.txt: version two")).await;
    let _ = within(handle.stop(Duration::from_millis(10))).await;
}

#[tokio::test]
async fn read_write_preopen_lets_the_guest_write_and_read_only_does_not() {
    let engine = engine();
    let artifact = engine
        .load_file(sample("hello-wasi/hello-wasi.wasm"))
        .unwrap();
    for read_only in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let (mut spec, log) = spec_with_log();
        spec.env = vec![("HELLO_WRITE_DIR".into(), "/out".into())];
        spec.preopens = vec![Preopen {
            guest_path: "/out".into(),
            host_path: dir.path().into(),
            read_only,
        }];
        within(engine.run_command(&artifact, spec).unwrap().wait())
            .await
            .unwrap();
        let written = dir.path().join("written-by-guest.txt");
        if read_only {
            assert!(!written.exists());
            assert!(
                log.stderr_text().contains("cannot write"),
                "{}",
                log.stderr_text()
            );
        } else {
            assert_eq!(
                std::fs::read_to_string(written).unwrap(),
                "written by hello-wasi\n"
            );
        }
    }
}

#[tokio::test]
async fn missing_preopen_directory_is_a_setup_error() {
    let engine = engine();
    let artifact = load_wat(&engine, "exit3.wat");
    let spec = CommandSpec {
        preopens: vec![Preopen {
            guest_path: "/data".into(),
            host_path: "/definitely/not/here".into(),
            read_only: true,
        }],
        ..CommandSpec::default()
    };
    let err = engine.run_command(&artifact, spec).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
}

#[tokio::test]
async fn c_command_reads_stdin_and_reports_its_exit_code() {
    let engine = engine();
    let artifact = engine.load_file(sample("hello-c/hello-c.wasm")).unwrap();
    let (mut spec, log) = spec_with_log();
    spec.args = vec!["hello-c".into(), "x".into()];
    spec.env = vec![("HELLO_EXIT".into(), "7".into())];
    spec.stdin = Stdin::Bytes(Bytes::from_static(b"a\nb\nc\n"));
    let err = within(engine.run_command(&artifact, spec).unwrap().wait())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Exit(7)), "{err}");
    let out = log.stdout_text();
    assert!(out.contains("arg[1]: x"), "{out}");
    assert!(out.contains("stdin lines: 3"), "{out}");
    assert!(log.stderr_text().contains("hello-c: done"));
}

#[tokio::test]
async fn p2_command_component_runs_with_args_and_env() {
    let engine = engine();
    let artifact = engine
        .load_file(sample("hello-wasi/hello-wasi-p2.wasm"))
        .unwrap();
    let (mut spec, log) = spec_with_log();
    spec.args = vec!["hello".into(), "p2".into()];
    spec.env = vec![("HELLO_EXIT".into(), "0".into()), ("K".into(), "v".into())];
    within(engine.run_command(&artifact, spec).unwrap().wait())
        .await
        .expect("exits 0");
    let out = log.stdout_text();
    assert!(out.contains("args: hello p2"), "{out}");
    assert!(out.contains("env: K=v"), "{out}");
}

#[tokio::test]
async fn run_returning_err_is_exit_code_1() {
    let engine = engine();
    let ok = engine
        .load_bytes(&crate::load::run_component(true, false))
        .unwrap();
    within(
        engine
            .run_command(&ok, CommandSpec::default())
            .unwrap()
            .wait(),
    )
    .await
    .expect("ok");
    let failing = engine
        .load_bytes(&crate::load::run_component(false, false))
        .unwrap();
    let err = within(
        engine
            .run_command(&failing, CommandSpec::default())
            .unwrap()
            .wait(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::Exit(1)), "{err}");
}

#[tokio::test]
async fn exit_3_is_its_own_kind_and_output_is_kept() {
    let engine = engine();
    let artifact = load_wat(&engine, "exit3.wat");
    let (spec, log) = spec_with_log();
    let err = within(engine.run_command(&artifact, spec).unwrap().wait())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Exit(3)), "{err}");
    assert_eq!(err.exit_code(), 3);
    assert_eq!(log.stdout_text(), "exiting with 3\n");
}

#[tokio::test]
async fn trap_reports_its_message_and_backtrace() {
    let engine = engine();
    let artifact = load_wat(&engine, "trap.wat");
    let err = within(
        engine
            .run_command(&artifact, CommandSpec::default())
            .unwrap()
            .wait(),
    )
    .await
    .unwrap_err();
    match err {
        Error::Trap { message, backtrace } => {
            assert!(message.contains("divide by zero"), "{message}");
            assert!(backtrace.contains("divide"), "{backtrace}");
            assert!(backtrace.contains("compute"), "{backtrace}");
        }
        other => panic!("expected a trap, got {other}"),
    }
}

#[tokio::test]
async fn stack_overflow_is_its_own_kind() {
    let engine = engine();
    let artifact = load_wat(&engine, "stack_overflow.wat");
    let err = within(
        engine
            .run_command(&artifact, CommandSpec::default())
            .unwrap()
            .wait(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::StackOverflow { .. }), "{err}");
}

#[tokio::test]
async fn memory_bomb_is_out_of_memory() {
    let engine = engine();
    let artifact = load_wat(&engine, "memory_bomb.wat");
    let spec = CommandSpec {
        limits: Limits {
            memory_bytes: 16 << 20,
            ..Limits::default()
        },
        ..CommandSpec::default()
    };
    let err = within(engine.run_command(&artifact, spec).unwrap().wait())
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::OutOfMemory { limit } if limit == 16 << 20),
        "{err}"
    );
}

#[tokio::test]
async fn initial_memory_over_the_cap_is_out_of_memory() {
    let engine = engine();
    let artifact = engine
        .load_bytes(&wat(
            r#"(module (memory (export "memory") 100) (func (export "_start")))"#,
        ))
        .unwrap();
    let spec = CommandSpec {
        limits: Limits {
            memory_bytes: 1 << 20,
            ..Limits::default()
        },
        ..CommandSpec::default()
    };
    let err = within(engine.run_command(&artifact, spec).unwrap().wait())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::OutOfMemory { .. }), "{err}");
}

#[tokio::test]
async fn table_growth_past_the_cap_is_a_table_limit() {
    let engine = engine();
    let artifact = engine
        .load_bytes(&wat(r#"(module
                (table $t 1 funcref)
                (memory (export "memory") 1)
                (func (export "_start")
                  (if (i32.eq (table.grow $t (ref.null func) (i32.const 1000)) (i32.const -1))
                    (then unreachable))))"#))
        .unwrap();
    let spec = CommandSpec {
        limits: Limits {
            table_elements: 100,
            ..Limits::default()
        },
        ..CommandSpec::default()
    };
    let err = within(engine.run_command(&artifact, spec).unwrap().wait())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::TableLimit { limit: 100 }), "{err}");
}

#[tokio::test]
async fn infinite_loop_exceeds_its_cpu_deadline() {
    let engine = engine();
    let artifact = load_wat(&engine, "infinite_loop.wat");
    let spec = CommandSpec {
        limits: Limits {
            cpu_time: Some(Duration::from_millis(100)),
            ..Limits::default()
        },
        ..CommandSpec::default()
    };
    let started = Instant::now();
    let err = within(engine.run_command(&artifact, spec).unwrap().wait())
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::DeadlineExceeded { budget_ms: 100 }),
        "{err}"
    );
    assert!(started.elapsed() >= Duration::from_millis(100));
}

#[tokio::test]
async fn a_guest_started_after_the_engine_sat_idle_is_still_metered_and_stopped() {
    // With no instance alive the epoch clock goes to sleep after 100 quiet ticks; a new
    // instance must wake it, or a spinning guest would never be interrupted.
    let engine = engine();
    let artifact = load_wat(&engine, "infinite_loop.wat");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let spec = CommandSpec {
        limits: Limits {
            cpu_time: Some(Duration::from_millis(50)),
            ..Limits::default()
        },
        ..CommandSpec::default()
    };
    let err = within(engine.run_command(&artifact, spec).unwrap().wait())
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::DeadlineExceeded { budget_ms: 50 }),
        "{err}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let handle = engine
        .run_command(&artifact, CommandSpec::default())
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let err = within(handle.stop(Duration::from_millis(10)))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Stopped), "{err}");
}

#[tokio::test]
async fn stop_ends_a_guest_spinning_in_an_infinite_loop() {
    let engine = engine();
    let artifact = load_wat(&engine, "infinite_loop.wat");
    let handle = engine
        .run_command(&artifact, CommandSpec::default())
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!handle.is_finished());
    let started = Instant::now();
    let err = within(handle.stop(Duration::from_millis(100)))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Stopped), "{err}");
    // The grace period, then about one epoch tick.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn stop_lets_a_guest_that_finishes_within_its_grace_report_its_own_outcome() {
    let engine = engine();
    let artifact = load_wat(&engine, "exit3.wat");
    let handle = engine
        .run_command(&artifact, CommandSpec::default())
        .unwrap();
    let err = within(handle.stop(Duration::from_secs(10)))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Exit(3)), "{err}");
}

#[tokio::test]
async fn kill_from_another_task_ends_the_waiter() {
    let engine = engine();
    let artifact = load_wat(&engine, "infinite_loop.wat");
    let handle = engine
        .run_command(&artifact, CommandSpec::default())
        .unwrap();
    let control = handle.control();
    let waiter = tokio::spawn(handle.wait());
    tokio::time::sleep(Duration::from_millis(20)).await;
    control.kill();
    let err = within(waiter).await.unwrap().unwrap_err();
    assert!(matches!(err, Error::Stopped), "{err}");
}

#[tokio::test]
async fn output_beyond_the_sink_capacity_is_dropped_not_buffered() {
    let engine = engine();
    let artifact = engine
        .load_file(sample("hello-wasi/hello-wasi.wasm"))
        .unwrap();
    let log = BoundedLog::new(64);
    let spec = CommandSpec {
        env: (0..50)
            .map(|i| (format!("VAR{i}"), "x".repeat(20)))
            .collect(),
        log: Some(log.clone()),
        ..CommandSpec::default()
    };
    within(engine.run_command(&artifact, spec).unwrap().wait())
        .await
        .unwrap();
    assert!(log.len() <= 64);
    assert!(log.dropped_bytes() > 1000);
}

#[tokio::test]
async fn too_many_memories_is_an_instance_limit() {
    let engine = engine();
    let artifact = engine
        .load_bytes(&wat(r#"(component
                (core module $m (memory 1))
                (core instance $a (instantiate $m))
                (core instance $b (instantiate $m))
                (core module $r (func (export "run") (result i32) i32.const 0))
                (core instance $i (instantiate $r))
                (func $run (result (result)) (canon lift (core func $i "run")))
                (instance $run_instance (export "run" (func $run)))
                (export "wasi:cli/run@0.2.0" (instance $run_instance)))"#))
        .unwrap();
    let spec = CommandSpec {
        limits: Limits {
            memories: 1,
            ..Limits::default()
        },
        ..CommandSpec::default()
    };
    let err = within(engine.run_command(&artifact, spec).unwrap().wait())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InstanceLimit(_)), "{err}");
}
