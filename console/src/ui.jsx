// Small pieces every page uses: errors with their request id, empty states,
// times, a data loader and the hash router's links.
import { useCallback, useEffect, useState } from "preact/hooks";

/**
 * An error as the API gave it: its message, code and request id. `quiet`
 * for errors shown while the user types, which should not interrupt.
 */
export function ErrorBox({ error, quiet = false }) {
  if (!error) return null;
  // A detail the message already says is not said twice.
  const details = (error.details ?? []).filter((d) => !d.message || !error.message.includes(d.message));
  return (
    <div class="error" role={quiet ? "status" : "alert"}>
      <strong>{error.message}</strong>
      <div class="muted small">
        {error.code}
        {error.status ? ` · HTTP ${error.status}` : ""}
        {error.requestId ? ` · request ${error.requestId}` : ""}
      </div>
      {details.length > 0 && (
        <ul class="small">
          {details.map((d) => (
            <li>
              {d.field ? <code>{d.field}</code> : null} {d.message ?? d.issue ?? JSON.stringify(d)}
            </li>
          ))}
        </ul>
      )}
    </div>
  );
}

export function Empty({ title, children }) {
  return (
    <div class="empty">
      <p>
        <strong>{title}</strong>
      </p>
      {children && <p class="muted">{children}</p>}
    </div>
  );
}

export function Loading() {
  return (
    <p class="muted" aria-live="polite">
      Loading…
    </p>
  );
}

/** Loads `fetcher()` when `deps` change; `reload` fetches again. */
export function useLoad(fetcher, deps) {
  const [state, setState] = useState({ data: null, error: null, loading: true });
  const load = useCallback(() => {
    let live = true;
    setState((s) => ({ ...s, loading: true }));
    // A fetcher that throws at once (a bad date in the URL) fails the same way.
    Promise.resolve()
      .then(fetcher)
      .then(
        (data) => live && setState({ data, error: null, loading: false }),
        (error) => live && setState({ data: null, error, loading: false }),
      );
    return () => {
      live = false;
    };
  }, deps);
  useEffect(load, [load]);
  return { ...state, reload: load };
}

/** A time for people; in `timeZone` (with its name) when one is given. */
export function when(iso, timeZone) {
  if (!iso) return "—";
  const d = new Date(iso);
  if (timeZone) {
    return d.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "long", timeZone });
  }
  return d.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "medium" });
}

export function ago(iso) {
  if (!iso) return "—";
  const s = Math.round((Date.now() - new Date(iso).getTime()) / 1000);
  if (s < 60) return `${Math.max(s, 0)} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

export function Status({ status }) {
  return <span class={`badge status-${status}`}>{status}</span>;
}

export function href(path, query) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(query ?? {})) if (v !== undefined && v !== "") q.set(k, v);
  const s = q.toString();
  return `#${path}${s ? `?${s}` : ""}`;
}

export function navigate(path, query) {
  window.location.hash = href(path, query).slice(1);
}

/** Copies `text`, saying so next to the button. */
export function CopyButton({ text, label = "Copy" }) {
  const [done, setDone] = useState(false);
  return (
    <button
      type="button"
      class="secondary"
      onClick={() =>
        navigator.clipboard?.writeText(text).then(
          () => setDone(true),
          () => setDone(false),
        )
      }
    >
      {done ? "Copied" : label}
    </button>
  );
}

/** A labelled form field; `hint` says what is allowed. */
export function Field({ label, id, hint, children }) {
  return (
    <div class="field">
      <label for={id}>{label}</label>
      {children}
      {hint && (
        <p class="hint" id={`${id}-hint`}>
          {hint}
        </p>
      )}
    </div>
  );
}

/** A table with a header row of `columns` (an empty name is an actions column). */
export function Table({ columns, children }) {
  return (
    <div class="table-wrap">
      <table>
        <thead>
          <tr>
            {columns.map((c) => (
              <th scope="col">{c || <span class="visually-hidden">Actions</span>}</th>
            ))}
          </tr>
        </thead>
        <tbody>{children}</tbody>
      </table>
    </div>
  );
}
