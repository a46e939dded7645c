//! The `kiln` binary: parses the command line and hands over to the library.

use std::process::ExitCode;

// musl's malloc takes one lock for every thread; under the worker pool and
// the HTTP runtime that lock dominates (benches/README.md, "Edge node").
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    kiln::cli::main()
}
