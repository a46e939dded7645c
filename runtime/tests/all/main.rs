//! Runtime integration tests: every test guest from `kiln-components` run
//! through a real `Sandbox`, plus the artifact cache.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers fail loudly on setup errors"
)]

mod bundles;
mod cache;
mod egress;
mod guests;
mod http;
mod javascript;
mod limits;
mod prewarm;
mod python;
mod script;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use kiln_runtime::{Artifact, Call, EngineOptions, Invocation, Limits, Outcome, Sandbox, Shape};

/// One sandbox shared by the tests that need no cache directory of their own.
/// Its disk cache lets [`private_sandbox`] load what it compiled without
/// compiling again.
fn sandbox() -> &'static Sandbox {
    static SANDBOX: OnceLock<Sandbox> = OnceLock::new();
    SANDBOX.get_or_init(|| Sandbox::new(small_engine(Some(shared_cache().into()))).unwrap())
}

/// The compile cache the host's tests use too (`host/tests/e2e/harness.rs`),
/// so the language runtimes compiled there are loaded here, and the other
/// way round; tests about the cache itself make their own directories.
fn shared_cache() -> &'static std::path::Path {
    static DIR: OnceLock<std::path::PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tmp/kiln-e2e-cache");
        std::fs::create_dir_all(&dir).unwrap();
        dir
    })
}

/// A sandbox of its own (so its counters are the test's alone) with `bytes`
/// loaded, from the shared disk cache when the shared sandbox compiled them.
fn private_sandbox(bytes: &[u8]) -> (Sandbox, Arc<Artifact>) {
    sandbox().load(bytes).unwrap();
    let private = Sandbox::new(small_engine(Some(shared_cache().into()))).unwrap();
    let (artifact, _) = private.load(bytes).unwrap();
    (private, artifact)
}

/// A small pool keeps the address space each test sandbox reserves modest.
fn small_engine(cache_dir: Option<std::path::PathBuf>) -> EngineOptions {
    EngineOptions {
        cache_dir,
        max_instances: 32,
        ..EngineOptions::default()
    }
}

fn read_guest(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Runs a guest with `args` (program name first) and `limits`.
async fn run(path: &str, args: &[&str], stdin: &str, limits: Limits) -> Outcome {
    let bytes = read_guest(path);
    let (artifact, _) = sandbox().load(&bytes).unwrap();
    sandbox()
        .run(
            &artifact,
            Invocation {
                args: args.iter().map(|s| s.to_string()).collect(),
                stdin: stdin.as_bytes().to_vec(),
                limits,
                ..Invocation::default()
            },
        )
        .await
        .unwrap()
}

fn limits_with_timeout(timeout: Duration) -> Limits {
    Limits {
        timeout,
        ..Limits::default()
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// An embedded language runtime, loaded into the shared sandbox.
fn language_runtime(bytes: &[u8]) -> Arc<Artifact> {
    let (artifact, _) = sandbox().load(bytes).unwrap();
    assert_eq!(artifact.shape(), Shape::LanguageRuntime);
    artifact
}

/// A call of a script's `main` with `params` (a JSON object).
fn script(source: &str, params: &str) -> Invocation {
    Invocation {
        call: Call::Script {
            source: Arc::new(source.into()),
            params: params.into(),
        },
        ..Invocation::default()
    }
}

/// Runs a script's `main` with `params` (a JSON object) on a language runtime.
async fn run_script(runtime: &Artifact, source: &str, params: &str, limits: Limits) -> Outcome {
    let invocation = Invocation {
        limits,
        ..script(source, params)
    };
    sandbox().run(runtime, invocation).await.unwrap()
}

/// Runs a script whose run has `env` as its environment.
async fn run_script_with_env(runtime: &Artifact, source: &str, env: &[(&str, &str)]) -> Outcome {
    let invocation = Invocation {
        env: env
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect(),
        ..script(source, "{}")
    };
    sandbox().run(runtime, invocation).await.unwrap()
}
