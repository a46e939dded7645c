//! `console.log/info/debug` to stdout and `console.warn/error` to stderr,
//! formatted the way Node prints simple values.

use std::io::Write;

use rquickjs::{Ctx, Function};

const CONSOLE_JS: &str = r#"
(() => {
  const write = globalThis.__kiln_write;
  delete globalThis.__kiln_write;
  const show = (v) => {
    if (typeof v === 'string') return v;
    if (v instanceof Error) return v.stack ? `${v.name}: ${v.message}\n${v.stack}`.trimEnd() : `${v.name}: ${v.message}`;
    if (typeof v === 'function') return `[Function ${v.name || '(anonymous)'}]`;
    if (typeof v === 'object' && v !== null) {
      try { return JSON.stringify(v); } catch { return String(v); }
    }
    return String(v);
  };
  const to = (fd) => (...args) => write(fd, args.map(show).join(' ') + '\n');
  globalThis.console = { log: to(1), info: to(1), debug: to(1), warn: to(2), error: to(2) };
})();
"#;

pub(crate) fn install(ctx: &Ctx<'_>) -> rquickjs::Result<()> {
    let write = Function::new(ctx.clone(), |fd: i32, text: String| {
        let _ = if fd == 2 {
            std::io::stderr().write_all(text.as_bytes())
        } else {
            std::io::stdout().write_all(text.as_bytes())
        };
    })?;
    ctx.globals().set("__kiln_write", write)?;
    ctx.eval::<(), _>(CONSOLE_JS)
}

pub(crate) fn flush() {
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
}
