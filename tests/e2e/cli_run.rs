//! `kiln run` driven as a user would: the real binary, real files, exit codes.

use std::path::Path;
use std::process::{Command, Output};

use crate::harness::{json, kiln};

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn runs_a_component_streaming_its_output() {
    let cache = tempfile::tempdir().unwrap();
    let out = kiln(
        &["run", kiln_components::HELLO, "--input", "Kiln"],
        cache.path(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "Hello, Kiln!\n");
    assert_eq!(stderr(&out), "greeted 4 bytes of input\n");
}

#[test]
fn json_reports_the_execution_fields() {
    let cache = tempfile::tempdir().unwrap();
    let out = kiln(
        &["run", kiln_components::HELLO, "--input", "you", "--json"],
        cache.path(),
    );
    assert_eq!(out.status.code(), Some(0));
    let report = json(&out);
    assert_eq!(report["status"], "completed");
    assert_eq!(report["trigger"], "cli");
    assert_eq!(report["language"], "wasm");
    assert_eq!(report["exit_code"], 0);
    assert_eq!(report["stdout"], "Hello, you!\n");
    assert_eq!(report["stderr"], "greeted 3 bytes of input\n");
    assert_eq!(report["error"], serde_json::Value::Null);
    assert_eq!(report["result"], serde_json::Value::Null);
    assert_eq!(report["stdout_truncated"], false);
    assert!(report["fuel_consumed"].as_u64().unwrap() > 0);
    assert!(report["peak_memory_bytes"].as_u64().unwrap() > 0);
    assert!(report["duration_ms"].is_u64());
}

#[test]
fn params_arrive_on_stdin_and_in_the_environment() {
    let cache = tempfile::tempdir().unwrap();
    let out = kiln(
        &["run", kiln_components::HELLO, "--params", r#"{"name":"x"}"#],
        cache.path(),
    );
    assert_eq!(stdout(&out), "Hello, {\"name\":\"x\"}!\n");
    let out = kiln(
        &["run", kiln_components::SNOOP, "--params", r#"{"n":1}"#],
        cache.path(),
    );
    let report = stdout(&out);
    assert!(
        report.contains("env KILN_PARAMETERS={\"n\":1}\n"),
        "{report}"
    );
    assert!(report.contains("env KILN_SCRIPT_NAME=snoop\n"), "{report}");
    assert!(report.contains("env KILN_EXECUTION_ID="), "{report}");
    assert_eq!(
        report.lines().filter(|l| l.starts_with("env ")).count(),
        3,
        "{report}"
    );
}

#[test]
fn a_timeout_exits_124() {
    let cache = tempfile::tempdir().unwrap();
    let out = kiln(
        &[
            "run",
            kiln_components::SLEEPER,
            "--timeout-ms",
            "200",
            "--json",
        ],
        cache.path(),
    );
    assert_eq!(out.status.code(), Some(124));
    let report = json(&out);
    assert_eq!(report["status"], "timeout");
    assert_eq!(report["error"]["code"], "TIMEOUT");
}

#[test]
fn fuel_exhaustion_exits_125() {
    let cache = tempfile::tempdir().unwrap();
    let out = kiln(
        &[
            "run",
            kiln_components::ENDLESS_LOOP,
            "--fuel",
            "5000000",
            "--json",
        ],
        cache.path(),
    );
    assert_eq!(out.status.code(), Some(125));
    let report = json(&out);
    assert_eq!(report["status"], "failed");
    assert_eq!(report["error"]["code"], "FUEL_EXHAUSTED");
    assert_eq!(report["fuel_consumed"], 5_000_000);
}

#[test]
fn the_memory_cap_exits_125_and_says_why() {
    let cache = tempfile::tempdir().unwrap();
    let out = kiln(
        &["run", kiln_components::MEMORY_BOMB, "--memory-mb", "32"],
        cache.path(),
    );
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("kiln: MEMORY_LIMIT:"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn the_guest_exit_status_becomes_kilns() {
    let cache = tempfile::tempdir().unwrap();
    let out = kiln(&["run", kiln_components::EXIT_CODE], cache.path());
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(stdout(&out), "exiting with 7\n");
}

#[test]
fn broken_wasm_exits_125_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broken.wasm");
    std::fs::write(&file, b"\0asm\x01\0\0\0garbage").unwrap();
    let out = kiln(&["run", file.to_str().unwrap()], dir.path());
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("does not compile"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn bad_usage_exits_2() {
    let cache = tempfile::tempdir().unwrap();
    let out = kiln(
        &["run", kiln_components::HELLO, "--params", "[1,2]"],
        cache.path(),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("JSON object"), "{}", stderr(&out));
    let out = kiln(&["run", "script.unknown"], cache.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--lang"), "{}", stderr(&out));
    let out = kiln(&["run", "/nonexistent/file.wasm"], cache.path());
    assert_eq!(out.status.code(), Some(2));
    let out = kiln(
        &["run", kiln_components::HELLO, "--memory-mb", "0"],
        cache.path(),
    );
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_second_run_of_the_same_file_does_not_compile() {
    let cache = tempfile::tempdir().unwrap();
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(["run", kiln_components::FIB, "--cache-dir"])
            .arg(cache.path())
            .env("KILN_LOG", "kiln_runtime=debug")
            .output()
            .unwrap()
    };
    let first = run();
    assert_eq!(stdout(&first), "75025\n");
    assert!(
        stderr(&first).contains("source=Compiled"),
        "{}",
        stderr(&first)
    );
    let second = run();
    assert_eq!(stdout(&second), "75025\n");
    assert!(
        stderr(&second).contains("source=Disk"),
        "{}",
        stderr(&second)
    );
    assert!(!stderr(&second).contains("Compiled"), "{}", stderr(&second));
}

#[test]
fn the_bundled_example_runs() {
    let cache = tempfile::tempdir().unwrap();
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../components/examples/hello.wat"
    );
    let out = kiln(&["run", example], cache.path());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "Hello from a Kiln sandbox!\n");
}

fn example(name: &str) -> String {
    format!(
        "{}/../components/examples/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

#[test]
fn a_javascript_script_gets_params_and_returns_a_result() {
    let cache = tempfile::tempdir().unwrap();
    let hello = example("hello.js");
    let out = kiln(
        &["run", &hello, "--params", r#"{"name":"Kiln"}"#, "--json"],
        cache.path(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report = json(&out);
    assert_eq!(report["status"], "completed");
    assert_eq!(report["stdout"], "Hello, Kiln!\n");
    assert_eq!(
        report["result"],
        serde_json::json!({"greeting": "Hello, Kiln!", "length": 4})
    );

    let out = kiln(&["run", &hello], cache.path());
    assert_eq!(
        stdout(&out),
        "Hello, world!\n{\"greeting\":\"Hello, world!\",\"length\":5}\n"
    );
}

#[test]
fn javascript_failures_exit_125_with_position_or_stack() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.js");
    std::fs::write(&broken, "function main() {\n  return 1 +;\n}\n").unwrap();
    let out = kiln(&["run", broken.to_str().unwrap()], dir.path());
    assert_eq!(out.status.code(), Some(125));
    let err = stderr(&out);
    assert!(
        err.contains("kiln: COMPILE_ERROR: SyntaxError") && err.contains("(line 2, column"),
        "{err}"
    );

    let throws = dir.path().join("throws.txt");
    std::fs::write(&throws, "function main() { throw new Error('boom'); }").unwrap();
    let out = kiln(
        &["run", throws.to_str().unwrap(), "--lang", "js", "--json"],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(125));
    let report = json(&out);
    assert_eq!(report["error"]["code"], "SCRIPT_ERROR");
    assert_eq!(report["error"]["message"], "Error: boom");
    assert!(
        report["error"]["stack"].as_str().unwrap().contains("main"),
        "{report}"
    );
}

/// `--output-bytes` caps what is kept of each stream, and says so.
#[test]
fn output_past_output_bytes_is_cut_and_flagged() {
    let dir = tempfile::tempdir().unwrap();
    let loud = dir.path().join("loud.js");
    std::fs::write(&loud, "function main() { console.log('o'.repeat(1000)); }").unwrap();
    let path = loud.to_str().unwrap();
    let out = kiln(
        &["run", path, "--output-bytes", "100", "--json"],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report = json(&out);
    assert_eq!(report["stdout"], "o".repeat(100));
    assert_eq!(report["stdout_truncated"], true);
    let out = kiln(&["run", path, "--output-bytes", "100"], dir.path());
    assert_eq!(stdout(&out), "o".repeat(100));
    assert!(
        stderr(&out).contains("kiln: stdout was truncated at 100 bytes"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_javascript_endless_loop_hits_the_limits() {
    let dir = tempfile::tempdir().unwrap();
    let spin = dir.path().join("spin.js");
    std::fs::write(&spin, "while (true) {}").unwrap();
    let out = kiln(
        &["run", spin.to_str().unwrap(), "--timeout-ms", "200"],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(124));
    let out = kiln(
        &[
            "run",
            spin.to_str().unwrap(),
            "--fuel",
            "10000000",
            "--json",
        ],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(125));
    assert_eq!(json(&out)["error"]["code"], "FUEL_EXHAUSTED");
}

#[test]
fn a_python_script_gets_params_and_returns_a_result() {
    let hello = example("hello.py");
    let out = kiln(
        &["run", &hello, "--params", r#"{"name":"Kiln"}"#, "--json"],
        &crate::harness::shared_cache(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report = json(&out);
    assert_eq!(report["stdout"], "Hello, Kiln!\n");
    assert_eq!(
        report["result"],
        serde_json::json!({"greeting": "Hello, Kiln!", "length": 4})
    );

    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.py");
    std::fs::write(&broken, "def main(:\n    pass\n").unwrap();
    let out = kiln(
        &["run", broken.to_str().unwrap()],
        &crate::harness::shared_cache(),
    );
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("kiln: COMPILE_ERROR: SyntaxError"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn serve_with_a_bad_configuration_exits_2_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&missing)
        .arg("--data")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("bad configuration") && stderr(&out).contains("missing.toml"),
        "{}",
        stderr(&out)
    );
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir.path())
        .env("KILN_WORKERS_COUNT", "lots")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("KILN_WORKERS_COUNT"),
        "{}",
        stderr(&out)
    );
    for (set, says) in [
        ("limits.max_fuel=lots", "--set limits.max_fuel"),
        ("limits.max_fuels=1", "no key \"max_fuels\" in [limits]"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(["serve", "--listen", "127.0.0.1:0", "--set", set, "--data"])
            .arg(dir.path())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        assert!(stderr(&out).contains(says), "{}", stderr(&out));
    }
}

#[test]
fn version_names_the_commit_wasmtime_and_target() {
    let output = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(output.status.success());
    let text = stdout(&output);
    let expected = format!("kiln {} (commit ", env!("CARGO_PKG_VERSION"));
    assert!(text.starts_with(&expected), "{text}");
    assert!(text.contains(", wasmtime 48.0."), "{text}");
    assert!(
        text.trim_end().ends_with("-linux-gnu)") || text.trim_end().ends_with("-linux-musl)"),
        "{text}"
    );
    assert!(!text.contains("commit unknown"), "{text}");
}

/// `kiln run` sends a script's requests only to the hosts its flags allow,
/// and lists them in the JSON it prints.
#[test]
fn a_script_reaches_the_hosts_its_flags_allow() {
    let upstream = crate::egress::Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fetch.js");
    std::fs::write(
        &file,
        format!(
            "export default async () => (await fetch('{}/hello')).json();",
            upstream.base()
        ),
    )
    .unwrap();
    let allow = format!("127.0.0.1:{}", upstream.port);
    let file = file.to_str().unwrap();
    let out = kiln(
        &[
            "run",
            file,
            "--json",
            "--allow-host",
            &allow,
            "--allow-private-host",
            "127.0.0.1",
        ],
        &crate::harness::shared_cache(),
    );
    let run = json(&out);
    assert_eq!(
        run["result"],
        serde_json::json!({"hello": "world"}),
        "{run}"
    );
    assert_eq!(run["http_requests"][0]["status"], 200, "{run}");

    let out = kiln(&["run", file, "--json"], &crate::harness::shared_cache());
    let run = json(&out);
    assert!(
        run["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("is not in this script's allowed hosts")),
        "{run}"
    );
    let bad = kiln(
        &["run", file, "--allow-host", "https://x"],
        &crate::harness::shared_cache(),
    );
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
    assert!(stderr(&bad).contains("--allow-host"), "{}", stderr(&bad));
}

/// A directory of files runs as a bundle: its entry found by name, or
/// named with --entry; a hidden folder and Python's caches are left out.
#[test]
fn runs_a_directory_as_a_bundle() {
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let write = |path: &str, text: &str| {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write(
        "main.js",
        "import { twice } from './lib/twice.js';\nexport default (p) => twice(p.n);\n",
    );
    write("lib/twice.js", "export const twice = (n) => 2 * n;\n");
    write(".git/HEAD", "\u{0}not text");
    let dir_arg = dir.path().to_str().unwrap();
    let out = kiln(
        &["run", dir_arg, "--params", r#"{"n": 21}"#, "--json"],
        cache.path(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(json(&out)["result"], 42);

    write(
        "app.py",
        "from helpers.text import shout\ndef main(word):\n    return shout(word)\n",
    );
    write(
        "helpers/text.py",
        "def shout(w):\n    return w.upper() + '!'\n",
    );
    write("helpers/__pycache__/text.cpython-312.pyc", "\u{0}");
    let out = kiln(
        &[
            "run",
            dir_arg,
            "--entry",
            "app.py",
            "--params",
            r#"{"word": "hi"}"#,
            "--json",
        ],
        cache.path(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(json(&out)["result"], "HI!");

    let out = kiln(&["run", dir_arg, "--entry", "nope.py"], cache.path());
    assert_eq!(out.status.code(), Some(2), "a usage error");
    assert!(
        stderr(&out).contains("\"nope.py\" is not one of the bundle's files"),
        "{}",
        stderr(&out)
    );
    // Files that are each small but together past the bundle's bytes are
    // refused before the rest is read.
    let big = dir.path().join("big");
    std::fs::create_dir_all(&big).unwrap();
    for name in ["a.js", "b.js"] {
        std::fs::write(big.join(name), "x".repeat(3 << 20)).unwrap();
    }
    std::fs::write(big.join("main.js"), "export default () => 1;").unwrap();
    let out = kiln(&["run", big.to_str().unwrap()], cache.path());
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("at most 5242880 bytes"),
        "{}",
        stderr(&out)
    );
}

/// `kiln run -` with `stdin` piped in.
fn kiln_with_stdin(args: &[&str], cache: &Path, stdin: &[u8]) -> Output {
    use std::io::Write as _;
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .arg("--cache-dir")
        .arg(cache)
        .env_remove("KILN_LOG")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn a_script_comes_on_stdin_with_its_language() {
    let cache = tempfile::tempdir().unwrap();
    let source = b"function main(p) { console.log('from stdin'); return p.n * 2; }";
    let out = kiln_with_stdin(
        &["run", "-", "--lang", "js", "--params", r#"{"n": 21}"#],
        cache.path(),
        source,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "from stdin\n42\n");
    let unsaid = kiln_with_stdin(&["run", "-"], cache.path(), source);
    assert_eq!(unsaid.status.code(), Some(2));
    assert!(stderr(&unsaid).contains("--lang"), "{}", stderr(&unsaid));
    // A component says what it is.
    let component = std::fs::read(kiln_components::HELLO).unwrap();
    let out = kiln_with_stdin(&["run", "-", "--input", "pipe"], cache.path(), &component);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "Hello, pipe!\n");
}

#[test]
fn json_reports_a_file_that_does_not_load_as_an_error() {
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.wat");
    std::fs::write(
        &big,
        r#"(module (memory (export "memory") 40000) (func (export "_start")))"#,
    )
    .unwrap();
    let out = kiln(&["run", big.to_str().unwrap(), "--json"], cache.path());
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    let report = json(&out);
    assert_eq!(report["error"]["code"], "COMPILE_ERROR", "{report}");
    assert_eq!(
        report["error"]["details"][0]["field"], "content",
        "{report}"
    );
    assert!(
        report["error"]["message"]
            .as_str()
            .unwrap()
            .contains("pooling allocator"),
        "{report}"
    );
    let unusable = kiln(&["run", "/nonexistent/x.js", "--json"], cache.path());
    assert_eq!(unusable.status.code(), Some(2));
    assert_eq!(json(&unusable)["error"]["code"], "VALIDATION_ERROR");
}

#[test]
fn a_script_on_stdin_past_its_bound_is_refused() {
    let cache = tempfile::tempdir().unwrap();
    let too_big = vec![b' '; (64 << 20) + 1];
    let out = kiln_with_stdin(&["run", "-", "--lang", "js"], cache.path(), &too_big);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("at most 67108864 bytes"),
        "{}",
        stderr(&out)
    );
}
