//! Host-side failures of the sandbox. A guest that misbehaves is not an error:
//! it is an [`Outcome`](crate::Outcome) with a failed status.

/// Why the sandbox could not load or run something, through no fault of a
/// running guest.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The bytes are neither a WebAssembly component nor a core module.
    #[error("not a WebAssembly component or module: {0}")]
    InvalidComponent(String),
    /// The bytes are WebAssembly but do not validate or compile.
    #[error("the component does not compile: {0}")]
    Compile(String),
    /// The bytes pass a limit on what may be compiled (see
    /// [`CompileLimits`](crate::CompileLimits)); nothing was compiled.
    #[error("the component is too complex to compile: {0}")]
    TooComplex(crate::compile_limits::Exceeded),
    /// The component needs imports the sandbox does not provide, or lacks the
    /// export its shape requires.
    #[error("the component cannot be linked: {0}")]
    Link(String),
    /// Reading or writing the on-disk artifact cache failed.
    #[error("artifact cache I/O failed: {0}")]
    Cache(#[from] std::io::Error),
    /// The engine could not be configured (for example the pooling allocator
    /// could not reserve its address space).
    #[error("engine setup failed: {0}")]
    Engine(String),
    /// Setting up a run failed inside wasmtime.
    #[error("internal sandbox error: {0}")]
    Internal(String),
}

/// Formats a wasmtime error with its whole cause chain on one line.
pub(crate) fn chain(err: &wasmtime::Error) -> String {
    format!("{err:#}")
}
