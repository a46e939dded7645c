//! Benchmarks for Kiln live in `benches/`; results and how to read them in
//! `README.md` beside this file. This library holds what the harnesses that
//! start real servers (`load`, `edge`) share.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark harness fails loudly"
)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command};

/// The wasmtime CLI the harnesses compare against: the version Kiln pins.
pub const WASMTIME_VERSION: &str = "wasmtime 48.0.8";

/// The repository root.
pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The release `kiln` the harnesses start: `KILN_BIN`, else
/// `target/release/kiln`.
pub fn kiln_binary() -> PathBuf {
    kiln_binary_if_built().expect("a release kiln binary")
}

/// [`kiln_binary`] if it exists; otherwise says how to build it.
pub fn kiln_binary_if_built() -> Option<PathBuf> {
    let binary = std::env::var_os("KILN_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/release/kiln"));
    if binary.exists() {
        return Some(binary);
    }
    eprintln!(
        "{} is missing (`cargo build --release -p kiln`, or set KILN_BIN): skipped",
        binary.display()
    );
    None
}

/// Reads the first line of a `kiln serve` started with a piped stdout and
/// returns the base URL it announces ("Kiln listening on http://…").
pub fn listening_address(child: &mut Child) -> String {
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    line.trim()
        .strip_prefix("Kiln listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string()
}

/// The wasmtime CLI named by `WASMTIME` (default: `wasmtime` on PATH), as a
/// file path, if it is [`WASMTIME_VERSION`].
pub fn wasmtime_binary() -> Option<PathBuf> {
    let binary = std::env::var_os("WASMTIME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("wasmtime"));
    let version = Command::new(&binary).arg("--version").output().ok()?;
    let version = String::from_utf8_lossy(&version.stdout);
    if version.trim() != WASMTIME_VERSION {
        eprintln!(
            "{}: {version:?} is not {WASMTIME_VERSION}",
            binary.display()
        );
        return None;
    }
    // `--version` found it on PATH; callers that measure the file want its path.
    if binary.components().count() == 1 {
        let path = Command::new("sh")
            .args(["-c", &format!("command -v {}", binary.display())])
            .output()
            .ok()?;
        return Some(PathBuf::from(String::from_utf8_lossy(&path.stdout).trim()));
    }
    Some(binary)
}
