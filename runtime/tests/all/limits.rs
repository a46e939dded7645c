//! Every limit over both language runtimes, as one table: the same hostile
//! script written in each language against the same kind of cap.

use std::sync::Arc;
use std::time::Duration;

use kiln_runtime::{Artifact, ErrorCode, Limits, Outcome, Status};

use super::run_script;

/// One language's hostile scripts and the caps that stop them.
struct Language {
    name: &'static str,
    runtime: fn() -> Arc<Artifact>,
    /// `main` loops for ever.
    endless_main: &'static str,
    /// The top level loops for ever (no `main`).
    endless_top: &'static str,
    /// `main` keeps everything it allocates.
    memory_bomb: &'static str,
    /// `main` recurses without end.
    deep_recursion: &'static str,
    /// How the runtime stops deep recursion.
    recursion_stops_as: ErrorCode,
    returns_one: &'static str,
    /// A fuel budget that starts the runtime and enters `main`.
    fuel: u64,
    /// A memory cap above what the runtime needs to start.
    memory_bytes: u64,
}

const LANGUAGES: [Language; 2] = [
    Language {
        name: "javascript",
        runtime: super::javascript::runtime,
        endless_main: "function main() { for (;;) {} }",
        endless_top: "while (true) {}",
        memory_bomb: "function main() { const keep = []; for (;;) keep.push(new Array(100000).fill(keep.length)); }",
        deep_recursion: "function down(n) { return down(n + 1) + 1; }\nfunction main() { return down(0); }",
        // QuickJS's own stack guard does not work on WASI, so the engine's
        // wasm stack limit stops it: a trap that names the stack.
        recursion_stops_as: ErrorCode::Trap,
        returns_one: "function main() { return 1; }",
        fuel: 50_000_000,
        memory_bytes: 48 << 20,
    },
    Language {
        name: "python",
        runtime: super::python::runtime,
        endless_main: "def main():\n    while True:\n        pass\n",
        endless_top: "while True:\n    pass\n",
        memory_bomb: "def main():\n    keep = []\n    while True:\n        keep.append(bytearray(1 << 20))\n",
        deep_recursion: "def down(n):\n    return down(n + 1) + 1\ndef main():\n    return down(0)\n",
        // CPython's recursion limit raises RecursionError first.
        recursion_stops_as: ErrorCode::ScriptError,
        returns_one: "def main():\n    return 1\n",
        fuel: 200_000_000,
        memory_bytes: 96 << 20,
    },
];

async fn run(language: &Language, source: &str, limits: Limits) -> Outcome {
    run_script(&(language.runtime)(), source, "{}", limits).await
}

#[tokio::test]
async fn an_endless_loop_is_stopped_by_fuel() {
    for language in &LANGUAGES {
        let limits = Limits {
            fuel: Some(language.fuel),
            ..Limits::default()
        };
        let outcome = run(language, language.endless_main, limits).await;
        assert_eq!(
            outcome.status,
            Status::Failed,
            "{}: {outcome:?}",
            language.name
        );
        assert_eq!(
            outcome.error_code(),
            Some(ErrorCode::FuelExhausted),
            "{}",
            language.name
        );
        assert_eq!(outcome.fuel_consumed, language.fuel, "{}", language.name);
    }
}

#[tokio::test]
async fn an_endless_loop_is_stopped_by_the_deadline() {
    for language in &LANGUAGES {
        let limits = Limits {
            timeout: Duration::from_millis(300),
            ..Limits::default()
        };
        let outcome = run(language, language.endless_top, limits).await;
        assert_eq!(
            outcome.status,
            Status::Timeout,
            "{}: {outcome:?}",
            language.name
        );
        assert_eq!(
            outcome.error_code(),
            Some(ErrorCode::Timeout),
            "{}",
            language.name
        );
    }
}

#[tokio::test]
async fn a_memory_bomb_is_stopped_at_the_cap() {
    for language in &LANGUAGES {
        let limits = Limits {
            memory_bytes: language.memory_bytes,
            ..Limits::default()
        };
        let outcome = run(language, language.memory_bomb, limits).await;
        assert_eq!(
            outcome.status,
            Status::Failed,
            "{}: {outcome:?}",
            language.name
        );
        assert_eq!(
            outcome.error_code(),
            Some(ErrorCode::MemoryLimit),
            "{}: {:?}",
            language.name,
            outcome.error
        );
        assert!(
            outcome.peak_memory_bytes <= language.memory_bytes,
            "{}",
            language.name
        );
    }
}

#[tokio::test]
async fn deep_recursion_stops_the_script_not_the_host() {
    for language in &LANGUAGES {
        let outcome = run(language, language.deep_recursion, Limits::default()).await;
        assert_eq!(
            outcome.status,
            Status::Failed,
            "{}: {outcome:?}",
            language.name
        );
        let error = outcome.error.unwrap();
        assert_eq!(
            error.code, language.recursion_stops_as,
            "{}: {error:?}",
            language.name
        );
        assert!(
            error.message.contains("call stack exhausted")
                || error.message.contains("RecursionError"),
            "{}: {}",
            language.name,
            error.message
        );
        // The sandbox is fine afterwards.
        let after = run(language, language.returns_one, Limits::default()).await;
        assert_eq!(after.result.as_deref(), Some("1"), "{}", language.name);
    }
}
