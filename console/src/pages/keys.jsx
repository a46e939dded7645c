import { useState } from "preact/hooks";
import { can, currentSession, get, post } from "../api.js";
import {
  ShownOnce,
  Empty,
  ErrorBox,
  Field,
  Loading,
  useLoad,
  when,
  Table,
  deleteAfterAsking,
  Checkboxes,
} from "../ui.jsx";

const SCOPES = [
  "read:scripts",
  "write:scripts",
  "execute:scripts",
  "read:executions",
  "manage:schedules",
  "manage:webhooks",
  "admin",
];

export function Keys() {
  const [page, setPage] = useState(1);
  const list = useLoad(() => get("/v1/api-keys", { page, size: 50 }), [page]);
  const mine = SCOPES.filter((s) => can(s));
  const [name, setName] = useState("");
  const [scopes, setScopes] = useState(mine.filter((s) => s !== "admin"));
  const [days, setDays] = useState("");
  const [created, setCreated] = useState(null);
  const [error, setError] = useState(null);
  async function submit(e) {
    e.preventDefault();
    setError(null);
    try {
      const key = await post("/v1/api-keys", {
        name,
        scopes,
        expires_in_days: days ? Number(days) : undefined,
      });
      setCreated(key);
      setName("");
      list.reload();
    } catch (err) {
      setError(err);
    }
  }
  const revoke = (key) =>
    deleteAfterAsking(
      `Revoke ${key.name}? Programs using it stop working at once.`,
      `/v1/api-keys/${key.id}`,
      list.reload,
      setError,
    );
  return (
    <section class="stack">
      <h1>API keys</h1>
      <p class="muted">
        Keys act as {currentSession()?.username} with the scopes you give them (at most your own). Send one as{" "}
        <code>X-API-Key</code>.
      </p>
      {created && (
        <ShownOnce testid="new-key" value={created.key} done={() => setCreated(null)}>
          The key <strong>{created.name}</strong>.
        </ShownOnce>
      )}
      <form class="card stack" onSubmit={submit}>
        <h2 class="h3">New key</h2>
        <ErrorBox error={error} />
        <div class="row">
          <Field label="Name" id="key-name">
            <input
              id="key-name"
              required
              maxLength={128}
              value={name}
              onInput={(e) => setName(e.currentTarget.value)}
            />
          </Field>
          <Field label="Expires after (days)" id="key-days" hint="Empty: never.">
            <input
              id="key-days"
              type="number"
              min="1"
              max="3650"
              aria-describedby="key-days-hint"
              value={days}
              onInput={(e) => setDays(e.currentTarget.value)}
            />
          </Field>
        </div>
        <Checkboxes legend="Scopes" options={mine} chosen={scopes} onChange={setScopes} />
        <div>
          <button type="submit" disabled={scopes.length === 0}>
            Create key
          </button>
        </div>
      </form>
      <ErrorBox error={list.error} />
      {list.loading && !list.data && <Loading />}
      {list.data && list.data.data.length === 0 && (
        <Empty title="No API keys yet.">Create one above for a program or CI job.</Empty>
      )}
      {list.data && list.data.data.length > 0 && (
        <Table
          columns={["Name", "Prefix", "Scopes", "Created", "Expires", ""]}
          pagination={list.data.pagination}
          go={setPage}
        >
          {list.data.data.map((k) => (
            <tr>
              <td>{k.name}</td>
              <td>
                <code>{k.prefix}…</code>
              </td>
              <td class="small">{k.scopes.join(", ")}</td>
              <td>{when(k.created_at)}</td>
              <td>{k.expires_at ? when(k.expires_at) : "never"}</td>
              <td>
                <button type="button" class="danger" onClick={() => revoke(k)}>
                  Revoke
                </button>
              </td>
            </tr>
          ))}
        </Table>
      )}
    </section>
  );
}
