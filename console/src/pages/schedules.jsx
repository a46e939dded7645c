import { useEffect, useState } from "preact/hooks";
import { get, madeByMe, post, put } from "../api.js";
import { Empty, ErrorBox, Field, Loading, Status, useLoad, when, Table, deleteAfterAsking } from "../ui.jsx";
import { parseParameters } from "../params.js";

const zones = () => {
  try {
    return Intl.supportedValuesOf("timeZone");
  } catch {
    return ["UTC"];
  }
};

export function Schedules() {
  const [page, setPage] = useState(1);
  const list = useLoad(() => get("/v1/schedules", { page, size: 50 }), [page]);
  const scripts = useLoad(() => get("/v1/scripts", { size: 100, sort: "name", order: "asc" }), []);
  const names = new Map((scripts.data?.data ?? []).map((s) => [s.id, s.name]));
  const [error, setError] = useState(null);
  async function toggle(s) {
    setError(null);
    try {
      await put(`/v1/schedules/${s.id}`, { active: !s.active });
      list.reload();
    } catch (err) {
      setError(err);
    }
  }
  const remove = (s) =>
    deleteAfterAsking(`Delete the schedule ${s.name}?`, `/v1/schedules/${s.id}`, list.reload, setError);
  return (
    <section class="stack">
      <h1>Schedules</h1>
      <NewSchedule created={list.reload} scripts={scripts} />
      <ErrorBox error={error ?? list.error} />
      {list.loading && !list.data && <Loading />}
      {list.data && list.data.data.length === 0 && (
        <Empty title="No schedules yet.">Create one above: a cron, its time zone and the script it runs.</Empty>
      )}
      {list.data && list.data.data.length > 0 && (
        <Table columns={["Name", "Cron", "Next runs", "Last run", ""]} pagination={list.data.pagination} go={setPage}>
          {list.data.data.map((s) => (
            <tr>
              <td>
                {s.name}
                <div class="muted small">
                  runs <a href={`#/scripts/${s.script_id}`}>{names.get(s.script_id) ?? "its script"}</a> ·{" "}
                  {s.active ? "active" : "paused"}
                </div>
              </td>
              <td>
                <code>{s.cron}</code>
                <div class="muted small">{s.timezone}</div>
              </td>
              <td>
                <NextRuns times={s.next_runs} zone={s.timezone} />
              </td>
              <td>
                {s.last_execution_id ? (
                  <a href={`#/executions/${s.last_execution_id}`}>
                    {when(s.last_run_at)} {s.last_status && <Status status={s.last_status} />}
                  </a>
                ) : (
                  <span class="muted">not yet</span>
                )}
              </td>
              <td class="actions">
                {madeByMe(s) && (
                  <>
                    <button type="button" class="secondary" onClick={() => toggle(s)}>
                      {s.active ? "Pause" : "Resume"}
                    </button>
                    <button type="button" class="danger" onClick={() => remove(s)}>
                      Delete
                    </button>
                  </>
                )}
              </td>
            </tr>
          ))}
        </Table>
      )}
    </section>
  );
}

/** Fire times, shown in the schedule's own zone. */
function NextRuns({ times, zone }) {
  if (!times?.length) return <span class="muted">none</span>;
  return (
    <ol class="times" data-testid="next-runs">
      {times.map((t) => (
        <li>
          <time datetime={t}>{when(t, zone)}</time>
        </li>
      ))}
    </ol>
  );
}

function NewSchedule({ created, scripts }) {
  const [form, setForm] = useState({
    name: "",
    script_id: "",
    cron: "*/5 * * * *",
    timezone: Intl.DateTimeFormat().resolvedOptions().timeZone ?? "UTC",
    parameters: "{}",
  });
  const [preview, setPreview] = useState(null);
  const [error, setError] = useState(null);
  const set = (change) => setForm((f) => ({ ...f, ...change }));
  // The next five times, from the node itself, as the cron and zone change.
  useEffect(() => {
    if (!form.cron.trim()) {
      setPreview(null);
      return undefined;
    }
    // An answer for a cron or zone since changed is dropped.
    let current = true;
    const timer = setTimeout(() => {
      get("/v1/schedules/preview", { cron: form.cron, timezone: form.timezone }).then(
        (p) => current && setPreview({ times: p.next_runs }),
        (e) => current && setPreview({ error: e }),
      );
    }, 250);
    return () => {
      current = false;
      clearTimeout(timer);
    };
  }, [form.cron, form.timezone]);
  const parameters = parseParameters(form.parameters);
  async function submit(e) {
    e.preventDefault();
    setError(null);
    try {
      await post("/v1/schedules", {
        name: form.name,
        script_id: form.script_id,
        cron: form.cron,
        timezone: form.timezone,
        parameters: parameters.value,
      });
      set({ name: "" });
      created();
    } catch (err) {
      setError(err);
    }
  }
  const options = scripts.data?.data ?? [];
  return (
    <details class="card" open>
      <summary>New schedule</summary>
      <form class="stack" onSubmit={submit}>
        <ErrorBox error={error ?? scripts.error} />
        {scripts.data && options.length === 0 && <p class="muted">Create a script first: a schedule runs one.</p>}
        <div class="row">
          <Field label="Name" id="schedule-name">
            <input
              id="schedule-name"
              required
              maxLength={128}
              value={form.name}
              onInput={(e) => set({ name: e.currentTarget.value })}
            />
          </Field>
          <Field label="Script" id="schedule-script" hint="Its name or id.">
            <input
              id="schedule-script"
              required
              list="schedule-script-names"
              aria-describedby="schedule-script-hint"
              value={form.script_id}
              onInput={(e) => set({ script_id: e.currentTarget.value })}
            />
            <datalist id="schedule-script-names">
              {options.map((s) => (
                <option value={s.name} />
              ))}
            </datalist>
          </Field>
        </div>
        <div class="row">
          <Field label="Cron" id="schedule-cron" hint="5 fields (minute first), 6 (seconds first), or @hourly, @daily…">
            <input
              id="schedule-cron"
              required
              class="code"
              aria-describedby="schedule-cron-hint"
              value={form.cron}
              onInput={(e) => set({ cron: e.currentTarget.value })}
            />
          </Field>
          <Field label="Time zone" id="schedule-zone">
            <select id="schedule-zone" value={form.timezone} onChange={(e) => set({ timezone: e.currentTarget.value })}>
              {["UTC", ...zones().filter((z) => z !== "UTC")].map((z) => (
                <option value={z}>{z}</option>
              ))}
            </select>
          </Field>
        </div>
        <div aria-live="polite">
          {preview?.error && <ErrorBox error={preview.error} quiet />}
          {preview?.times && (
            <div>
              <p class="small muted">Next five runs:</p>
              <NextRuns times={preview.times} zone={form.timezone} />
            </div>
          )}
        </div>
        <Field
          label="Parameters (JSON object)"
          id="schedule-parameters"
          hint={parameters.error ?? "Every run gets these."}
        >
          <textarea
            id="schedule-parameters"
            rows="3"
            class="code"
            aria-invalid={parameters.error ? "true" : "false"}
            aria-describedby="schedule-parameters-hint"
            value={form.parameters}
            onInput={(e) => set({ parameters: e.currentTarget.value })}
          />
        </Field>
        <div>
          <button type="submit" disabled={!!parameters.error}>
            Create schedule
          </button>
        </div>
      </form>
    </details>
  );
}
