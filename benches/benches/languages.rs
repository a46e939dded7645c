#![allow(clippy::expect_used, reason = "a benchmark aborts on setup failure")]
//! Language runtime benchmarks, per language (`js`: QuickJS, `py`: CPython
//! via componentize-py):
//!
//! - `compile_runtime`: Cranelift compile of the embedded runtime component,
//!   the cost a node pays once (then it is cached on disk);
//! - `first_run_after_compile`: what the first script run costs once the
//!   runtime has been compiled: a fresh sandbox (engine, pool, ticker),
//!   deserializing the runtime from the disk cache, and one hello run;
//! - `hello_warm`: a hello script on a runtime loaded from the disk cache, as
//!   `kiln serve` does (instantiate + call with the script's cached code +
//!   JSON result; the first run compiled the script), runs back to back; a
//!   runtime slow to instantiate (Python) gets instances made ahead only when
//!   its runs come apart, so here they instantiate inline as before;
//! - `hello_warm_inline`: the same with every instance made on the run's path
//!   (`prewarm_above: None`), the baseline for `hello_warm`;
//! - `hello_paced` and `hello_paced_inline`: the same two, a run every 3 ms,
//!   each timed alone (a warm script's latency on a node that is not
//!   saturated); their p50 and p99 over 500 runs are printed to stderr;
//! - `fib25`: fib(25) by naive recursion in the language, fuel + epoch on.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use kiln_runtime::{Artifact, Call, EngineOptions, Invocation, Sandbox, Status};

struct Language {
    name: &'static str,
    runtime: kiln_components::Runtime,
    hello: &'static str,
    fib: &'static str,
}

const LANGUAGES: [Language; 2] = [
    Language {
        name: "js",
        runtime: kiln_components::JS_RUNTIME,
        hello: "function main(params) { console.log(`Hello, ${params.name}!`); return { ok: true }; }",
        fib: "function fib(n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); }\nfunction main() { return fib(25); }",
    },
    Language {
        name: "py",
        runtime: kiln_components::PY_RUNTIME,
        hello: "def main(name):\n    print(f'Hello, {name}!')\n    return {'ok': True}\n",
        fib: "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n\ndef main(**_):\n    return fib(25)\n",
    },
];

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
            source: Arc::new(source.into()),
            params: r#"{"name":"bench"}"#.into(),
        },
        ..Invocation::default()
    }
}

/// Paced runs whose p50 and p99 are printed after each paced benchmark.
const PERCENTILE_RUNS: usize = 500;

/// Waits 3 ms, then times one run of `source`.
async fn paced_run(sandbox: &Sandbox, runtime: &Artifact, source: &str) -> Duration {
    tokio::time::sleep(Duration::from_millis(3)).await;
    let started = Instant::now();
    let outcome = sandbox.run(runtime, script(source)).await.expect("run");
    let took = started.elapsed();
    assert_eq!(outcome.status, Status::Completed, "{:?}", outcome.error);
    took
}

fn languages(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    for language in &LANGUAGES {
        let mut group = c.benchmark_group(language.name);
        let bytes = language.runtime.decompress().expect("decompress");

        group
            .sample_size(10)
            .measurement_time(Duration::from_secs(15));
        group.bench_function("compile_runtime", |b| {
            b.iter(|| {
                let sandbox = Sandbox::new(options(None)).expect("sandbox");
                sandbox.load(&bytes).expect("load");
            })
        });

        let cache = tempfile::tempdir().expect("tempdir");
        Sandbox::new(options(Some(cache.path().into())))
            .expect("sandbox")
            .load(&bytes)
            .expect("warm the disk cache");
        group
            .sample_size(20)
            .measurement_time(Duration::from_secs(5));
        group.bench_function("first_run_after_compile", |b| {
            b.to_async(&rt).iter(|| async {
                // As a new `kiln serve` process: decompress the embedded
                // runtime, then load it from the disk cache.
                let sandbox = Sandbox::new(options(Some(cache.path().into()))).expect("sandbox");
                let fresh = language.runtime.decompress().expect("decompress");
                let (runtime, _) = sandbox.load(&fresh).expect("load");
                let outcome = sandbox
                    .run(&runtime, script(language.hello))
                    .await
                    .expect("run");
                assert_eq!(outcome.status, Status::Completed, "{:?}", outcome.error);
            })
        });

        // As in `kiln serve`: the runtime's code comes from the disk cache (a
        // file mapping), which instantiates faster than freshly compiled
        // code held in anonymous memory.
        let sandbox = Sandbox::new(options(Some(cache.path().into()))).expect("sandbox");
        let (runtime, _) = sandbox.load(&bytes).expect("load");
        // The same, with every run instantiating its runtime on its own path
        // (no instance made ahead): the baseline the prewarming sandbox is
        // compared to.
        let inline = Sandbox::new(EngineOptions {
            prewarm_above: None,
            ..options(Some(cache.path().into()))
        })
        .expect("sandbox");
        let (inline_runtime, _) = inline.load(&bytes).expect("load");
        group.sample_size(50);
        let sandboxes = [
            ("hello_warm", &sandbox, &runtime),
            ("hello_warm_inline", &inline, &inline_runtime),
        ];
        for (name, sandbox, runtime) in sandboxes {
            group.bench_function(name, |b| {
                b.to_async(&rt).iter(|| async {
                    let outcome = sandbox
                        .run(runtime, script(language.hello))
                        .await
                        .expect("run");
                    assert_eq!(outcome.status, Status::Completed, "{:?}", outcome.error);
                })
            });
        }
        // A run every 3 ms on an otherwise idle sandbox, each timed alone:
        // the latency of a request to a warm script on a node that is not
        // saturated. Here an instance is made between runs.
        let sandboxes = [
            ("hello_paced", &sandbox, &runtime),
            ("hello_paced_inline", &inline, &inline_runtime),
        ];
        for (name, sandbox, runtime) in sandboxes {
            group.bench_function(name, |b| {
                b.to_async(&rt).iter_custom(|iters| async move {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        total += paced_run(sandbox, runtime, language.hello).await;
                    }
                    total
                })
            });
            let mut times = Vec::with_capacity(PERCENTILE_RUNS);
            for _ in 0..PERCENTILE_RUNS {
                times.push(rt.block_on(paced_run(sandbox, runtime, language.hello)));
            }
            times.sort_unstable();
            eprintln!(
                "{}/{name}: p50 {:?}, p99 {:?} over {PERCENTILE_RUNS} runs",
                language.name,
                times[PERCENTILE_RUNS / 2],
                times[PERCENTILE_RUNS * 99 / 100],
            );
        }
        drop(inline);
        group.sample_size(20);
        group.bench_function("fib25", |b| {
            b.to_async(&rt).iter(|| async {
                let outcome = sandbox
                    .run(&runtime, script(language.fib))
                    .await
                    .expect("run");
                assert_eq!(outcome.result.as_deref(), Some("75025"));
            })
        });
        group.finish();
    }
}

criterion_group!(benches, languages);
criterion_main!(benches);
