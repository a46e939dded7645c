// Small pieces every page uses: errors with their request id, empty states,
// times, a data loader and the hash router's links.
import { useCallback, useEffect, useRef, useState } from "preact/hooks";
import { del } from "./api.js";

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
  // Only the latest load's answer is taken: a reload after an action and a
  // change of page may end in either order.
  const latest = useRef(0);
  const load = useCallback(() => {
    const turn = ++latest.current;
    const current = () => turn === latest.current;
    setState((s) => ({ ...s, loading: true }));
    // A fetcher that throws at once (a bad date in the URL) fails the same way.
    Promise.resolve()
      .then(fetcher)
      .then(
        (data) => current() && setState({ data, error: null, loading: false }),
        // What was shown stays, with the error above it.
        (error) => current() && setState((s) => ({ data: s.data, error, loading: false })),
      );
    return () => {
      if (current()) latest.current++;
    };
  }, deps);
  useEffect(load, [load]);
  return { ...state, reload: load };
}

/** A time for people; in `timeZone` (with its name) when one is given. */
export function when(iso, timeZone) {
  if (!iso) return "—";
  const d = new Date(iso);
  try {
    if (timeZone) return d.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "long", timeZone });
  } catch {
    // A zone the node knows and this browser does not: shown in UTC.
    return `${d.toISOString().replace("T", " ").slice(0, 19)} UTC`;
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

/**
 * A table with a header row of `columns` (an empty name is an actions
 * column), and a pager under it when it is one page of a list (`pagination`
 * as the API gave it, `go` to change page).
 */
export function Table({ columns, children, pagination, go }) {
  return (
    <>
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
      {pagination && <Pager pagination={pagination} go={go} />}
    </>
  );
}

/** Previous and next for a list paged by number. */
export function Pager({ pagination, go }) {
  const page = pagination.page ?? 1;
  return (
    <nav class="pager" aria-label="Pages">
      <button type="button" class="secondary" disabled={!pagination.has_previous} onClick={() => go(page - 1)}>
        Previous
      </button>
      <span class="muted small">
        page {page}
        {pagination.total_pages ? ` of ${pagination.total_pages}` : ""}
      </span>
      <button type="button" class="secondary" disabled={!pagination.has_next} onClick={() => go(page + 1)}>
        Next
      </button>
    </nav>
  );
}

/** A secret the node shows only now (`value`), with what it is for. */
export function ShownOnce({ testid, children, value, done }) {
  return (
    <div class="card reveal" data-testid={testid}>
      <p>{children} Copy it now: it is not shown again.</p>
      <p>
        <code class="secret">{value}</code> <CopyButton text={value} />
      </p>
      <button type="button" class="secondary" onClick={done}>
        Done
      </button>
    </div>
  );
}

/**
 * Deletes `path` once the user confirms `question`, then runs `after`; a
 * refusal goes to `setError`.
 */
export async function deleteAfterAsking(question, path, after, setError) {
  if (!window.confirm(question)) return;
  setError(null);
  try {
    await del(path);
    after();
  } catch (err) {
    setError(err);
  }
}

/** A group of checkboxes: `chosen` of `options`, each change to `onChange`. */
export function Checkboxes({ legend, options, chosen, onChange }) {
  return (
    <fieldset>
      <legend>{legend}</legend>
      {options.map((option) => (
        <label class="check">
          <input
            type="checkbox"
            checked={chosen.includes(option)}
            onChange={(e) =>
              onChange(e.currentTarget.checked ? [...chosen, option] : chosen.filter((x) => x !== option))
            }
          />{" "}
          {option}
        </label>
      ))}
    </fieldset>
  );
}
