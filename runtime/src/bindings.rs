//! Host bindings of `wit/language.wit`, the interface language runtime
//! components (JavaScript, Python) export.

wasmtime::component::bindgen!({
    world: "language-runtime",
    path: "wit",
    imports: { default: async },
    exports: { default: async },
});

pub(crate) use exports::kiln::language::script::{Failure, FailureKind};

/// Host bindings of `guest-sdk/wit/script.wit`, the `kiln:script` world that
/// components made with the guest SDK export (`run`) and import (log,
/// key-value, config). One copy of the WIT, shared with `kiln-guest`.
pub(crate) mod script {
    wasmtime::component::bindgen!({
        world: "script",
        path: "../guest-sdk/wit",
        // Key-value calls reach the server's store, which is awaited.
        imports: { "kiln:script/kv": async },
        exports: { default: async },
    });
}
