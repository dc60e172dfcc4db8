import type { ThroughputPoint } from '../api/types';
import { niceMax, stackedBars, ticks } from '../lib/chart';
import { formatDateTime } from '../lib/format';

const W = 720;
const H = 220;
const PAD = { top: 10, right: 10, bottom: 28, left: 40 };

function axisTime(iso: string, spanMs: number): string {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  if (spanMs > 2 * 86_400_000) return d.toLocaleDateString(undefined, { month: 'short', day: 'numeric' });
  return d.toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit' });
}

/**
 * Finished runs per time bucket as stacked bars (succeeded below, dead above), with a
 * data table for screen readers.
 */
export function ThroughputChart({ points }: { points: ThroughputPoint[] }) {
  if (!points.some((p) => p.succeeded + p.dead > 0)) return <p className="muted">No finished runs in this window.</p>;
  const max = niceMax(Math.max(...points.map((p) => p.succeeded + p.dead)), 4);
  const box = { x: PAD.left, y: PAD.top, width: W - PAD.left - PAD.right, height: H - PAD.top - PAD.bottom };
  const bars = stackedBars(
    points,
    [
      { key: 'succeeded', value: (p) => p.succeeded },
      { key: 'dead', value: (p) => p.dead },
    ],
    box,
    max,
  );
  const first = Date.parse(points[0]!.at);
  const last = Date.parse(points[points.length - 1]!.at);
  const span = Number.isNaN(first) || Number.isNaN(last) ? 0 : last - first;
  const labelEvery = Math.max(1, Math.ceil(points.length / 6));
  const totalSucceeded = points.reduce((s, p) => s + p.succeeded, 0);
  const totalDead = points.reduce((s, p) => s + p.dead, 0);

  return (
    <figure style={{ margin: 0 }}>
      <svg className="chart" viewBox={`0 0 ${W} ${H}`} aria-hidden="true" focusable="false">
        {ticks(max).map((t) => {
          const y = box.y + box.height - (t / max) * box.height;
          return (
            <g key={t}>
              <line className="chart__grid" x1={box.x} x2={box.x + box.width} y1={y} y2={y} />
              <text className="chart__axis-label" x={box.x - 6} y={y + 4} textAnchor="end">
                {t}
              </text>
            </g>
          );
        })}
        {bars.map((b, i) => (
          <g key={points[i]!.at}>
            {b.segments.map((s) =>
              s.height > 0 ? (
                <rect key={s.key} className={`chart__bar--${s.key}`} x={b.x} y={s.y} width={b.width} height={s.height}>
                  <title>{`${formatDateTime(points[i]!.at)}: ${s.value} ${s.key}`}</title>
                </rect>
              ) : null,
            )}
            {i % labelEvery === 0 && (
              <text className="chart__axis-label" x={b.x + b.width / 2} y={H - 8} textAnchor="middle">
                {axisTime(points[i]!.at, span)}
              </text>
            )}
          </g>
        ))}
      </svg>
      <figcaption className="legend">
        <span>
          <span className="legend__swatch chart__bar--succeeded" style={{ background: '#3f9c5c' }} />
          Succeeded ({totalSucceeded})
        </span>
        <span>
          <span className="legend__swatch" style={{ background: '#d0463a' }} />
          Dead ({totalDead})
        </span>
      </figcaption>
      <table className="sr-only">
        <caption>Finished runs per interval</caption>
        <thead>
          <tr>
            <th scope="col">Interval starting</th>
            <th scope="col">Succeeded</th>
            <th scope="col">Dead</th>
          </tr>
        </thead>
        <tbody>
          {points
            .filter((p) => p.succeeded + p.dead > 0)
            .map((p) => (
              <tr key={p.at}>
                <td>{formatDateTime(p.at)}</td>
                <td>{p.succeeded}</td>
                <td>{p.dead}</td>
              </tr>
            ))}
        </tbody>
      </table>
    </figure>
  );
}
