// The console's only way to the node: the public HTTP API, with the
// caller's own token. Tokens live in this module's memory and nowhere else:
// a reload asks for the password again, and nothing secret is in storage.

import { sseReader } from "./sse.js";

let session = null; // { access, refresh, scopes, role, username, userId }
const listeners = new Set();

/** An answer in the contract's error shape (or a network failure). */
export class ApiFailure extends Error {
  constructor(status, code, message, requestId, details) {
    super(message);
    this.status = status;
    this.code = code;
    this.requestId = requestId;
    this.details = details ?? [];
  }
}

export function onSession(listener) {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

function setSession(next) {
  session = next;
  for (const listener of listeners) listener(session);
}

export function currentSession() {
  return session;
}

/** Whether the session's token carries `scope` (admins hold every one). */
export function can(scope) {
  return !!session && (session.scopes.includes("admin") || session.scopes.includes(scope));
}

/**
 * Whether the session may change `script`: its owner, its editors and admins
 * may (the API decides; this only picks the controls to offer).
 */
export function mayChange(script) {
  if (!can("write:scripts")) return false;
  if (can("admin")) return true;
  const me = session.userId;
  return !!me && (script.owner === me || (script.editors ?? []).includes(me));
}

/** Whether the session may change a schedule or webhook: its creator or an admin. */
export function madeByMe(record) {
  return can("admin") || (!!session?.userId && record.created_by === session.userId);
}

/** Whether the session may name `script`'s owner and editors. */
export function mayShare(script) {
  return can("admin") || (can("write:scripts") && !!session.userId && script.owner === session.userId);
}

function claims(token) {
  try {
    const payload = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(payload));
  } catch {
    return {};
  }
}

function adopt(tokens) {
  const c = claims(tokens.access_token);
  setSession({
    access: tokens.access_token,
    refresh: tokens.refresh_token,
    scopes: c.scopes ?? [],
    role: tokens.user?.role ?? c.role ?? "viewer",
    username: tokens.user?.username ?? "",
    userId: tokens.user?.id ?? c.sub ?? "",
  });
}

async function failure(response) {
  const requestId = response.headers.get("x-request-id") ?? "";
  let body = null;
  try {
    body = await response.json();
  } catch {
    /* not JSON: a proxy's page, say */
  }
  const e = body?.error;
  return new ApiFailure(
    response.status,
    e?.code ?? `HTTP_${response.status}`,
    e?.message ?? response.statusText ?? "the request failed",
    e?.request_id ?? requestId,
    e?.details,
  );
}

/** One request with `as`'s token (none without a session). */
async function send(method, path, { body, query, headers = {}, signal } = {}, as = null) {
  const url = new URL(path, window.location.origin);
  for (const [k, v] of Object.entries(query ?? {})) {
    if (v !== undefined && v !== null && v !== "") url.searchParams.set(k, v);
  }
  const init = { method, headers: { ...headers }, signal };
  if (as) init.headers.authorization = `Bearer ${as.access}`;
  if (body !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  try {
    return await fetch(url, init);
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new ApiFailure(0, "NETWORK_ERROR", `cannot reach the node: ${e.message}`, "");
  }
}

let refreshing = null; // { from, promise }: the refresh of session `from`

/**
 * Trades session `from`'s refresh token for a new pair, once however many
 * ask at once. Its answer is taken only if `from` is still the session in
 * use: a logout (or another sign-in) while it was in flight wins. Resolves
 * true when renewed, false when the node refused the token (or the session
 * changed meanwhile); throws when the node could not say (no answer, 429,
 * 5xx), which is no reason to sign out.
 */
function refresh(from) {
  if (!from?.refresh) return Promise.resolve(false);
  if (refreshing?.from === from) return refreshing.promise;
  const promise = (async () => {
    const r = await fetch("/v1/auth/refresh", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ refresh_token: from.refresh }),
      signal: AbortSignal.timeout(15_000),
    });
    if (r.status === 400 || r.status === 401) return false;
    if (!r.ok) throw new Error(`the node answered ${r.status}`);
    const tokens = await r.json();
    if (session !== from) return false;
    adopt(tokens);
    return true;
  })().finally(() => {
    if (refreshing?.promise === promise) refreshing = null;
  });
  refreshing = { from, promise };
  return promise;
}

/**
 * One call as the current session. A 401 is refreshed quietly once and the
 * call retried; a refused refresh signs out, but only the session the call
 * was made as (another may have signed in meanwhile).
 */
export async function raw(method, path, options = {}) {
  const sentWith = session;
  let response = await send(method, path, options, sentWith);
  if (response.status === 401 && sentWith) {
    let renewed;
    try {
      renewed = await refresh(sentWith);
    } catch (e) {
      throw new ApiFailure(0, "NETWORK_ERROR", `cannot renew the session: ${e.message}`, "");
    }
    if (renewed) {
      response = await send(method, path, options, session);
    } else if (session === sentWith) {
      const e = await failure(response);
      setSession(null);
      throw e;
    }
  }
  if (!response.ok) throw await failure(response);
  return response;
}

export async function call(method, path, options) {
  const response = await raw(method, path, options);
  if (response.status === 204) return null;
  return response.json();
}

export const get = (path, query) => call("GET", path, { query });
export const post = (path, body, query) => call("POST", path, { body, query });
export const put = (path, body) => call("PUT", path, { body });
export const del = (path, query) => call("DELETE", path, { query });

/** Signs in; `otp` is the one-time code of an account that has them on. */
export async function login(username, password, otp) {
  const r = await send("POST", "/v1/auth/login", { body: { username, password, otp: otp || undefined } });
  if (!r.ok) throw await failure(r);
  adopt(await r.json());
}

/** Ends the session on the node (renewing an expired token to do so). */
export async function logout() {
  try {
    if (session) await raw("POST", "/v1/auth/logout");
  } catch {
    /* signed out here whatever the node said */
  } finally {
    setSession(null);
  }
}

/**
 * Reads an execution's Server-Sent Events with the session's token (an
 * EventSource cannot send one), handing each `{event, data}` to `onEvent`
 * until the stream ends or `signal` aborts it.
 */
export async function events(id, onEvent, signal) {
  const response = await raw("GET", `/v1/executions/${encodeURIComponent(id)}/events`, {
    headers: { accept: "text/event-stream" },
    signal,
  });
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  const parser = sseReader();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    for (const { event, data } of parser.push(value)) onEvent(event, data);
  }
}
