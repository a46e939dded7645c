import { useEffect, useRef, useState } from "preact/hooks";
import { can, events, get, post } from "../api.js";
import { ErrorBox, Field, Status } from "../ui.jsx";
import { parseParameters } from "../params.js";

export const FINAL = new Set(["completed", "failed", "timeout", "cancelled", "interrupted"]);

/**
 * Follows execution `id` live: `show` gets its state as output arrives
 * ({ id, status, stdout, stderr, final }). The final record replaces the
 * streamed output (a slow reader may have missed pieces of the stream); a
 * stream that ends without it, or cannot be had, is followed by a read of
 * the record, which shows the run's status at least.
 */
export async function follow(id, status, show, signal) {
  const state = { id, status, stdout: "", stderr: "", final: null };
  const end = (x) => {
    Object.assign(state, { final: x, status: x.status, stdout: x.stdout, stderr: x.stderr });
  };
  show({ ...state });
  try {
    await events(
      id,
      (event, data) => {
        if (event === "status") state.status = data.status;
        else if (event === "stdout") state.stdout += data.data;
        else if (event === "stderr") state.stderr += data.data;
        else if (event === "done") end(data);
        show({ ...state });
      },
      signal,
    );
  } catch (e) {
    // No stream (too many watchers, a dropped connection): the record
    // still tells how the run is doing.
    if (signal.aborted) throw e;
  }
  if (!state.final && !signal.aborted) {
    end(await get(`/v1/executions/${encodeURIComponent(id)}`));
    show({ ...state });
  }
}

/** Asks the node to cancel run `id`; a refusal goes to `setError`. */
export async function cancelRun(id, setError) {
  try {
    await post(`/v1/executions/${encodeURIComponent(id)}/cancel`);
  } catch (err) {
    setError(err);
  }
}

export function RunPanel({ script }) {
  const [text, setText] = useState("{}");
  const [limits, setLimits] = useState({ timeout_ms: "", memory_mb: "", fuel: "" });
  const [run, setRun] = useState(null);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState(null);
  // One run followed at a time; leaving the page stops following it.
  const stream = useRef(null);
  useEffect(() => () => stream.current?.abort(), []);
  const parsed = parseParameters(text);
  if (!can("execute:scripts")) return <p class="muted">Your role cannot run scripts.</p>;

  async function start(e) {
    e.preventDefault();
    if (parsed.error || busy) return;
    setError(null);
    stream.current?.abort();
    const abort = new AbortController();
    stream.current = abort;
    setBusy(true);
    const body = { parameters: parsed.value };
    for (const [k, v] of Object.entries(limits)) if (v !== "") body[k] = Number(v);
    try {
      const accepted = await post(`/v1/scripts/${script.id}/execute`, body);
      if (abort.signal.aborted) return;
      await follow(
        accepted.execution_id,
        accepted.status,
        (state) => !abort.signal.aborted && setRun(state),
        abort.signal,
      );
    } catch (err) {
      if (err.name !== "AbortError" && !abort.signal.aborted) setError(err);
    } finally {
      if (!abort.signal.aborted) setBusy(false);
    }
  }

  const cancel = () => cancelRun(run.id, setError);

  const running = busy || (run && !FINAL.has(run.status));
  return (
    <div class="stack">
      <form onSubmit={start} class="stack">
        <Field
          label="Parameters (JSON object)"
          id="run-parameters"
          hint={parsed.error ?? "Passed to main; a component reads them on stdin."}
        >
          <textarea
            id="run-parameters"
            rows="5"
            class={`code ${parsed.error ? "invalid" : ""}`}
            aria-invalid={parsed.error ? "true" : "false"}
            aria-describedby="run-parameters-hint"
            spellcheck={false}
            value={text}
            onInput={(e) => setText(e.currentTarget.value)}
          />
        </Field>
        <details>
          <summary>Limits</summary>
          <div class="row">
            {[
              ["timeout_ms", "Timeout (ms)"],
              ["memory_mb", "Memory (MB)"],
              ["fuel", "Fuel"],
            ].map(([key, label]) => (
              <Field label={label} id={`run-${key}`}>
                <input
                  id={`run-${key}`}
                  type="number"
                  min="1"
                  value={limits[key]}
                  placeholder="node default"
                  onInput={(e) => setLimits({ ...limits, [key]: e.currentTarget.value })}
                />
              </Field>
            ))}
          </div>
        </details>
        <div class="actions">
          <button type="submit" disabled={!!parsed.error || running}>
            Run
          </button>
          {run && !FINAL.has(run.status) && (
            <button type="button" class="danger" onClick={cancel}>
              Cancel
            </button>
          )}
        </div>
      </form>
      <ErrorBox error={error} />
      {run && <RunOutput run={run} />}
    </div>
  );
}

export function RunOutput({ run }) {
  const f = run.final;
  return (
    <div class="stack" data-testid="run-output">
      <p aria-live="polite">
        <a href={`#/executions/${run.id}`}>Execution {run.id}</a> <Status status={run.status} />
      </p>
      <h2 class="h3">stdout</h2>
      <pre class="output" data-testid="stdout">
        {run.stdout || <span class="muted">(nothing yet)</span>}
      </pre>
      {run.stderr && (
        <>
          <h2 class="h3">stderr</h2>
          <pre class="output stderr" data-testid="stderr">
            {run.stderr}
          </pre>
        </>
      )}
      {f && <Outcome execution={f} />}
    </div>
  );
}

/** An execution's end: result or error, and what it used. */
export function Outcome({ execution: x }) {
  return (
    <div class="stack" data-testid="outcome">
      {x.error && (
        <div class="error" role="status">
          <strong>{x.error.code}</strong>: {x.error.message}
        </div>
      )}
      {x.result !== undefined && x.result !== null && (
        <>
          <h2 class="h3">Result</h2>
          <pre class="output" data-testid="result">
            {JSON.stringify(x.result, null, 2)}
          </pre>
        </>
      )}
      <dl class="facts">
        <dt>Duration</dt>
        <dd>{x.duration_ms != null ? `${x.duration_ms} ms` : "—"}</dd>
        <dt>Fuel</dt>
        <dd>{x.fuel_consumed != null ? x.fuel_consumed.toLocaleString() : "—"}</dd>
        <dt>Peak memory</dt>
        <dd>{x.peak_memory_bytes != null ? `${(x.peak_memory_bytes / 1048576).toFixed(1)} MiB` : "—"}</dd>
        <dt>Exit code</dt>
        <dd>{x.exit_code ?? "—"}</dd>
        <dt>Limits</dt>
        <dd>
          {x.limits.timeout_ms} ms, {x.limits.memory_mb} MB, fuel {x.limits.fuel ?? "unmetered"}
          {x.limits.clamped?.length > 0 &&
            ` (cut to the node's maximum: ${x.limits.clamped.map((c) => c.limit ?? c).join(", ")})`}
        </dd>
      </dl>
    </div>
  );
}
