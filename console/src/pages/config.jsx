import { useState } from "preact/hooks";
import { can, currentSession, get, mayChange, mayShare, put } from "../api.js";
import { ErrorBox, Field, Loading, useLoad } from "../ui.jsx";

/** A script's config values and who may change it. */
export function ConfigPanel({ script, reload }) {
  return (
    <div class="stack">
      <ConfigValues script={script} />
      <Sharing script={script} reload={reload} />
    </div>
  );
}

/** A script's config: keys are shown, values never; a save replaces them all. */
function ConfigValues({ script }) {
  const keys = useLoad(() => get(`/v1/scripts/${script.id}/config`), [script.id]);
  const [rows, setRows] = useState(null);
  const [error, setError] = useState(null);
  const [saved, setSaved] = useState(false);
  if (keys.error) return <ErrorBox error={keys.error} />;
  if (!keys.data) return <Loading />;
  const editing = rows ?? keys.data.keys.map((key) => ({ key, value: "" }));
  const writable = mayChange(script);
  const set = (i, change) => setRows(editing.map((r, j) => (i === j ? { ...r, ...change } : r)));
  async function save(e) {
    e.preventDefault();
    setError(null);
    setSaved(false);
    try {
      const values = Object.fromEntries(editing.filter((r) => r.key).map((r) => [r.key, r.value]));
      await put(`/v1/scripts/${script.id}/config`, { values });
      setRows(null);
      setSaved(true);
      keys.reload();
    } catch (err) {
      setError(err);
    }
  }
  return (
    <form class="stack" onSubmit={save}>
      <p class="muted">
        Scripts read these as environment variables. Values are write-only: they are never shown again, and saving
        replaces them all, so each key you keep needs its value typed again (or remove the key).
        {can("admin") && (
          <>
            {" "}
            Values several scripts share are <a href="#/secrets">shared secrets</a>.
          </>
        )}
      </p>
      <ErrorBox error={error} />
      {saved && (
        <p class="ok" role="status">
          Config saved.
        </p>
      )}
      {editing.length === 0 && <p class="muted">No config values yet.</p>}
      {editing.map((row, i) => (
        <div class="row" key={i}>
          <div class="field">
            <label for={`config-key-${i}`}>Key</label>
            <input
              id={`config-key-${i}`}
              value={row.key}
              readOnly={!writable}
              pattern="[A-Za-z0-9_.\-]{1,128}"
              onInput={(e) => set(i, { key: e.currentTarget.value })}
            />
          </div>
          <div class="field">
            <label for={`config-value-${i}`}>Value</label>
            <input
              id={`config-value-${i}`}
              type="password"
              autocomplete="off"
              required
              placeholder="hidden: type it again to keep it"
              readOnly={!writable}
              value={row.value}
              onInput={(e) => set(i, { value: e.currentTarget.value })}
            />
          </div>
          {writable && (
            <button type="button" class="secondary" onClick={() => setRows(editing.filter((_, j) => j !== i))}>
              Remove
            </button>
          )}
        </div>
      ))}
      {writable && (
        <div class="actions">
          <button type="button" class="secondary" onClick={() => setRows([...editing, { key: "", value: "" }])}>
            Add a value
          </button>
          <button type="submit">Save config</button>
        </div>
      )}
    </form>
  );
}

/**
 * Who owns the script and who edits it. The API names users by id; an admin
 * sees their usernames (others may not list users), everyone sees "you".
 */
function Sharing({ script, reload }) {
  const admin = can("admin");
  const users = useLoad(() => (admin ? get("/v1/users", { size: 100 }) : Promise.resolve(null)), [admin]);
  const [owner, setOwner] = useState(null);
  const [editors, setEditors] = useState(null);
  const [error, setError] = useState(null);
  const [saved, setSaved] = useState(false);
  const me = currentSession()?.userId;
  const names = new Map((users.data?.data ?? []).map((u) => [u.id, u.username]));
  const name = (id) => (id === me ? "you" : (names.get(id) ?? id));
  const shown = (ids) => ids.map((id) => names.get(id) ?? (id === me ? currentSession()?.username : id)).join(", ");
  async function save(e) {
    e.preventDefault();
    setError(null);
    setSaved(false);
    const body = {};
    if (owner !== null && owner.trim()) body.owner = owner.trim();
    if (editors !== null) {
      body.editors = editors
        .split(",")
        .map((n) => n.trim())
        .filter(Boolean);
    }
    try {
      await put(`/v1/scripts/${script.id}`, body);
      setOwner(null);
      setEditors(null);
      setSaved(true);
      reload();
    } catch (err) {
      setError(err);
    }
  }
  return (
    <form class="stack" onSubmit={save} aria-labelledby="sharing-title">
      <h2 id="sharing-title">Who may change it</h2>
      <p class="muted">
        Owned by <strong>{script.owner ? name(script.owner) : "no one (admins only)"}</strong>
        {script.editors.length > 0 ? (
          <>
            ; edited also by <strong>{script.editors.map(name).join(", ")}</strong>
          </>
        ) : null}
        . Only they and admins change its code, config and settings; everyone else who can read scripts reads and runs
        it.
      </p>
      <ErrorBox error={error} />
      {saved && (
        <p class="ok" role="status">
          Saved.
        </p>
      )}
      {mayShare(script) && (
        <>
          <Field label="Editors" id="editors" hint="Usernames (or ids), separated by commas; at most 32.">
            <input
              id="editors"
              aria-describedby="editors-hint"
              value={editors ?? shown(script.editors)}
              onInput={(e) => setEditors(e.currentTarget.value)}
            />
          </Field>
          <Field label="Give it to" id="owner" hint="A username; you keep it only as an editor if you list yourself.">
            <input
              id="owner"
              aria-describedby="owner-hint"
              placeholder={script.owner ? name(script.owner) : ""}
              value={owner ?? ""}
              onInput={(e) => setOwner(e.currentTarget.value)}
            />
          </Field>
          <div class="actions">
            <button type="submit" disabled={owner === null && editors === null}>
              Save who may change it
            </button>
          </div>
        </>
      )}
    </form>
  );
}
