//! Configuration from the environment. This is the only module of the host
//! that reads environment variables, so every knob is listed in one place.

use std::path::PathBuf;

/// Where `kiln run` keeps compiled artifacts when `--cache-dir` and
/// `KILN_CACHE_DIR` are absent: `$XDG_CACHE_HOME/kiln`, else `~/.cache/kiln`.
/// `None` (memory only) when neither variable is set.
pub fn default_cache_dir() -> Option<PathBuf> {
    if let Some(xdg) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(xdg).join("kiln"));
    }
    let home = std::env::var_os("HOME").filter(|v| !v.is_empty())?;
    Some(PathBuf::from(home).join(".cache").join("kiln"))
}
