#![allow(clippy::expect_used, reason = "a benchmark aborts on setup failure")]
//! What a script's outbound HTTP request costs, per language (`js`: `fetch`,
//! `py`: `kiln.http`), against an upstream on 127.0.0.1 that answers 17
//! bytes of JSON on a kept-alive connection:
//!
//! - `hello_warm`: a warm hello run (no request), the baseline;
//! - `hello_warm_before`: the same on the runtime built before outbound HTTP
//!   (`KILN_BENCH_OLD_JS` / `KILN_BENCH_OLD_PY`: paths of those runtime
//!   components; skipped when unset), to see whether the hello moved;
//! - `fetch_warm`: a warm run that makes one GET and returns its status,
//!   through the node's real egress (allowlist, resolver guard, log);
//! - `host/get`: the same GET sent by the benchmark itself with `reqwest`
//!   (a kept-alive client): what the request costs without a sandbox.
//!
//! `fetch_warm` − `hello_warm` is the cost of one request from a script.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use kiln::bench::EgressNode;
use kiln_runtime::{Artifact, Call, EngineOptions, Invocation, Sandbox, Status};

const BODY: &[u8] = br#"{"hello":"world"}"#;

/// An HTTP/1.1 upstream on 127.0.0.1 that keeps connections alive and
/// answers every request with [`BODY`]. Returns its port.
fn upstream() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            std::thread::spawn(move || serve(stream));
        }
    });
    port
}

fn serve(stream: std::net::TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut writer = stream;
    loop {
        let mut length = 0;
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            BODY.len()
        );
        if writer.write_all(head.as_bytes()).is_err() || writer.write_all(BODY).is_err() {
            return;
        }
    }
}

struct Language {
    name: &'static str,
    runtime: kiln_components::Runtime,
    before: &'static str,
    hello: &'static str,
    fetch: fn(&str) -> String,
}

const LANGUAGES: [Language; 2] = [
    Language {
        name: "js",
        runtime: kiln_components::JS_RUNTIME,
        before: "KILN_BENCH_OLD_JS",
        hello: "function main(params) { console.log(`Hello, ${params.name}!`); return { ok: true }; }",
        fetch: |url| format!("export default async () => (await fetch({url:?})).status;"),
    },
    Language {
        name: "py",
        runtime: kiln_components::PY_RUNTIME,
        before: "KILN_BENCH_OLD_PY",
        hello: "def main(name):\n    print(f'Hello, {name}!')\n    return {'ok': True}\n",
        fetch: |url| {
            format!(
                "import kiln.http\n\ndef main(**_):\n    return kiln.http.get({url:?}).status_code\n"
            )
        },
    },
];

fn script(source: &str, egress: Option<Arc<dyn kiln_runtime::Egress>>) -> Invocation {
    Invocation {
        call: Call::Script {
            source: Arc::new(source.into()),
            params: r#"{"name":"bench"}"#.into(),
        },
        egress,
        ..Invocation::default()
    }
}

async fn run(sandbox: &Sandbox, runtime: &Artifact, invocation: Invocation) {
    let outcome = sandbox.run(runtime, invocation).await.expect("run");
    assert_eq!(outcome.status, Status::Completed, "{:?}", outcome.error);
}

fn egress(c: &mut Criterion) {
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio");
    let port = upstream();
    let url = format!("http://127.0.0.1:{port}/hello");
    let allowed = format!("127.0.0.1:{port}");
    let node = tokio
        .block_on(async { EgressNode::new(&["127.0.0.1"]) })
        .expect("egress");
    let cache = tempfile::tempdir().expect("tempdir");
    let sandbox = Sandbox::new(EngineOptions {
        cache_dir: Some(cache.path().to_path_buf()),
        max_instances: 16,
        ..EngineOptions::default()
    })
    .expect("sandbox");

    for language in &LANGUAGES {
        let bytes = language.runtime.decompress().expect("runtime");
        let (runtime, _) = sandbox.load(&bytes).expect("load");
        let fetch = (language.fetch)(&url);
        let mut group = c.benchmark_group(format!("egress/{}", language.name));
        group.sample_size(30);
        group.measurement_time(std::time::Duration::from_secs(4));
        // First runs compile each script once; the benchmarks are warm.
        tokio.block_on(async {
            run(&sandbox, &runtime, script(language.hello, None)).await;
            let egress = node.for_run(&[&allowed]).expect("egress");
            run(&sandbox, &runtime, script(&fetch, Some(egress))).await;
        });
        group.bench_function("hello_warm", |b| {
            b.to_async(&tokio)
                .iter(|| run(&sandbox, &runtime, script(language.hello, None)));
        });
        if let Some(path) = std::env::var_os(language.before) {
            let old = std::fs::read(&path).expect("the runtime before outbound HTTP");
            let (before, _) = sandbox.load(&old).expect("load the old runtime");
            tokio.block_on(run(&sandbox, &before, script(language.hello, None)));
            group.bench_function("hello_warm_before", |b| {
                b.to_async(&tokio)
                    .iter(|| run(&sandbox, &before, script(language.hello, None)));
            });
        }
        group.bench_function("fetch_warm", |b| {
            b.to_async(&tokio).iter(|| {
                let egress = node.for_run(&[&allowed]).expect("egress");
                run(&sandbox, &runtime, script(&fetch, Some(egress)))
            });
        });
        group.finish();
    }

    let client = reqwest::Client::new();
    c.bench_function("egress/host/get", |b| {
        b.to_async(&tokio).iter(|| async {
            let response = client.get(&url).send().await.expect("get");
            assert_eq!(response.bytes().await.expect("body").as_ref(), BODY);
        });
    });
}

criterion_group!(benches, egress);
criterion_main!(benches);
