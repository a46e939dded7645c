// The console's plain functions, without a browser: the event-stream
// reader, the metrics parser and quantiles, the parameters check.
import { test } from "node:test";
import assert from "node:assert/strict";
import { sseReader } from "../src/sse.js";
import { parseMetrics, quantile, sample } from "../src/metrics.js";
import { parseParameters } from "../src/params.js";

test("events split anywhere, CRLF or LF, come out whole and once", () => {
  const stream =
    'event: status\r\ndata: {"status":"running"}\r\n\r\n: keep-alive\n\nevent: stdout\ndata: {"data":"a\\nb"}\n\nevent: done\ndata: {"status":"completed"}\n\n';
  // Every way of cutting the stream in two gives the same events.
  const whole = sseReader().push(stream);
  assert.deepEqual(whole, [
    { event: "status", data: { status: "running" } },
    { event: "stdout", data: { data: "a\nb" } },
    { event: "done", data: { status: "completed" } },
  ]);
  for (let cut = 1; cut < stream.length; cut++) {
    const reader = sseReader();
    const got = [...reader.push(stream.slice(0, cut)), ...reader.push(stream.slice(cut))];
    assert.deepEqual(got, whole, `cut at ${cut}`);
  }
});

test("several data lines join, text that is not JSON stays text, CR alone ends a line", () => {
  const got = sseReader().push('data: one\rdata: two\r\rdata:{"n":1}\n\n');
  assert.deepEqual(got, [
    { event: "message", data: "one\ntwo" },
    { event: "message", data: { n: 1 } },
  ]);
  assert.deepEqual(sseReader().push("data: never ended\n"), []);
});

const METRICS = `# HELP kiln_executions_total Executions by status.
# TYPE kiln_executions_total counter
kiln_executions_total{status="completed",language="javascript"} 8
kiln_executions_total{status="failed",language="python"} 2
kiln_executions_total{status="cancelled",language="javascript"} 1
kiln_http_requests_total{route="/v1/scripts/{id_or_name}",method="GET",note="a \\"quoted\\" } brace"} 5
kiln_execution_duration_seconds_bucket{le="0.01",language="javascript"} 4
kiln_execution_duration_seconds_bucket{le="0.02",language="javascript"} 10
kiln_execution_duration_seconds_bucket{le="+Inf",language="javascript"} 11
kiln_queue_depth 0
# EOF`;

test("the metrics parser reads labels with braces and escaped quotes", () => {
  const families = parseMetrics(METRICS);
  assert.equal(families.kiln_executions_total.length, 3);
  const [request] = families.kiln_http_requests_total;
  assert.equal(request.labels.route, "/v1/scripts/{id_or_name}");
  assert.equal(request.labels.note, 'a "quoted" } brace');
  assert.equal(request.value, 5);
  assert.deepEqual(families.kiln_queue_depth, [{ labels: {}, value: 0 }]);
  const s = sample(families);
  assert.equal(s.all, 11);
  assert.equal(s.failed, 2, "a cancelled run is not a failure");
  assert.equal(s.buckets.get(Infinity), 11);
});

test("quantiles interpolate within their bucket and say nothing without runs", () => {
  const at = (pairs) => ({ buckets: new Map(pairs) });
  const before = at([
    [0.01, 0],
    [0.02, 0],
    [Infinity, 0],
  ]);
  const after = at([
    [0.01, 4],
    [0.02, 10],
    [Infinity, 10],
  ]);
  // Rank 5 of 10 is the first of the six runs between 10 and 20 ms.
  assert.equal(quantile(before, after, 0.5), 12);
  assert.equal(quantile(before, after, 0.2), 5);
  assert.equal(quantile(before, after, 1), 20);
  assert.equal(quantile(after, after, 0.5), null);
  // Past the last finite bound there is nothing to say.
  const open = at([
    [0.01, 0],
    [0.02, 0],
    [Infinity, 3],
  ]);
  assert.equal(quantile(before, open, 0.5), null);
});

test("parameters must be a JSON object", () => {
  assert.deepEqual(parseParameters('{"name": "Ada"}'), { value: { name: "Ada" } });
  assert.deepEqual(parseParameters("  "), { value: {} });
  for (const bad of ["[1]", "null", "3", '"x"']) assert.match(parseParameters(bad).error, /must be a JSON object/);
  assert.match(parseParameters("{").error, /^Not JSON/);
});
