import { useState } from "preact/hooks";
import { can, get, put } from "../api.js";
import { ErrorBox, Loading, useLoad } from "../ui.jsx";

/** A script's config: keys are shown, values never; a save replaces them all. */
export function ConfigPanel({ script }) {
  const keys = useLoad(() => get(`/v1/scripts/${script.id}/config`), [script.id]);
  const [rows, setRows] = useState(null);
  const [error, setError] = useState(null);
  const [saved, setSaved] = useState(false);
  if (keys.error) return <ErrorBox error={keys.error} />;
  if (!keys.data) return <Loading />;
  const editing = rows ?? keys.data.keys.map((key) => ({ key, value: "" }));
  const writable = can("write:scripts");
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
