//! Scripts of several files: ES modules that import each other by relative
//! path, and plain-ESM packages vendored under `node_modules/`.
//!
//! Compiling resolves every import the entry reaches, once, with QuickJS's
//! own loader hooks, and keeps each module's bytecode and every resolution.
//! A run installs a loader that only looks those up: no path logic runs per
//! execution, and nothing outside the compiled bundle can be imported.
//!
//! The compiled form is `b`, the modules (the entry first) and the links,
//! each a list of length-prefixed fields.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use rquickjs::loader::{ImportAttributes, Loader, Resolver};
use rquickjs::module::Declared;
use rquickjs::{CatchResultExt, Context, Ctx, Exception, Module, Runtime, WriteOptions, qjs};

use crate::code::{BUNDLE, MODULE, write_bytecode};
use crate::failure::{Failure, FailureKind, compile_only, compile_with, detect_module};

/// What Node has and QuickJS does not: importing one fails at compile time
/// with a message that says so, instead of "not in the bundle".
const NODE_BUILTINS: &[&str] = &[
    "assert",
    "async_hooks",
    "buffer",
    "child_process",
    "cluster",
    "console",
    "crypto",
    "dgram",
    "diagnostics_channel",
    "dns",
    "events",
    "fs",
    "http",
    "http2",
    "https",
    "inspector",
    "module",
    "net",
    "os",
    "path",
    "perf_hooks",
    "process",
    "querystring",
    "readline",
    "stream",
    "string_decoder",
    "timers",
    "tls",
    "tty",
    "url",
    "util",
    "v8",
    "vm",
    "worker_threads",
    "zlib",
];

/// What compiling gathers: each module's bytecode in load order and every
/// (importer, specifier) → module resolution. The first failure is kept
/// with its message: QuickJS only sees that loading failed.
#[derive(Default)]
struct Gathered {
    modules: Vec<(String, Vec<u8>)>,
    links: Vec<(String, String, String)>,
    failure: Option<Failure>,
}

type Files = Rc<BTreeMap<String, String>>;

/// Compiles the modules `entry` reaches in `files` into one code. An entry
/// that is a classic script (no `import`/`export`) compiles as one.
pub(crate) fn compile(
    runtime: &Runtime,
    context: &Context,
    entry: &str,
    files: BTreeMap<String, String>,
) -> Result<Vec<u8>, Failure> {
    let Some(source) = files.get(entry) else {
        return Err(Failure::syntax(format!(
            "Error: the entry {entry:?} is not one of the bundle's files"
        )));
    };
    if !detect_module(source) {
        return context.with(|ctx| crate::code::compile(&ctx, source));
    }
    let files: Files = Rc::new(files);
    let gathered = Rc::new(RefCell::new(Gathered::default()));
    // Outside `with`, which holds the runtime the loader is set on.
    let compiling = Compiling {
        files: files.clone(),
        gathered: gathered.clone(),
    };
    runtime.set_loader(compiling.clone(), compiling);
    context.with(|ctx| compile_modules(&ctx, entry, &files, &gathered))
}

fn compile_modules(
    ctx: &Ctx<'_>,
    entry: &str,
    files: &Files,
    gathered: &RefCell<Gathered>,
) -> Result<Vec<u8>, Failure> {
    // The entry is compiled here, not by the loader, to reach its raw value:
    // parsing and resolving it load (and so compile) every module it
    // imports, transitively, without running any of them.
    let linked = compile_with(ctx, entry, &files[entry], true, |module| {
        let bytecode = write_bytecode(ctx, module)?;
        gathered
            .borrow_mut()
            .modules
            .push((entry.to_owned(), bytecode));
        // SAFETY: `module` is a live module value of `ctx`'s context,
        // borrowed for the call. A failed resolve frees only the modules it
        // did not resolve, never this one, which it marks resolved first.
        Ok(unsafe { qjs::JS_ResolveModule(ctx.as_raw().as_ptr(), module) })
    });
    let mut gathered = gathered.take();
    // What the resolver or loader said is clearer than QuickJS's "could not
    // load" (parsing the entry may already resolve its imports).
    if let Some(failure) = gathered.failure.take() {
        return Err(failure);
    }
    if linked? < 0 {
        return Err(crate::failure::pending(ctx, FailureKind::Syntax));
    }
    // Parsing the entry already loads what it imports, so it is recorded
    // after them; the code has it first.
    if let Some(at) = gathered.modules.iter().position(|(path, _)| path == entry) {
        let first = gathered.modules.remove(at);
        gathered.modules.insert(0, first);
    }
    Ok(encode(&gathered))
}

/// Parses one file as a module (a syntax error names the file and its
/// position) and records its bytecode.
fn declare<'js>(
    ctx: &Ctx<'js>,
    path: &str,
    source: &str,
    gathered: &RefCell<Gathered>,
) -> Result<Module<'js, Declared>, Failure> {
    compile_only(ctx, path, source, true).map_err(|f| f.in_file(path))?;
    let syntax = |e| Failure::from_caught(ctx, e, FailureKind::Syntax).in_file(path);
    let module = Module::declare(ctx.clone(), path, source)
        .catch(ctx)
        .map_err(syntax)?;
    let bytecode = module
        .write(WriteOptions::default())
        .catch(ctx)
        .map_err(syntax)?;
    gathered
        .borrow_mut()
        .modules
        .push((path.to_owned(), bytecode));
    Ok(module)
}

/// The resolver and the loader while compiling: both see the bundle's
/// files and record what they find in the same place.
#[derive(Clone)]
struct Compiling {
    files: Files,
    gathered: Rc<RefCell<Gathered>>,
}

impl Resolver for Compiling {
    fn resolve<'js>(
        &mut self,
        ctx: &Ctx<'js>,
        base: &str,
        specifier: &str,
        _attributes: Option<ImportAttributes<'js>>,
    ) -> rquickjs::Result<String> {
        match resolve(ctx, &self.files, base, specifier) {
            Ok(resolved) => {
                self.gathered.borrow_mut().links.push((
                    base.to_owned(),
                    specifier.to_owned(),
                    resolved.clone(),
                ));
                Ok(resolved)
            }
            Err(message) => Err(fail(ctx, &self.gathered, Failure::syntax(message))),
        }
    }
}

impl Loader for Compiling {
    fn load<'js>(
        &mut self,
        ctx: &Ctx<'js>,
        path: &str,
        _attributes: Option<ImportAttributes<'js>>,
    ) -> rquickjs::Result<Module<'js, Declared>> {
        let Some(source) = self.files.get(path) else {
            let failure = Failure::syntax(format!("Error: {path:?} is not in the bundle"));
            return Err(fail(ctx, &self.gathered, failure));
        };
        declare(ctx, path, source, &self.gathered).map_err(|f| fail(ctx, &self.gathered, f))
    }
}

/// Keeps the first failure and throws, so QuickJS stops resolving.
fn fail(ctx: &Ctx<'_>, gathered: &RefCell<Gathered>, failure: Failure) -> rquickjs::Error {
    let message = failure.message().to_owned();
    gathered.borrow_mut().failure.get_or_insert(failure);
    Exception::throw_message(ctx, &message)
}

/// The file `specifier` names when `base` imports it.
fn resolve(ctx: &Ctx<'_>, files: &Files, base: &str, specifier: &str) -> Result<String, String> {
    if specifier.starts_with("./") || specifier.starts_with("../") || specifier.starts_with('/') {
        let joined = join(base, specifier)
            .ok_or_else(|| format!("Error: {base} imports {specifier:?}, outside the bundle"))?;
        return find_file(files, &joined).ok_or_else(|| {
            format!("Error: {base} imports {specifier:?}, which is not in the bundle")
        });
    }
    if let Some(builtin) = specifier.strip_prefix("node:") {
        return Err(node_builtin(base, builtin));
    }
    let (package, subpath) = split_package(specifier);
    let root = format!("node_modules/{package}");
    let prefix = format!("{root}/");
    if !files.keys().any(|path| path.starts_with(&prefix)) {
        let top = package.split('/').next().unwrap_or(package);
        if NODE_BUILTINS.contains(&top) {
            return Err(node_builtin(base, specifier));
        }
        return Err(format!(
            "Error: {base} imports the package {specifier:?}, which the bundle does not \
             include: vendor it (plain ES modules) under node_modules/{package}/"
        ));
    }
    let target = match subpath {
        Some(subpath) => find_file(files, &format!("{root}/{subpath}")),
        None => package_entry(ctx, files, &root)
            .and_then(|main| join(&format!("{root}/package.json"), &format!("./{main}")))
            .and_then(|main| find_file(files, &main))
            .or_else(|| find_file(files, &format!("{root}/index"))),
    };
    target.ok_or_else(|| {
        format!(
            "Error: {base} imports {specifier:?}, but node_modules/{package} has no such \
             ES module (Kiln reads package.json's exports, module and main)"
        )
    })
}

fn node_builtin(base: &str, name: &str) -> String {
    format!(
        "Error: {base} imports {name:?}, a Node.js built-in: Kiln runs scripts on QuickJS, not \
         Node, so packages that need Node's modules cannot run (fetch, URL, TextEncoder, \
         crypto.getRandomValues and timers are globals)"
    )
}

/// `pkg` or `@scope/pkg`, and what follows it.
fn split_package(specifier: &str) -> (&str, Option<&str>) {
    let mut end = specifier.find('/');
    if specifier.starts_with('@')
        && let Some(first) = end
    {
        end = specifier[first + 1..].find('/').map(|i| first + 1 + i);
    }
    match end {
        Some(i) => (&specifier[..i], Some(&specifier[i + 1..])),
        None => (specifier, None),
    }
}

/// The module a package's `package.json` names: `exports` (a string, or
/// `"."`'s `import`/`default`), else `module`, else `main`.
fn package_entry(ctx: &Ctx<'_>, files: &Files, root: &str) -> Option<String> {
    let manifest = files.get(&format!("{root}/package.json"))?;
    let parsed: rquickjs::Object = ctx.json_parse(manifest.as_str()).ok()?.into_object()?;
    let text = |value: rquickjs::Value<'_>| value.as_string().and_then(|s| s.to_string().ok());
    if let Ok(exports) = parsed.get::<_, rquickjs::Value>("exports") {
        if let Some(path) = text(exports.clone()) {
            return Some(path);
        }
        if let Some(exports) = exports.into_object() {
            let dot = exports
                .get::<_, rquickjs::Value>(".")
                .ok()
                .filter(|v| !v.is_undefined());
            let conditions = dot.unwrap_or_else(|| exports.into_value());
            if let Some(path) = text(conditions.clone()) {
                return Some(path);
            }
            if let Some(conditions) = conditions.into_object() {
                for condition in ["import", "module", "default"] {
                    if let Some(path) = conditions.get(condition).ok().and_then(text) {
                        return Some(path);
                    }
                }
            }
        }
    }
    ["module", "main"]
        .into_iter()
        .find_map(|field| parsed.get(field).ok().and_then(text))
}

/// The bundle's file for a path, trying what ES tooling tries: the path
/// itself, with `.js` or `.mjs`, or its `index.js` / `index.mjs`.
fn find_file(files: &Files, path: &str) -> Option<String> {
    let path = path.trim_end_matches('/');
    [
        path.to_owned(),
        format!("{path}.js"),
        format!("{path}.mjs"),
        format!("{path}/index.js"),
        format!("{path}/index.mjs"),
    ]
    .into_iter()
    .find(|candidate| files.contains_key(candidate))
}

/// `specifier` (relative, or absolute from the bundle's root) seen from
/// `base`'s directory; `None` if it climbs out of the bundle.
fn join(base: &str, specifier: &str) -> Option<String> {
    let mut parts: Vec<&str> = if specifier.starts_with('/') {
        Vec::new()
    } else {
        let mut dir: Vec<&str> = base.split('/').collect();
        dir.pop();
        dir
    };
    for part in specifier.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            part => parts.push(part),
        }
    }
    Some(parts.join("/"))
}

fn encode(gathered: &Gathered) -> Vec<u8> {
    let mut out = vec![BUNDLE];
    put_len(&mut out, gathered.modules.len());
    for (path, bytecode) in &gathered.modules {
        put(&mut out, path.as_bytes());
        put(&mut out, bytecode);
    }
    put_len(&mut out, gathered.links.len());
    for (base, specifier, resolved) in &gathered.links {
        for field in [base, specifier, resolved] {
            put(&mut out, field.as_bytes());
        }
    }
    out
}

fn put_len(out: &mut Vec<u8>, len: usize) {
    out.extend(u32::try_from(len).unwrap_or(u32::MAX).to_le_bytes());
}

fn put(out: &mut Vec<u8>, field: &[u8]) {
    put_len(out, field.len());
    out.extend(field);
}

/// Reads length-prefixed fields; `None` on anything truncated.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn len(&mut self) -> Option<usize> {
        let (head, rest) = self.0.split_first_chunk::<4>()?;
        self.0 = rest;
        usize::try_from(u32::from_le_bytes(*head)).ok()
    }

    fn field(&mut self) -> Option<&'a [u8]> {
        let len = self.len()?;
        let (field, rest) = self.0.split_at_checked(len)?;
        self.0 = rest;
        Some(field)
    }

    fn text(&mut self) -> Option<String> {
        String::from_utf8(self.field()?.to_vec()).ok()
    }
}

/// For a bundle's code, installs the loader its imports go through and
/// returns the entry module's code; other code is returned as it is.
pub(crate) fn install(runtime: &Runtime, code: Vec<u8>) -> Result<Vec<u8>, Failure> {
    if code.first() != Some(&BUNDLE) {
        return Ok(code);
    }
    let damaged = || Failure::runtime("Error: the bundle's code is damaged");
    let mut reader = Reader(&code[1..]);
    let count = reader.len().ok_or_else(damaged)?;
    let mut modules = HashMap::new();
    let mut entry = None;
    for _ in 0..count {
        let path = reader.text().ok_or_else(damaged)?;
        let bytecode = reader.field().ok_or_else(damaged)?.to_vec();
        if entry.is_none() {
            let mut tagged = vec![MODULE];
            tagged.extend(&bytecode);
            entry = Some(tagged);
        }
        modules.insert(path, bytecode);
    }
    let count = reader.len().ok_or_else(damaged)?;
    let mut links = HashMap::new();
    for _ in 0..count {
        let base = reader.text().ok_or_else(damaged)?;
        let specifier = reader.text().ok_or_else(damaged)?;
        let resolved = reader.text().ok_or_else(damaged)?;
        links.insert((base, specifier), resolved);
    }
    runtime.set_loader(Links(links), Compiled(modules));
    entry.ok_or_else(damaged)
}

/// A run's resolver: the resolutions made at compile time, nothing else (a
/// dynamic `import()` of something no static import named fails).
struct Links(HashMap<(String, String), String>);

impl Resolver for Links {
    fn resolve<'js>(
        &mut self,
        ctx: &Ctx<'js>,
        base: &str,
        specifier: &str,
        _attributes: Option<ImportAttributes<'js>>,
    ) -> rquickjs::Result<String> {
        match self.0.get(&(base.to_owned(), specifier.to_owned())) {
            Some(resolved) => Ok(resolved.clone()),
            None => Err(Exception::throw_message(
                ctx,
                &format!(
                    "{base} imports {specifier:?}, which no static import in the bundle names"
                ),
            )),
        }
    }
}

/// A run's loader: the bytecode compiled from the bundle.
struct Compiled(HashMap<String, Vec<u8>>);

impl Loader for Compiled {
    fn load<'js>(
        &mut self,
        ctx: &Ctx<'js>,
        path: &str,
        _attributes: Option<ImportAttributes<'js>>,
    ) -> rquickjs::Result<Module<'js, Declared>> {
        let Some(bytecode) = self.0.get(path) else {
            return Err(Exception::throw_message(
                ctx,
                &format!("{path:?} is not in the bundle"),
            ));
        };
        // SAFETY: the bytes are what `compile` wrote in this same runtime
        // (the host keys its code cache by the runtime's hash), and this
        // loader, which owns them, lives as long as the runtime.
        unsafe { Module::load(ctx.clone(), bytecode) }
    }
}
