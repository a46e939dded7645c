#![allow(clippy::expect_used, reason = "a benchmark aborts on setup failure")]
//! Language runtime benchmarks (JavaScript on QuickJS):
//!
//! - `js/compile_runtime`: Cranelift compile of the embedded runtime component,
//!   the cost a node pays once (then it is cached on disk);
//! - `js/first_run_after_compile`: deserialize-free first run = a fresh
//!   sandbox loading the runtime from a warm disk cache, then one hello run;
//! - `js/hello_warm`: a hello script on a loaded runtime (instantiate + parse
//!   + call + JSON result);
//! - `js/fib25`: fib(25) by naive recursion in JavaScript, fuel + epoch on.

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use kiln_runtime::{Call, EngineOptions, Invocation, Sandbox, Status};

const HELLO: &str =
    "function main(params) { console.log(`Hello, ${params.name}!`); return { ok: true }; }";
const FIB: &str = "function fib(n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); }\nfunction main() { return fib(25); }";

fn options(cache_dir: Option<std::path::PathBuf>) -> EngineOptions {
    EngineOptions {
        cache_dir,
        max_instances: 16,
        ..EngineOptions::default()
    }
}

fn script(source: &str) -> Invocation {
    Invocation {
        call: Call::Script {
            source: source.into(),
            params: r#"{"name":"bench"}"#.into(),
        },
        ..Invocation::default()
    }
}

fn js(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let mut group = c.benchmark_group("js");

    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(15));
    group.bench_function("compile_runtime", |b| {
        b.iter(|| {
            let sandbox = Sandbox::new(options(None)).expect("sandbox");
            sandbox.load(kiln_components::JS_RUNTIME).expect("load");
        })
    });

    let cache = tempfile::tempdir().expect("tempdir");
    Sandbox::new(options(Some(cache.path().into())))
        .expect("sandbox")
        .load(kiln_components::JS_RUNTIME)
        .expect("warm the disk cache");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(5));
    group.bench_function("first_run_after_compile", |b| {
        b.to_async(&rt).iter(|| async {
            let sandbox = Sandbox::new(options(Some(cache.path().into()))).expect("sandbox");
            let (runtime, _) = sandbox.load(kiln_components::JS_RUNTIME).expect("load");
            let outcome = sandbox.run(&runtime, script(HELLO)).await.expect("run");
            assert_eq!(outcome.status, Status::Completed);
        })
    });

    let sandbox = Sandbox::new(options(None)).expect("sandbox");
    let (runtime, _) = sandbox.load(kiln_components::JS_RUNTIME).expect("load");
    group.sample_size(50);
    group.bench_function("hello_warm", |b| {
        b.to_async(&rt).iter(|| async {
            let outcome = sandbox.run(&runtime, script(HELLO)).await.expect("run");
            assert_eq!(outcome.result.as_deref(), Some(r#"{"ok":true}"#));
        })
    });
    group.sample_size(20);
    group.bench_function("fib25", |b| {
        b.to_async(&rt).iter(|| async {
            let outcome = sandbox.run(&runtime, script(FIB)).await.expect("run");
            assert_eq!(outcome.result.as_deref(), Some("75025"));
        })
    });
    group.finish();
}

criterion_group!(benches, js);
criterion_main!(benches);
