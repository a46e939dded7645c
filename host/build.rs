//! Facts `kiln --version` prints: the git commit, the wasmtime version in
//! Cargo.lock, and the target triple.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
    let root = Path::new(&manifest).parent().unwrap_or(Path::new("."));

    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(root)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=KILN_GIT_COMMIT={commit}");

    let wasmtime = std::fs::read_to_string(root.join("Cargo.lock"))
        .ok()
        .and_then(|lock| {
            let at = lock.find("\nname = \"wasmtime\"\n")?;
            let rest = &lock[at..];
            let version = rest.lines().find_map(|l| l.strip_prefix("version = \""))?;
            Some(version.trim_end_matches('"').to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=KILN_WASMTIME_VERSION={wasmtime}");

    console(root);

    let target = std::env::var("TARGET").unwrap_or_else(|_| "unknown".into());
    println!("cargo:rustc-env=KILN_TARGET={target}");

    println!(
        "cargo:rerun-if-changed={}",
        root.join("Cargo.lock").display()
    );
    let git = root.join(".git");
    // Only files that exist: cargo counts a missing one as changed on every
    // build (a source tree without .git, as in the Docker build).
    if git.join("HEAD").exists() {
        println!("cargo:rerun-if-changed={}", git.join("HEAD").display());
    }
    // The branch HEAD points at, so a new commit is seen.
    if let Ok(head) = std::fs::read_to_string(git.join("HEAD"))
        && let Some(reference) = head.trim().strip_prefix("ref: ")
    {
        // The ref's folder too: a ref kept only in packed-refs gets its own
        // file at the next commit, a file no earlier build could watch.
        let loose = git.join(reference);
        let folder = loose.parent().map(Path::to_path_buf);
        for path in [Some(loose), folder, Some(git.join("packed-refs"))]
            .into_iter()
            .flatten()
        {
            if path.exists() {
                println!("cargo:rerun-if-changed={}", path.display());
            }
        }
    }
}

/// Builds the web console (`console/`, esbuild through node) into OUT_DIR
/// and writes the table `src/console.rs` embeds. Its npm packages come from
/// `scripts/setup.sh` (`npm ci`); without them the build says so.
fn console(root: &Path) {
    let console = root.join("console");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap_or_default()).join("console");
    let generated =
        PathBuf::from(std::env::var("OUT_DIR").unwrap_or_default()).join("console_assets.rs");
    // The edge bench's baseline: the same binary without the console's
    // files, to measure what they cost. `/` is then a 404.
    println!("cargo:rerun-if-env-changed=KILN_CONSOLE_ASSETS");
    // Tests that need the files know when there are none.
    println!("cargo::rustc-check-cfg=cfg(kiln_no_console)");
    if std::env::var("KILN_CONSOLE_ASSETS").as_deref() == Ok("none") {
        println!("cargo:warning=KILN_CONSOLE_ASSETS=none: this kiln has no web console");
        println!("cargo::rustc-cfg=kiln_no_console");
        std::fs::write(
            &generated,
            "pub(crate) static ASSETS: &[(&str, &[u8])] = &[];\n",
        )
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", generated.display()));
        return;
    }
    for watched in [
        "src",
        "build.mjs",
        "package-lock.json",
        "node_modules/.kiln-installed-lock",
    ] {
        println!("cargo:rerun-if-changed={}", console.join(watched).display());
    }
    // setup.sh leaves a copy of the lock file it installed from.
    let installed = std::fs::read(console.join("node_modules/.kiln-installed-lock")).ok();
    let wanted = std::fs::read(console.join("package-lock.json")).ok();
    if installed.is_none() || installed != wanted {
        panic!(
            "the web console's npm packages are missing or older than console/package-lock.json: \
             run ./scripts/setup.sh"
        );
    }
    let status = Command::new("node")
        .arg(console.join("build.mjs"))
        .arg(&out)
        .current_dir(&console)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!("building the web console failed ({s}): see the output above"),
        Err(e) => panic!("cannot run node to build the web console: {e}; run ./scripts/setup.sh"),
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(&out)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", out.display()))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    let mut table = String::from("pub(crate) static ASSETS: &[(&str, &[u8])] = &[\n");
    for file in &files {
        let name = file
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        table.push_str(&format!(
            "    ({name:?}, include_bytes!({:?})),\n",
            file.display().to_string()
        ));
    }
    table.push_str("];\n");
    std::fs::write(&generated, table)
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", generated.display()));
}
