//! `setTimeout`, `setInterval`, `clearTimeout`, `clearInterval`, and the
//! loop that drives a promise to its end: QuickJS's job queue first, then
//! the earliest timer, sleeping until it is due. The sleep is a WASI clock
//! wait, so the host's deadline still stops a run that waits too long.

use std::time::{Duration, Instant};

use rquickjs::{CatchResultExt, Ctx, Function, Object, Promise, Value};

use crate::failure::{Failure, FailureKind};

const TIMERS_JS: &str = r#"
(() => {
  const now = globalThis.__kiln_now;
  delete globalThis.__kiln_now;
  const timers = new Map();
  let next = 1;
  const add = (callback, ms, args, repeat) => {
    if (typeof callback !== 'function') throw new TypeError('the callback must be a function');
    // Clamped at 2^31-1 ms (about 24.8 days): the run's deadline comes
    // first anyway, and a larger delay would not fit the host's sleep.
    const delay = Math.min(Math.max(0, Number(ms) || 0), 2 ** 31 - 1);
    const id = next++;
    timers.set(id, { due: now() + delay, callback, args, every: repeat ? Math.max(delay, 1) : 0 });
    return id;
  };
  const clear = (id) => { timers.delete(id); };
  const loop = {
    // Milliseconds until the earliest timer is due, or -1 when there is none.
    wait() {
      let due = Infinity;
      for (const t of timers.values()) if (t.due < due) due = t.due;
      return due === Infinity ? -1 : Math.max(0, due - now());
    },
    // Runs the earliest timer (the first set among equals).
    fire() {
      let id, earliest;
      for (const [key, t] of timers) if (earliest === undefined || t.due < earliest.due) { id = key; earliest = t; }
      if (earliest === undefined) return;
      if (earliest.every) earliest.due = Math.max(earliest.due + earliest.every, now());
      else timers.delete(id);
      earliest.callback(...earliest.args);
    },
  };
  Object.defineProperty(globalThis, '__kiln_loop', { value: loop, enumerable: false });
  Object.assign(globalThis, {
    setTimeout: (callback, ms, ...args) => add(callback, ms, args, false),
    setInterval: (callback, ms, ...args) => add(callback, ms, args, true),
    clearTimeout: clear,
    clearInterval: clear,
    queueMicrotask: (callback) => { Promise.resolve().then(callback); },
  });
})();
"#;

pub(crate) fn install(ctx: &Ctx<'_>) -> rquickjs::Result<()> {
    let now = Function::new(ctx.clone(), monotonic_ms)?;
    ctx.globals().set("__kiln_now", now)?;
    ctx.eval::<(), _>(TIMERS_JS)
}

thread_local! {
    /// The zero of `monotonic_ms` for this instance (made at first use, so
    /// not in the build's snapshot).
    static ORIGIN: std::cell::OnceCell<Instant> = const { std::cell::OnceCell::new() };
}

fn monotonic_ms() -> f64 {
    ORIGIN.with(|origin| origin.get_or_init(Instant::now).elapsed().as_secs_f64() * 1e3)
}

/// Drives `promise` to its end: pending jobs, then due timers, sleeping
/// until the next one. A promise that nothing is left to settle (no job, no
/// timer) is a runtime failure naming `what`.
pub(crate) fn drive<'js>(
    ctx: &Ctx<'js>,
    promise: &Promise<'js>,
    what: &str,
) -> Result<Value<'js>, Failure> {
    let failed = |e| Failure::from_caught(ctx, e, FailureKind::Runtime);
    let loop_object: Object = ctx
        .globals()
        .get("__kiln_loop")
        .map_err(|e| Failure::internal(format!("the timer loop is missing: {e}")))?;
    let wait: Function = loop_object
        .get("wait")
        .map_err(|e| Failure::internal(format!("the timer loop is broken: {e}")))?;
    let fire: Function = loop_object
        .get("fire")
        .map_err(|e| Failure::internal(format!("the timer loop is broken: {e}")))?;
    loop {
        if let Some(settled) = promise.result::<Value>() {
            return settled.catch(ctx).map_err(failed);
        }
        if ctx.execute_pending_job() {
            continue;
        }
        let ms: f64 = wait.call(()).catch(ctx).map_err(failed)?;
        if ms < 0.0 {
            return Err(Failure::runtime(format!(
                "Error: {what} never settles (nothing left to run: no pending job or timer)"
            )));
        }
        if ms > 0.0 {
            std::thread::sleep(Duration::from_secs_f64(ms / 1e3));
        }
        fire.call::<_, ()>(()).catch(ctx).map_err(failed)?;
    }
}
