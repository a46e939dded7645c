//! Compiled components, the keys they are cached under, and the preparation of
//! raw bytes (core wasip1 modules are adapted into components).

use std::borrow::Cow;
use std::fmt;

use wasmtime::component::InstancePre;
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use crate::bindings::LanguageRuntimePre;
use crate::bindings::script::ScriptPre;
use crate::compile_limits::{self, CompileLimits};
use crate::error::{Error, chain};
use crate::wasi::State;

/// BLAKE3 of the input bytes and of the engine's compatibility digest: the
/// same bytes compiled by an incompatible engine get another key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ArtifactKey([u8; 32]);

impl ArtifactKey {
    pub(crate) fn new(bytes: &[u8], engine_digest: &[u8; 32]) -> Self {
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"kiln-artifact-v1\0");
        hasher.update(engine_digest);
        hasher.update(bytes);
        Self(*hasher.finalize().as_bytes())
    }

    /// The key whose [`to_hex`](Self::to_hex) is `hex`.
    pub fn from_hex(hex: &str) -> Option<Self> {
        blake3::Hash::from_hex(hex)
            .ok()
            .map(|h| Self(*h.as_bytes()))
    }

    pub(crate) fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The key as 64 lowercase hex characters (also the cache file's name).
    pub fn to_hex(&self) -> String {
        blake3::Hash::from_bytes(self.0).to_hex().to_string()
    }
}

impl fmt::Debug for ArtifactKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ArtifactKey({})", self.to_hex())
    }
}

impl fmt::Display for ArtifactKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// A component compiled, linked and ready to instantiate: a warm run is
/// instantiate + call only.
pub struct Artifact {
    pub(crate) key: ArtifactKey,
    pub(crate) entry: Entry,
}

/// What kind of component an artifact is, found from its exports at load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// A `wasi:cli/command`: run through `wasi:cli/run`.
    Command,
    /// A language runtime exporting `kiln:language/script`: runs source text.
    LanguageRuntime,
    /// A `wasi:http/proxy` component: answers HTTP requests through
    /// `wasi:http/incoming-handler`.
    Http,
    /// A `kiln:script` component (made with the guest SDK): JSON parameters
    /// in through `run`, JSON result out, with log, key-value and config
    /// imports.
    Script,
}

pub(crate) enum Entry {
    Command(CommandPre<State>),
    LanguageRuntime(LanguageRuntimePre<State>),
    Http(ProxyPre<State>),
    Script(ScriptPre<State>),
}

impl Entry {
    pub(crate) fn shape(&self) -> Shape {
        match self {
            Self::Command(_) => Shape::Command,
            Self::LanguageRuntime(_) => Shape::LanguageRuntime,
            Self::Http(_) => Shape::Http,
            Self::Script(_) => Shape::Script,
        }
    }

    /// Finds the shape from the component's exports.
    pub(crate) fn new(pre: InstancePre<State>) -> Result<Self, Error> {
        if let Ok(command) = CommandPre::new(pre.clone()) {
            return Ok(Self::Command(command));
        }
        if let Ok(proxy) = ProxyPre::new(pre.clone()) {
            return Ok(Self::Http(proxy));
        }
        if let Ok(script) = ScriptPre::new(pre.clone()) {
            return Ok(Self::Script(script));
        }
        LanguageRuntimePre::new(pre)
            .map(Self::LanguageRuntime)
            .map_err(|e| {
                Error::Link(format!(
                    "the component exports none of wasi:cli/run, wasi:http/incoming-handler, \
                     kiln:script's run and kiln:language/script: {}",
                    chain(&e)
                ))
            })
    }
}

impl Artifact {
    /// The cache key this artifact was loaded under.
    pub fn key(&self) -> ArtifactKey {
        self.key
    }

    /// What kind of component this is.
    pub fn shape(&self) -> Shape {
        self.entry.shape()
    }
}

impl fmt::Debug for Artifact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Artifact")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// Where [`Sandbox::load`](crate::Sandbox::load) found an artifact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadSource {
    /// Already in the in-memory cache.
    Memory,
    /// Deserialized from the on-disk cache: no compilation.
    Disk,
    /// Compiled by Cranelift now (and written to the disk cache, if any).
    Compiled,
}

/// Returns component bytes for `bytes`: a component as is, a core module
/// wrapped with the WASI preview1 command adapter, text (`.wat`) assembled
/// first.
///
/// # Errors
///
/// [`Error::InvalidComponent`] for bytes that are not WebAssembly,
/// [`Error::TooComplex`] for bytes past `limits`,
/// [`Error::Compile`] for bytes that do not validate and
/// [`Error::Link`] for one the preview1 adapter cannot wrap.
pub(crate) fn component_bytes<'a>(
    bytes: &'a [u8],
    limits: &CompileLimits,
) -> Result<Cow<'a, [u8]>, Error> {
    if wasmparser::Parser::is_component(bytes) {
        compile_limits::check(bytes, limits)?;
        return Ok(Cow::Borrowed(bytes));
    }
    if !bytes.starts_with(b"\0asm") && std::str::from_utf8(bytes).is_ok() {
        // The text format, as `wasmtime run` accepts it; errors carry line and column.
        let binary = wat::parse_bytes(bytes).map_err(|e| Error::Compile(e.to_string()))?;
        return Ok(Cow::Owned(component_bytes(&binary, limits)?.into_owned()));
    }
    if !wasmparser::Parser::is_core_wasm(bytes) {
        return Err(Error::InvalidComponent(
            "the bytes do not start with the WebAssembly magic number and version".into(),
        ));
    }
    // Before the adapter: what it adds is ours and small.
    compile_limits::check(bytes, limits)?;
    let adapter = wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_COMMAND_ADAPTER;
    let component = wit_component::ComponentEncoder::default()
        .validate(true)
        .module(bytes)
        .and_then(|encoder| encoder.adapter("wasi_snapshot_preview1", adapter))
        .and_then(|mut encoder| encoder.encode())
        .map_err(|e| Error::Link(format!("not a wasip1 command module: {e:#}")))?;
    Ok(Cow::Owned(component))
}

/// Compiles component bytes with Cranelift.
///
/// # Errors
///
/// [`Error::Compile`] when the component does not validate or compile.
pub(crate) fn compile(
    engine: &wasmtime::Engine,
    component: &[u8],
) -> Result<wasmtime::component::Component, Error> {
    wasmtime::component::Component::new(engine, component).map_err(|e| Error::Compile(chain(&e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_depend_on_bytes_and_engine() {
        let a = ArtifactKey::new(b"one", &[0; 32]);
        assert_eq!(a, ArtifactKey::new(b"one", &[0; 32]));
        assert_ne!(a, ArtifactKey::new(b"two", &[0; 32]));
        assert_ne!(a, ArtifactKey::new(b"one", &[1; 32]));
        assert_eq!(a.to_hex().len(), 64);
        assert_eq!(ArtifactKey::from_hex(&a.to_hex()), Some(a));
        assert_eq!(ArtifactKey::from_hex("../x"), None);
    }

    #[test]
    fn garbage_is_not_a_component() {
        let err =
            component_bytes(&[0xff, 0xfe, 0x00, 0x01], &CompileLimits::default()).unwrap_err();
        assert!(matches!(err, Error::InvalidComponent(_)), "{err}");
    }

    #[test]
    fn text_that_is_not_wat_is_a_compile_error_with_a_position() {
        let err = component_bytes(b"#!/bin/sh\necho hi", &CompileLimits::default()).unwrap_err();
        assert!(matches!(err, Error::Compile(_)), "{err}");
        assert!(err.to_string().contains("1:1"), "{err}");
    }

    #[test]
    fn text_modules_are_assembled_then_adapted() {
        let text = br#"(module (memory (export "memory") 1) (func (export "_start")))"#;
        assert!(wasmparser::Parser::is_component(
            &component_bytes(text, &CompileLimits::default()).unwrap()
        ));
    }

    #[test]
    fn core_modules_are_adapted_into_components() {
        let module = wat::parse_str(
            r#"(module
                (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
                (memory (export "memory") 1)
                (func (export "_start") (call $exit (i32.const 3))))"#,
        )
        .unwrap();
        let component = component_bytes(&module, &CompileLimits::default()).unwrap();
        assert!(wasmparser::Parser::is_component(&component));
    }

    #[test]
    fn a_core_module_that_imports_unknown_functions_is_refused() {
        let module = wat::parse_str(
            r#"(module (import "somewhere" "else" (func)) (memory (export "memory") 1)
                (func (export "_start")))"#,
        )
        .unwrap();
        assert!(matches!(
            component_bytes(&module, &CompileLimits::default()),
            Err(Error::Link(_))
        ));
    }

    #[test]
    fn a_broken_core_module_is_a_compile_error() {
        let err =
            component_bytes(b"\0asm\x01\0\0\0garbage", &CompileLimits::default()).unwrap_err();
        assert!(matches!(err, Error::Compile(_)), "{err}");
    }
}
