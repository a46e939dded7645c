//! Host bindings of `wit/language.wit`, the interface language runtime
//! components (JavaScript, Python) export.

wasmtime::component::bindgen!({
    world: "language-runtime",
    path: "wit",
    exports: { default: async },
});

pub(crate) use exports::kiln::language::script::{Failure, FailureKind};
