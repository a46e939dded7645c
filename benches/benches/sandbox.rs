#![allow(clippy::expect_used, reason = "a benchmark aborts on setup failure")]
//! Sandbox benchmarks, each against a baseline measured in the same run:
//!
//! - `hello/kiln_warm`: a run of the hello guest through `Sandbox::run` on a
//!   loaded artifact (instantiate from `InstancePre` + call), what a node
//!   does per execution.
//! - `hello/wasmtime_run_process` and `hello/kiln_run_process`: the same
//!   component as one process per execution, `wasmtime run` (the CLI of the
//!   version Kiln pins, `WASMTIME`, with its compiled-code cache on and
//!   warm) and `kiln run` (`KILN_BIN`, its cache warm): what a user gets
//!   from either CLI. Skipped, with a message, when a binary is missing.
//! - `hello/fresh_engine_per_run`: a new default engine, Cranelift compile,
//!   instantiate and call in this process, with no cache: the cost a cache
//!   saves, not what `wasmtime run` does.
//! - `fib25/*`: the same CPU-bound guest with no metering, epoch interruption
//!   only, fuel + epoch, and through Kiln's sandbox (fuel + epoch + limiter).
//! - `cancel/latency`: time from `CancelHandle::cancel` to `run` returning for
//!   a guest spinning in a loop.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use kiln_runtime::{CancelHandle, EngineOptions, Invocation, Limits, Sandbox, Status};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi::p2::pipe::{MemoryInputPipe, MemoryOutputPipe};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

struct Plain {
    wasi: WasiCtx,
    table: ResourceTable,
}

impl WasiView for Plain {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

fn plain_state(args: &[&str], stdin: &[u8]) -> Plain {
    let wasi = WasiCtx::builder()
        .args(args)
        .stdin(MemoryInputPipe::new(stdin.to_vec()))
        .stdout(MemoryOutputPipe::new(1 << 20))
        .stderr(MemoryOutputPipe::new(1 << 20))
        .build();
    Plain {
        wasi,
        table: ResourceTable::new(),
    }
}

#[derive(Clone, Copy)]
enum Metering {
    None,
    Epoch,
    FuelAndEpoch,
}

fn plain_engine(metering: Metering) -> Engine {
    let mut config = Config::new();
    match metering {
        Metering::None => {}
        Metering::Epoch => {
            config.epoch_interruption(true);
        }
        Metering::FuelAndEpoch => {
            config.epoch_interruption(true).consume_fuel(true);
        }
    }
    Engine::new(&config).expect("engine")
}

fn plain_pre(engine: &Engine, wasm: &[u8]) -> CommandPre<Plain> {
    let component = Component::new(engine, wasm).expect("compile");
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).expect("link");
    CommandPre::new(linker.instantiate_pre(&component).expect("pre")).expect("command")
}

async fn plain_run(
    engine: &Engine,
    pre: &CommandPre<Plain>,
    metering: Metering,
    args: &[&str],
    stdin: &[u8],
) {
    let mut store = Store::new(engine, plain_state(args, stdin));
    match metering {
        Metering::None => {}
        Metering::Epoch => store.set_epoch_deadline(u64::MAX / 2),
        Metering::FuelAndEpoch => {
            store.set_epoch_deadline(u64::MAX / 2);
            store.set_fuel(u64::MAX).expect("fuel");
        }
    }
    let command = pre
        .instantiate_async(&mut store)
        .await
        .expect("instantiate");
    command
        .wasi_cli_run()
        .call_run(&mut store)
        .await
        .expect("run")
        .expect("exit 0");
}

fn sandbox() -> Sandbox {
    Sandbox::new(EngineOptions {
        max_instances: 16,
        ..EngineOptions::default()
    })
    .expect("sandbox")
}

fn hello(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let wasm = std::fs::read(kiln_components::HELLO).expect("hello guest");
    let kiln = sandbox();
    let (artifact, _) = kiln.load(&wasm).expect("load");

    let mut group = c.benchmark_group("hello");
    group.bench_function("kiln_warm", |b| {
        b.to_async(&rt).iter(|| async {
            let invocation = Invocation {
                stdin: b"bench".to_vec(),
                ..Invocation::default()
            };
            let outcome = kiln.run(&artifact, invocation).await.expect("run");
            assert_eq!(outcome.status, Status::Completed);
        })
    });
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(10));
    let cache = tempfile::tempdir().expect("a cache dir for kiln run");
    for (name, command) in [
        ("wasmtime_run_process", wasmtime_run()),
        ("kiln_run_process", kiln_run(cache.path())),
    ] {
        let Some(mut command) = command else {
            continue;
        };
        // Fills the CLI's cache, so every measured run finds it warm.
        run_process(&mut command);
        group.bench_function(name, |b| b.iter(|| run_process(&mut command)));
    }
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(20));
    group.bench_function("fresh_engine_per_run", |b| {
        b.to_async(&rt).iter(|| async {
            let engine = plain_engine(Metering::None);
            let pre = plain_pre(&engine, &wasm);
            plain_run(&engine, &pre, Metering::None, &["hello"], b"bench").await;
        })
    });
    group.finish();
}

/// `wasmtime run` of the hello guest, its cache on (the default, said
/// explicitly).
fn wasmtime_run() -> Option<Command> {
    let Some(wasmtime) = kiln_benches::wasmtime_binary() else {
        eprintln!(
            "{} not found (set WASMTIME): no wasmtime_run_process",
            kiln_benches::WASMTIME_VERSION
        );
        return None;
    };
    let mut command = Command::new(wasmtime);
    command
        .args(["run", "-C", "cache=y", kiln_components::HELLO])
        .stdin(Stdio::piped());
    Some(command)
}

/// `kiln run` of the hello guest with its compiled-code cache in `cache`.
fn kiln_run(cache: &Path) -> Option<Command> {
    let kiln = kiln_benches::kiln_binary_if_built()?;
    let mut command = Command::new(kiln);
    // `--input`: kiln run gives the guest its parameters on stdin otherwise.
    command
        .args([
            "run",
            kiln_components::HELLO,
            "--input",
            "bench",
            "--cache-dir",
        ])
        .arg(cache)
        .stdin(Stdio::null());
    Some(command)
}

/// One whole process greeting "bench" (on its stdin, if piped), its
/// answer checked.
fn run_process(command: &mut Command) {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(b"bench").expect("write stdin");
    }
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success(), "{command:?}: {}", out.status);
    assert_eq!(out.stdout, b"Hello, bench!\n");
}

fn fib(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let wasm = std::fs::read(kiln_components::FIB).expect("fib guest");
    let args = ["fib", "25"];
    let mut group = c.benchmark_group("fib25");
    group.sample_size(20);
    for (name, metering) in [
        ("no_metering", Metering::None),
        ("epoch_only", Metering::Epoch),
        ("fuel_and_epoch", Metering::FuelAndEpoch),
    ] {
        let engine = plain_engine(metering);
        let pre = plain_pre(&engine, &wasm);
        group.bench_function(name, |b| {
            b.to_async(&rt)
                .iter(|| plain_run(&engine, &pre, metering, &args, b""))
        });
    }
    let kiln = sandbox();
    let (artifact, _) = kiln.load(&wasm).expect("load");
    group.bench_function("kiln_sandbox", |b| {
        b.to_async(&rt).iter(|| async {
            let invocation = Invocation {
                args: args.map(String::from).to_vec(),
                ..Invocation::default()
            };
            let outcome = kiln.run(&artifact, invocation).await.expect("run");
            assert_eq!(outcome.status, Status::Completed);
        })
    });
    group.finish();
}

fn cancel(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt");
    let wasm = std::fs::read(kiln_components::ENDLESS_LOOP).expect("endless loop guest");
    let kiln = Arc::new(sandbox());
    let (artifact, _) = kiln.load(&wasm).expect("load");
    let mut group = c.benchmark_group("cancel");
    group.sample_size(20);
    group.bench_function("latency", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let handle = CancelHandle::new();
                let invocation = Invocation {
                    cancel: Some(handle.clone()),
                    limits: Limits {
                        timeout: Duration::from_secs(10),
                        ..Limits::default()
                    },
                    ..Invocation::default()
                };
                let (kiln, artifact) = (kiln.clone(), artifact.clone());
                // The guest spins on a runtime worker; the cancel comes from
                // this thread, as it would from an HTTP handler.
                let task = rt.spawn(async move { kiln.run(&artifact, invocation).await });
                std::thread::sleep(Duration::from_millis(20));
                let cancelled_at = Instant::now();
                handle.cancel();
                let outcome = rt.block_on(task).expect("join").expect("run");
                total += cancelled_at.elapsed();
                assert_eq!(outcome.status, Status::Cancelled);
            }
            total
        })
    });
    group.finish();
}

criterion_group!(benches, hello, fib, cancel);
criterion_main!(benches);
