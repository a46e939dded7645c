//! Web platform basics QuickJS lacks: `atob`/`btoa`, `structuredClone`, and
//! `crypto.getRandomValues`/`randomUUID` (from WASI's random source).

use rquickjs::{Ctx, Exception, Function, TypedArray};

unsafe extern "C" {
    /// wasi-libc's `getentropy`: at most 256 bytes from `wasi:random`.
    fn getentropy(buffer: *mut core::ffi::c_void, length: usize) -> core::ffi::c_int;
}

/// What `crypto.getRandomValues` fills at most in one call (as in browsers).
const MAX_RANDOM_BYTES: usize = 65_536;

const WEB_JS: &str = r#"
(() => {
  const randomBytes = globalThis.__kiln_random_bytes;
  delete globalThis.__kiln_random_bytes;
  const named = (name, message) => { const e = new Error(message); e.name = name; return e; };

  const table = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
  const btoa = (input) => {
    const s = String(input);
    let out = '';
    for (let i = 0; i < s.length; i += 3) {
      const a = s.charCodeAt(i), b = s.charCodeAt(i + 1), c = s.charCodeAt(i + 2);
      if (a > 255 || b > 255 || c > 255) throw named('InvalidCharacterError', 'btoa: the string has characters outside Latin-1');
      const n = (a << 16) | ((b || 0) << 8) | (c || 0);
      out += table[(n >> 18) & 63] + table[(n >> 12) & 63]
        + (i + 1 < s.length ? table[(n >> 6) & 63] : '=') + (i + 2 < s.length ? table[n & 63] : '=');
    }
    return out;
  };
  const atob = (input) => {
    let s = String(input).replace(/[\t\n\f\r ]/g, '');
    if (s.length % 4 === 0) s = s.replace(/==?$/, '');
    if (s.length % 4 === 1 || /[^A-Za-z0-9+/]/.test(s)) throw named('InvalidCharacterError', 'atob: the string is not valid base64');
    let out = '', bits = 0, n = 0;
    for (const ch of s) {
      n = ((n << 6) | table.indexOf(ch)) & 0xffffff;
      bits += 6;
      if (bits >= 8) { bits -= 8; out += String.fromCharCode((n >> bits) & 255); }
    }
    return out;
  };

  const structuredClone = (value) => {
    const seen = new Map();
    const clone = (v) => {
      if (typeof v === 'function' || typeof v === 'symbol') throw named('DataCloneError', `structuredClone: a ${typeof v} cannot be cloned`);
      if (v === null || typeof v !== 'object') return v;
      if (seen.has(v)) return seen.get(v);
      let out;
      if (v instanceof Date) out = new Date(v.getTime());
      else if (v instanceof RegExp) out = new RegExp(v.source, v.flags);
      else if (v instanceof ArrayBuffer) out = v.slice(0);
      else if (ArrayBuffer.isView(v)) out = new v.constructor(clone(v.buffer), v.byteOffset, v instanceof DataView ? v.byteLength : v.length);
      else if (v instanceof Map) { out = new Map(); seen.set(v, out); for (const [k, x] of v) out.set(clone(k), clone(x)); return out; }
      else if (v instanceof Set) { out = new Set(); seen.set(v, out); for (const x of v) out.add(clone(x)); return out; }
      else if (v instanceof Error) { out = new (globalThis[v.name] ?? Error)(v.message); out.stack = v.stack; }
      else if (Array.isArray(v)) { out = []; seen.set(v, out); v.forEach((x, i) => { out[i] = clone(x); }); return out; }
      else if (v instanceof Promise || v instanceof WeakMap || v instanceof WeakSet) throw named('DataCloneError', 'structuredClone: this object cannot be cloned');
      else { out = {}; seen.set(v, out); for (const k of Object.keys(v)) out[k] = clone(v[k]); return out; }
      seen.set(v, out);
      return out;
    };
    return clone(value);
  };

  const integerArrays = [Int8Array, Uint8Array, Uint8ClampedArray, Int16Array, Uint16Array, Int32Array, Uint32Array, BigInt64Array, BigUint64Array];
  const getRandomValues = (array) => {
    if (!integerArrays.some((kind) => array instanceof kind)) throw new TypeError('crypto.getRandomValues takes an integer typed array');
    if (array.byteLength > 65536) throw named('QuotaExceededError', `crypto.getRandomValues: ${array.byteLength} bytes asked, at most 65536`);
    new Uint8Array(array.buffer, array.byteOffset, array.byteLength).set(randomBytes(array.byteLength));
    return array;
  };
  const randomUUID = () => {
    const b = getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const h = [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  };

  Object.assign(globalThis, { atob, btoa, structuredClone, crypto: { getRandomValues, randomUUID } });
})();
"#;

pub(crate) fn install(ctx: &Ctx<'_>) -> rquickjs::Result<()> {
    ctx.globals().set(
        "__kiln_random_bytes",
        Function::new(ctx.clone(), random_bytes)?,
    )?;
    ctx.eval::<(), _>(WEB_JS)
}

/// `n` bytes from WASI's random source (at most [`MAX_RANDOM_BYTES`]).
fn random_bytes<'js>(ctx: Ctx<'js>, n: usize) -> rquickjs::Result<TypedArray<'js, u8>> {
    if n > MAX_RANDOM_BYTES {
        return Err(Exception::throw_range(&ctx, "too many random bytes asked"));
    }
    let mut bytes = vec![0u8; n];
    for chunk in bytes.chunks_mut(256) {
        // SAFETY: `chunk` is a live, writable buffer of the length passed,
        // at most 256 bytes as getentropy requires.
        if unsafe { getentropy(chunk.as_mut_ptr().cast(), chunk.len()) } != 0 {
            return Err(Exception::throw_internal(
                &ctx,
                "no randomness from the host",
            ));
        }
    }
    TypedArray::new(ctx, bytes)
}
