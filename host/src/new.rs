//! `kiln new NAME`: a guest crate that builds with plain `cargo build
//! --release --target wasm32-wasip2` into a `kiln:script` component, like
//! `spin new`. It depends on the guest SDK by path: the copy compiled into
//! this binary, written beside the crate (so the crate works on any machine
//! and matches this server), or the one `--sdk` names.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::exit_status;

/// Arguments of `kiln new`.
#[derive(Debug, clap::Args)]
pub struct NewArgs {
    /// The crate's name (also the folder's, unless --path is given).
    pub name: String,
    /// Where to create it (an empty or missing folder).
    #[arg(long)]
    pub path: Option<PathBuf>,
    /// Depend on the guest SDK at this path instead of writing the copy
    /// built into kiln beside the crate.
    #[arg(long)]
    pub sdk: Option<PathBuf>,
}

/// The guest SDK as this binary was built with it.
const SDK_FILES: [(&str, &str); 3] = [
    ("Cargo.toml", include_str!("../../guest-sdk/Cargo.toml")),
    ("src/lib.rs", include_str!("../../guest-sdk/src/lib.rs")),
    (
        "wit/script.wit",
        include_str!("../../guest-sdk/wit/script.wit"),
    ),
];

/// Where the SDK copy goes inside the new crate.
const SDK_DIR: &str = "kiln-guest";

pub(crate) fn new(args: &NewArgs) -> ExitCode {
    match scaffold(args) {
        Ok(dir) => {
            let wasm = args.name.replace('-', "_");
            println!("Created {}. Next:", dir.display());
            println!("  cd {}", dir.display());
            println!("  cargo build --release --target wasm32-wasip2");
            println!(
                "  kiln run target/wasm32-wasip2/release/{wasm}.wasm --params '{{\"name\": \"Kiln\"}}'"
            );
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("kiln: {message}");
            ExitCode::from(exit_status::USAGE)
        }
    }
}

fn scaffold(args: &NewArgs) -> Result<PathBuf, String> {
    let name = &args.name;
    let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && name.len() <= 64;
    if !valid {
        return Err(format!(
            "{name:?} is not a crate name: a letter, then letters, digits, - or _ (at most 64)"
        ));
    }
    let dir = args.path.clone().unwrap_or_else(|| PathBuf::from(name));
    if dir.exists()
        && std::fs::read_dir(&dir)
            .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
            .next()
            .is_some()
    {
        return Err(format!("{} exists and is not empty", dir.display()));
    }
    let sdk = match &args.sdk {
        Some(sdk) => {
            let sdk = std::path::absolute(sdk)
                .map_err(|e| format!("cannot resolve {}: {e}", sdk.display()))?;
            if !sdk.join("Cargo.toml").is_file() || !sdk.join("wit/script.wit").is_file() {
                return Err(format!(
                    "{} is not the guest SDK (no Cargo.toml and wit/script.wit)",
                    sdk.display()
                ));
            }
            sdk
        }
        None => {
            for (file, text) in SDK_FILES {
                write(&dir.join(SDK_DIR).join(file), text)?;
            }
            PathBuf::from(SDK_DIR)
        }
    };
    write(&dir.join("Cargo.toml"), &manifest(name, &sdk))?;
    write(&dir.join("src/lib.rs"), &source(name))?;
    write(&dir.join(".gitignore"), "/target\n")?;
    Ok(dir)
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn manifest(name: &str, sdk: &Path) -> String {
    // TOML basic strings escape backslashes and quotes.
    let sdk = sdk
        .display()
        .to_string()
        .replace('\\', "\\\\")
        .replace('"', "\\\"");
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib"]

[dependencies]
kiln-guest = {{ path = "{sdk}" }}

[profile.release]
opt-level = "s"
strip = true

# Its own workspace, wherever it is created.
[workspace]
"#
    )
}

fn source(name: &str) -> String {
    format!(
        r#"//! {name}: a Kiln script. Build it with
//! `cargo build --release --target wasm32-wasip2`, try it with `kiln run`,
//! and upload the .wasm as a script of language "wasm".

use kiln_guest::{{Value, json, kv, log}};


kiln_guest::export!(run);

/// Called once per execution with its parameters; its value is the
/// execution's result, and an `Err` fails the execution with its text.
fn run(params: Value) -> Result<Value, String> {{
    let name = params["name"].as_str().unwrap_or("world");
    // Kept across executions, in this script's own store.
    let count = kv::get_json::<u64>("count")?.unwrap_or(0) + 1;
    kv::set_json("count", &count)?;
    log::info(&format!("run number {{count}}"));
    Ok(json!({{ "greeting": format!("Hello, {{name}}!"), "count": count }}))
}}
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(name: &str, path: PathBuf, sdk: Option<PathBuf>) -> NewArgs {
        NewArgs {
            name: name.into(),
            path: Some(path),
            sdk,
        }
    }

    #[test]
    fn writes_a_crate_with_the_sdk_beside_it() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("hello");
        scaffold(&args("hello-kiln", target.clone(), None)).unwrap();
        let manifest = std::fs::read_to_string(target.join("Cargo.toml")).unwrap();
        assert!(manifest.contains(r#"name = "hello-kiln""#), "{manifest}");
        assert!(
            manifest.contains(r#"kiln-guest = { path = "kiln-guest" }"#),
            "{manifest}"
        );
        assert!(target.join("kiln-guest/wit/script.wit").is_file());
        assert!(target.join("src/lib.rs").is_file());
        // Not over what is there.
        let again = scaffold(&args("hello-kiln", target, None)).unwrap_err();
        assert!(again.contains("not empty"), "{again}");
    }

    #[test]
    fn refuses_bad_names_and_a_folder_that_is_not_the_sdk() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["1up", "has space", "", "dots.not"] {
            assert!(
                scaffold(&args(name, dir.path().join("x"), None)).is_err(),
                "{name}"
            );
        }
        let wrong = scaffold(&args("ok", dir.path().join("y"), Some(dir.path().into())));
        assert!(wrong.unwrap_err().contains("not the guest SDK"));
    }
}
