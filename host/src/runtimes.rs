//! The embedded language runtimes, loaded into the sandbox once per process
//! and kept: loading means hashing the component (22 MB for Python) to find
//! its cache key, which must not happen on every execution.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, PoisonError};

use kiln_runtime::{Artifact, Sandbox, Shape};
use lru::LruCache;
use tokio::sync::OnceCell;

use crate::compiler::{Compiler, LoadError};
use crate::store::{Language, ScriptKind};

pub struct Runtimes {
    sandbox: Arc<Sandbox>,
    compiler: Arc<Compiler>,
    javascript: OnceCell<Arc<Artifact>>,
    python: OnceCell<Arc<Artifact>>,
    /// Loaded components of stored wasm scripts by (script id, version): a
    /// version's content never changes, so a hit skips reading it from the
    /// store and hashing it.
    components: Mutex<LruCache<(String, u32), Arc<Artifact>>>,
}

/// Script versions whose loaded component is kept at hand (the sandbox's
/// own cache, keyed by content hash, is behind it).
const COMPONENTS_KEPT: usize = 256;

impl Runtimes {
    pub fn new(sandbox: Arc<Sandbox>, compiler: Arc<Compiler>) -> Self {
        Self {
            sandbox,
            compiler,
            javascript: OnceCell::new(),
            python: OnceCell::new(),
            components: Mutex::new(LruCache::new(
                NonZeroUsize::new(COMPONENTS_KEPT).unwrap_or(NonZeroUsize::MIN),
            )),
        }
    }

    /// The component of a stored wasm script's version, loading `content()`
    /// only when it is not at hand (compiling it, if its artifact is gone,
    /// on `owner`'s account: the script's creator).
    ///
    /// # Errors
    ///
    /// `content`'s error (as [`LoadError::Internal`]), or the load errors.
    pub async fn component(
        &self,
        script_id: &str,
        version: u32,
        content: impl FnOnce() -> Result<Vec<u8>, String>,
        owner: &str,
    ) -> Result<Arc<Artifact>, LoadError> {
        let key = (script_id.to_string(), version);
        if let Some(artifact) = self.lock_components().get(&key) {
            return Ok(artifact.clone());
        }
        let artifact = self
            .load(content().map_err(LoadError::Internal)?, Some(owner))
            .await?;
        self.lock_components().put(key, artifact.clone());
        Ok(artifact)
    }

    fn lock_components(&self) -> std::sync::MutexGuard<'_, LruCache<(String, u32), Arc<Artifact>>> {
        self.components
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub fn sandbox(&self) -> &Arc<Sandbox> {
        &self.sandbox
    }

    /// The runtime a source language's scripts run on, loaded at first use.
    ///
    /// # Errors
    ///
    /// Whatever loading the embedded component fails with, and
    /// [`LoadError::Internal`] for `wasm`, which needs no runtime.
    pub async fn get(&self, language: Language) -> Result<Arc<Artifact>, LoadError> {
        let (cell, runtime) = match language {
            Language::Javascript => (&self.javascript, kiln_components::JS_RUNTIME),
            Language::Python => (&self.python, kiln_components::PY_RUNTIME),
            Language::Wasm => {
                return Err(LoadError::Internal(
                    "wasm scripts run on no language runtime".into(),
                ));
            }
        };
        cell.get_or_try_init(|| async {
            let bytes = tokio::task::spawn_blocking(move || runtime.decompress())
                .await
                .map_err(|e| LoadError::Internal(format!("the loading task failed: {e}")))?
                .map_err(|e| {
                    LoadError::Internal(format!(
                        "the embedded {language:?} runtime is damaged: {e}"
                    ))
                })?;
            self.load(bytes, None).await
        })
        .await
        .cloned()
    }

    /// Loads `bytes` (a component, core module or text): from the caches,
    /// else compiled in a child process (see `compiler`), on `caller`'s
    /// account (`None`: Kiln's own).
    ///
    /// Callers are `user:<id>` (as rate limits key them) or `anonymous`.
    ///
    /// # Errors
    ///
    /// See [`LoadError`].
    pub async fn load(
        &self,
        bytes: impl Into<Arc<[u8]>>,
        caller: Option<&str>,
    ) -> Result<Arc<Artifact>, LoadError> {
        self.compiler
            .load(&self.sandbox, bytes.into(), caller)
            .await
    }
}

/// How a loaded artifact is called as a script of `language`; `None` when it
/// cannot be one.
pub fn kind_of(language: Language, shape: Shape) -> Option<ScriptKind> {
    match (language, shape) {
        (Language::Wasm, Shape::Command) => Some(ScriptKind::Command),
        (Language::Wasm, Shape::Http) => Some(ScriptKind::Http),
        (Language::Wasm, Shape::Script) => Some(ScriptKind::Script),
        (Language::Javascript | Language::Python, Shape::LanguageRuntime) => {
            Some(ScriptKind::Command)
        }
        _ => None,
    }
}

/// The account a compile of `created_by`'s bytes is charged to.
pub fn caller_of(created_by: Option<&str>) -> String {
    created_by.map_or_else(|| "anonymous".to_owned(), |user| format!("user:{user}"))
}
