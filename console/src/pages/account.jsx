import { useState } from "preact/hooks";
import { call, get, post, put } from "../api.js";
import { ErrorBox, Field, Loading, useLoad } from "../ui.jsx";

/** The signed-in user's own account: their password and one-time codes. */
export function Account() {
  const me = useLoad(() => get("/v1/users/me"), []);
  if (me.error) return <ErrorBox error={me.error} />;
  if (!me.data) return <Loading />;
  return (
    <section class="stack">
      <h1>Your account</h1>
      <p class="muted">
        {me.data.username} · {me.data.role}
      </p>
      <PasswordForm />
      <OneTimeCodes on={me.data.totp} reload={me.reload} />
    </section>
  );
}

function PasswordForm() {
  const [current, setCurrent] = useState("");
  const [next, setNext] = useState("");
  const [revokeKeys, setRevokeKeys] = useState(false);
  const [error, setError] = useState(null);
  const [done, setDone] = useState(false);
  async function submit(e) {
    e.preventDefault();
    setError(null);
    setDone(false);
    try {
      await put("/v1/users/me", { current_password: current, password: next, revoke_keys: revokeKeys });
      setCurrent("");
      setNext("");
      setDone(true);
    } catch (err) {
      setError(err);
    }
  }
  return (
    <form class="stack card" onSubmit={submit} aria-labelledby="password-title">
      <h2 id="password-title">Password</h2>
      <ErrorBox error={error} />
      {done && (
        <p class="ok" role="status">
          Password changed. Your other sessions have ended.
        </p>
      )}
      <Field label="Current password" id="current-password">
        <input
          id="current-password"
          type="password"
          autocomplete="current-password"
          required
          value={current}
          onInput={(e) => setCurrent(e.currentTarget.value)}
        />
      </Field>
      <Field label="New password" id="new-password" hint="8 to 1024 characters.">
        <input
          id="new-password"
          type="password"
          autocomplete="new-password"
          aria-describedby="new-password-hint"
          required
          minLength={8}
          maxLength={1024}
          value={next}
          onInput={(e) => setNext(e.currentTarget.value)}
        />
      </Field>
      <label class="check">
        <input type="checkbox" checked={revokeKeys} onChange={(e) => setRevokeKeys(e.currentTarget.checked)} /> Also
        revoke my API keys
      </label>
      <div class="actions">
        <button type="submit">Change password</button>
      </div>
    </form>
  );
}

/** Turning one-time login codes on (secret, then a code, then recovery codes) and off. */
function OneTimeCodes({ on, reload }) {
  const [password, setPassword] = useState("");
  const [code, setCode] = useState("");
  const [setup, setSetup] = useState(null);
  const [recovery, setRecovery] = useState(null);
  const [error, setError] = useState(null);
  async function act(e, what) {
    e.preventDefault();
    setError(null);
    try {
      await what();
    } catch (err) {
      setError(err);
    }
  }
  const begin = (e) =>
    act(e, async () => {
      setSetup(await post("/v1/users/me/totp", { current_password: password }));
      setPassword("");
    });
  const confirm = (e) =>
    act(e, async () => {
      const answer = await post("/v1/users/me/totp/confirm", { code });
      setRecovery(answer.recovery_codes);
      setSetup(null);
      setCode("");
      reload();
    });
  const turnOff = (e) =>
    act(e, async () => {
      await call("DELETE", "/v1/users/me/totp", { body: { current_password: password, otp: code } });
      setPassword("");
      setCode("");
      reload();
    });
  const passwordField = (
    <Field label="Your password" id="totp-password">
      <input
        id="totp-password"
        type="password"
        autocomplete="current-password"
        required
        value={password}
        onInput={(e) => setPassword(e.currentTarget.value)}
      />
    </Field>
  );
  const codeField = (label) => (
    <Field label={label} id="totp-code">
      <input
        id="totp-code"
        autocomplete="one-time-code"
        required
        maxLength={64}
        value={code}
        onInput={(e) => setCode(e.currentTarget.value)}
      />
    </Field>
  );
  return (
    <div class="stack card">
      <h2>One-time codes</h2>
      <p class="muted">
        {on
          ? "On: signing in asks for a code from your authenticator app (or a recovery code)."
          : "Off: signing in asks for your password only."}
      </p>
      <ErrorBox error={error} />
      {recovery && (
        <div class="card reveal" data-testid="recovery-codes">
          <p>Recovery codes: each signs you in once if you lose your phone. Keep them now: they are not shown again.</p>
          <pre class="secret">{recovery.join("\n")}</pre>
          <button type="button" class="secondary" onClick={() => setRecovery(null)}>
            Done
          </button>
        </div>
      )}
      {!on && !setup && (
        <form class="stack" onSubmit={begin}>
          {passwordField}
          <div class="actions">
            <button type="submit">Set up one-time codes</button>
          </div>
        </form>
      )}
      {!on && setup && (
        <form class="stack" onSubmit={confirm}>
          <p>
            Add this key to your authenticator app, then type the code it shows:
            <br />
            <code class="secret" data-testid="totp-secret">
              {setup.secret}
            </code>
          </p>
          <p class="muted small">
            Or open <a href={setup.otpauth_uri}>this otpauth link</a> on the phone.
          </p>
          {codeField("Code from the app")}
          <div class="actions">
            <button type="submit">Turn on</button>
          </div>
        </form>
      )}
      {on && (
        <form class="stack" onSubmit={turnOff}>
          {passwordField}
          {codeField("A code from the app, or a recovery code")}
          <div class="actions">
            <button type="submit" class="danger">
              Turn off
            </button>
          </div>
        </form>
      )}
    </div>
  );
}
