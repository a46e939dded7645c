//! The embedded language runtimes, loaded into the sandbox once per process
//! and kept: loading means hashing the component (22 MB for Python) to find
//! its cache key, which must not happen on every execution.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, PoisonError};

use kiln_runtime::{Artifact, LoadSource, Sandbox, Shape};
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

/// An artifact and how long its caller waited for it to load.
pub struct Loaded {
    pub artifact: Arc<Artifact>,
    /// `None` when it was at hand in memory; else the wait for the compile
    /// (or the compile cache's read), shared with whoever started it.
    pub waited: Option<std::time::Duration>,
    /// Whether the wait was for a compile (one this caller started or
    /// joined); false for a read from the disk cache.
    pub compiled: bool,
}

impl Loaded {
    fn at_hand(artifact: Arc<Artifact>) -> Self {
        Self {
            artifact,
            waited: None,
            compiled: false,
        }
    }

    /// A load that began at `begun`, from `source`.
    fn from(artifact: Arc<Artifact>, source: LoadSource, begun: std::time::Instant) -> Self {
        match source {
            LoadSource::Memory => Self::at_hand(artifact),
            LoadSource::Disk | LoadSource::Compiled => Self {
                artifact,
                waited: Some(begun.elapsed()),
                compiled: source == LoadSource::Compiled,
            },
        }
    }

    /// What an execution record keeps of the wait.
    pub fn waited_ms(&self) -> Option<u64> {
        self.waited.map(crate::millis)
    }
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
        content: impl AsyncFnOnce() -> Result<Vec<u8>, String>,
        owner: &str,
    ) -> Result<Loaded, LoadError> {
        let key = (script_id.to_string(), version);
        if let Some(artifact) = self.lock_components().get(&key) {
            return Ok(Loaded::at_hand(artifact.clone()));
        }
        let content = content().await.map_err(LoadError::Internal)?;
        let loaded = self.load_timed(content, Some(owner)).await?;
        self.lock_components().put(key, loaded.artifact.clone());
        Ok(loaded)
    }

    fn lock_components(&self) -> std::sync::MutexGuard<'_, LruCache<(String, u32), Arc<Artifact>>> {
        self.components
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub fn sandbox(&self) -> &Arc<Sandbox> {
        &self.sandbox
    }

    /// The runtime a source language's scripts run on, loaded at first use
    /// (`serve` starts loading both at start).
    ///
    /// # Errors
    ///
    /// Whatever loading the embedded component fails with, and
    /// [`LoadError::Internal`] for `wasm`, which needs no runtime.
    pub async fn get(&self, language: Language) -> Result<Loaded, LoadError> {
        let (cell, runtime) = match language {
            Language::Javascript => (&self.javascript, kiln_components::JS_RUNTIME),
            Language::Python => (&self.python, kiln_components::PY_RUNTIME),
            Language::Wasm => {
                return Err(LoadError::Internal(
                    "wasm scripts run on no language runtime".into(),
                ));
            }
        };
        if let Some(artifact) = cell.get() {
            return Ok(Loaded::at_hand(artifact.clone()));
        }
        // A caller that finds the load under way waits for it too; only the
        // one that started it knows whether it compiled.
        let begun = std::time::Instant::now();
        let mut compiled = false;
        let artifact = cell
            .get_or_try_init(|| async {
                let bytes = tokio::task::spawn_blocking(move || runtime.decompress())
                    .await
                    .map_err(|e| LoadError::Internal(format!("the loading task failed: {e}")))?
                    .map_err(|e| {
                        LoadError::Internal(format!(
                            "the embedded {language:?} runtime is damaged: {e}"
                        ))
                    })?;
                let loaded = self.load_timed(bytes, None).await?;
                compiled = loaded.compiled;
                Ok::<_, LoadError>(loaded.artifact)
            })
            .await?;
        Ok(Loaded {
            artifact: artifact.clone(),
            waited: Some(begun.elapsed()),
            compiled,
        })
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

    /// [`load`](Self::load), and how long the caller waited if the
    /// artifact was not in memory.
    ///
    /// # Errors
    ///
    /// See [`LoadError`].
    pub async fn load_timed(
        &self,
        bytes: impl Into<Arc<[u8]>>,
        caller: Option<&str>,
    ) -> Result<Loaded, LoadError> {
        let begun = std::time::Instant::now();
        let (artifact, source) = self
            .compiler
            .load_from(&self.sandbox, bytes.into(), caller)
            .await?;
        Ok(Loaded::from(artifact, source, begun))
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
