import { useEffect, useState } from "preact/hooks";
import { can, get, raw } from "../api.js";
import { Chart } from "../chart.jsx";
import { Empty, ErrorBox, Loading, useLoad, Table } from "../ui.jsx";
import { FAILED, parseMetrics, quantile, sample } from "../metrics.js";

const SAMPLE_MS = 5_000;
/** Samples kept: ten minutes of them. */
const SAMPLES = 120;

/** Samples /metrics while the dashboard is open. */
function useLiveMetrics() {
  const [samples, setSamples] = useState([]);
  const [error, setError] = useState(null);
  useEffect(() => {
    let live = true;
    let timer;
    // The next sample is asked for only after the last one is in, so a slow
    // node never has several of this page's requests waiting.
    const take = () =>
      raw("GET", "/metrics", { signal: AbortSignal.timeout(SAMPLE_MS) })
        .then((r) => r.text())
        .then((text) => {
          if (!live) return;
          setError(null);
          setSamples((s) => [...s.slice(-(SAMPLES - 1)), sample(parseMetrics(text))]);
        })
        .catch((e) => live && setError(e))
        .finally(() => {
          if (live) timer = setTimeout(take, SAMPLE_MS);
        });
    take();
    return () => {
      live = false;
      clearTimeout(timer);
    };
  }, []);
  return { samples, error };
}

function Live() {
  const { samples, error } = useLiveMetrics();
  if (error) return <ErrorBox error={error} />;
  if (samples.length < 2) return <p class="muted">Sampling this node's metrics every 5 s…</p>;
  const pairs = samples.slice(1).map((s, i) => [samples[i], s]);
  // A counter that went back (the node restarted) has no rate for that step.
  const perMinute = (f) =>
    pairs.map(([a, b]) => (f(b) < f(a) ? null : Math.round(((f(b) - f(a)) * 60_000) / Math.max(1, b.at - a.at))));
  const labels = pairs.map(([, b]) =>
    new Date(b.at).toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" }),
  );
  return (
    <div class="charts">
      <Chart
        title="Executions per minute (live)"
        labels={labels}
        stacked
        series={[
          { label: "completed or cancelled", className: "fill-ok", values: perMinute((s) => s.all - s.failed) },
          { label: "failed", className: "fill-bad", values: perMinute((s) => s.failed) },
        ]}
      />
      <Chart
        title="Duration, p50 and p99 (live, ms)"
        labels={labels}
        unit=""
        series={[
          { label: "p50", className: "p50", values: pairs.map(([a, b]) => quantile(a, b, 0.5)) },
          { label: "p99", className: "p99", values: pairs.map(([a, b]) => quantile(a, b, 0.99)) },
        ]}
      />
    </div>
  );
}

export function Dashboard() {
  const reads = can("read:executions");
  const usage = useLoad(() => (reads ? get("/v1/analytics/usage", { period: "30d" }) : Promise.resolve(null)), [reads]);
  const today = useLoad(() => (reads ? get("/v1/analytics/usage", { period: "24h" }) : Promise.resolve(null)), [reads]);
  if (!reads) {
    return (
      <section>
        <h1>Dashboard</h1>
        <Empty title="Your role does not read executions.">
          <a href="#/scripts">Browse the scripts</a> instead.
        </Empty>
      </section>
    );
  }
  const u = usage.data;
  const t = today.data;
  const failures = (x) => FAILED.reduce((sum, s) => sum + (x?.by_status?.[s] ?? 0), 0);
  return (
    <section class="stack">
      <h1>Dashboard</h1>
      <ErrorBox error={usage.error ?? today.error} />
      {t && (
        <dl class="cards">
          <div>
            <dt>Executions, last 24 h</dt>
            <dd>{t.executions.toLocaleString()}</dd>
          </div>
          <div>
            <dt>Failed, last 24 h</dt>
            <dd>{failures(t).toLocaleString()}</dd>
          </div>
          <div>
            <dt>p50 / p99 duration</dt>
            <dd>
              {t.duration_ms.p50 ?? "—"} / {t.duration_ms.p99 ?? "—"} ms
            </dd>
          </div>
          <div>
            <dt>Fuel per execution</dt>
            <dd>{t.fuel.per_execution?.toLocaleString() ?? "—"}</dd>
          </div>
        </dl>
      )}
      <Live />
      {!u && <Loading />}
      {u && (
        <>
          <Chart
            title="Executions per day, last 30 days"
            labels={u.daily.map((d) => d.date.slice(5))}
            stacked
            series={[
              {
                label: "completed or cancelled",
                className: "fill-ok",
                values: u.daily.map((d) => d.executions - failures(d)),
              },
              { label: "failed", className: "fill-bad", values: u.daily.map(failures) },
            ]}
          />
          <h2>Busiest scripts, last 30 days</h2>
          {u.top_scripts.length === 0 ? (
            <Empty title="Nothing has run yet.">
              <a href="#/scripts">Open a script</a> and run it from its Run tab.
            </Empty>
          ) : (
            <Table columns={["Script", "Executions", "Failures", "p50"]}>
              {u.top_scripts.map((s) => (
                <tr>
                  <td>
                    {s.name ? <a href={`#/scripts/${s.script_id}`}>{s.name}</a> : <span class="muted">deleted</span>}
                  </td>
                  <td>{s.executions}</td>
                  <td>{s.failures}</td>
                  <td>{s.p50_duration_ms ?? "—"} ms</td>
                </tr>
              ))}
            </Table>
          )}
        </>
      )}
    </section>
  );
}
