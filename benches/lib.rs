//! Benchmarks for Kiln live in `benches/`; results and how to read them in
//! `README.md` beside this file.
