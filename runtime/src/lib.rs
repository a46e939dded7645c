//! Kiln's sandbox: runs untrusted WebAssembly components under wasmtime with a
//! fuel budget, a memory cap, a wall-clock deadline, bounded output and no
//! access to the host beyond what the caller passes in.
//!
//! This crate knows nothing of HTTP, databases or users. It takes bytes, gives
//! back an [`Artifact`], and turns an artifact plus an [`Invocation`] into an
//! [`Outcome`]. A guest that misbehaves (loops, traps, exhausts memory) is an
//! `Ok(Outcome)` with a failed status; `Err` means the host could not do its
//! part.
//!
//! How to embed it:
//!
//! 1. Build one [`Sandbox`] per process from [`EngineOptions`] (it owns the
//!    engine, the pooling allocator and the epoch ticker thread).
//! 2. [`Sandbox::load`] the component bytes (compiles once, then reuses the
//!    on-disk and in-memory caches); do this on a blocking thread.
//! 3. [`Sandbox::run`] the artifact with an [`Invocation`] inside a tokio
//!    runtime; keep a [`CancelHandle`] to stop it from elsewhere.
//!
//! ```no_run
//! use kiln_runtime::{EngineOptions, Invocation, Limits, Sandbox};
//!
//! # async fn example(wasm: &[u8]) -> Result<(), kiln_runtime::Error> {
//! let sandbox = Sandbox::new(EngineOptions::default())?;
//! let (artifact, _source) = sandbox.load(wasm)?;
//! let outcome = sandbox
//!     .run(&artifact, Invocation {
//!         args: vec!["hello".into()],
//!         stdin: b"Kiln".to_vec(),
//!         limits: Limits { fuel: Some(10_000_000), ..Limits::default() },
//!         ..Invocation::default()
//!     })
//!     .await?;
//! println!("{:?}: {}", outcome.status, String::from_utf8_lossy(&outcome.stdout));
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

mod artifact;
mod bindings;
mod cache;
mod cancel;
mod capture;
mod code;
mod compile_child;
mod compile_limits;
mod egress;
mod engine;
mod error;
mod http;
mod limits;
mod outcome;
mod sandbox;
mod script_host;
mod source;
mod stdin;
mod warm;
mod wasi;

pub use artifact::{Artifact, ArtifactKey, LoadSource, Shape};
pub use cache::{CacheStats, Trimmed};
pub use cancel::CancelHandle;
pub use capture::{OutputKind, OutputSink};
pub use compile_child::compile_into_cache;
pub use compile_limits::{CompileLimits, Exceeded};
pub use egress::{
    Egress, EgressError, EgressErrorKind, EgressFuture, EgressRequest, EgressResponse,
};
pub use engine::EngineOptions;
pub use error::Error;
pub use http::{HttpInvocation, HttpOutcome};
pub use limits::Limits;
pub use outcome::{ErrorCode, GuestError, Outcome, Status};
pub use sandbox::{Call, Invocation, Sandbox};
pub use script_host::{KvError, MAX_KEY_BYTES, MemoryScriptHost, ScriptHost};
pub use source::{BUNDLE_MAGIC, Bundle, Source, SourceError};
pub use wasi::State;
