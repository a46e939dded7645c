//! Script failures: syntax errors with their position, thrown values with
//! their stack.

use std::ffi::CString;

use rquickjs::{CaughtError, Ctx, qjs};

use crate::exports::kiln::language::script;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FailureKind {
    Syntax,
    Runtime,
}

#[derive(Debug)]
pub(crate) struct Failure {
    kind: FailureKind,
    message: String,
    stack: Option<String>,
    line: Option<u32>,
    column: Option<u32>,
}

impl Failure {
    pub(crate) fn message(&self) -> &str {
        &self.message
    }

    pub(crate) fn runtime(message: impl Into<String>) -> Self {
        Self {
            kind: FailureKind::Runtime,
            message: message.into(),
            stack: None,
            line: None,
            column: None,
        }
    }

    /// A script with nothing to call: a `COMPILE_ERROR` saying what to define.
    pub(crate) fn no_entry_point() -> Self {
        Self {
            kind: FailureKind::Syntax,
            message: "the script has no entry point: define `function main(params)` at the top \
                      level, or `export default function (params)` in a module"
                .into(),
            stack: None,
            line: None,
            column: None,
        }
    }

    /// A failure the script's code caused at compile time (an import that
    /// resolves to nothing), with no position.
    pub(crate) fn syntax(message: impl Into<String>) -> Self {
        Self {
            kind: FailureKind::Syntax,
            ..Self::runtime(message)
        }
    }

    /// Says which file of a bundle failed, when it is not the entry.
    pub(crate) fn in_file(mut self, path: &str) -> Self {
        self.message = format!("{} (in {path})", self.message);
        self
    }

    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Self::runtime(format!("InternalError: {}", message.into()))
    }

    pub(crate) fn from_caught<'js>(
        ctx: &Ctx<'js>,
        caught: CaughtError<'js>,
        kind: FailureKind,
    ) -> Self {
        match caught {
            CaughtError::Exception(e) => {
                let name: Option<String> = e.get("name").ok();
                let message = e.message().unwrap_or_default();
                let stack = e.stack().filter(|s| !s.trim().is_empty());
                let name = name.unwrap_or_else(|| "Error".into());
                // A SyntaxError thrown while running (e.g. by JSON.parse) is
                // still the script's runtime failure.
                let kind = if name == "SyntaxError" {
                    kind
                } else {
                    FailureKind::Runtime
                };
                let (line, column) = position(&e, stack.as_deref());
                Self {
                    kind,
                    message: format!("{name}: {message}"),
                    stack,
                    line,
                    column,
                }
            }
            CaughtError::Value(v) => {
                let shown = ctx
                    .json_stringify(v.clone())
                    .ok()
                    .flatten()
                    .and_then(|s| s.to_string().ok())
                    .unwrap_or_else(|| format!("{v:?}"));
                Self::runtime(format!("Uncaught {shown}"))
            }
            CaughtError::Error(e) => Self::internal(e.to_string()),
        }
    }
}

/// The 1-based line and column of an error: QuickJS's `lineNumber` and
/// `columnNumber` when set, else the first `script.js:L:C` of the stack.
fn position(e: &rquickjs::Exception<'_>, stack: Option<&str>) -> (Option<u32>, Option<u32>) {
    let line: Option<u32> = e.get("lineNumber").ok().flatten();
    let column: Option<u32> = e.get("columnNumber").ok().flatten();
    if line.is_some() {
        return (line, column);
    }
    let Some(stack) = stack else {
        return (None, None);
    };
    let Some(at) = stack.find(concat!("script.js", ":")) else {
        return (None, None);
    };
    let mut numbers = stack[at + "script.js:".len()..]
        .split(|c: char| !c.is_ascii_digit())
        .take(2)
        .map(|n| n.parse::<u32>().ok());
    (numbers.next().flatten(), numbers.next().flatten())
}

impl From<Failure> for script::Failure {
    fn from(f: Failure) -> Self {
        script::Failure {
            kind: match f.kind {
                FailureKind::Syntax => script::FailureKind::Syntax,
                FailureKind::Runtime => script::FailureKind::Runtime,
            },
            message: f.message,
            stack: f.stack,
            line: f.line,
            column: f.column,
        }
    }
}

/// Whether `source` is an ES module: some line starts with an `import` or
/// `export` declaration (dynamic `import(...)` does not count). QuickJS's own
/// `JS_DetectModule` answers "yes" for any script that also parses as a
/// module, which would hide a classic script's top-level `main`.
pub(crate) fn detect_module(source: &str) -> bool {
    let mut in_comment = false;
    source.lines().any(|line| {
        let mut line = line.trim_start();
        if in_comment {
            match line.find("*/") {
                Some(end) => {
                    in_comment = false;
                    line = line[end + 2..].trim_start();
                }
                None => return false,
            }
        }
        if line.starts_with("/*") && !line.contains("*/") {
            in_comment = true;
            return false;
        }
        ["import", "export"].iter().any(|keyword| {
            line.strip_prefix(keyword)
                .and_then(|rest| rest.chars().next())
                .is_some_and(|next| next.is_whitespace() || matches!(next, '{' | '*' | '"' | '\''))
        })
    })
}

/// Parses without running; a syntax error comes back with its position.
pub(crate) fn compile_only(
    ctx: &Ctx<'_>,
    name: &str,
    source: &str,
    module: bool,
) -> Result<(), Failure> {
    compile_with(ctx, name, source, module, |_| Ok(()))
}

/// Compiles `source` without running it and hands the compiled function or
/// module to `use_compiled`; it is freed when that returns.
pub(crate) fn compile_with<T>(
    ctx: &Ctx<'_>,
    name: &str,
    source: &str,
    module: bool,
    use_compiled: impl FnOnce(qjs::JSValue) -> Result<T, Failure>,
) -> Result<T, Failure> {
    let (Ok(text), Ok(name)) = (CString::new(source), CString::new(name)) else {
        return Err(Failure {
            kind: FailureKind::Syntax,
            message: "SyntaxError: the source contains a NUL character".into(),
            stack: None,
            line: None,
            column: None,
        });
    };
    let kind = if module {
        qjs::JS_EVAL_TYPE_MODULE
    } else {
        qjs::JS_EVAL_TYPE_GLOBAL
    };
    let flags = (kind | qjs::JS_EVAL_FLAG_COMPILE_ONLY) as i32;
    let raw = ctx.as_raw().as_ptr();
    // SAFETY: `raw` is the live context of `ctx`; `text` is NUL-terminated and
    // outlives the call; the returned value is freed exactly once, after
    // `use_compiled`, which only borrows it.
    unsafe {
        let compiled = qjs::JS_Eval(raw, text.as_ptr(), source.len() as _, name.as_ptr(), flags);
        if qjs::JS_IsException(compiled) {
            return Err(pending(ctx, FailureKind::Syntax));
        }
        let result = use_compiled(compiled);
        qjs::JS_FreeValue(raw, compiled);
        result
    }
}

/// The pending exception as a failure of `kind`.
pub(crate) fn pending(ctx: &Ctx<'_>, kind: FailureKind) -> Failure {
    let thrown = ctx.catch();
    let caught = match thrown.clone().into_exception() {
        Some(e) => CaughtError::Exception(e),
        None => CaughtError::Value(thrown),
    };
    Failure::from_caught(ctx, caught, kind)
}
