//! `fetch` (with `Headers`, `Response`, `AbortSignal.timeout`) over the host's
//! `kiln:language/http` import, and the `TextEncoder`/`TextDecoder` it needs.
//! The host sends the request under the run's egress policy and answers
//! whole, so `fetch` settles as soon as it returns; bodies are read from
//! memory.

use rquickjs::function::Opt;
use rquickjs::{ArrayBuffer, Ctx, Exception, Function, Object, TypedArray};

use crate::kiln::language::http;

const FETCH_JS: &str = r#"
(() => {
  const native = globalThis.__kiln_fetch;
  const encode = globalThis.__kiln_utf8_encode;
  const decode = globalThis.__kiln_utf8_decode;
  delete globalThis.__kiln_fetch;
  delete globalThis.__kiln_utf8_encode;
  delete globalThis.__kiln_utf8_decode;

  const bytesOf = (value) => {
    if (value instanceof Uint8Array) return value;
    if (value instanceof ArrayBuffer) return new Uint8Array(value);
    if (ArrayBuffer.isView(value)) return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
    throw new TypeError('expected a string, an ArrayBuffer or a typed array');
  };

  class TextEncoder {
    get encoding() { return 'utf-8'; }
    encode(text = '') { return encode(String(text)); }
  }

  class TextDecoder {
    #fatal;
    #ignoreBOM;
    constructor(label = 'utf-8', options = {}) {
      const name = String(label).trim().toLowerCase();
      if (name !== 'utf-8' && name !== 'utf8' && name !== 'unicode-1-1-utf-8') {
        throw new RangeError(`TextDecoder: the encoding ${label} is not supported (only utf-8)`);
      }
      this.#fatal = Boolean(options.fatal);
      this.#ignoreBOM = Boolean(options.ignoreBOM);
    }
    get encoding() { return 'utf-8'; }
    get fatal() { return this.#fatal; }
    get ignoreBOM() { return this.#ignoreBOM; }
    decode(input) {
      if (input === undefined) return '';
      return decode(bytesOf(input), this.#fatal, this.#ignoreBOM);
    }
  }

  const normalName = (name) => {
    const text = String(name).toLowerCase();
    if (!/^[!#$%&'*+\-.^_`|~0-9a-z]+$/.test(text)) throw new TypeError(`invalid header name: ${name}`);
    return text;
  };

  class Headers {
    #list = [];
    constructor(init) {
      if (init == null) return;
      if (init instanceof Headers) { for (const [k, v] of init) this.append(k, v); return; }
      if (typeof init[Symbol.iterator] === 'function') {
        for (const pair of init) {
          const [k, v, ...rest] = pair;
          if (rest.length !== 0 || v === undefined) throw new TypeError('a header must be a [name, value] pair');
          this.append(k, v);
        }
        return;
      }
      for (const k of Object.keys(init)) this.append(k, init[k]);
    }
    append(name, value) { this.#list.push([normalName(name), String(value).trim()]); }
    set(name, value) { this.delete(name); this.append(name, value); }
    delete(name) { const n = normalName(name); this.#list = this.#list.filter(([k]) => k !== n); }
    has(name) { const n = normalName(name); return this.#list.some(([k]) => k === n); }
    get(name) {
      const n = normalName(name);
      const values = this.#list.filter(([k]) => k === n).map(([, v]) => v);
      return values.length === 0 ? null : values.join(', ');
    }
    getSetCookie() { return this.#list.filter(([k]) => k === 'set-cookie').map(([, v]) => v); }
    *entries() {
      const names = [...new Set(this.#list.map(([k]) => k))].sort();
      for (const n of names) {
        if (n === 'set-cookie') { for (const v of this.getSetCookie()) yield [n, v]; }
        else yield [n, this.get(n)];
      }
    }
    *keys() { for (const [k] of this.entries()) yield k; }
    *values() { for (const [, v] of this.entries()) yield v; }
    forEach(callback, thisArg) { for (const [k, v] of this.entries()) callback.call(thisArg, v, k, this); }
    [Symbol.iterator]() { return this.entries(); }
  }

  const bodyBytes = (body, headers) => {
    if (body == null) return new Uint8Array(0);
    if (typeof body === 'string') {
      if (!headers.has('content-type')) headers.set('content-type', 'text/plain;charset=UTF-8');
      return encode(body);
    }
    if (typeof URLSearchParams === 'function' && body instanceof URLSearchParams) {
      if (!headers.has('content-type')) headers.set('content-type', 'application/x-www-form-urlencoded;charset=UTF-8');
      return encode(body.toString());
    }
    return bytesOf(body);
  };

  class Response {
    #bytes;
    #used = false;
    constructor(body = null, init = {}) {
      this.status = init.status ?? 200;
      this.statusText = init.statusText ?? '';
      this.headers = new Headers(init.headers);
      this.#bytes = bodyBytes(body, this.headers);
      this.url = init.url ?? '';
      this.redirected = Boolean(init.redirected);
      this.type = 'basic';
    }
    get ok() { return this.status >= 200 && this.status < 300; }
    get bodyUsed() { return this.#used; }
    #take() {
      if (this.#used) throw new TypeError('the body of this response was already read');
      this.#used = true;
      return this.#bytes;
    }
    async arrayBuffer() { const b = this.#take(); return b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength); }
    async bytes() { return new Uint8Array(await this.arrayBuffer()); }
    async text() { return decode(this.#take(), false, false); }
    async json() { return JSON.parse(await this.text()); }
    clone() {
      if (this.#used) throw new TypeError('the body of this response was already read');
      return new Response(this.#bytes.slice(), this);
    }
    static json(data, init = {}) {
      const headers = new Headers(init.headers);
      if (!headers.has('content-type')) headers.set('content-type', 'application/json');
      return new Response(JSON.stringify(data), { ...init, headers });
    }
  }

  const named = (name, message) => { const e = new Error(message); e.name = name; return e; };

  class AbortSignal {
    constructor(timeout) { this.aborted = false; this.reason = undefined; this.__timeout = timeout; }
    throwIfAborted() { if (this.aborted) throw this.reason; }
    static timeout(ms) {
      const n = Number(ms);
      if (!Number.isFinite(n) || n < 0) throw new TypeError('AbortSignal.timeout takes a number of milliseconds');
      return new AbortSignal(n);
    }
    static abort(reason) {
      const s = new AbortSignal();
      s.aborted = true;
      s.reason = reason ?? named('AbortError', 'This operation was aborted');
      return s;
    }
  }

  class AbortController {
    constructor() { this.signal = new AbortSignal(); }
    abort(reason) {
      if (this.signal.aborted) return;
      this.signal.aborted = true;
      this.signal.reason = reason ?? named('AbortError', 'This operation was aborted');
    }
  }

  async function fetch(input, init = {}) {
    let url;
    if (typeof input === 'string') url = input;
    else if (input && typeof input.href === 'string') url = input.href;
    else if (input && typeof input.url === 'string') url = input.url;
    else url = String(input);
    const method = String(init.method ?? input?.method ?? 'GET').toUpperCase();
    const headers = new Headers(init.headers ?? input?.headers);
    const body = bodyBytes(init.body, headers);
    if ((method === 'GET' || method === 'HEAD') && body.byteLength > 0) {
      throw new TypeError(`fetch: a ${method} request cannot have a body`);
    }
    const signal = init.signal;
    if (signal?.aborted) throw signal.reason;
    const flat = [];
    for (const [k, v] of headers) flat.push(k, v);
    const answer = native(method, url, flat, body, signal?.__timeout);
    if (!answer.ok) {
      if (answer.kind === 'timeout' && signal?.__timeout !== undefined) {
        throw named('TimeoutError', `fetch ${url}: ${answer.message}`);
      }
      const error = new TypeError(`fetch ${url}: ${answer.message}`);
      error.cause = answer.kind;
      throw error;
    }
    const pairs = [];
    for (let i = 0; i + 1 < answer.headers.length; i += 2) pairs.push([answer.headers[i], answer.headers[i + 1]]);
    return new Response(new Uint8Array(answer.body), {
      status: answer.status, headers: pairs, url: answer.url, redirected: answer.url !== url,
    });
  }

  Object.assign(globalThis, { fetch, Headers, Response, AbortSignal, AbortController, TextEncoder, TextDecoder });
})();
"#;

pub(crate) fn install(ctx: &Ctx<'_>) -> rquickjs::Result<()> {
    let globals = ctx.globals();
    globals.set("__kiln_fetch", Function::new(ctx.clone(), native_fetch)?)?;
    globals.set(
        "__kiln_utf8_encode",
        Function::new(ctx.clone(), utf8_encode)?,
    )?;
    globals.set(
        "__kiln_utf8_decode",
        Function::new(ctx.clone(), utf8_decode)?,
    )?;
    ctx.eval::<(), _>(FETCH_JS)
}

/// The bytes of a `Uint8Array`, copied out before any script runs again.
fn bytes_of(array: &TypedArray<'_, u8>) -> Vec<u8> {
    // SAFETY: the slice is copied at once; no JavaScript runs meanwhile, so
    // the buffer can be neither detached nor resized under it.
    unsafe { array.as_bytes() }
        .map(<[u8]>::to_vec)
        .unwrap_or_default()
}

fn utf8_encode<'js>(ctx: Ctx<'js>, text: String) -> rquickjs::Result<TypedArray<'js, u8>> {
    TypedArray::new(ctx, text.into_bytes())
}

fn utf8_decode<'js>(
    ctx: Ctx<'js>,
    bytes: TypedArray<'js, u8>,
    fatal: Opt<bool>,
    ignore_bom: Opt<bool>,
) -> rquickjs::Result<String> {
    let bytes = bytes_of(&bytes);
    let bytes = match bytes.strip_prefix(b"\xEF\xBB\xBF") {
        Some(rest) if !ignore_bom.0.unwrap_or(false) => rest,
        _ => &bytes[..],
    };
    if fatal.0.unwrap_or(false) {
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|e| Exception::throw_type(&ctx, &format!("TextDecoder: {e}")))
    } else {
        Ok(String::from_utf8_lossy(bytes).into_owned())
    }
}

/// One request through the host. Answers `{ok: true, status, url, headers
/// (flat name, value, …), body: ArrayBuffer}` or `{ok: false, kind,
/// message}`, which the JavaScript side turns into a `Response` or an error.
fn native_fetch<'js>(
    ctx: Ctx<'js>,
    method: String,
    url: String,
    headers: Vec<String>,
    body: TypedArray<'js, u8>,
    timeout_ms: Option<f64>,
) -> rquickjs::Result<Object<'js>> {
    let request = http::Request {
        method,
        url,
        headers: headers
            .chunks_exact(2)
            .map(|pair| (pair[0].clone(), pair[1].clone()))
            .collect(),
        body: bytes_of(&body),
        // Saturating: a timeout past u32 milliseconds (49 days) is no limit
        // the run's deadline would let matter.
        timeout_ms: timeout_ms.map(|ms| ms.clamp(0.0, f64::from(u32::MAX)) as u32),
    };
    let answer = Object::new(ctx.clone())?;
    match http::fetch(&request) {
        Ok(response) => {
            answer.set("ok", true)?;
            answer.set("status", response.status)?;
            answer.set("url", response.url)?;
            let flat: Vec<String> = response
                .headers
                .into_iter()
                .flat_map(|(name, value)| [name, value])
                .collect();
            answer.set("headers", flat)?;
            answer.set("body", ArrayBuffer::new(ctx, response.body)?)?;
        }
        Err(error) => {
            let kind = match error.kind {
                http::ErrorKind::Denied => "denied",
                http::ErrorKind::Limit => "limit",
                http::ErrorKind::Timeout => "timeout",
                http::ErrorKind::Network => "network",
                http::ErrorKind::Invalid => "invalid",
            };
            answer.set("ok", false)?;
            answer.set("kind", kind)?;
            answer.set("message", error.message)?;
        }
    }
    Ok(answer)
}
