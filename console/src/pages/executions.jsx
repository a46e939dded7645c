import { useEffect, useState } from "preact/hooks";
import { can, get } from "../api.js";
import { ago, Empty, ErrorBox, Field, Loading, navigate, Status, useLoad, when, Table } from "../ui.jsx";
import { cancelRun, FINAL, follow, Outcome, RunOutput } from "./run.jsx";

const STATUSES = ["queued", "running", "completed", "failed", "timeout", "cancelled", "interrupted"];

/** `datetime-local` text (local time) as RFC 3339 UTC, or undefined. */
const utc = (local) => (local ? new Date(local).toISOString() : undefined);

export function ExecutionList({ query }) {
  const filters = {
    status: query.get("status") ?? "",
    script_id: query.get("script_id") ?? "",
    trigger: query.get("trigger") ?? "",
    after: query.get("after") ?? "",
    before: query.get("before") ?? "",
    cursor: query.get("cursor") ?? "",
  };
  const [script, setScript] = useState(filters.script_id);
  const list = useLoad(
    () =>
      get("/v1/executions", {
        limit: 25,
        status: filters.status,
        script_id: filters.script_id,
        trigger: filters.trigger,
        created_after: utc(filters.after),
        created_before: utc(filters.before),
        cursor: filters.cursor,
      }),
    Object.values(filters),
  );
  const filter = (change) => navigate("/executions", { ...filters, cursor: undefined, ...change });
  return (
    <section>
      <h1>Executions</h1>
      <form
        class="filters"
        role="search"
        onSubmit={(e) => {
          e.preventDefault();
          filter({ script_id: script });
        }}
      >
        <Field label="Status" id="exec-status">
          <select id="exec-status" value={filters.status} onChange={(e) => filter({ status: e.currentTarget.value })}>
            <option value="">any</option>
            {STATUSES.map((s) => (
              <option value={s}>{s}</option>
            ))}
          </select>
        </Field>
        <Field label="Script (id or name)" id="exec-script">
          <input id="exec-script" value={script} onInput={(e) => setScript(e.currentTarget.value)} />
        </Field>
        <Field label="Trigger" id="exec-trigger">
          <select
            id="exec-trigger"
            value={filters.trigger}
            onChange={(e) => filter({ trigger: e.currentTarget.value })}
          >
            <option value="">any</option>
            <option value="api">api</option>
            <option value="schedule">schedule</option>
            <option value="http">http</option>
            <option value="cli">cli</option>
          </select>
        </Field>
        <Field label="Created after" id="exec-after">
          <input
            id="exec-after"
            type="datetime-local"
            value={filters.after}
            onChange={(e) => filter({ after: e.currentTarget.value })}
          />
        </Field>
        <Field label="Created before" id="exec-before">
          <input
            id="exec-before"
            type="datetime-local"
            value={filters.before}
            onChange={(e) => filter({ before: e.currentTarget.value })}
          />
        </Field>
        <button type="submit" class="secondary">
          Filter
        </button>
      </form>
      <ErrorBox error={list.error} />
      {list.loading && !list.data && <Loading />}
      {list.data && list.data.data.length === 0 && (
        <Empty title="No execution matches.">
          {filters.status || filters.script_id || filters.after || filters.before
            ? "Widen the filters."
            : "Run a script from its Run tab, or with POST /v1/scripts/{id}/execute."}
        </Empty>
      )}
      {list.data && list.data.data.length > 0 && (
        <>
          <Table columns={["Execution", "Status", "Script", "Trigger", "Created", "Duration"]}>
            {list.data.data.map((x) => (
              <tr>
                <td>
                  <a href={`#/executions/${x.id}`}>
                    <code>{x.id.slice(0, 13)}…</code>
                  </a>
                </td>
                <td>
                  <Status status={x.status} />
                </td>
                <td>
                  {x.script_id ? (
                    <a href={`#/scripts/${x.script_id}`}>{x.script_id.slice(0, 13)}…</a>
                  ) : (
                    <span class="muted">ad hoc ({x.language})</span>
                  )}
                  {x.script_version != null && <span class="muted small"> v{x.script_version}</span>}
                </td>
                <td>{x.trigger}</td>
                <td title={when(x.created_at)}>{ago(x.created_at)}</td>
                <td>{x.duration_ms != null ? `${x.duration_ms} ms` : "—"}</td>
              </tr>
            ))}
          </Table>
          <nav class="pager" aria-label="Pages">
            <button
              type="button"
              class="secondary"
              disabled={!list.data.pagination.prev_cursor}
              onClick={() => navigate("/executions", { ...filters, cursor: list.data.pagination.prev_cursor })}
            >
              Newer
            </button>
            <button
              type="button"
              class="secondary"
              disabled={!list.data.pagination.next_cursor}
              onClick={() => navigate("/executions", { ...filters, cursor: list.data.pagination.next_cursor })}
            >
              Older
            </button>
          </nav>
        </>
      )}
    </section>
  );
}

export function ExecutionPage({ id }) {
  const loaded = useLoad(() => get(`/v1/executions/${encodeURIComponent(id)}`), [id]);
  const [live, setLive] = useState(null);
  const [error, setError] = useState(null);
  const x = loaded.data;
  // A run still going is followed live until it ends.
  useEffect(() => {
    if (!x || FINAL.has(x.status)) return undefined;
    const abort = new AbortController();
    follow(x.id, x.status, (state) => !abort.signal.aborted && setLive(state), abort.signal).catch(
      (err) => err.name !== "AbortError" && !abort.signal.aborted && setError(err),
    );
    return () => abort.abort();
  }, [x?.id]);
  if (loaded.error) return <ErrorBox error={loaded.error} />;
  if (!x) return <Loading />;
  const status = live?.status ?? x.status;
  const cancel = () => cancelRun(x.id, setError);
  return (
    <section class="stack">
      <div class="title">
        <div>
          <h1>Execution</h1>
          <p class="muted small">
            <code>{x.id}</code> · <Status status={status} /> · {x.trigger} · created {when(x.created_at)}
            {x.script_id && (
              <>
                {" "}
                · <a href={`#/scripts/${x.script_id}`}>script</a> v{x.script_version}
              </>
            )}
          </p>
        </div>
        {!FINAL.has(status) && can("execute:scripts") && (
          <button type="button" class="danger" onClick={cancel}>
            Cancel
          </button>
        )}
      </div>
      <ErrorBox error={error} />
      <h2 class="h3">Parameters</h2>
      <pre class="output">{JSON.stringify(x.parameters, null, 2)}</pre>
      {live ? (
        <RunOutput run={live} />
      ) : (
        <>
          <h2 class="h3">stdout</h2>
          <pre class="output" data-testid="stdout">
            {x.stdout || <span class="muted">(empty)</span>}
            {x.stdout_truncated && <span class="muted">… (cut at the node's output limit)</span>}
          </pre>
          {x.stderr && (
            <>
              <h2 class="h3">stderr</h2>
              <pre class="output stderr">{x.stderr}</pre>
            </>
          )}
          {FINAL.has(x.status) && <Outcome execution={x} />}
        </>
      )}
    </section>
  );
}
