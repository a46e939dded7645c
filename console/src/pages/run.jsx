import { useEffect, useRef, useState } from "preact/hooks";
import { can, events, get, post } from "../api.js";
import { ErrorBox, Field, Status } from "../ui.jsx";

/** Parameters as a JSON object, or why they are not one. */
export function parseParameters(text) {
  if (!text.trim()) return { value: {} };
  try {
    const value = JSON.parse(text);
    if (value === null || typeof value !== "object" || Array.isArray(value)) {
      return { error: "Parameters must be a JSON object, such as {\"name\": \"Ada\"}." };
    }
    return { value };
  } catch (e) {
    return { error: `Not JSON: ${e.message}` };
  }
}

const FINAL = new Set(["completed", "failed", "timeout", "cancelled", "interrupted"]);

export function RunPanel({ script }) {
  const [text, setText] = useState("{}");
  const [limits, setLimits] = useState({ timeout_ms: "", memory_mb: "", fuel: "" });
  const [run, setRun] = useState(null); // { id, status, stdout, stderr, final }
  const [error, setError] = useState(null);
  const stream = useRef(null);
  useEffect(() => () => stream.current?.abort(), []);
  const parsed = parseParameters(text);
  if (!can("execute:scripts")) return <p class="muted">Your role cannot run scripts.</p>;

  async function start(e) {
    e.preventDefault();
    if (parsed.error) return;
    setError(null);
    stream.current?.abort();
    const body = { parameters: parsed.value };
    for (const [k, v] of Object.entries(limits)) if (v !== "") body[k] = Number(v);
    try {
      const accepted = await post(`/v1/scripts/${script.id}/execute`, body);
      const id = accepted.execution_id ?? accepted.id;
      const state = { id, status: accepted.status, stdout: "", stderr: "", final: null };
      setRun({ ...state });
      const abort = new AbortController();
      stream.current = abort;
      await events(
        id,
        (event, data) => {
          if (event === "status") state.status = data.status;
          else if (event === "stdout") state.stdout += data.data;
          else if (event === "stderr") state.stderr += data.data;
          else if (event === "done") {
            state.final = data;
            state.status = data.status;
          }
          setRun({ ...state });
        },
        abort.signal,
      );
      if (!state.final) {
        state.final = await get(`/v1/executions/${id}`);
        state.status = state.final.status;
        setRun({ ...state });
      }
    } catch (err) {
      if (err.name !== "AbortError") setError(err);
    }
  }

  async function cancel() {
    try {
      await post(`/v1/executions/${run.id}/cancel`);
    } catch (err) {
      setError(err);
    }
  }

  const running = run && !FINAL.has(run.status);
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
          {running && (
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
      <p>
        <a href={`#/executions/${run.id}`}>Execution {run.id}</a> <Status status={run.status} />
      </p>
      <h2 class="h3">stdout</h2>
      <pre class="output" data-testid="stdout" aria-live="polite">
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
          {x.limits.clamped?.length > 0 && ` (cut to the node's maximum: ${x.limits.clamped.map((c) => c.limit ?? c).join(", ")})`}
        </dd>
      </dl>
    </div>
  );
}
