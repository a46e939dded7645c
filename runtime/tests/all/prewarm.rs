//! Runtimes made ahead of their runs (`EngineOptions::prewarm_above`): a run
//! from such an instance is the same as one instantiated inline: its own
//! parameters, environment, output, fresh state and every limit.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kiln_runtime::{
    Artifact, EngineOptions, ErrorCode, Invocation, Limits, Outcome, Sandbox, Status,
};

use super::{script, shared_cache, small_engine, text};

/// A sandbox that prewarms every language runtime, with `bytes` loaded.
fn prewarming(bytes: &[u8]) -> (Sandbox, Arc<Artifact>) {
    let sandbox = Sandbox::new(EngineOptions {
        prewarm_above: Some(Duration::ZERO),
        ..small_engine(Some(shared_cache().into()))
    })
    .unwrap();
    let (artifact, _) = sandbox.load(bytes).unwrap();
    (sandbox, artifact)
}

fn invocation(source: &str, params: &str, who: &str, limits: Limits) -> Invocation {
    Invocation {
        env: vec![("WHO".into(), who.into())],
        limits,
        ..script(source, params)
    }
}

/// One run of `source` whose environment has `WHO=who`.
async fn run(
    sandbox: &Sandbox,
    runtime: &Artifact,
    source: &str,
    params: &str,
    who: &str,
    limits: Limits,
) -> Outcome {
    sandbox
        .run(runtime, invocation(source, params, who, limits))
        .await
        .unwrap()
}

/// Runs `source` until `runs` of them came from instances made ahead (or 30 s
/// pass), checking every run with `check(run number, outcome)`.
async fn run_until_prewarmed(
    sandbox: &Sandbox,
    runtime: &Artifact,
    source: &str,
    runs: u64,
    check: impl Fn(usize, &Outcome),
) {
    let started = Instant::now();
    for n in 0.. {
        let who = format!("run-{n}");
        let params = format!(r#"{{"n": {n}}}"#);
        let outcome = run(sandbox, runtime, source, &params, &who, Limits::default()).await;
        check(n, &outcome);
        if sandbox.cache_stats().prewarmed_runs >= runs {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no run came from a prewarmed instance: {:?}",
            sandbox.cache_stats()
        );
        tokio::time::sleep(pause(n)).await;
    }
}

/// A check for [`run_until_prewarmed`]: the run completed.
fn completes(_: usize, outcome: &Outcome) {
    assert_eq!(outcome.status, Status::Completed, "{outcome:?}");
}

fn js_runtime() -> (Sandbox, Arc<Artifact>) {
    prewarming(&kiln_components::JS_RUNTIME.decompress().unwrap())
}

fn py_runtime() -> (Sandbox, Arc<Artifact>) {
    prewarming(&kiln_components::PY_RUNTIME.decompress().unwrap())
}

#[tokio::test]
async fn javascript_runs_from_instances_made_ahead_are_fresh_and_their_own() {
    let (sandbox, runtime) = js_runtime();
    let source = r#"
        function main(params) {
            globalThis.runs = (globalThis.runs || 0) + 1;
            console.log(process.env.WHO);
            console.error("n=" + params.n);
            return { runs: globalThis.runs, n: params.n };
        }
    "#;
    run_until_prewarmed(&sandbox, &runtime, source, 3, |n, outcome| {
        assert_eq!(outcome.status, Status::Completed, "{outcome:?}");
        assert_eq!(
            outcome.result.as_deref(),
            Some(format!(r#"{{"runs":1,"n":{n}}}"#).as_str())
        );
        assert_eq!(text(&outcome.stdout), format!("run-{n}\n"));
        assert_eq!(text(&outcome.stderr), format!("n={n}\n"));
    })
    .await;
}

#[tokio::test]
async fn python_runs_from_instances_made_ahead_are_fresh_and_their_own() {
    let (sandbox, runtime) = py_runtime();
    let source = "import os, sys\nseen = []\ndef main(n):\n    seen.append(n)\n    print(os.environ['WHO'])\n    print(f'n={n}', file=sys.stderr)\n    return {'seen': seen}\n";
    run_until_prewarmed(&sandbox, &runtime, source, 2, |n, outcome| {
        assert_eq!(outcome.status, Status::Completed, "{outcome:?}");
        assert_eq!(
            outcome.result.as_deref(),
            Some(format!(r#"{{"seen": [{n}]}}"#).as_str())
        );
        assert_eq!(text(&outcome.stdout), format!("run-{n}\n"));
        assert_eq!(text(&outcome.stderr), format!("n={n}\n"));
    })
    .await;
}

/// Runs `source` under `limits` from an instance made ahead: retries (up to
/// 30 s) until a run was handed one.
async fn run_prewarmed(
    sandbox: &Sandbox,
    runtime: &Artifact,
    source: &str,
    limits: &Limits,
) -> Outcome {
    let started = Instant::now();
    for attempt in 0.. {
        tokio::time::sleep(pause(attempt)).await;
        let before = sandbox.cache_stats().prewarmed_runs;
        let outcome = run(sandbox, runtime, source, "{}", "x", limits.clone()).await;
        if sandbox.cache_stats().prewarmed_runs > before {
            return outcome;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no run came from a prewarmed instance"
        );
    }
    unreachable!()
}

/// A pause between runs: runs are prewarmed only when they come apart by
/// twice an instantiation, which an unoptimised build takes longer to make,
/// so the pause grows until they do.
fn pause(attempt: usize) -> Duration {
    Duration::from_millis(20 << attempt.min(5))
}

/// Fuel, the deadline, the memory cap and output caps are the run's own,
/// not those the instance was made with, and a cap below what the runtime
/// holds at instantiation fails the run as it does inline.
#[tokio::test]
async fn every_limit_binds_a_prewarmed_instance() {
    let (sandbox, runtime) = js_runtime();
    run_until_prewarmed(&sandbox, &runtime, "function main() {}", 1, completes).await;
    let spin = "function main() { for (;;) {} }";
    let fueled = Limits {
        fuel: Some(5_000_000),
        ..Limits::default()
    };
    let fueled = run_prewarmed(&sandbox, &runtime, spin, &fueled).await;
    assert_eq!(
        fueled.error_code(),
        Some(ErrorCode::FuelExhausted),
        "{fueled:?}"
    );
    let timed = Limits {
        timeout: Duration::from_millis(200),
        ..Limits::default()
    };
    let timed = run_prewarmed(&sandbox, &runtime, spin, &timed).await;
    assert_eq!(timed.status, Status::Timeout, "{timed:?}");
    let capped = Limits {
        memory_bytes: 24 << 20,
        ..Limits::default()
    };
    let bomb = "function main() { const keep = []; for (;;) keep.push(new ArrayBuffer(1 << 20)); }";
    let bomb = run_prewarmed(&sandbox, &runtime, bomb, &capped).await;
    assert_eq!(bomb.error_code(), Some(ErrorCode::MemoryLimit), "{bomb:?}");
    assert!(bomb.peak_memory_bytes <= 24 << 20, "{bomb:?}");
    let quiet = Limits {
        stdout_bytes: 100,
        ..Limits::default()
    };
    let chatty = "function main() { for (let i = 0; i < 1000; i++) console.log('0123456789'); }";
    let chatty = run_prewarmed(&sandbox, &runtime, chatty, &quiet).await;
    assert_eq!((chatty.stdout.len(), chatty.stdout_truncated), (100, true));

    let tiny = Limits {
        memory_bytes: 64 << 10,
        ..Limits::default()
    };
    let shared = super::language_runtime(&kiln_components::JS_RUNTIME.decompress().unwrap());
    let inline = super::sandbox()
        .run(
            &shared,
            invocation("function main() {}", "{}", "x", tiny.clone()),
        )
        .await
        .unwrap();
    let ahead = run_prewarmed(&sandbox, &runtime, "function main() {}", &tiny).await;
    assert_eq!(ahead.status, Status::Failed, "{ahead:?}");
    assert_eq!(
        (ahead.status, ahead.error_code()),
        (inline.status, inline.error_code())
    );
}

/// Runs back to back instantiate inline. After a pause, the first run takes
/// the instance made ahead and, having come apart, has the next one made; the
/// second (back to back) takes that one, waiting for it if need be, and has
/// none made; every later one instantiates inline. (Python: its slow
/// instantiation keeps "back to back" unambiguous in an unoptimised build.)
#[tokio::test]
async fn runs_back_to_back_instantiate_inline() {
    let (sandbox, runtime) = py_runtime();
    let source = "def main(**_):\n    return 1\n";
    run_until_prewarmed(&sandbox, &runtime, source, 1, completes).await;
    tokio::time::sleep(pause(5)).await;
    let before = sandbox.cache_stats().prewarmed_runs;
    for _ in 0..10 {
        let outcome = run(&sandbox, &runtime, source, "{}", "x", Limits::default()).await;
        assert_eq!(outcome.status, Status::Completed, "{outcome:?}");
    }
    let prewarmed = sandbox.cache_stats().prewarmed_runs - before;
    assert!(prewarmed <= 2, "{:?}", sandbox.cache_stats());
}

/// Runs that arrive together while an instance is being made: one may wait
/// for it, the others instantiate inline, and every run completes as its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_runs_share_nothing_and_all_complete() {
    let (sandbox, runtime) = js_runtime();
    let source = "function main(params) { globalThis.n = (globalThis.n || 0) + 1; return [globalThis.n, params.n]; }";
    run_until_prewarmed(&sandbox, &runtime, source, 1, completes).await;
    let one = |n: usize| {
        let (sandbox, runtime) = (&sandbox, &runtime);
        async move {
            let params = format!(r#"{{"n": {n}}}"#);
            let outcome = run(sandbox, runtime, source, &params, "x", Limits::default()).await;
            assert_eq!(outcome.result, Some(format!("[1,{n}]")), "{outcome:?}");
        }
    };
    for round in 0..5 {
        tokio::time::sleep(pause(round)).await;
        let together = async { tokio::join!(one(0), one(1), one(2), one(3)) };
        tokio::time::timeout(Duration::from_secs(30), together)
            .await
            .expect("concurrent runs finished");
    }
}
