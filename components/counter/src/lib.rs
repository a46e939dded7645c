//! Counts executions in the script's key-value store: each run adds one to
//! the counter named by the `counter` parameter (default `visits`) and
//! returns the new count, with the `greeting` config value if one is set.

use kiln_guest::{Value, config, json, kv, log};

kiln_guest::export!(run);

fn run(params: Value) -> Result<Value, String> {
    let name = params["counter"].as_str().unwrap_or("visits");
    if params["fail"] == true {
        return Err(format!("asked to fail with {name} untouched"));
    }
    let count = kv::get_json::<u64>(name)?.unwrap_or(0) + 1;
    kv::set_json(name, &count)?;
    log::info(&format!("{name} is now {count}"));
    Ok(json!({
        "counter": name,
        "count": count,
        "greeting": config::get("greeting"),
        "keys": kv::list("")?,
    }))
}
