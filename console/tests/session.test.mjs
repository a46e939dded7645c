// The console's session handling (src/api.js) against a stubbed fetch:
// quiet renewal, what signs out and what does not, and races between a
// renewal and a logout or another sign-in.
import { beforeEach, test } from "node:test";
import assert from "node:assert/strict";

globalThis.window = { location: { origin: "http://kiln.test" } };
const api = await import("../src/api.js");

/** An access token whose claims the console reads (it checks no signature). */
const token = (name) =>
  `h.${Buffer.from(JSON.stringify({ scopes: ["read:scripts"], sub: name })).toString("base64url")}.s`;
const pair = (name, n) => ({
  access_token: token(`${name}${n}`),
  refresh_token: `r-${name}${n}`,
  user: { username: name, role: "viewer" },
});
const json = (status, body) =>
  new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json" } });
const refused = () => json(401, { error: { code: "AUTHENTICATION_REQUIRED", message: "expired", request_id: "r1" } });

/** Requests seen, and how the next ones are answered. */
let seen;
let answer;
globalThis.fetch = async (url, init = {}) => {
  const path = new URL(url, "http://kiln.test").pathname;
  seen.push({ path, auth: init.headers?.authorization ?? null });
  return answer(path, init);
};

async function signIn(name) {
  answer = () => json(200, pair(name, 1));
  await api.login(name, "password");
}

beforeEach(async () => {
  seen = [];
  answer = () => json(200, {});
  await api.logout();
  seen = [];
});

test("an expired access token is renewed once and the call retried with the new one", async () => {
  await signIn("ada");
  seen = [];
  let first = true;
  answer = (path, init) => {
    if (path === "/v1/auth/refresh") return json(200, pair("ada", 2));
    if (first) {
      first = false;
      return refused();
    }
    return json(200, { ok: init.headers.authorization });
  };
  const body = await api.get("/v1/scripts");
  assert.equal(body.ok, `Bearer ${token("ada2")}`);
  assert.deepEqual(
    seen.map((s) => s.path),
    ["/v1/scripts", "/v1/auth/refresh", "/v1/scripts"],
  );
  assert.equal(api.currentSession().username, "ada");
});

test("a renewal the node could not answer keeps the session; a refused one signs out", async () => {
  await signIn("ada");
  answer = (path) => (path === "/v1/auth/refresh" ? json(503, {}) : refused());
  await assert.rejects(api.get("/v1/scripts"), (e) => e.code === "NETWORK_ERROR");
  assert.ok(api.currentSession(), "still signed in");
  answer = (path) => (path === "/v1/auth/refresh" ? json(401, {}) : refused());
  await assert.rejects(api.get("/v1/scripts"), (e) => e.status === 401);
  assert.equal(api.currentSession(), null);
});

test("a logout while a renewal is in flight wins", async () => {
  await signIn("ada");
  let release;
  const held = new Promise((resolve) => (release = resolve));
  answer = async (path) => {
    if (path === "/v1/auth/refresh") {
      await held;
      return json(200, pair("ada", 2));
    }
    return refused();
  };
  const call = api.get("/v1/scripts").catch((e) => e);
  await new Promise((resolve) => setTimeout(resolve, 10));
  answer = async (path) => (path === "/v1/auth/refresh" ? (await held, json(200, pair("ada", 2))) : json(200, {}));
  await api.logout();
  release();
  await call;
  assert.equal(api.currentSession(), null, "the renewed tokens were not taken");
});

test("a 401 to a call made as one user neither signs out nor is replayed as the next", async () => {
  await signIn("ada");
  let release;
  const held = new Promise((resolve) => (release = resolve));
  answer = async (path) => {
    if (path === "/v1/scripts") {
      await held;
      return refused();
    }
    return json(401, {});
  };
  const call = api.get("/v1/scripts").catch((e) => e);
  await new Promise((resolve) => setTimeout(resolve, 10));
  await signIn("bob");
  seen = [];
  answer = (path) => (path === "/v1/scripts" ? refused() : json(401, {}));
  release();
  const failure = await call;
  assert.equal(failure.status, 401);
  assert.equal(api.currentSession()?.username, "bob", "bob is still signed in");
  assert.ok(!seen.some((s) => s.auth === `Bearer ${token("bob1")}`), "nothing was sent as bob");
});
