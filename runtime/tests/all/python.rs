//! The Python runtime (CPython via componentize-py) under the sandbox: the
//! script contract of DESIGN.md (the limits are `limits.rs`, over both languages).

use std::sync::Arc;

use kiln_runtime::{Artifact, ErrorCode, Limits, Outcome, Status};

use super::{language_runtime, run_script, sandbox, text};

pub(super) fn runtime() -> Arc<Artifact> {
    static BYTES: std::sync::LazyLock<Vec<u8>> =
        std::sync::LazyLock::new(|| kiln_components::PY_RUNTIME.decompress().unwrap());
    language_runtime(&BYTES)
}

async fn run_py(source: &str, params: &str, limits: Limits) -> Outcome {
    run_script(&runtime(), source, params, limits).await
}

async fn py(source: &str) -> Outcome {
    run_py(source, "{}", Limits::default()).await
}

#[tokio::test]
async fn main_gets_params_as_keywords_and_returns_the_result() {
    let source = "import math\ndef main(a, b, **rest):\n    print('adding', a, b)\n    return {'sum': a + b, 'root': math.isqrt(a + b), 'rest': sorted(rest)}\n";
    let outcome = run_py(source, r#"{"a": 40, "b": 24, "z": 1}"#, Limits::default()).await;
    assert_eq!(outcome.status, Status::Completed, "{outcome:?}");
    assert_eq!(text(&outcome.stdout), "adding 40 24\n");
    assert_eq!(
        outcome.result.as_deref(),
        Some(r#"{"sum": 64, "root": 8, "rest": ["z"]}"#)
    );
}

#[tokio::test]
async fn print_to_stderr_and_a_main_that_returns_nothing() {
    let outcome =
        py("import sys\nprint('out')\ndef main():\n    print('err', file=sys.stderr)\n").await;
    assert_eq!(outcome.status, Status::Completed, "{outcome:?}");
    assert_eq!(
        (text(&outcome.stdout), text(&outcome.stderr)),
        ("out\n".into(), "err\n".into())
    );
    assert_eq!(outcome.result.as_deref(), Some("null"));
}

#[tokio::test]
async fn without_main_the_run_fails_naming_what_to_define() {
    let outcome = py("x = 1\n").await;
    let error = outcome.error.unwrap();
    assert_eq!(error.code, ErrorCode::CompileError);
    assert!(
        error.message.contains("def main(**params)"),
        "{}",
        error.message
    );
}

#[tokio::test]
async fn an_import_of_a_missing_module_is_refused_before_anything_runs() {
    let outcome =
        py("import json\nprint('ran')\nimport sqlite3\ndef main():\n    return 1\n").await;
    assert!(outcome.stdout.is_empty(), "the top level ran");
    let error = outcome.error.unwrap();
    assert_eq!(error.code, ErrorCode::CompileError);
    assert_eq!(
        error.message,
        "ModuleNotFoundError: No module named 'sqlite3': Kiln's Python runtime does not include it"
    );
    assert_eq!((error.line, error.column), (Some(3), Some(1)));
    // A guarded import is left to run time; modules the runtime has pass.
    let outcome = py(
        "try:\n    import numpy\nexcept ImportError:\n    numpy = None\nfrom collections import OrderedDict\nimport urllib.parse\ndef main():\n    return numpy is None\n",
    )
    .await;
    assert_eq!(outcome.result.as_deref(), Some("true"), "{outcome:?}");
}

#[tokio::test]
async fn async_main_is_awaited() {
    let outcome =
        py("import asyncio\nasync def main():\n    await asyncio.sleep(0)\n    return 'done'\n")
            .await;
    assert_eq!(outcome.result.as_deref(), Some(r#""done""#), "{outcome:?}");
}

#[tokio::test]
async fn asyncio_sleeps_gathers_and_times_out_on_kilns_event_loop() {
    let started = std::time::Instant::now();
    let source = r#"
import asyncio

async def later(tag, seconds):
    await asyncio.sleep(seconds)
    return tag

async def main():
    order = await asyncio.gather(later("slow", 0.05), later("fast", 0.01))
    try:
        await asyncio.wait_for(asyncio.sleep(10), timeout=0.02)
        timed_out = False
    except TimeoutError:
        timed_out = True
    return {"order": order, "timed_out": timed_out}
"#;
    let outcome = py(source).await;
    assert_eq!(outcome.status, Status::Completed, "{outcome:?}");
    assert_eq!(
        outcome.result.as_deref(),
        Some(r#"{"order": ["slow", "fast"], "timed_out": true}"#)
    );
    assert!(started.elapsed() >= std::time::Duration::from_millis(70));
}

#[tokio::test]
async fn a_sync_main_may_run_its_own_loop_and_a_long_sleep_is_a_timeout() {
    let outcome = py("import asyncio

async def work():
    await asyncio.sleep(0.01)
    return 7

def main():
    return asyncio.run(work())
")
    .await;
    assert_eq!(outcome.result.as_deref(), Some("7"), "{outcome:?}");
    let limits = Limits {
        timeout: std::time::Duration::from_millis(200),
        ..Limits::default()
    };
    let outcome = run_py(
        "import asyncio

async def main():
    await asyncio.sleep(60)
",
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

#[tokio::test]
async fn a_coroutine_nothing_will_wake_fails_instead_of_hanging() {
    let outcome = py("import asyncio

async def main():
    await asyncio.get_running_loop().create_future()
")
    .await;
    assert_eq!(
        outcome.error_code(),
        Some(ErrorCode::ScriptError),
        "{outcome:?}"
    );
    let message = outcome.error.unwrap().message;
    assert!(message.contains("nothing left to run"), "{message}");
}

#[tokio::test]
async fn an_exception_fails_with_its_traceback() {
    let outcome =
        py("def helper():\n    raise ValueError('bad input')\n\ndef main():\n    helper()\n").await;
    assert_eq!(outcome.status, Status::Failed, "{outcome:?}");
    let error = outcome.error.unwrap();
    assert_eq!(error.code, ErrorCode::ScriptError);
    assert_eq!(error.message, "ValueError: bad input");
    let stack = error.stack.unwrap();
    assert!(
        stack.contains("File \"script.py\", line 2, in helper"),
        "{stack}"
    );
    assert!(!stack.contains("app.py"), "runtime frames leak: {stack}");
}

#[tokio::test]
async fn wrong_params_and_unserializable_results_are_script_errors() {
    let error = run_py(
        "def main(x):\n    return x\n",
        r#"{"y": 1}"#,
        Limits::default(),
    )
    .await
    .error
    .unwrap();
    assert_eq!(error.code, ErrorCode::ScriptError);
    assert!(error.message.starts_with("TypeError"), "{}", error.message);
    let error = py("def main():\n    return object()\n")
        .await
        .error
        .unwrap();
    assert!(
        error.message.contains("not JSON serializable"),
        "{}",
        error.message
    );
}

#[tokio::test]
async fn a_syntax_error_is_a_compile_error_with_line_and_column() {
    let source = "def main():\n    return (1 +\n\nx = ]\n";
    let outcome = py(source).await;
    let error = outcome.error.unwrap();
    assert_eq!(error.code, ErrorCode::CompileError, "{error:?}");
    assert!(
        error.message.starts_with("SyntaxError"),
        "{}",
        error.message
    );
    assert!(error.line.is_some() && error.column.is_some(), "{error:?}");

    let checked = sandbox()
        .check(&runtime(), &"def f(:\n  pass\n".into(), Limits::default())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (checked.code, checked.line),
        (ErrorCode::CompileError, Some(1))
    );
    assert_eq!(
        sandbox()
            .check(&runtime(), &"while True: pass\n".into(), Limits::default())
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn os_environ_is_the_runs_environment() {
    let source = "import os\ndef main():\n    return [os.environ.get('KILN_EXECUTION_ID'), os.getenv('KILN_SCRIPT_NAME'), sorted(os.environ)]\n";
    let outcome = super::run_script_with_env(
        &runtime(),
        source,
        &[
            ("KILN_EXECUTION_ID", "exec-7"),
            ("KILN_SCRIPT_NAME", "greet"),
        ],
    )
    .await;
    assert_eq!(
        outcome.result.as_deref(),
        Some(r#"["exec-7", "greet", ["KILN_EXECUTION_ID", "KILN_SCRIPT_NAME"]]"#),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn scripts_see_no_host() {
    let source = "import os\ndef main():\n    found = []\n    for path in ['/etc/passwd', '/']:\n        try:\n            open(path).read(); found.append(path)\n        except OSError:\n            pass\n    return {'env': dict(os.environ), 'found': found}\n";
    let outcome = py(source).await;
    assert_eq!(
        outcome.result.as_deref(),
        Some(r#"{"env": {}, "found": []}"#),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn a_cached_script_runs_fresh_and_keeps_its_line_numbers() {
    // The second run uses the code compiled by the first (a marshalled code
    // object): module state starts over and tracebacks still point at the
    // script's lines.
    let source = "runs = []\ndef main(name):\n    runs.append(name)\n    if len(runs) > 1:\n        raise RuntimeError('state leaked')\n    raise ValueError(f'bad {name}')\n";
    let (sandbox, python) =
        super::private_sandbox(&kiln_components::PY_RUNTIME.decompress().unwrap());
    for _ in 0..2 {
        let outcome = sandbox
            .run(&python, super::script(source, r#"{"name": "x"}"#))
            .await
            .unwrap();
        assert_eq!(outcome.status, Status::Failed, "{outcome:?}");
        let error = outcome.error.unwrap();
        assert_eq!(error.message, "ValueError: bad x");
        let stack = error.stack.unwrap_or_default();
        assert!(stack.contains("script.py\", line 6, in main"), "{stack}");
    }
    let stats = sandbox.cache_stats();
    assert_eq!((stats.script_compiles, stats.script_code_hits), (1, 1));
}

#[tokio::test]
async fn an_import_under_an_if_is_left_to_run_time() {
    let outcome = py(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import sqlite3\ndef main():\n    return 1\n",
    )
    .await;
    assert_eq!(outcome.result.as_deref(), Some("1"), "{outcome:?}");
}

/// Every module `GET /v1/languages` lists imports, in one script.
#[tokio::test]
async fn every_listed_standard_module_imports() {
    let source: String = kiln_components::PYTHON_MODULES
        .iter()
        .map(|m| format!("import {m}\n"))
        .chain(["def main():\n    return 'ok'\n".to_owned()])
        .collect();
    let outcome = py(&source).await;
    assert_eq!(outcome.result.as_deref(), Some(r#""ok""#), "{outcome:?}");
}

/// zoneinfo has the IANA database (embedded: there is no file system).
#[tokio::test]
async fn zoneinfo_knows_the_time_zones() {
    let outcome = py(
        "from datetime import datetime, timezone\nfrom zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones\n\
         def main():\n    t = datetime(2026, 1, 15, 12, tzinfo=timezone.utc)\n\
         \x20   try:\n        ZoneInfo('Mars/Olympus')\n        missing = False\n    except ZoneInfoNotFoundError:\n        missing = True\n\
         \x20   return [t.astimezone(ZoneInfo('America/New_York')).isoformat(), t.astimezone(ZoneInfo('Asia/Kolkata')).utcoffset().seconds, missing, 'Europe/Berlin' in available_timezones()]\n",
    )
    .await;
    assert_eq!(
        outcome.result.as_deref(),
        Some(r#"["2026-01-15T07:00:00-05:00", 19800, true, true]"#),
        "{outcome:?}"
    );
}
