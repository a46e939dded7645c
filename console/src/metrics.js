// What the dashboard reads from /metrics: a parser for the families it
// needs, a sample of their totals, and quantiles of the runs between two
// samples. Plain functions, tested by tests/units.test.mjs.

/** Runs that went wrong; a cancelled one did what it was told. */
export const FAILED = ["failed", "timeout", "interrupted"];

/**
 * Prometheus text as { name: [{ labels, value }] } for `kiln_` families.
 * Label values may hold `}`, `,` and escaped quotes (route templates do).
 */
export function parseMetrics(text) {
  const families = {};
  for (const line of text.split("\n")) {
    const m = /^(kiln_[a-z_]+)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) continue;
    const labels = {};
    for (const l of (m[2] ?? "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) {
      labels[l[1]] = l[2].replace(/\\(.)/g, (_, c) => (c === "n" ? "\n" : c));
    }
    const value = m[3] === "+Inf" ? Infinity : Number(m[3]);
    (families[m[1]] ??= []).push({ labels, value });
  }
  return families;
}

/** The totals a sample keeps: runs, failures and the duration histogram. */
export function sample(families) {
  const runs = { all: 0, failed: 0 };
  for (const { labels, value } of families.kiln_executions_total ?? []) {
    runs.all += value;
    if (FAILED.includes(labels.status)) runs.failed += value;
  }
  const buckets = new Map();
  for (const { labels, value } of families.kiln_execution_duration_seconds_bucket ?? []) {
    const le = labels.le === "+Inf" ? Infinity : Number(labels.le);
    buckets.set(le, (buckets.get(le) ?? 0) + value);
  }
  return { at: Date.now(), ...runs, buckets };
}

/**
 * The `q` quantile in ms of the runs between two samples' histograms,
 * interpolated within its bucket as Prometheus's `histogram_quantile` does;
 * null without runs, or when it falls in the open last bucket.
 */
export function quantile(before, after, q) {
  const bounds = [...after.buckets.keys()].sort((a, b) => a - b);
  const counts = bounds.map((b) => (after.buckets.get(b) ?? 0) - (before.buckets.get(b) ?? 0));
  const total = counts[counts.length - 1] ?? 0;
  if (!(total > 0)) return null;
  const rank = q * total;
  for (let i = 0; i < bounds.length; i++) {
    if (counts[i] >= rank) {
      if (bounds[i] === Infinity) return null;
      const lower = i === 0 ? 0 : bounds[i - 1];
      const below = i === 0 ? 0 : counts[i - 1];
      const within = counts[i] - below;
      const at = within > 0 ? lower + ((bounds[i] - lower) * (rank - below)) / within : bounds[i];
      return Math.round(at * 1000);
    }
  }
  return null;
}
