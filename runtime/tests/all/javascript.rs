//! The JavaScript runtime (QuickJS) under the sandbox: the script contract of
//! DESIGN.md (the limits are `limits.rs`, over both languages).

use std::sync::Arc;

use kiln_runtime::{Artifact, Call, ErrorCode, Invocation, Limits, Outcome, Status};

use super::{language_runtime, run_script, sandbox, text};

pub(super) fn runtime() -> Arc<Artifact> {
    static BYTES: std::sync::LazyLock<Vec<u8>> =
        std::sync::LazyLock::new(|| kiln_components::JS_RUNTIME.decompress().unwrap());
    language_runtime(&BYTES)
}

async fn run_js(source: &str, params: &str, limits: Limits) -> Outcome {
    run_script(&runtime(), source, params, limits).await
}

async fn js(source: &str) -> Outcome {
    run_js(source, "{}", Limits::default()).await
}

#[tokio::test]
async fn main_gets_params_and_its_value_is_the_result() {
    let outcome = run_js(
        "function main(params) { return { sum: params.a + params.b, tags: ['x'] }; }",
        r#"{"a": 2, "b": 40}"#,
        Limits::default(),
    )
    .await;
    assert_eq!(outcome.status, Status::Completed, "{outcome:?}");
    assert_eq!(
        outcome.result.as_deref(),
        Some(r#"{"sum":42,"tags":["x"]}"#)
    );
    assert_eq!(outcome.exit_code, Some(0));
}

#[tokio::test]
async fn console_goes_to_stdout_and_stderr() {
    let outcome = js(r#"
        console.log("hello", 42, {a: 1}, [1, "b"], null, undefined);
        function main() { console.error("to stderr"); console.warn(new Error("careful")); return null; }
    "#)
    .await;
    assert_eq!(outcome.status, Status::Completed, "{outcome:?}");
    assert_eq!(
        text(&outcome.stdout),
        "hello 42 {\"a\":1} [1,\"b\"] null undefined\n"
    );
    let stderr = text(&outcome.stderr);
    assert!(
        stderr.starts_with("to stderr\nError: careful\n"),
        "{stderr}"
    );
    assert_eq!(outcome.result.as_deref(), Some("null"));
}

#[tokio::test]
async fn async_main_is_awaited() {
    let outcome = js(r#"
        async function main(params) {
            const parts = await Promise.all([Promise.resolve("a"), (async () => "b")()]);
            return parts.join("");
        }
    "#)
    .await;
    assert_eq!(outcome.status, Status::Completed, "{outcome:?}");
    assert_eq!(outcome.result.as_deref(), Some(r#""ab""#));
}

#[tokio::test]
async fn modules_export_their_main_as_default() {
    let outcome = run_js(
        "const double = (n) => n * 2;\nexport default function (params) { return double(params.n); }",
        r#"{"n": 21}"#,
        Limits::default(),
    )
    .await;
    assert_eq!(outcome.result.as_deref(), Some("42"), "{outcome:?}");
}

#[tokio::test]
async fn without_main_the_run_fails_naming_what_to_define() {
    for source in ["console.log('top level only');", "export const x = 1;"] {
        let outcome = js(source).await;
        assert_eq!(outcome.status, Status::Failed, "{outcome:?}");
        let error = outcome.error.unwrap();
        assert_eq!(error.code, ErrorCode::CompileError);
        assert!(
            error.message.contains("function main(params)")
                && error.message.contains("export default function"),
            "{}",
            error.message
        );
    }
}

#[tokio::test]
async fn a_thrown_error_fails_with_message_and_stack() {
    let outcome = js(
        "function helper() { throw new TypeError('bad input'); }\nfunction main() { helper(); }",
    )
    .await;
    assert_eq!(outcome.status, Status::Failed);
    let error = outcome.error.unwrap();
    assert_eq!(error.code, ErrorCode::ScriptError);
    assert_eq!(error.message, "TypeError: bad input");
    let stack = error.stack.unwrap();
    assert!(
        stack.contains("helper") && stack.contains("script.js:1"),
        "{stack}"
    );
    assert_eq!(outcome.result, None);
}

#[tokio::test]
async fn rejections_and_thrown_values_fail_too() {
    let error = js("async function main() { throw new RangeError('nope'); }")
        .await
        .error
        .unwrap();
    assert_eq!(
        (error.code, error.message.as_str()),
        (ErrorCode::ScriptError, "RangeError: nope")
    );
    let error = js("function main() { throw {reason: 'plain object'}; }")
        .await
        .error
        .unwrap();
    assert_eq!(error.code, ErrorCode::ScriptError);
    assert!(error.message.contains("plain object"), "{}", error.message);
    let error = js("function main() { return new Promise(() => {}); }")
        .await
        .error
        .unwrap();
    assert!(error.message.contains("never settles"), "{}", error.message);
}

#[tokio::test]
async fn a_syntax_error_is_a_compile_error_with_line_and_column() {
    let source = "function main() {\n  return 1 +;\n}";
    let outcome = js(source).await;
    assert_eq!(outcome.status, Status::Failed);
    let error = outcome.error.unwrap();
    assert_eq!(error.code, ErrorCode::CompileError);
    assert!(
        error.message.starts_with("SyntaxError"),
        "{}",
        error.message
    );
    assert_eq!(error.line, Some(2), "{error:?}");
    assert!(error.column.is_some(), "{error:?}");
    assert!(outcome.stdout.is_empty());

    let checked = sandbox()
        .check(&runtime(), &source.into(), Limits::default())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (checked.code, checked.line),
        (ErrorCode::CompileError, Some(2))
    );
}

#[tokio::test]
async fn check_accepts_good_scripts_and_runs_none_of_them() {
    let source = "console.log('side effect'); while (true) {}";
    let checked = sandbox()
        .check(&runtime(), &source.into(), Limits::default())
        .await
        .unwrap();
    assert_eq!(checked, None);
    let module = "export default () => 1;";
    assert_eq!(
        sandbox()
            .check(&runtime(), &module.into(), Limits::default())
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn scripts_see_no_host() {
    let outcome = js(r#"
        function main() {
            return [typeof require, Object.keys(process), process.env, typeof fetch,
                    typeof setTimeout, typeof std, typeof os];
        }
    "#)
    .await;
    assert_eq!(
        outcome.result.as_deref(),
        Some(r#"["undefined",["env"],{},"function","function","undefined","undefined"]"#)
    );
}

#[tokio::test]
async fn process_env_is_the_runs_environment() {
    let outcome = super::run_script_with_env(
        &runtime(),
        "function main() { return [process.env.KILN_EXECUTION_ID, process.env.KILN_SCRIPT_NAME, process.env.HOME]; }",
        &[("KILN_EXECUTION_ID", "exec-7"), ("KILN_SCRIPT_NAME", "greet")],
    )
    .await;
    assert_eq!(
        outcome.result.as_deref(),
        Some(r#"["exec-7","greet",null]"#),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn a_script_call_into_a_command_is_refused() {
    let (command, _) = sandbox()
        .load(&super::read_guest(kiln_components::HELLO))
        .unwrap();
    let call = Call::Script {
        source: std::sync::Arc::new("1".into()),
        params: "{}".into(),
    };
    let err = sandbox()
        .run(
            &command,
            Invocation {
                call,
                ..Invocation::default()
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, kiln_runtime::Error::Link(_)), "{err}");
    let err = sandbox()
        .run(&runtime(), Invocation::default())
        .await
        .unwrap_err();
    assert!(matches!(err, kiln_runtime::Error::Link(_)), "{err}");
}

/// Every run starts from the build's snapshot of a ready context, so what a
/// run changes there must not reach the next one, and the random generator
/// must not replay the snapshot's seed.
#[tokio::test]
async fn runs_share_the_snapshot_but_not_its_state_or_random_sequence() {
    let source = r#"
        function main() {
            const seen = globalThis.__seen === true;
            const marker = [].kilnMarker !== undefined;
            globalThis.__seen = true;
            Array.prototype.kilnMarker = 1;
            console.log = () => {};
            const draws = Array.from({ length: 4 }, () => Math.random());
            return { seen, marker, draws,
                     name: Math.random.name, length: Math.random.length,
                     elapsed: performance.now() };
        }
    "#;
    let mut first_draws = Vec::new();
    for _ in 0..3 {
        let outcome = js(source).await;
        assert_eq!(outcome.status, Status::Completed, "{outcome:?}");
        let result: serde_json::Value =
            serde_json::from_str(outcome.result.as_deref().unwrap()).unwrap();
        assert_eq!(result["seen"], false, "globals leaked: {result}");
        assert_eq!(result["marker"], false, "prototypes leaked: {result}");
        assert_eq!(result["name"], "random");
        assert_eq!(result["length"], 0);
        // Measured from this run's start, not from the build's snapshot.
        let elapsed = result["elapsed"].as_f64().unwrap();
        assert!(
            (0.0..10_000.0).contains(&elapsed),
            "performance.now() = {elapsed}"
        );
        let draws: Vec<f64> = serde_json::from_value(result["draws"].clone()).unwrap();
        assert!(draws.iter().all(|d| (0.0..1.0).contains(d)), "{draws:?}");
        let distinct: std::collections::HashSet<u64> = draws.iter().map(|d| d.to_bits()).collect();
        assert_eq!(distinct.len(), draws.len(), "{draws:?}");
        first_draws.push(draws[0].to_bits());
    }
    let distinct: std::collections::HashSet<_> = first_draws.iter().collect();
    assert_eq!(
        distinct.len(),
        3,
        "runs drew the same sequence: {first_draws:?}"
    );
    // The console replaced above is the snapshot's again in the next run.
    let outcome = js("function main() { console.log('still here'); }").await;
    assert_eq!(text(&outcome.stdout), "still here\n");
}

/// The embedded runtime is the build's snapshot (components/artifacts/
/// preinit.rs): its initial memory holds the QuickJS runtime and context that
/// `wizer-initialize` made, on top of the data the compiler put there.
#[test]
fn the_embedded_runtime_is_pre_initialized() {
    fn data_bytes(component: &[u8]) -> usize {
        let mut total = 0;
        for payload in wasmparser::Parser::new(0).parse_all(component) {
            if let wasmparser::Payload::DataSection(section) = payload.unwrap() {
                for data in section {
                    total += data.unwrap().data.len();
                }
            }
        }
        total
    }
    let embedded = kiln_components::JS_RUNTIME.decompress().unwrap();
    let built = std::fs::read(kiln_components::JS_RUNTIME_UNINITIALIZED).unwrap();
    let (snapshot, compiled) = (data_bytes(&embedded), data_bytes(&built));
    // A runtime and a full context: about 60 KB of heap that is not zero.
    assert!(
        snapshot > compiled + (32 << 10),
        "initial data: {snapshot} bytes embedded, {compiled} as built"
    );
}

#[tokio::test]
async fn set_timeout_waits_and_the_result_follows() {
    let started = std::time::Instant::now();
    let outcome = js(r#"
        export default () => new Promise((resolve) => {
          const order = [];
          setTimeout(() => { order.push("late"); resolve(order); }, 50);
          setTimeout((tag) => order.push(tag), 10, "early");
          const dropped = setTimeout(() => order.push("cleared"), 20);
          clearTimeout(dropped);
          queueMicrotask(() => order.push("micro"));
        });
    "#)
    .await;
    assert_eq!(outcome.status, Status::Completed, "{outcome:?}");
    assert_eq!(
        outcome.result.as_deref(),
        Some(r#"["micro","early","late"]"#)
    );
    assert!(started.elapsed() >= std::time::Duration::from_millis(50));
}

#[tokio::test]
async fn set_interval_repeats_until_cleared_and_modules_may_await_at_the_top() {
    let outcome = js(r#"
        const ticks = await new Promise((resolve) => {
          let n = 0;
          const id = setInterval(() => { n += 1; if (n === 3) { clearInterval(id); resolve(n); } }, 5);
        });
        export default () => ticks;
    "#)
    .await;
    assert_eq!(outcome.result.as_deref(), Some("3"), "{outcome:?}");
}

#[tokio::test]
async fn a_timer_past_the_deadline_is_a_timeout_and_a_throwing_one_fails_the_run() {
    let limits = Limits {
        timeout: std::time::Duration::from_millis(200),
        ..Limits::default()
    };
    let started = std::time::Instant::now();
    let outcome = run_js(
        "export default () => new Promise((resolve) => setTimeout(resolve, 60_000));",
        "{}",
        limits,
    )
    .await;
    assert_eq!(
        outcome.error_code(),
        Some(ErrorCode::Timeout),
        "{outcome:?}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(5));

    let outcome = js(r#"
        export default () => new Promise(() => setTimeout(() => { throw new RangeError("late"); }, 1));
    "#)
    .await;
    assert_eq!(
        outcome.error_code(),
        Some(ErrorCode::ScriptError),
        "{outcome:?}"
    );
    assert!(
        outcome.error.unwrap().message.contains("RangeError: late"),
        "the timer's error is the run's"
    );
}

#[tokio::test]
async fn web_basics_base64_structured_clone_and_crypto() {
    let outcome = js(r#"
        function main() {
          const cyclic = { when: new Date(0), list: [1, { deep: true }], map: new Map([["k", new Set([1])]]),
                           bytes: new Uint8Array([1, 2, 3]) };
          cyclic.self = cyclic;
          const copy = structuredClone(cyclic);
          let refused = null;
          try { structuredClone({ f() {} }); } catch (e) { refused = e.name; }
          let badBase64 = null;
          try { atob("a"); } catch (e) { badBase64 = e.name; }
          const random = crypto.getRandomValues(new Uint32Array(4));
          const uuid = crypto.randomUUID();
          return {
            btoa: btoa("Kiln\u00ff"), atob: atob(" S2ls bv8= "), badBase64,
            cloned: copy !== cyclic && copy.self === copy && copy.list[1] !== cyclic.list[1]
              && copy.when.getTime() === 0 && copy.map.get("k").has(1) && copy.bytes[2] === 3,
            refused,
            random: random.some((x) => x !== 0) && random.length === 4,
            uuid: /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/.test(uuid)
              && uuid !== crypto.randomUUID(),
          };
        }
    "#)
    .await;
    assert_eq!(
        outcome.result.as_deref(),
        Some(
            r#"{"btoa":"S2lsbv8=","atob":"Kilnÿ","badBase64":"InvalidCharacterError","cloned":true,"refused":"DataCloneError","random":true,"uuid":true}"#
        ),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn url_and_url_search_params_follow_the_url_standard() {
    let outcome = js(r#"
        function main() {
          const u = new URL("../b/c?x=1&y=a+b#top", "https://user:pw@Example.COM:8443/a/z");
          const parts = [u.href, u.origin, u.host, u.hostname, u.port, u.pathname, u.search, u.hash, u.username];
          u.searchParams.append("q", "ä &=");
          u.searchParams.delete("x");
          const afterParams = u.href;
          u.port = "443";
          u.pathname = "/new path";
          const params = new URLSearchParams({ b: "2", a: "1" });
          params.sort();
          let invalid = null;
          try { new URL("not a url"); } catch (e) { invalid = e.name; }
          return { parts, afterParams, set: u.href, y: new URL(afterParams).searchParams.get("y"),
                   sorted: params.toString(), canParse: [URL.canParse("http://x"), URL.canParse("nope")],
                   invalid, json: JSON.stringify({ u: new URL("http://a.test") }) };
        }
    "#)
    .await;
    let result: serde_json::Value =
        serde_json::from_str(outcome.result.as_deref().unwrap()).unwrap();
    assert_eq!(
        result,
        serde_json::json!({
            "parts": ["https://user:pw@example.com:8443/b/c?x=1&y=a+b#top", "https://example.com:8443",
                      "example.com:8443", "example.com", "8443", "/b/c", "?x=1&y=a+b", "#top", "user"],
            "afterParams": "https://user:pw@example.com:8443/b/c?y=a+b&q=%C3%A4+%26%3D#top",
            "set": "https://user:pw@example.com/new%20path?y=a+b&q=%C3%A4+%26%3D#top",
            "y": "a b",
            "sorted": "a=1&b=2",
            "canParse": [true, false],
            "invalid": "TypeError",
            "json": "{\"u\":\"http://a.test/\"}",
        }),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn a_huge_timer_delay_waits_for_the_deadline_instead_of_trapping() {
    let limits = Limits {
        timeout: std::time::Duration::from_millis(100),
        ..Limits::default()
    };
    let outcome = run_js(
        "export default () => new Promise((resolve) => setTimeout(resolve, 1e23));",
        "{}",
        limits,
    )
    .await;
    assert_eq!(
        outcome.error_code(),
        Some(ErrorCode::Timeout),
        "{outcome:?}"
    );
}
