#![allow(clippy::expect_used, reason = "a benchmark aborts on setup failure")]
//! What compiling in a child process costs, against compiling in the
//! server's own process, in the same run:
//!
//! - `in_process`: `Sandbox::load` with nothing cached (validation limits,
//!   Cranelift, the disk cache write, linking), what every compile was
//!   before compiles moved out;
//! - `child_process_*`: the same validation in the parent (`compile_input`),
//!   then the release `kiln compile-artifact` (process start, its own
//!   engine, Cranelift, the cache write) and the parent's verified load
//!   (`load_compiled`): what `kiln serve` does now for each new component,
//!   on every core (Kiln's own runtimes) or on one (a tenant's upload, so
//!   the queue's turns are cores).
//!
//! Inputs: the JavaScript runtime (1.0 MB, Rust and C) and the `counter`
//! guest (190 KB, Rust with the guest SDK). Each iteration compiles bytes no
//! cache has seen: a custom section with a counter is appended, which
//! changes the key and not the code.
//!
//! `cargo build --release -p kiln && cargo bench -p kiln-benches --bench compile`

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use kiln_benches::kiln_binary;
use kiln_runtime::{EngineOptions, Sandbox};

/// `bytes` with a custom section `kiln-bench` holding `n`: new bytes, the
/// same code.
fn unique(bytes: &[u8], n: u64) -> Vec<u8> {
    let name = b"kiln-bench";
    let payload = n.to_le_bytes();
    let size = 1 + name.len() + payload.len();
    let mut out = bytes.to_vec();
    out.push(0); // custom section id
    out.push(u8::try_from(size).expect("a small section"));
    out.push(u8::try_from(name.len()).expect("a short name"));
    out.extend_from_slice(name);
    out.extend_from_slice(&payload);
    out
}

fn sandbox(cache: &Path) -> Sandbox {
    Sandbox::new(EngineOptions {
        cache_dir: Some(cache.to_path_buf()),
        max_instances: 4,
        prewarm_above: None,
        ..EngineOptions::default()
    })
    .expect("sandbox")
}

fn compile_in_child(kiln: &Path, cache: &Path, key: &str, component: &[u8], parallel: bool) {
    let mut command = Command::new(kiln);
    command.arg("compile-artifact");
    if parallel {
        command.arg("--parallel");
    }
    let mut child = command
        .env_clear()
        .arg("--cache-dir")
        .arg(cache)
        .args(["--key", key, "--memory-mb", "4096", "--cpu-secs", "300"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start kiln compile-artifact");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(component)
        .expect("feed the child");
    assert!(child.wait().expect("wait").success(), "the child failed");
}

fn compile(c: &mut Criterion) {
    let kiln = kiln_binary();
    let js = kiln_components::JS_RUNTIME
        .decompress()
        .expect("the embedded runtime");
    let counter = std::fs::read(kiln_components::COUNTER).expect("the counter guest");
    let cache = tempfile::tempdir().expect("cache dir");
    let sandbox = sandbox(cache.path());
    let next = AtomicU64::new(0);
    for (name, bytes) in [("js_runtime", &js), ("counter", &counter)] {
        let mut group = c.benchmark_group(format!("compile/{name}"));
        group.sample_size(10);
        group.bench_function("in_process", |b| {
            b.iter_batched(
                || unique(bytes, next.fetch_add(1, Ordering::Relaxed)),
                |fresh| sandbox.load(&fresh).expect("load"),
                BatchSize::PerIteration,
            );
        });
        for (threads, parallel) in [
            ("child_process_all_cores", true),
            ("child_process_one_core", false),
        ] {
            group.bench_function(threads, |b| {
                b.iter_batched(
                    || unique(bytes, next.fetch_add(1, Ordering::Relaxed)),
                    |fresh| {
                        let (key, component) = sandbox.compile_input(&fresh).expect("input");
                        compile_in_child(&kiln, cache.path(), &key.to_hex(), &component, parallel);
                        sandbox.load_compiled(&fresh).expect("load")
                    },
                    BatchSize::PerIteration,
                );
            });
        }
        group.finish();
    }
}

criterion_group!(benches, compile);
criterion_main!(benches);
