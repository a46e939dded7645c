//! Reading a script from disk as `kiln run` and `kiln deploy` both do: a
//! file's language from its extension, a directory's files as a bundle
//! (bounded as an upload is) and its language from its entry.

use clap::ValueEnum;

use crate::api::scripts::bundle;
use crate::store::Language;

/// The languages `kiln run` and `kiln deploy` accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Lang {
    /// JavaScript (QuickJS): `function main(params)` or `export default`.
    #[value(alias = "js")]
    Javascript,
    /// Python (CPython 3.14): `def main(**params)`.
    #[value(alias = "py")]
    Python,
    /// A WebAssembly component or wasip1 core module, binary or text.
    Wasm,
}

impl Lang {
    pub(crate) fn language(self) -> Language {
        match self {
            Lang::Wasm => Language::Wasm,
            Lang::Javascript => Language::Javascript,
            Lang::Python => Language::Python,
        }
    }
}

/// Reads a directory's files, leaving out hidden ones and what uploads
/// leave out; stops past a bundle's bounds (files, and `bytes` read in
/// all) before reading more.
pub(crate) fn read_dir_into(
    dir: &std::path::Path,
    prefix: &str,
    files: &mut std::collections::BTreeMap<String, String>,
    bytes: &mut u64,
    depth: usize,
) -> Result<(), String> {
    let unreadable = |e: std::io::Error| format!("cannot read {}: {e}", dir.display());
    if depth > 32 {
        return Err(format!("{} is nested too deep", dir.display()));
    }
    for entry in std::fs::read_dir(dir).map_err(unreadable)? {
        let entry = entry.map_err(unreadable)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || name == "__pycache__" || name.ends_with(".pyc") {
            continue;
        }
        let path = format!("{prefix}{name}");
        let kind = entry.file_type().map_err(unreadable)?;
        if kind.is_dir() {
            read_dir_into(&entry.path(), &format!("{path}/"), files, bytes, depth + 1)?;
        } else if kind.is_file() {
            if files.len() >= bundle::MAX_FILES {
                return Err(format!("a bundle has at most {} files", bundle::MAX_FILES));
            }
            *bytes += entry.metadata().map_err(unreadable)?.len();
            if *bytes > bundle::MAX_BYTES as u64 {
                return Err(format!(
                    "{}: a bundle holds at most {} bytes of files",
                    dir.display(),
                    bundle::MAX_BYTES
                ));
            }
            let text = std::fs::read_to_string(entry.path()).map_err(|e| format!("{path}: {e}"))?;
            files.insert(path, text);
        }
    }
    Ok(())
}

/// The language whose usual entry the bundle has.
pub(crate) fn bundle_lang(files: &std::collections::BTreeMap<String, String>) -> Option<Lang> {
    [Lang::Javascript, Lang::Python].into_iter().find(|lang| {
        bundle::default_entries(lang.language())
            .iter()
            .any(|name| files.contains_key(*name))
    })
}

pub(crate) fn lang_of(file: &std::path::Path) -> Result<Lang, String> {
    match file.extension().and_then(|e| e.to_str()) {
        Some("wasm" | "wat") => Ok(Lang::Wasm),
        Some("js" | "mjs") => Ok(Lang::Javascript),
        Some("py") => Ok(Lang::Python),
        other => Err(format!(
            "cannot tell the language of {} (extension {:?}); pass --lang",
            file.display(),
            other.unwrap_or("")
        )),
    }
}
