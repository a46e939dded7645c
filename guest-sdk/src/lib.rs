//! Write a [Kiln](https://github.com/) script in Rust: one function that takes
//! the execution's parameters as JSON and returns its result as JSON, with
//! the host's [`log`], a per-script key-value store ([`kv`]) and read-only
//! [`config`] values.
//!
//! ```no_run
//! use kiln_guest::{Value, json, kv, log};
//!
//! kiln_guest::export!(run);
//!
//! /// Counts the executions that named the same counter.
//! fn run(params: Value) -> Result<Value, String> {
//!     let name = params["counter"].as_str().unwrap_or("visits");
//!     let count = kv::get_json::<u64>(name)?.unwrap_or(0) + 1;
//!     kv::set_json(name, &count)?;
//!     log::info(&format!("{name} is now {count}"));
//!     Ok(json!({ "counter": name, "count": count }))
//! }
//! ```
//!
//! Build it as a `cdylib` with `cargo build --release --target
//! wasm32-wasip2`; the `.wasm` is a component of the `kiln:script` world
//! (`wit/script.wit`), which Kiln recognises at upload (`"kind": "script"`).
//! `kiln new NAME` writes such a crate.

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "script",
        path: "wit",
        pub_export_macro: true,
        export_macro_name: "__export_script",
        default_bindings_module: "kiln_guest::bindings",
    });
}

pub use serde_json::{Value, json};

/// Exports `$run` as the script's entry point. It must be a function
/// `fn(Value) -> Result<Value, E>` where `E: Display`: the parameters (a JSON
/// object) in, the result out; an `Err` fails the execution with its text.
#[macro_export]
macro_rules! export {
    ($run:path) => {
        #[doc(hidden)]
        struct KilnScript;

        impl $crate::bindings::Guest for KilnScript {
            fn run(
                params: ::std::string::String,
            ) -> ::std::result::Result<::std::string::String, ::std::string::String> {
                $crate::call(&params, $run)
            }
        }

        $crate::bindings::__export_script!(KilnScript);
    };
}

/// Parses the parameters, calls the script and encodes its result: what
/// [`export!`] runs for each execution.
#[doc(hidden)]
pub fn call<E: std::fmt::Display>(
    params: &str,
    run: impl FnOnce(Value) -> Result<Value, E>,
) -> Result<String, String> {
    let params: Value =
        serde_json::from_str(params).map_err(|e| format!("the parameters are not JSON: {e}"))?;
    let result = run(params).map_err(|e| e.to_string())?;
    serde_json::to_string(&result).map_err(|e| format!("the result cannot be encoded: {e}"))
}

/// Log lines, written to the execution's stderr and the server's log.
pub mod log {
    use crate::bindings::kiln::script::log::{Level, write};

    pub fn debug(message: &str) {
        write(Level::Debug, message);
    }

    pub fn info(message: &str) {
        write(Level::Info, message);
    }

    pub fn warn(message: &str) {
        write(Level::Warn, message);
    }

    pub fn error(message: &str) {
        write(Level::Error, message);
    }
}

/// This script's own key-value store: kept across executions and versions
/// until the script is deleted. Keys are text of 1 to 512 bytes; the
/// server sets the quotas (by default 64 KiB per value, 1 MiB per script).
pub mod kv {
    use std::fmt;

    use serde::Serialize;
    use serde::de::DeserializeOwned;

    use crate::bindings::kiln::script::kv as host;

    /// Why a key-value operation failed.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum Error {
        /// The key is empty or too long.
        InvalidKey(String),
        /// The value, or the script's store, would be over its quota.
        QuotaExceeded(String),
        /// The host could not reach the store (for example in an ad-hoc run,
        /// which belongs to no script).
        Unavailable(String),
        /// A stored value is not the JSON [`get_json`] was asked for, or a
        /// value cannot be encoded.
        Json(String),
    }

    impl fmt::Display for Error {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            match self {
                Error::InvalidKey(m) => write!(f, "invalid key: {m}"),
                Error::QuotaExceeded(m) => write!(f, "quota exceeded: {m}"),
                Error::Unavailable(m) => write!(f, "key-value store unavailable: {m}"),
                Error::Json(m) => write!(f, "not the expected JSON: {m}"),
            }
        }
    }

    impl std::error::Error for Error {}

    impl From<Error> for String {
        fn from(e: Error) -> Self {
            e.to_string()
        }
    }

    impl From<host::Error> for Error {
        fn from(e: host::Error) -> Self {
            match e {
                host::Error::InvalidKey(m) => Error::InvalidKey(m),
                host::Error::QuotaExceeded(m) => Error::QuotaExceeded(m),
                host::Error::Unavailable(m) => Error::Unavailable(m),
            }
        }
    }

    /// The bytes stored under `key`.
    pub fn get(key: &str) -> Result<Option<Vec<u8>>, Error> {
        Ok(host::get(key)?)
    }

    /// Stores `value` under `key`.
    pub fn set(key: &str, value: &[u8]) -> Result<(), Error> {
        Ok(host::set(key, value)?)
    }

    /// Removes `key`; true when it existed.
    pub fn delete(key: &str) -> Result<bool, Error> {
        Ok(host::delete(key)?)
    }

    /// The keys starting with `prefix`, in byte order (at most 1000).
    pub fn list(prefix: &str) -> Result<Vec<String>, Error> {
        Ok(host::list_keys(prefix)?)
    }

    /// The value under `key`, decoded from JSON.
    pub fn get_json<T: DeserializeOwned>(key: &str) -> Result<Option<T>, Error> {
        get(key)?
            .map(|bytes| serde_json::from_slice(&bytes).map_err(|e| Error::Json(e.to_string())))
            .transpose()
    }

    /// Stores `value` under `key` as JSON.
    pub fn set_json<T: Serialize + ?Sized>(key: &str, value: &T) -> Result<(), Error> {
        let bytes = serde_json::to_vec(value).map_err(|e| Error::Json(e.to_string()))?;
        set(key, &bytes)
    }
}

/// Values set for this script through the API (`PUT /v1/scripts/{id}/config`),
/// read-only here. Secrets belong here, not in the source.
pub mod config {
    /// The value of `key`, if set.
    pub fn get(key: &str) -> Option<String> {
        crate::bindings::kiln::script::config::get(key)
    }
}
