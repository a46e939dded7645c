import { useState } from "preact/hooks";
import { login } from "../api.js";
import { ErrorBox, Field } from "../ui.jsx";

export function Login() {
  const [username, setUsername] = useState("");
  const [password, setPassword] = useState("");
  const [otp, setOtp] = useState("");
  // Set once the node said this account also wants a one-time code.
  const [needsCode, setNeedsCode] = useState(false);
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  async function submit(e) {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      await login(username, password, needsCode ? otp : undefined);
    } catch (err) {
      setBusy(false);
      if (err.code === "OTP_REQUIRED") {
        setNeedsCode(true);
        setError(null);
        requestAnimationFrame(() => document.getElementById("otp")?.focus());
      } else {
        setError(err);
      }
    }
  }
  return (
    <main class="login">
      <form onSubmit={submit} class="card">
        <h1>
          <img src="/assets/favicon.svg" alt="" width="28" height="28" /> Kiln
        </h1>
        <p class="muted">Sign in to this node.</p>
        <ErrorBox error={error} />
        <Field label="Username" id="username">
          <input
            id="username"
            name="username"
            autocomplete="username"
            required
            value={username}
            onInput={(e) => setUsername(e.currentTarget.value)}
          />
        </Field>
        <Field label="Password" id="password">
          <input
            id="password"
            name="password"
            type="password"
            autocomplete="current-password"
            required
            value={password}
            onInput={(e) => setPassword(e.currentTarget.value)}
          />
        </Field>
        {needsCode && (
          <Field label="One-time code" id="otp" hint="From your authenticator app, or one of your recovery codes.">
            <input
              id="otp"
              name="otp"
              autocomplete="one-time-code"
              aria-describedby="otp-hint"
              required
              maxLength={64}
              value={otp}
              onInput={(e) => setOtp(e.currentTarget.value)}
            />
          </Field>
        )}
        <button type="submit" disabled={busy}>
          {busy ? "Signing in…" : "Sign in"}
        </button>
        <p class="muted small">
          The first start of a node writes the admin's password to <code>initial-admin-password</code> in its data
          directory.
        </p>
      </form>
    </main>
  );
}
