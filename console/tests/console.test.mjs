// The console in headless Chromium against a real `kiln serve`, driven the
// way a person uses it. tests/e2e/console.rs starts the server, makes the
// users and runs this file with:
//   KILN_URL, KILN_ADMIN_PASSWORD, KILN_VIEWER_PASSWORD (user "viewer"),
//   KILN_DEVELOPER_PASSWORD (user "dev"),
//   CHROMIUM (the browser), SCREENSHOTS (a folder for a picture of each page),
//   HELLO_WASM (a component to upload).
// The tests run in order and build on each other's scripts, as a person's
// session would.
// Every page is checked with axe-core (no serious or critical violation),
// and no page may log an error or break its Content-Security-Policy.
import { after, before, test } from "node:test";
import { createHmac } from "node:crypto";
import assert from "node:assert/strict";
import { mkdir, readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { join } from "node:path";
import { chromium } from "playwright-core";

const BASE = process.env.KILN_URL;
const SHOTS = process.env.SCREENSHOTS;
const ADMIN = ["admin", process.env.KILN_ADMIN_PASSWORD];
const VIEWER = ["viewer", process.env.KILN_VIEWER_PASSWORD];
const DEVELOPER = ["dev", process.env.KILN_DEVELOPER_PASSWORD];
const HELLO_WASM = process.env.HELLO_WASM;
const axeSource = await readFile(createRequire(import.meta.url).resolve("axe-core/axe.min.js"), "utf8");
/** Bounds every wait, so a broken page fails the test instead of hanging. */
const WAIT = { timeout: 15_000 };
/** Bounds a whole test, axe's runs included. */
const WHOLE = { timeout: 120_000 };

let browser;

before(async () => {
  assert.ok(BASE && SHOTS && ADMIN[1] && VIEWER[1] && DEVELOPER[1] && HELLO_WASM, "every variable above is set");
  await mkdir(SHOTS, { recursive: true });
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    // Root in a container: Chromium's own sandbox needs namespaces it may
    // not have; the page is the console, not the open web.
    args: ["--no-sandbox", "--disable-dev-shm-usage"],
  });
});

after(async () => {
  await browser?.close();
});

/** A fresh browser context and page, with its problems collected. */
async function open(options = {}) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, ...options });
  const page = await context.newPage();
  const problems = [];
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  // An API error is the page's to show (the tests check it does); a failed
  // load of anything else, or anything else logged as an error, is a fault.
  page.on("response", (r) => {
    if (r.status() >= 400 && !new URL(r.url()).pathname.startsWith("/v1/")) {
      problems.push(`HTTP ${r.status()} for ${r.url()}`);
    }
  });
  page.on("console", (m) => {
    if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) {
      problems.push(`console: ${m.text()}`);
    }
  });
  await page.goto(BASE + "/");
  return { context, page, problems };
}

async function login(page, [user, password]) {
  await page.getByLabel("Username").fill(user);
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByTestId("whoami").waitFor(WAIT);
}

/** Polls `condition` until it holds, for as long as any other wait. */
async function until(what, condition) {
  const deadline = Date.now() + WAIT.timeout;
  while (!(await condition())) {
    assert.ok(Date.now() < deadline, `timed out waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** Follows the main menu's link `name`. */
async function nav(page, name) {
  await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name, exact: true }).click();
}

/** A screenshot named `name`, and axe's verdict on the page as it is. */
async function check(page, name) {
  await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
  await page.evaluate(axeSource);
  const result = await page.evaluate(() =>
    // eslint-disable-next-line no-undef
    axe.run(document, { resultTypes: ["violations"] }),
  );
  const serious = result.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
  assert.deepEqual(
    serious.map((v) => `${v.id}: ${v.help} (${v.nodes.map((n) => n.target.join(" ")).join("; ")})`),
    [],
    `axe on ${name}`,
  );
}

function clean(problems) {
  assert.deepEqual(problems, [], "the page logged no error and broke no policy");
}

/** Replaces the editor's text as if pasted (typing would auto-close brackets). */
async function setCode(page, code) {
  const editor = page.locator(".cm-content").first();
  await editor.click();
  await page.keyboard.press("Control+A");
  await page.keyboard.press("Delete");
  await page.keyboard.insertText(code);
}

const STREAMING = `export default async function main(params) {
  for (let i = 0; i < 4; i++) {
    console.log("line " + i + " for " + params.name);
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
  return { hello: params.name };
}
`;

const ENDLESS = `export default async function main() {
  for (let i = 0; ; i++) {
    console.log("still going " + i);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}
`;

test("a wrong password is shown as the API's error, with its request id", WHOLE, async () => {
  const { context, page, problems } = await open();
  await check(page, "01-login");
  await page.getByLabel("Username").fill("admin");
  await page.getByLabel("Password").fill("not the password");
  await page.getByRole("button", { name: "Sign in" }).click();
  const alert = page.getByRole("alert");
  await alert.waitFor(WAIT);
  const text = await alert.innerText();
  assert.match(text, /wrong username or password/);
  assert.match(text, /AUTHENTICATION_REQUIRED · HTTP 401 · request [0-9a-f-]{36}/);
  await check(page, "02-login-error");
  // Nothing secret is kept in the browser's storage.
  assert.equal(await page.evaluate(() => localStorage.length + sessionStorage.length), 0);
  clean(problems);
  await context.close();
});

test("an admin writes a script, runs it with live output, cancels a long run and finds it", WHOLE, async () => {
  const { context, page, problems } = await open();
  await login(page, ADMIN);
  await check(page, "03-dashboard-empty");
  assert.equal(await page.evaluate(() => localStorage.length + sessionStorage.length), 0);

  await page.getByRole("link", { name: "Scripts", exact: true }).click();
  await page.getByText("No scripts yet.").waitFor(WAIT);
  await check(page, "04-scripts-empty");

  await page.getByRole("link", { name: "New script" }).click();
  await page.getByLabel("Name", { exact: true }).fill("greeter");
  await page.getByLabel("Description").fill("says hello, slowly");
  await setCode(page, STREAMING);
  await check(page, "05-new-script");
  await page.getByRole("button", { name: "Create script" }).click();
  await page.getByRole("heading", { name: "greeter" }).waitFor(WAIT);
  // The editor highlights JavaScript: keywords get their own spans.
  await page.locator(".cm-content span").first().waitFor(WAIT);
  assert.ok((await page.locator(".cm-content span").count()) > 5, "highlighted tokens");
  await check(page, "06-script-code");

  // A bad parameter text is refused before anything is sent.
  await page.getByRole("link", { name: "Run" }).click();
  const parameters = page.getByLabel("Parameters (JSON object)");
  await parameters.fill("[1, 2]");
  assert.ok(await page.getByRole("button", { name: "Run" }).isDisabled());
  await page.getByText("Parameters must be a JSON object").waitFor(WAIT);
  await parameters.fill('{"name": "Ada"}');
  await page.getByRole("button", { name: "Run" }).click();
  // The first line arrives while the run is still going.
  const stdout = page.getByTestId("stdout");
  await stdout.getByText("line 0 for Ada").waitFor(WAIT);
  assert.ok(
    (await page.getByTestId("run-output").locator(".badge").innerText()) !== "completed",
    "the first line is shown before the run ends",
  );
  await page.getByTestId("result").waitFor(WAIT);
  assert.match(await stdout.innerText(), /line 3 for Ada/);
  assert.deepEqual(JSON.parse(await page.getByTestId("result").innerText()), { hello: "Ada" });
  const outcome = await page.getByTestId("outcome").innerText();
  assert.match(outcome, /Duration\s+\d+ ms/);
  assert.match(outcome, /Fuel\s+[\d,.]+/);
  assert.match(outcome, /Limits\s+30000 ms, 128 MB/);
  await check(page, "07-run-done");

  // A second version, then its diff against the first and a rollback.
  await page.getByRole("link", { name: "Code" }).click();
  await setCode(page, STREAMING.replace("hello", "greeting"));
  await page.getByRole("button", { name: "Save as a new version" }).click();
  await page.getByText("Saved as version 2.").waitFor(WAIT);
  await page.getByRole("link", { name: "Versions" }).click();
  await page.getByRole("button", { name: "Compare with current" }).click();
  await page.getByTestId("diff").locator(".cm-changedLine").first().waitFor(WAIT);
  await check(page, "08-versions-diff");
  await page.getByRole("button", { name: "Roll back to version 1" }).click();
  await page.getByText("version 3").first().waitFor(WAIT);

  // A run that would go on for ever, cancelled from the console.
  await page.getByRole("link", { name: "Scripts", exact: true }).click();
  await page.getByRole("link", { name: "New script" }).click();
  await page.getByLabel("Name", { exact: true }).fill("forever");
  await setCode(page, ENDLESS);
  await page.getByRole("button", { name: "Create script" }).click();
  await page.getByRole("heading", { name: "forever" }).waitFor(WAIT);
  await page.getByRole("link", { name: "Run" }).click();
  await page.getByRole("button", { name: "Run" }).click();
  await page.getByTestId("stdout").getByText("still going 2").waitFor(WAIT);
  await page.getByRole("button", { name: "Cancel" }).click();
  await page.getByTestId("run-output").locator(".badge", { hasText: "cancelled" }).waitFor(WAIT);
  const cancelledLink = page.getByTestId("run-output").getByRole("link", { name: /^Execution / });
  const cancelledId = (await cancelledLink.innerText()).replace("Execution ", "");

  // The executions list finds it by status, and its page tells its story.
  await page.getByRole("link", { name: "Executions", exact: true }).click();
  await page.getByLabel("Status").selectOption("cancelled");
  // The filtered page replaces the whole list: only the cancelled run is left.
  await until("only the cancelled run is listed", async () => (await page.locator("tbody tr").count()) === 1);
  await page.locator(`a[href="#/executions/${cancelledId}"]`).waitFor(WAIT);
  await check(page, "09-executions-filtered");
  await page.locator(`a[href="#/executions/${cancelledId}"]`).click();
  await page.getByText(cancelledId).waitFor(WAIT);
  assert.match(await page.getByTestId("stdout").innerText(), /still going 2/);
  assert.match(await page.getByTestId("outcome").innerText(), /CANCELLED|cancel/i);
  await check(page, "10-execution-detail");

  await page.getByRole("link", { name: "Dashboard" }).click();
  await page.getByText("Executions, last 24 h").waitFor(WAIT);
  await page.locator("figure.chart").first().waitFor(WAIT);
  // The live charts appear once two samples of /metrics are in (5 s apart).
  await page.locator("figcaption", { hasText: "Duration, p50 and p99 (live, ms)" }).waitFor(WAIT);
  await check(page, "11-dashboard");
  clean(problems);
  await context.close();
});

test("a schedule shows its next five times before and after it is made", WHOLE, async () => {
  const { context, page, problems } = await open();
  await login(page, ADMIN);
  await page.getByRole("link", { name: "Schedules" }).click();
  await page.getByText("No schedules yet.").waitFor(WAIT);
  await page.getByLabel("Name", { exact: true }).fill("weekday mornings");
  await page.getByLabel("Script", { exact: true }).fill("greeter");
  await page.getByLabel("Cron").fill("not a cron");
  await page
    .locator(".error")
    .getByText(/not a valid cron/)
    .waitFor(WAIT);
  await page.getByLabel("Cron").fill("0 9 * * 1-5");
  await page.getByLabel("Time zone").selectOption("Europe/Berlin");
  const preview = page.getByTestId("next-runs").first();
  await preview.locator("li").nth(4).waitFor(WAIT);
  await check(page, "12-schedule-new");
  await page.getByRole("button", { name: "Create schedule" }).click();
  const row = page.locator("tbody tr", { hasText: "weekday mornings" });
  await row.waitFor(WAIT);
  const times = await row.locator("time").evaluateAll((els) => els.map((e) => e.getAttribute("datetime")));
  assert.equal(times.length, 5);
  for (const t of times) {
    const at = new Date(t);
    // 09:00 in Berlin is 08:00 UTC in winter, 07:00 in summer; never a weekend.
    assert.ok([7, 8].includes(at.getUTCHours()) && at.getUTCMinutes() === 0, t);
    assert.ok(![0, 6].includes(at.getUTCDay()), t);
  }
  await check(page, "13-schedules");
  clean(problems);
  await context.close();
});

test("an API key is shown once, then only its prefix", WHOLE, async () => {
  const { context, page, problems } = await open();
  await login(page, ADMIN);
  await page.getByRole("link", { name: "API keys" }).click();
  await page.getByText("No API keys yet.").waitFor(WAIT);
  await page.getByLabel("Name", { exact: true }).fill("ci deploys");
  await page.getByRole("button", { name: "Create key" }).click();
  const shown = page.getByTestId("new-key");
  await shown.waitFor(WAIT);
  const key = (await shown.locator("code").innerText()).trim();
  assert.match(key, /^kiln_[A-Za-z0-9]{32}$/);
  await check(page, "14-key-shown-once");
  // The key works against the API.
  const r = await fetch(`${BASE}/v1/scripts`, { headers: { "x-api-key": key } });
  assert.equal(r.status, 200);
  await shown.getByRole("button", { name: "Done" }).click();
  const row = page.locator("tbody tr", { hasText: "ci deploys" });
  await row.waitFor(WAIT);
  assert.ok(!(await page.content()).includes(key), "the whole key is gone from the page");
  assert.match(await row.innerText(), new RegExp(key.slice(0, 9)));
  await check(page, "15-keys");

  await page.getByRole("link", { name: "Users" }).click();
  await page.getByRole("cell", { name: "viewer", exact: true }).waitFor(WAIT);
  await check(page, "16-users");
  await page.getByRole("link", { name: "Webhooks" }).click();
  await page.getByText("No webhooks yet.").waitFor(WAIT);
  await check(page, "17-webhooks");
  clean(problems);
  await context.close();
});

test("a component upload, config values, a secret and a webhook keep their secrets", WHOLE, async () => {
  const { context, page, problems } = await open();
  await login(page, ADMIN);

  await page.goto(`${BASE}/#/scripts/new`);
  await page.getByLabel("Name", { exact: true }).fill("hello-wasm");
  await page.getByLabel("Language").selectOption("wasm");
  await page.getByLabel("Component").setInputFiles(HELLO_WASM);
  await page.getByRole("button", { name: "Create script" }).click();
  await page.getByRole("heading", { name: "hello-wasm" }).waitFor(WAIT);
  await page.getByText("A compiled component.").waitFor(WAIT);
  await page.getByRole("link", { name: "Run" }).click();
  await page.getByRole("button", { name: "Run" }).click();
  await page.getByTestId("run-output").locator(".badge", { hasText: "completed" }).waitFor(WAIT);

  // A config value is written, then only its key is shown.
  await page.goto(`${BASE}/#/scripts/greeter/config`);
  await page.getByText("No config values yet.").waitFor(WAIT);
  await page.getByRole("button", { name: "Add a value" }).click();
  await page.getByLabel("Key").fill("MODE");
  await page.getByLabel("Value").fill("config-value-1234");
  await page.getByRole("button", { name: "Save config" }).click();
  await page.getByText("Config saved.").waitFor(WAIT);
  assert.equal(await page.getByLabel("Key").inputValue(), "MODE");
  assert.equal(await page.getByLabel("Value").inputValue(), "");
  assert.ok(!(await page.content()).includes("config-value-1234"));
  await check(page, "18-script-config");

  await nav(page, "Secrets");
  await page.getByText("No shared secrets yet.").waitFor(WAIT);
  await page.getByLabel("Name", { exact: true }).fill("API_TOKEN");
  await page.getByLabel("Value").fill("secret-value-5678");
  await page.getByLabel("Granted to").fill("greeter");
  await page.getByRole("button", { name: "Save secret" }).click();
  await page.getByRole("cell", { name: "API_TOKEN" }).waitFor(WAIT);
  assert.ok(!(await page.content()).includes("secret-value-5678"));
  await check(page, "19-secrets");

  // A webhook's signing secret is shown once; a test event is attempted.
  await page.getByRole("link", { name: "Webhooks" }).click();
  await page.getByText("No webhooks yet.").waitFor(WAIT);
  await page.getByLabel("URL").fill("http://127.0.0.1:9/hook");
  await page.getByRole("button", { name: "Create webhook" }).click();
  const shown = page.getByTestId("new-secret");
  await shown.waitFor(WAIT);
  const secret = (await shown.locator("code").innerText()).trim();
  assert.match(secret, /^whsec_[A-Za-z0-9+/=]+$/);
  await check(page, "20-webhook-secret-once");
  await shown.getByRole("button", { name: "Done" }).click();
  assert.ok(!(await page.content()).includes(secret));
  await page.getByRole("link", { name: "http://127.0.0.1:9/hook" }).click();
  await page.getByRole("button", { name: "Send a test event" }).click();
  await page.getByText("Test event queued.").waitFor(WAIT);
  // Nothing listens on port 9: the first attempt fails and is recorded.
  const attempt = page.locator("tbody tr").first();
  await until("an attempt is listed", async () => {
    if (await attempt.isVisible()) return true;
    await page.getByRole("button", { name: "Refresh" }).click();
    await page.waitForTimeout(300);
    return false;
  });
  assert.match(await attempt.innerText(), /webhook\.test|ping|test/i);
  await check(page, "21-webhook-deliveries");
  clean(problems);
  await context.close();
});

test("a viewer is offered no write control, and a 403 renders cleanly", WHOLE, async () => {
  const { context, page, problems } = await open();
  await login(page, VIEWER);
  const nav = await page.getByRole("navigation", { name: "Main" }).innerText();
  assert.ok(nav.includes("Scripts"));
  for (const hidden of ["Executions", "Schedules", "Webhooks", "Users"]) assert.ok(!nav.includes(hidden), hidden);
  await page.getByRole("link", { name: "Scripts", exact: true }).click();
  await page.getByRole("link", { name: "greeter" }).waitFor(WAIT);
  assert.equal(await page.getByRole("link", { name: "New script" }).count(), 0);
  await page.getByRole("link", { name: "greeter" }).click();
  await page.getByRole("heading", { name: "greeter" }).waitFor(WAIT);
  await page.locator(".cm-content").waitFor(WAIT);
  assert.equal(await page.getByRole("button", { name: "Delete" }).count(), 0);
  assert.equal(await page.getByRole("button", { name: "Save as a new version" }).count(), 0);
  assert.equal(await page.locator(".cm-content").getAttribute("contenteditable"), "false");
  await check(page, "22-viewer-script");
  await page.getByRole("link", { name: "Run" }).click();
  await page.getByText("Your role cannot run scripts.").waitFor(WAIT);
  assert.equal(await page.getByRole("button", { name: "Run" }).count(), 0);
  // Asked for directly, a page the role may not read shows the API's 403.
  await page.goto(`${BASE}/#/executions`);
  const alert = page.getByRole("alert");
  await alert.waitFor(WAIT);
  assert.match(await alert.innerText(), /PERMISSION_DENIED · HTTP 403 · request [0-9a-f-]{36}/);
  await check(page, "23-viewer-forbidden");
  clean(problems);
  await context.close();
});

/** The code an authenticator app with base32 `secret` shows now (RFC 6238: HMAC-SHA1, 6 digits, 30 s). */
function totp(secret) {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
  let bits = "";
  for (const c of secret.replace(/=+$/, "")) bits += alphabet.indexOf(c).toString(2).padStart(5, "0");
  const key = Buffer.from(bits.match(/.{8}/g).map((b) => parseInt(b, 2)));
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(Math.floor(Date.now() / 1000 / 30)));
  const mac = createHmac("sha1", key).update(counter).digest();
  const offset = mac[mac.length - 1] & 15;
  return String((mac.readUInt32BE(offset) & 0x7fffffff) % 1_000_000).padStart(6, "0");
}

test("a developer changes only what they own or edit, and keeps their own account", WHOLE, async () => {
  const dev = await open();
  await login(dev.page, DEVELOPER);
  // The admin's script: read-only to a developer who does not edit it.
  await dev.page.goto(`${BASE}/#/scripts/greeter`);
  await dev.page.locator(".cm-content").waitFor(WAIT);
  assert.equal(await dev.page.getByRole("button", { name: "Delete" }).count(), 0);
  assert.equal(await dev.page.locator(".cm-content").getAttribute("contenteditable"), "false");

  // Its owner makes them an editor; now they may change it.
  const admin = await open();
  await login(admin.page, ADMIN);
  await admin.page.goto(`${BASE}/#/scripts/greeter/config`);
  await admin.page.getByLabel("Editors").fill("dev");
  await admin.page.getByRole("button", { name: "Save who may change it" }).click();
  await admin.page.getByText("edited also by dev").waitFor(WAIT);
  clean(admin.problems);
  await admin.context.close();
  await dev.page.reload();
  await login(dev.page, DEVELOPER);
  await dev.page.goto(`${BASE}/#/scripts/greeter`);
  await dev.page.getByRole("button", { name: "Delete" }).waitFor(WAIT);
  assert.equal(await dev.page.locator(".cm-content").getAttribute("contenteditable"), "true");
  await dev.page.goto(`${BASE}/#/scripts/greeter/config`);
  await dev.page.getByText("edited also by you").waitFor(WAIT);
  // An editor does not hand the script out.
  assert.equal(await dev.page.getByLabel("Editors").count(), 0);

  // The admin's schedule and webhook are listed, but not offered to change.
  await nav(dev.page, "Schedules");
  await dev.page.getByRole("table").first().waitFor(WAIT);
  assert.equal(await dev.page.getByRole("button", { name: "Delete" }).count(), 0);
  assert.equal(await dev.page.getByRole("button", { name: "Pause" }).count(), 0);
  await nav(dev.page, "Webhooks");
  await dev.page.getByRole("table").first().waitFor(WAIT);
  assert.equal(await dev.page.getByRole("button", { name: "Delete" }).count(), 0);

  // Their own password, then one-time codes.
  await nav(dev.page, "Account");
  await dev.page.getByLabel("Current password", { exact: true }).fill(DEVELOPER[1]);
  await dev.page.getByLabel("New password").fill("the developer's new password");
  await dev.page.getByRole("button", { name: "Change password" }).click();
  await dev.page.getByText("Password changed.").waitFor(WAIT);
  await dev.page.getByLabel("Your password").fill("the developer's new password");
  await dev.page.getByRole("button", { name: "Set up one-time codes" }).click();
  const secret = await dev.page.getByTestId("totp-secret").innerText();
  await dev.page.getByLabel("Code from the app").fill(totp(secret.trim()));
  await dev.page.getByRole("button", { name: "Turn on" }).click();
  const codes = (await dev.page.getByTestId("recovery-codes").locator("pre").innerText()).split("\n");
  assert.equal(codes.length, 10);
  await dev.page.getByText("On: signing in asks for a code").waitFor(WAIT);
  await check(dev.page, "25-account-codes");

  // Signing in again asks for a code; a recovery code does.
  await dev.page.getByRole("button", { name: "Log out" }).click();
  await dev.page.getByLabel("Username").fill("dev");
  await dev.page.getByLabel("Password").fill("the developer's new password");
  await dev.page.getByRole("button", { name: "Sign in" }).click();
  await dev.page.getByLabel("One-time code").fill(codes[0]);
  await check(dev.page, "26-login-code");
  await dev.page.getByRole("button", { name: "Sign in" }).click();
  await dev.page.getByTestId("whoami").waitFor(WAIT);
  clean(dev.problems);
  await dev.context.close();
});

test("phone width and dark mode", WHOLE, async () => {
  const { context, page, problems } = await open({
    viewport: { width: 390, height: 844 },
    colorScheme: "dark",
    isMobile: true,
    hasTouch: true,
  });
  await login(page, ADMIN);
  // The menu folds away behind a button on a narrow screen.
  const nav = page.getByRole("navigation", { name: "Main" });
  assert.equal(await nav.isVisible(), false);
  await page.getByRole("button", { name: "Menu" }).click();
  await nav.getByRole("link", { name: "Scripts" }).click();
  await page.getByRole("link", { name: "greeter" }).waitFor(WAIT);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `no sideways scrolling (${overflow}px)`);
  const background = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
  assert.equal(background, "rgb(23, 21, 19)", "the dark palette");
  await check(page, "24-phone-dark-scripts");
  await page.getByRole("link", { name: "greeter" }).click();
  await page.getByRole("heading", { name: "greeter" }).waitFor(WAIT);
  await check(page, "25-phone-dark-script");
  clean(problems);
  await context.close();
});
