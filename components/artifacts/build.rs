#![allow(
    clippy::expect_used,
    reason = "a build script reports failure by panicking"
)]
//! Builds the guest workspace in `components/` to wasm32-wasip2 and generates
//! `gen.rs`: one path constant per test guest plus `foreach_guest!`, so that a
//! test suite can require a test for every guest.

use std::env;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

mod preinit;

const TARGET: &str = "wasm32-wasip2";
const CLANG: &str = "clang-19";
const LLVM_AR: &str = "llvm-ar-19";
/// Where Debian's `wasi-libc` package puts its headers.
const WASI_HEADERS: &str = "/usr/include/wasm32-wasi/stdio.h";
/// Language runtimes embedded in the `kiln` binary: (constant, wasm file,
/// whether this build pre-initializes it; componentize-py's output already is).
const RUNTIMES: &[(&str, &str, bool)] = &[
    ("JS_RUNTIME", "kiln_js.wasm", true),
    ("PY_RUNTIME", "kiln_python.wasm", false),
];
/// The pinned Python-to-component compiler (PyPI), installed by scripts/setup.sh.
const COMPONENTIZE_PY: &str = "componentize-py";
const COMPONENTIZE_PY_VERSION: &str = "componentize-py 0.25.1";
/// The time zone database the Python runtime embeds (PyPI `tzdata`).
const TZDATA_VERSION: &str = "2026.6";

fn main() {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let components = manifest_dir
        .parent()
        .expect("components/ folder")
        .to_path_buf();
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    // One guest build shared by every host profile and target (dev, test,
    // bench, release, the static musl build): OUT_DIR is
    // <target-dir>/[<triple>/]<profile>/build/<pkg>-<hash>/out.
    let mut target_dir = out_dir.ancestors().nth(4).map(Path::to_path_buf);
    let build_triple = env::var("TARGET").unwrap_or_default();
    if target_dir
        .as_deref()
        .and_then(Path::file_name)
        .is_some_and(|name| name == build_triple.as_str())
    {
        target_dir = target_dir
            .as_deref()
            .and_then(Path::parent)
            .map(Path::to_path_buf);
    }
    // scripts/setup.sh's virtual environment of PyPI tools, if there is one.
    let python_tools = target_dir
        .as_deref()
        .map(|t| t.join("python-tools").join("bin"))
        .filter(|bin| bin.is_dir());
    let target_dir = target_dir
        .map(|t| t.join("wasm-guests"))
        .unwrap_or_else(|| out_dir.join("wasm-guests"));

    check_target_installed();
    check_c_toolchain();

    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(&cargo)
        .current_dir(&components)
        .args(["build", "--release", "--locked", "--target", TARGET])
        .env("CARGO_TARGET_DIR", &target_dir)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env("RUSTFLAGS", "-D warnings")
        .env_remove("CARGO_BUILD_TARGET")
        // QuickJS is C: compile it with Debian's clang against Debian's
        // wasi-libc headers instead of a downloaded wasi-sdk (ENGINES.md).
        .env("RQUICKJS_SYS_NO_WASI_SDK", "1")
        .env("CC_wasm32_wasip2", CLANG)
        .env("AR_wasm32_wasip2", LLVM_AR)
        .env(
            "CFLAGS_wasm32_wasip2",
            "-nostdlibinc -isystem /usr/include/wasm32-wasi",
        )
        .status()
        .expect("failed to run cargo for the guest workspace");
    assert!(status.success(), "building the guest components failed");

    let release = target_dir.join(TARGET).join("release");
    build_python_runtime(
        &components,
        &release.join("kiln_python.wasm"),
        python_tools.as_deref(),
    );
    let guests = guest_names(&components.join("guests/src/bin"));
    let mut generated = String::new();
    for name in &guests {
        let wasm = release.join(format!("{name}.wasm"));
        assert!(wasm.exists(), "{} was not built", wasm.display());
        writeln!(
            generated,
            "/// Path of the `{name}` test guest (a wasi:cli/command component).\npub const {}: &str = {:?};",
            name.to_uppercase(),
            wasm.display().to_string()
        )
        .ok();
        rerun_for_deps(&release.join(format!("{name}.d")));
    }
    for &(constant, file, preinit) in RUNTIMES {
        let wasm = release.join(file);
        assert!(wasm.exists(), "{} was not built", wasm.display());
        let compressed = if preinit {
            writeln!(
                generated,
                "/// Path of `{file}` as built, before the pre-initialization that `{constant}` has.\npub const {constant}_UNINITIALIZED: &str = {:?};",
                wasm.display().to_string()
            )
            .ok();
            compress(&preinit::snapshot(&wasm))
        } else {
            compress(&wasm)
        };
        writeln!(
            generated,
            "/// The `{file}` language runtime component, zstd-compressed.\npub const {constant}: Runtime = Runtime::new(include_bytes!({:?}));",
            compressed.display().to_string()
        )
        .ok();
        rerun_for_deps(&wasm.with_extension("d"));
    }
    for (constant, file, what) in [
        ("HTTP_HELLO", "http_hello.wasm", "a wasi:http/proxy handler"),
        (
            "COUNTER",
            "counter.wasm",
            "a kiln:script component made with kiln-guest",
        ),
    ] {
        let wasm = release.join(file);
        assert!(wasm.exists(), "{} was not built", wasm.display());
        writeln!(
            generated,
            "/// Path of the `{file}` component ({what}).\npub const {constant}: &str = {:?};",
            wasm.display().to_string()
        )
        .ok();
    }
    let modules = python_stdlib(&components.join("python/app.py"));
    writeln!(
        generated,
        "/// The standard library modules a Python script may import (app.py's `STDLIB`).\npub const PYTHON_MODULES: &[&str] = &{modules:?};"
    )
    .ok();
    generated.push_str(
        "/// Calls `$mac!(name)` once per test guest, for `assert_test_exists`-style checks.\n#[macro_export]\nmacro_rules! foreach_guest {\n    ($mac:ident) => {\n",
    );
    for name in &guests {
        writeln!(generated, "        $mac!({name});").ok();
    }
    generated.push_str("    };\n}\n");
    std::fs::write(out_dir.join("gen.rs"), generated).expect("write generated.rs");

    // Inputs of the guest builds: cargo rescans directories recursively.
    for input in [
        "Cargo.toml",
        "Cargo.lock",
        "guests",
        "http-hello",
        "counter",
        "../guest-sdk",
        "js",
        "python",
        "../runtime/wit",
    ] {
        println!(
            "cargo:rerun-if-changed={}",
            components.join(input).display()
        );
    }
}

/// Names of the binaries in `guests/src/bin`, sorted.
fn guest_names(bin_dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(bin_dir)
        .expect("read guests/src/bin")
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let path = e.path();
            (path.extension()? == "rs").then(|| path.file_stem()?.to_str().map(String::from))?
        })
        .collect();
    names.sort();
    names
}

/// Re-run when any source file a guest was built from changes (cargo's dep-info).
fn rerun_for_deps(dep_file: &Path) {
    let Ok(deps) = std::fs::read_to_string(dep_file) else {
        return;
    };
    for line in deps.lines() {
        let Some((_, inputs)) = line.split_once(": ") else {
            continue;
        };
        for input in inputs.split_whitespace() {
            println!("cargo:rerun-if-changed={input}");
        }
    }
}

fn check_target_installed() {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = Command::new(rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    if let Some(sysroot) = sysroot {
        let lib = Path::new(&sysroot).join("lib/rustlib").join(TARGET);
        if !lib.exists() {
            panic!("the {TARGET} target is not installed; run `rustup target add {TARGET}`");
        }
    }
}

fn check_c_toolchain() {
    let clang = Command::new(CLANG).arg("--version").output();
    if clang.is_err() || !Path::new(WASI_HEADERS).exists() {
        panic!(
            "building the JavaScript runtime needs {CLANG}, {LLVM_AR} and the wasi-libc headers; \
             run scripts/setup.sh (or: apt-get install clang-19 llvm-19 wasi-libc)"
        );
    }
}

/// Writes `<wasm>.zst` unless it is newer than `wasm`, and returns its path.
/// The language runtimes are embedded in the `kiln` binary; compressed, the
/// Python one is a quarter of its size (22.8 MB raw, 5.8 MB).
fn compress(wasm: &Path) -> PathBuf {
    let mut compressed = wasm.as_os_str().to_owned();
    compressed.push(".zst");
    let compressed = PathBuf::from(compressed);
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if let (Some(done), Some(input)) = (modified(&compressed), modified(wasm))
        && done > input
    {
        return compressed;
    }
    let raw = std::fs::read(wasm).expect("read a runtime component");
    // Level 19: about 30 s for the Python runtime, once per change of it.
    let packed = zstd::bulk::compress(&raw, 19).expect("zstd compression");
    write_aside_and_rename(&compressed, &packed);
    compressed
}

/// Writes `bytes` to `path` through a temporary file renamed into place, so
/// an interrupted build leaves no torn file. The guest build is shared by
/// every profile and target: two builds may race here.
fn write_aside_and_rename(path: &Path, bytes: &[u8]) {
    let mut partial = path.as_os_str().to_owned();
    partial.push(format!(".{}.partial", std::process::id()));
    let partial = PathBuf::from(partial);
    std::fs::write(&partial, bytes).unwrap_or_else(|e| panic!("write {}: {e}", partial.display()));
    std::fs::rename(&partial, path)
        .unwrap_or_else(|e| panic!("rename {} into place: {e}", partial.display()));
}

/// CPython for WASI with the runtime's app.py, pre-initialized by
/// componentize-py (its output has the interpreter and the imported stdlib
/// already loaded). Rebuilt only when app.py, the `kiln` package beside it or
/// the WIT changed.
fn build_python_runtime(components: &Path, out: &Path, tools: Option<&Path>) {
    let app = components.join("python/app.py");
    let wit = components.join("../runtime/wit");
    let wit_file = wit.join("language.wit");
    let package = components.join("python/kiln");
    let package_files = std::fs::read_dir(&package)
        .map(|entries| entries.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_else(|_| Vec::new());
    let newest_input = [app, wit_file]
        .into_iter()
        .chain(package_files)
        .filter_map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .max();
    let built = std::fs::metadata(out).and_then(|m| m.modified()).ok();
    if let (Some(built), Some(input)) = (built, newest_input)
        && built > input
    {
        return;
    }
    let tool = |name: &str| tools.map_or_else(|| PathBuf::from(name), |bin| bin.join(name));
    let version = Command::new(tool(COMPONENTIZE_PY))
        .arg("--version")
        .output();
    match version {
        Ok(v) if String::from_utf8_lossy(&v.stdout).trim() == COMPONENTIZE_PY_VERSION => {}
        _ => panic!(
            "building the Python runtime needs {COMPONENTIZE_PY_VERSION}; run scripts/setup.sh \
             (it makes target/python-tools)"
        ),
    }
    let deps = python_deps(out, &tool("python3"));
    let status = Command::new(tool(COMPONENTIZE_PY))
        .arg("-d")
        .arg(&wit)
        .args(["-w", "language-runtime", "componentize", "app", "-p"])
        .arg(components.join("python"))
        .arg("-p")
        .arg(&deps)
        .arg("-o")
        .arg(out)
        .status()
        .expect("failed to run componentize-py");
    assert!(status.success(), "componentize-py failed");
}

/// The pinned `tzdata` package (PyPI, installed by scripts/setup.sh),
/// copied alone beside `out` so componentize-py sees it and nothing else of
/// the build machine's site-packages. app.py reads its zones into memory.
fn python_deps(out: &Path, python: &Path) -> PathBuf {
    let found = Command::new(python)
        .args([
            "-c",
            "import os, tzdata; print(tzdata.__version__); print(os.path.dirname(tzdata.__file__))",
        ])
        .output();
    let found = match found {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
        _ => panic!(
            "building the Python runtime needs tzdata {TZDATA_VERSION}; run scripts/setup.sh \
             (it makes the virtual environment target/python-tools)"
        ),
    };
    let mut lines = found.lines();
    let version = lines.next().unwrap_or_default();
    assert_eq!(
        version, TZDATA_VERSION,
        "the Python runtime is built with tzdata {TZDATA_VERSION}; run scripts/setup.sh"
    );
    let package = PathBuf::from(lines.next().unwrap_or_default());
    let deps = out.with_file_name("python-deps");
    let _ = std::fs::remove_dir_all(&deps);
    copy_tree(&package, &deps.join("tzdata"));
    deps
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap_or_else(|e| panic!("create {}: {e}", to.display()));
    for entry in std::fs::read_dir(from).unwrap_or_else(|e| panic!("read {}: {e}", from.display()))
    {
        let entry = entry.expect("a directory entry");
        let target = to.join(entry.file_name());
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            if entry.file_name() != "__pycache__" {
                copy_tree(&entry.path(), &target);
            }
        } else {
            std::fs::copy(entry.path(), &target)
                .unwrap_or_else(|e| panic!("copy {}: {e}", entry.path().display()));
        }
    }
}

/// The names in app.py's `STDLIB = [...]` list.
fn python_stdlib(app: &Path) -> Vec<String> {
    let text =
        std::fs::read_to_string(app).unwrap_or_else(|e| panic!("read {}: {e}", app.display()));
    let start = text.find("STDLIB = [").expect("app.py has a STDLIB list");
    let list = &text[start..];
    let end = list.find(']').expect("the STDLIB list ends");
    let modules: Vec<String> = list[..end]
        .split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect();
    assert!(!modules.is_empty(), "app.py's STDLIB list is empty");
    modules
}
