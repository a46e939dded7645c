//! The guest components Kiln's tests and benchmarks run, built to wasm32-wasip2
//! by this crate's build script from the separate `components/` workspace.
//!
//! Every test guest has a path constant (`HELLO`, `ENDLESS_LOOP`, …) and appears
//! in [`foreach_guest!`], which test suites use to prove each guest has a test.

include!(concat!(env!("OUT_DIR"), "/gen.rs"));
