//! Kiln, the host: the command line and (soon) the HTTP front door around the
//! `kiln-runtime` sandbox.

pub mod cli;
mod config;
mod local_run;
