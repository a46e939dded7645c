import { useState } from "preact/hooks";
import { can, get, put } from "../api.js";
import { Empty, ErrorBox, Field, Loading, useLoad, when, Table, deleteAfterAsking } from "../ui.jsx";

/** Shared secrets (admins): names and grants are shown, values never. */
export function Secrets() {
  const list = useLoad(() => (can("admin") ? get("/v1/secrets") : Promise.resolve(null)), []);
  const [form, setForm] = useState({ name: "", value: "", scripts: "*" });
  const [error, setError] = useState(null);
  const [saved, setSaved] = useState(null);
  if (!can("admin")) return <Empty title="Only admins manage shared secrets." />;
  async function save(e) {
    e.preventDefault();
    setError(null);
    setSaved(null);
    try {
      const scripts = form.scripts
        .split(",")
        .map((s) => s.trim())
        .filter(Boolean);
      const body = { scripts };
      if (form.value) body.value = form.value;
      await put(`/v1/secrets/${encodeURIComponent(form.name)}`, body);
      setSaved(form.name);
      setForm({ name: "", value: "", scripts: "*" });
      list.reload();
    } catch (err) {
      setError(err);
    }
  }
  const remove = (secret) =>
    deleteAfterAsking(
      `Delete the secret ${secret.name}? Runs stop getting it at once.`,
      `/v1/secrets/${encodeURIComponent(secret.name)}`,
      list.reload,
      setError,
    );
  return (
    <section class="stack">
      <h1>Secrets</h1>
      <p class="muted">
        Shared secrets reach the runs of the scripts granted them as environment variables. Values are write-only;
        output that contains one is masked.
      </p>
      <form class="card stack" onSubmit={save}>
        <h2 class="h3">Set a secret</h2>
        <ErrorBox error={error} />
        {saved && (
          <p class="ok" role="status">
            {saved} saved.
          </p>
        )}
        <div class="row">
          <Field label="Name" id="secret-name" hint="An existing name changes that secret.">
            <input
              id="secret-name"
              required
              aria-describedby="secret-name-hint"
              value={form.name}
              onInput={(e) => setForm({ ...form, name: e.currentTarget.value })}
            />
          </Field>
          <Field label="Value" id="secret-value" hint="Empty keeps the current value (for a change of grants).">
            <input
              id="secret-value"
              type="password"
              autocomplete="off"
              aria-describedby="secret-value-hint"
              value={form.value}
              onInput={(e) => setForm({ ...form, value: e.currentTarget.value })}
            />
          </Field>
        </div>
        <Field
          label="Granted to"
          id="secret-scripts"
          hint="Script names or ids, separated by commas; * for every script."
        >
          <input
            id="secret-scripts"
            required
            aria-describedby="secret-scripts-hint"
            value={form.scripts}
            onInput={(e) => setForm({ ...form, scripts: e.currentTarget.value })}
          />
        </Field>
        <div>
          <button type="submit">Save secret</button>
        </div>
      </form>
      <ErrorBox error={list.error} />
      {!list.data && !list.error && <Loading />}
      {list.data && list.data.data.length === 0 && (
        <Empty title="No shared secrets yet.">Set one above; scripts read it from their environment.</Empty>
      )}
      {list.data && list.data.data.length > 0 && (
        <Table columns={["Name", "Granted to", "Updated", ""]}>
          {list.data.data.map((secret) => (
            <tr>
              <td>
                <code>{secret.name}</code>
              </td>
              <td class="small">{secret.scripts.join(", ")}</td>
              <td>{when(secret.updated_at)}</td>
              <td>
                <button type="button" class="danger" onClick={() => remove(secret)}>
                  Delete
                </button>
              </td>
            </tr>
          ))}
        </Table>
      )}
    </section>
  );
}
