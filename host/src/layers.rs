//! The host's layers (ARCHITECTURE.md, "host/"), checked: each top-level
//! module's `crate::` imports, outside its tests, must point to a lower
//! floor or to its own, and never around a cycle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Floors from the top; a module may import from its floor or below.
const FLOORS: &[&[&str]] = &[
    &[
        "cli",
        "serve",
        "local_run",
        "script_files",
        "new",
        "bench",
        "health",
        "client",
    ],
    &["api"],
    &["schedules", "webhooks", "retention"],
    &["executions"],
    &[
        "jobs",
        "egress",
        "vault",
        "runtimes",
        "compiler",
        "auth",
        "ratelimit",
        "quotas",
        "metrics",
        "memory",
        "http_server",
        "lifecycle",
        "client_ip",
    ],
    &["store", "config", "contract"],
];

/// Items of `lib.rs` every floor may use.
const SHARED: &[&str] = &["now", "now_ms", "time_of_ms", "millis", "exit_status"];

fn floor(module: &str) -> Option<usize> {
    FLOORS.iter().position(|floor| floor.contains(&module))
}

/// Each top-level module and the top-level modules its code names.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut imports: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut pending = vec![src.clone()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            let relative = path.strip_prefix(&src).unwrap();
            let top = relative.components().next().unwrap().as_os_str();
            let top = top.to_string_lossy().trim_end_matches(".rs").to_string();
            // The in-process API suite drives the whole node, as serve does.
            if relative.starts_with("api/suite") || ["lib", "main", "layers"].contains(&&*top) {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let code = text
                .split("#[cfg(test)]\nmod tests")
                .next()
                .unwrap_or_default();
            let named = imports.entry(top.clone()).or_default();
            for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
                for (_, rest) in line
                    .match_indices("crate::")
                    .map(|(i, _)| line.split_at(i + 7))
                {
                    let module: String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                        .collect();
                    if module != top && !SHARED.contains(&module.as_str()) {
                        named.insert(module);
                    }
                }
            }
        }
    }
    imports
}

#[test]
fn every_import_points_down_or_across_and_none_goes_round() {
    let imports = imports();
    for (module, named) in &imports {
        let own = floor(module).unwrap_or_else(|| panic!("{module} is on no floor"));
        for other in named {
            let theirs = floor(other).unwrap_or_else(|| panic!("{other} is on no floor"));
            assert!(theirs >= own, "{module} imports {other}, a floor above it");
        }
    }
    // No cycle: every module reaches only modules that do not reach it.
    for module in imports.keys() {
        let mut seen = BTreeSet::new();
        let mut pending: Vec<&String> = imports[module].iter().collect();
        while let Some(next) = pending.pop() {
            assert_ne!(next, module, "{module} is on an import cycle");
            if seen.insert(next) {
                pending.extend(imports.get(next).into_iter().flatten());
            }
        }
    }
}
