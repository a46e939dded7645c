//! The embedded language runtimes, loaded into the sandbox once per process
//! and kept: loading means hashing the component (22 MB for Python) to find
//! its cache key, which must not happen on every execution.

use std::sync::Arc;

use kiln_runtime::{Artifact, Error, Sandbox, Shape};
use tokio::sync::OnceCell;

use crate::store::Language;

pub struct Runtimes {
    sandbox: Arc<Sandbox>,
    javascript: OnceCell<Arc<Artifact>>,
    python: OnceCell<Arc<Artifact>>,
}

impl Runtimes {
    pub fn new(sandbox: Arc<Sandbox>) -> Self {
        Self {
            sandbox,
            javascript: OnceCell::new(),
            python: OnceCell::new(),
        }
    }

    pub fn sandbox(&self) -> &Arc<Sandbox> {
        &self.sandbox
    }

    /// The runtime a source language's scripts run on, loaded at first use.
    ///
    /// # Errors
    ///
    /// Whatever loading the embedded component fails with, and
    /// [`Error::Internal`] for `wasm`, which needs no runtime.
    pub async fn get(&self, language: Language) -> Result<Arc<Artifact>, Error> {
        let (cell, bytes) = match language {
            Language::Javascript => (&self.javascript, kiln_components::JS_RUNTIME),
            Language::Python => (&self.python, kiln_components::PY_RUNTIME),
            Language::Wasm => {
                return Err(Error::Internal(
                    "wasm scripts run on no language runtime".into(),
                ));
            }
        };
        cell.get_or_try_init(|| load(&self.sandbox, bytes))
            .await
            .cloned()
    }
}

/// Loads (compiles at worst) on a blocking thread, never on an async task.
///
/// # Errors
///
/// The sandbox's load errors; [`Error::Internal`] if the blocking task died.
pub async fn load(
    sandbox: &Arc<Sandbox>,
    bytes: impl AsRef<[u8]> + Send + 'static,
) -> Result<Arc<Artifact>, Error> {
    let sandbox = sandbox.clone();
    tokio::task::spawn_blocking(move || sandbox.load(bytes.as_ref()))
        .await
        .map_err(|e| Error::Internal(format!("the loading task failed: {e}")))?
        .map(|(artifact, _)| artifact)
}

/// Whether a loaded artifact can run as a script of `language`.
pub fn shape_fits(language: Language, shape: Shape) -> bool {
    match language {
        Language::Wasm => shape == Shape::Command,
        Language::Javascript | Language::Python => shape == Shape::LanguageRuntime,
    }
}
