// Charts drawn as SVG, sized by CSS: bars for counts, lines for durations.
// Each names itself and carries its figures in a table for screen readers.

const W = 900;
const H = 200;
const PAD = { left: 44, right: 8, top: 10, bottom: 24 };

function scale(max) {
  if (!Number.isFinite(max) || max <= 0) return 1;
  const step = 10 ** Math.floor(Math.log10(max));
  return Math.ceil(max / step) * step;
}

/** The indexed values of `values` in runs without a missing one. */
function runs(values) {
  const out = [];
  let run = [];
  values.forEach((v, i) => {
    if (v == null) {
      if (run.length) out.push(run);
      run = [];
    } else run.push([i, v]);
  });
  if (run.length) out.push(run);
  return out;
}

/**
 * `series`: [{ label, values, className }], drawn stacked as bars when
 * `stacked`, else as lines; `labels` name the x positions.
 */
export function Chart({ title, labels, series: given, stacked = false, unit = "" }) {
  // Nothing drawn below zero or from a missing number (a counter that went
  // back when the node restarted); a line leaves a gap for a missing point.
  const series = given.map((s) => ({
    ...s,
    values: s.values.map((v) => (Number.isFinite(v) ? Math.max(0, v) : stacked ? 0 : null)),
  }));
  const n = labels.length;
  const totals = labels.map((_, i) =>
    stacked
      ? series.reduce((sum, s) => sum + (s.values[i] ?? 0), 0)
      : Math.max(0, ...series.map((s) => s.values[i] ?? 0)),
  );
  const top = scale(Math.max(0, ...totals));
  const x0 = PAD.left;
  const plotW = W - PAD.left - PAD.right;
  const plotH = H - PAD.top - PAD.bottom;
  const y = (v) => PAD.top + plotH - (v / top) * plotH;
  const slot = n > 0 ? plotW / n : plotW;
  const every = Math.max(1, Math.ceil(n / 8));
  const summary = `${title}; the table after it has the figures`;
  return (
    <figure class="chart">
      <figcaption>
        {title}
        <span class="legend">
          {series.map((s) => (
            <span class={`key ${s.className}`}>{s.label}</span>
          ))}
        </span>
      </figcaption>
      <svg viewBox={`0 0 ${W} ${H}`} role="img" aria-label={summary}>
        {[0, 0.5, 1].map((f) => (
          <g>
            <line class="grid" x1={x0} x2={W - PAD.right} y1={y(top * f)} y2={y(top * f)} />
            <text class="axis" x={x0 - 6} y={y(top * f) + 4} text-anchor="end">
              {Math.round(top * f)}
              {unit}
            </text>
          </g>
        ))}
        {labels.map((label, i) =>
          i % every === 0 ? (
            <text class="axis" x={x0 + slot * (i + 0.5)} y={H - 6} text-anchor="middle">
              {label}
            </text>
          ) : null,
        )}
        {stacked
          ? labels.map((_, i) => {
              let base = 0;
              return series.map((s) => {
                const v = s.values[i] ?? 0;
                const rect = (
                  <rect
                    class={s.className}
                    x={x0 + slot * i + slot * 0.15}
                    width={slot * 0.7}
                    y={y(base + v)}
                    height={y(base) - y(base + v)}
                  />
                );
                base += v;
                return rect;
              });
            })
          : series.flatMap((s) =>
              // One line per run of points: a missing one leaves a gap.
              runs(s.values).map((run) => (
                <polyline
                  class={`line ${s.className}`}
                  fill="none"
                  points={run.map(([i, v]) => `${x0 + slot * (i + 0.5)},${y(v)}`).join(" ")}
                />
              )),
            )}
      </svg>
      <table class="visually-hidden">
        <caption>{title}</caption>
        <thead>
          <tr>
            <th scope="col">When</th>
            {series.map((s) => (
              <th scope="col">{s.label}</th>
            ))}
          </tr>
        </thead>
        <tbody>
          {labels.map((label, i) => (
            <tr>
              <th scope="row">{label}</th>
              {series.map((s) => (
                <td>{s.values[i] ?? "—"}</td>
              ))}
            </tr>
          ))}
        </tbody>
      </table>
    </figure>
  );
}
