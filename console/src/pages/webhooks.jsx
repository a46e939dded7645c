import { useState } from "preact/hooks";
import { get, madeByMe, post } from "../api.js";
import {
  ShownOnce,
  Empty,
  ErrorBox,
  Field,
  Loading,
  useLoad,
  when,
  Table,
  Pager,
  deleteAfterAsking,
  Checkboxes,
} from "../ui.jsx";

const EVENTS = [
  "execution.completed",
  "execution.failed",
  "execution.timeout",
  "execution.cancelled",
  "schedule.failed",
  "script.created",
  "script.updated",
  "script.deleted",
];

export function Webhooks({ id }) {
  if (id) return <Deliveries id={id} />;
  return <WebhookList />;
}

function WebhookList() {
  const [page, setPage] = useState(1);
  const list = useLoad(() => get("/v1/webhooks", { page, size: 50 }), [page]);
  const [url, setUrl] = useState("");
  const [events, setEvents] = useState(["execution.failed"]);
  const [created, setCreated] = useState(null);
  const [error, setError] = useState(null);
  async function create(e) {
    e.preventDefault();
    setError(null);
    try {
      setCreated(await post("/v1/webhooks", { url, events }));
      setUrl("");
      list.reload();
    } catch (err) {
      setError(err);
    }
  }
  const remove = (w) =>
    deleteAfterAsking(`Delete the webhook to ${w.url}?`, `/v1/webhooks/${w.id}`, list.reload, setError);
  return (
    <section class="stack">
      <h1>Webhooks</h1>
      {created && (
        <ShownOnce testid="new-secret" value={created.secret} done={() => setCreated(null)}>
          Deliveries to <strong>{created.url}</strong> are signed (Standard Webhooks) with this secret.
        </ShownOnce>
      )}
      <form class="card stack" onSubmit={create}>
        <h2 class="h3">New webhook</h2>
        <ErrorBox error={error} />
        <Field label="URL" id="webhook-url" hint="http or https; private addresses only where the node allows them.">
          <input
            id="webhook-url"
            type="url"
            required
            aria-describedby="webhook-url-hint"
            value={url}
            onInput={(e) => setUrl(e.currentTarget.value)}
          />
        </Field>
        <Checkboxes legend="Events" options={EVENTS} chosen={events} onChange={setEvents} />
        <div>
          <button type="submit" disabled={events.length === 0}>
            Create webhook
          </button>
        </div>
      </form>
      <ErrorBox error={list.error} />
      {!list.data && !list.error && <Loading />}
      {list.data && list.data.data.length === 0 && (
        <Empty title="No webhooks yet.">Add one above to hear of failed runs.</Empty>
      )}
      {list.data && list.data.data.length > 0 && (
        <Table columns={["URL", "Events", "Created", ""]} pagination={list.data.pagination} go={setPage}>
          {list.data.data.map((w) => (
            <tr>
              <td>
                <a href={`#/webhooks/${w.id}`}>{w.url}</a> {!w.active && <span class="badge">paused</span>}
              </td>
              <td class="small">{w.events.join(", ")}</td>
              <td>{when(w.created_at)}</td>
              <td>
                {madeByMe(w) && (
                  <button type="button" class="danger" onClick={() => remove(w)}>
                    Delete
                  </button>
                )}
              </td>
            </tr>
          ))}
        </Table>
      )}
    </section>
  );
}

function Deliveries({ id }) {
  const path = `/v1/webhooks/${encodeURIComponent(id)}`;
  const [page, setPage] = useState(1);
  const hook = useLoad(() => get(path), [path]);
  const attempts = useLoad(() => get(`${path}/deliveries`, { page, size: 50 }), [path, page]);
  const [sent, setSent] = useState(null);
  const [error, setError] = useState(null);
  async function test() {
    setError(null);
    try {
      setSent(await post(`${path}/test`));
      attempts.reload();
    } catch (err) {
      setError(err);
    }
  }
  if (hook.error) return <ErrorBox error={hook.error} />;
  if (!hook.data) return <Loading />;
  return (
    <section class="stack">
      <div class="title">
        <div>
          <h1>Webhook</h1>
          <p class="muted small">
            {hook.data.url} · {hook.data.events.join(", ")}
          </p>
        </div>
        {madeByMe(hook.data) && (
          <button type="button" onClick={test}>
            Send a test event
          </button>
        )}
      </div>
      <ErrorBox error={error ?? attempts.error} />
      {sent && (
        <p class="ok" role="status">
          Test event queued.
        </p>
      )}
      <div class="title">
        <h2>Delivery attempts</h2>
        <button type="button" class="secondary" onClick={attempts.reload}>
          Refresh
        </button>
      </div>
      {attempts.data && attempts.data.data.length === 0 && (
        <Empty title="No attempts yet.">Send a test event to see one.</Empty>
      )}
      {attempts.data && attempts.data.data.length > 0 && (
        <Table columns={["When", "Event", "Attempt", "Outcome", "Status", "Duration"]}>
          {attempts.data.data.map((a) => (
            <tr>
              <td>{when(a.at)}</td>
              <td>{a.event_type}</td>
              <td>{a.attempt}</td>
              <td>
                {a.outcome}
                {a.error && <div class="muted small">{a.error}</div>}
              </td>
              <td>{a.status_code ?? "—"}</td>
              <td>{a.duration_ms} ms</td>
            </tr>
          ))}
        </Table>
      )}
      {attempts.data && <Pager pagination={attempts.data.pagination} go={setPage} />}
    </section>
  );
}
