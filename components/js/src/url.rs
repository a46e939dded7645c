//! `URL` (WHATWG parsing and setters, from the `url` crate's `quirks`) and
//! `URLSearchParams` (the form-urlencoded list, kept in step with its URL).

use rquickjs::{Ctx, Exception, Function, Object};

const URL_JS: &str = r#"
(() => {
  const parse = globalThis.__kiln_url_parse;
  const set = globalThis.__kiln_url_set;
  delete globalThis.__kiln_url_parse;
  delete globalThis.__kiln_url_set;
  const encoder = new TextEncoder();
  const decoder = new TextDecoder();

  // application/x-www-form-urlencoded, as the URL standard serializes it.
  const formEncode = (text) => {
    let out = '';
    for (const byte of encoder.encode(text)) {
      const ch = String.fromCharCode(byte);
      if (/[A-Za-z0-9*\-._]/.test(ch)) out += ch;
      else if (byte === 0x20) out += '+';
      else out += '%' + byte.toString(16).toUpperCase().padStart(2, '0');
    }
    return out;
  };
  const formDecode = (text) => {
    const bytes = encoder.encode(text.replace(/\+/g, ' '));
    const out = [];
    for (let i = 0; i < bytes.length; i++) {
      const hex = String.fromCharCode(bytes[i + 1] ?? 0, bytes[i + 2] ?? 0);
      if (bytes[i] === 0x25 && /^[0-9A-Fa-f]{2}$/.test(hex)) { out.push(parseInt(hex, 16)); i += 2; }
      else out.push(bytes[i]);
    }
    return decoder.decode(new Uint8Array(out));
  };

  class URLSearchParams {
    #list = [];
    #update;
    constructor(init = '') {
      if (init instanceof URLSearchParams) { this.#list = init.#list.map(([k, v]) => [k, v]); return; }
      if (init !== null && typeof init === 'object') {
        if (typeof init[Symbol.iterator] === 'function') {
          for (const pair of init) {
            const items = [...pair];
            if (items.length !== 2) throw new TypeError('URLSearchParams: each pair must have a name and a value');
            this.#list.push([String(items[0]), String(items[1])]);
          }
        } else {
          for (const key of Object.keys(init)) this.#list.push([key, String(init[key])]);
        }
        return;
      }
      this.#parse(String(init));
    }
    #parse(text) {
      this.#list = [];
      for (const part of text.replace(/^\?/, '').split('&')) {
        if (part === '') continue;
        const at = part.indexOf('=');
        const [k, v] = at < 0 ? [part, ''] : [part.slice(0, at), part.slice(at + 1)];
        this.#list.push([formDecode(k), formDecode(v)]);
      }
    }
    static _bind(params, text, update) { params.#parse(text); params.#update = update; }
    static _reparse(params, text) { params.#parse(text); }
    #changed() { if (this.#update) this.#update(this.toString()); }
    get size() { return this.#list.length; }
    append(name, value) { this.#list.push([String(name), String(value)]); this.#changed(); }
    delete(name, value) {
      const n = String(name);
      this.#list = this.#list.filter(([k, v]) => k !== n || (value !== undefined && v !== String(value)));
      this.#changed();
    }
    get(name) { const found = this.#list.find(([k]) => k === String(name)); return found ? found[1] : null; }
    getAll(name) { return this.#list.filter(([k]) => k === String(name)).map(([, v]) => v); }
    has(name, value) { return this.#list.some(([k, v]) => k === String(name) && (value === undefined || v === String(value))); }
    set(name, value) {
      const n = String(name);
      const at = this.#list.findIndex(([k]) => k === n);
      if (at < 0) this.#list.push([n, String(value)]);
      else { this.#list[at][1] = String(value); this.#list = this.#list.filter(([k], i) => k !== n || i === at); }
      this.#changed();
    }
    sort() {
      this.#list = this.#list.map((pair, i) => [pair, i])
        .sort(([a, i], [b, j]) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : i - j)).map(([pair]) => pair);
      this.#changed();
    }
    forEach(callback, thisArg) { for (const [k, v] of this.#list) callback.call(thisArg, v, k, this); }
    *entries() { for (const [k, v] of this.#list) yield [k, v]; }
    *keys() { for (const [k] of this.#list) yield k; }
    *values() { for (const [, v] of this.#list) yield v; }
    [Symbol.iterator]() { return this.entries(); }
    toString() { return this.#list.map(([k, v]) => `${formEncode(k)}=${formEncode(v)}`).join('&'); }
  }
  const bind = URLSearchParams._bind;
  const reparse = URLSearchParams._reparse;
  delete URLSearchParams._bind;
  delete URLSearchParams._reparse;

  class URL {
    #parts;
    #params;
    constructor(input, base) {
      this.#parts = parse(String(input), base === undefined ? undefined : String(base));
    }
    static canParse(input, base) { try { new URL(input, base); return true; } catch { return false; } }
    static parse(input, base) { try { return new URL(input, base); } catch { return null; } }
    #set(name, value) {
      this.#parts = set(this.#parts.href, name, String(value));
      if (this.#params) reparse(this.#params, this.#parts.search);
    }
    get href() { return this.#parts.href; }
    set href(value) { this.#parts = parse(String(value)); if (this.#params) reparse(this.#params, this.#parts.search); }
    get origin() { return this.#parts.origin; }
    get protocol() { return this.#parts.protocol; }
    set protocol(v) { this.#set('protocol', v); }
    get username() { return this.#parts.username; }
    set username(v) { this.#set('username', v); }
    get password() { return this.#parts.password; }
    set password(v) { this.#set('password', v); }
    get host() { return this.#parts.host; }
    set host(v) { this.#set('host', v); }
    get hostname() { return this.#parts.hostname; }
    set hostname(v) { this.#set('hostname', v); }
    get port() { return this.#parts.port; }
    set port(v) { this.#set('port', v); }
    get pathname() { return this.#parts.pathname; }
    set pathname(v) { this.#set('pathname', v); }
    get search() { return this.#parts.search; }
    set search(v) { this.#set('search', v); }
    get hash() { return this.#parts.hash; }
    set hash(v) { this.#set('hash', v); }
    get searchParams() {
      if (!this.#params) {
        this.#params = new URLSearchParams();
        bind(this.#params, this.#parts.search, (query) => {
          this.#parts = set(this.#parts.href, 'search', query);
        });
      }
      return this.#params;
    }
    toString() { return this.href; }
    toJSON() { return this.href; }
  }

  Object.assign(globalThis, { URL, URLSearchParams });
})();
"#;

pub(crate) fn install(ctx: &Ctx<'_>) -> rquickjs::Result<()> {
    let globals = ctx.globals();
    globals.set("__kiln_url_parse", Function::new(ctx.clone(), parse)?)?;
    globals.set("__kiln_url_set", Function::new(ctx.clone(), set)?)?;
    ctx.eval::<(), _>(URL_JS)
}

fn parts<'js>(ctx: &Ctx<'js>, url: &url::Url) -> rquickjs::Result<Object<'js>> {
    use url::quirks;
    let parts = Object::new(ctx.clone())?;
    parts.set("href", quirks::href(url))?;
    parts.set("origin", quirks::origin(url))?;
    parts.set("protocol", quirks::protocol(url))?;
    parts.set("username", quirks::username(url))?;
    parts.set("password", quirks::password(url))?;
    parts.set("host", quirks::host(url))?;
    parts.set("hostname", quirks::hostname(url))?;
    parts.set("port", quirks::port(url))?;
    parts.set("pathname", quirks::pathname(url))?;
    parts.set("search", quirks::search(url))?;
    parts.set("hash", quirks::hash(url))?;
    Ok(parts)
}

fn parse<'js>(ctx: Ctx<'js>, input: String, base: Option<String>) -> rquickjs::Result<Object<'js>> {
    let parsed = match base {
        Some(base) => url::Url::parse(&base).and_then(|base| base.join(&input)),
        None => url::Url::parse(&input),
    };
    match parsed {
        Ok(url) => parts(&ctx, &url),
        Err(e) => Err(Exception::throw_type(
            &ctx,
            &format!("Invalid URL {input:?}: {e}"),
        )),
    }
}

/// The parts of `href` after setting one of them as the URL standard says
/// (a value the setter refuses leaves the URL as it was).
fn set<'js>(
    ctx: Ctx<'js>,
    href: String,
    name: String,
    value: String,
) -> rquickjs::Result<Object<'js>> {
    use url::quirks;
    let mut url = url::Url::parse(&href)
        .map_err(|e| Exception::throw_type(&ctx, &format!("Invalid URL {href:?}: {e}")))?;
    let _ = match name.as_str() {
        "protocol" => quirks::set_protocol(&mut url, &value),
        "username" => quirks::set_username(&mut url, &value),
        "password" => quirks::set_password(&mut url, &value),
        "host" => quirks::set_host(&mut url, &value),
        "hostname" => quirks::set_hostname(&mut url, &value),
        "port" => quirks::set_port(&mut url, &value),
        "pathname" => {
            quirks::set_pathname(&mut url, &value);
            Ok(())
        }
        "search" => {
            quirks::set_search(&mut url, &value);
            Ok(())
        }
        "hash" => {
            quirks::set_hash(&mut url, &value);
            Ok(())
        }
        _ => Err(()),
    };
    parts(&ctx, &url)
}
