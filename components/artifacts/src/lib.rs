//! The guest components Kiln's tests and benchmarks run, built to wasm32-wasip2
//! by this crate's build script from the separate `components/` workspace.
//!
//! Every test guest has a path constant (`HELLO`, `ENDLESS_LOOP`, …) and appears
//! in [`foreach_guest!`], which test suites use to prove each guest has a test.

include!(concat!(env!("OUT_DIR"), "/gen.rs"));

/// A language runtime component embedded zstd-compressed: the `kiln` binary
/// carries both runtimes, and raw they would be most of its size.
#[derive(Debug, Clone, Copy)]
pub struct Runtime {
    compressed: &'static [u8],
}

impl Runtime {
    const fn new(compressed: &'static [u8]) -> Self {
        Self { compressed }
    }

    /// The component's bytes (about 0.1 s for the Python runtime:
    /// decompress once per process and keep what is built from them).
    ///
    /// # Errors
    ///
    /// Only if the embedded data were damaged, which the tests would show.
    pub fn decompress(&self) -> std::io::Result<Vec<u8>> {
        zstd::stream::decode_all(self.compressed)
    }

    /// Size in the binary.
    pub fn compressed_len(&self) -> usize {
        self.compressed.len()
    }
}
