//! The child's half of an out-of-process compile. A server hands each
//! compile of untrusted bytes to a process of its own, under memory, CPU and
//! wall-clock limits that a thread cannot have, and loads what that process
//! left in the cache with [`Sandbox::load_compiled`](crate::Sandbox::load_compiled).

use std::path::Path;

use crate::artifact::{self, ArtifactKey};
use crate::cache::ArtifactCache;
use crate::engine;
use crate::error::Error;

/// Compiles `component` (bytes from
/// [`Sandbox::compile_input`](crate::Sandbox::compile_input)) with an engine
/// whose code settings match every sandbox's, and writes it into `cache_dir`
/// under `key` (its hex form), on every core if `parallel`, else on one.
///
/// # Errors
///
/// [`Error::Compile`] when the component does not compile;
/// [`Error::Cache`] or [`Error::Internal`] when it cannot be written;
/// [`Error::Internal`] for a key that is not 64 hex digits.
pub fn compile_into_cache(
    cache_dir: &Path,
    key: &str,
    component: &[u8],
    parallel: bool,
) -> Result<(), Error> {
    let key = ArtifactKey::from_hex(key)
        .ok_or_else(|| Error::Internal(format!("{key:?} is not an artifact key")))?;
    let engine = engine::build_compile_engine(parallel)?;
    let compiled = artifact::compile(&engine, component)?;
    ArtifactCache::new(Some(cache_dir.to_path_buf()), 1)?.write_disk(&key, &compiled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EngineOptions, LoadSource, Sandbox};

    #[test]
    fn a_sandbox_loads_what_a_compile_elsewhere_left_in_its_cache() {
        let dir = tempfile::tempdir().unwrap();
        let sandbox = Sandbox::new(EngineOptions {
            cache_dir: Some(dir.path().to_path_buf()),
            max_instances: 2,
            ..EngineOptions::default()
        })
        .unwrap();
        let text = br#"(module (memory (export "memory") 1) (func (export "_start")))"#;
        assert!(sandbox.load_cached(text).unwrap().is_none());
        let (key, component) = sandbox.compile_input(text).unwrap();
        assert!(sandbox.load_compiled(text).is_err(), "nothing compiled yet");
        compile_into_cache(dir.path(), &key.to_hex(), &component, false).unwrap();
        let artifact = sandbox.load_compiled(text).unwrap();
        assert_eq!(artifact.key(), key);
        let (again, source) = sandbox.load_cached(text).unwrap().unwrap();
        assert_eq!((again.key(), source), (key, LoadSource::Memory));
        assert_eq!(sandbox.cache_stats().compiles, 1);
    }

    #[test]
    fn a_key_must_be_hex() {
        let dir = tempfile::tempdir().unwrap();
        let err = compile_into_cache(dir.path(), "../../etc/passwd", b"", false).unwrap_err();
        assert!(matches!(err, Error::Internal(_)), "{err}");
    }
}
