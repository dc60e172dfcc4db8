import { useMemo, type KeyboardEvent } from 'react';
import type { MapProgress } from '../api/types';
import { layoutDag } from '../lib/dag';
import { mapProgressText, mapShares } from '../lib/mapStep';
import { statusLabel, statusTone } from '../lib/status';

export interface DagStep {
  id: string;
  needs?: readonly string[] | null;
  kind?: string | null;
  status?: string | null;
  /** A map step's progress: the node grows a line and a bar for it. */
  map?: MapProgress | null;
}

function clip(text: string, max: number): string {
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

const NODE_WIDTH = 168;
const NODE_HEIGHT = 56;
/** A node with a progress line and bar under its kind and status. */
const MAP_NODE_HEIGHT = 80;
/** A generous width of one character of the progress line (11.5px, tabular figures). */
const PROGRESS_CHAR_WIDTH = 6.2;
const TEXT_X = 12;
const BAR_HEIGHT = 6;

function barPath(x: number, y: number, width: number): string {
  const r = (v: number) => Math.round(v * 100) / 100;
  return `M${r(x)},${y} h${r(width)} v${BAR_HEIGHT} h${r(-width)} z`;
}

/**
 * A workflow's steps drawn as an SVG DAG, left to right, each node coloured by its
 * status and labelled with it; a map step's node adds its progress in words and as a bar. With `onSelect`, nodes are buttons (Tab, Enter, Space).
 */
export function DagView({
  steps,
  label,
  selected,
  onSelect,
}: {
  steps: DagStep[];
  label: string;
  selected?: string | null;
  onSelect?: (id: string) => void;
}) {
  const progress = useMemo(
    () => new Map(steps.flatMap((s) => (s.map ? [[s.id, mapProgressText(s.map)] as const] : []))),
    [steps],
  );
  const layout = useMemo(() => {
    // Progress is never cut (its numbers are the point), so every node widens to fit the
    // longest line: columns stay aligned.
    const longest = Math.max(0, ...[...progress.values()].map((t) => t.length));
    const nodeWidth = Math.max(NODE_WIDTH, Math.ceil(2 * TEXT_X + longest * PROGRESS_CHAR_WIDTH));
    return layoutDag(
      steps.map((s) => ({ id: s.id, needs: s.needs, height: progress.has(s.id) ? MAP_NODE_HEIGHT : NODE_HEIGHT })),
      { nodeWidth, nodeHeight: NODE_HEIGHT },
    );
  }, [steps, progress]);
  const byId = useMemo(() => new Map(steps.map((s) => [s.id, s])), [steps]);
  if (steps.length === 0) return <p className="muted">This workflow has no steps.</p>;

  const onKey = (id: string) => (e: KeyboardEvent<SVGGElement>) => {
    if (e.key === 'Enter' || e.key === ' ') {
      e.preventDefault();
      onSelect?.(id);
    }
  };

  return (
    <div className="dag-wrap">
      <svg
        className="dag"
        role="group"
        aria-label={label}
        width={layout.width}
        height={layout.height}
        viewBox={`0 0 ${layout.width} ${layout.height}`}
      >
        <defs>
          <marker id="dag-arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse">
            <path d="M0,0 L10,5 L0,10 z" fill="#8a96a6" />
          </marker>
        </defs>
        <g aria-hidden="true">
          {layout.edges.map((e) => (
            <path key={`${e.from}->${e.to}`} className="dag__edge" d={e.path} markerEnd="url(#dag-arrow)" data-edge={`${e.from}->${e.to}`} />
          ))}
        </g>
        {layout.nodes.map((n) => {
          const step = byId.get(n.id);
          const status = step?.status ?? null;
          const tone = status ? statusTone(status) : 'neutral';
          const meta = [step?.kind, status ? statusLabel(status) : null].filter(Boolean).join(' · ');
          const needs = step?.needs?.length ? `, needs ${step.needs.join(', ')}` : '';
          // The name starts with exactly the text the node shows (so speech input finds it),
          // and names the whole id in parentheses when the node had to cut it.
          const shownId = clip(n.id, 20);
          const shownMeta = meta ? clip(meta, 26) : '';
          const shownProgress = progress.get(n.id) ?? '';
          const shares = step?.map ? mapShares(step.map) : null;
          const barWidth = n.width - 2 * TEXT_X;
          const barY = n.height - 14;
          const shown = [shownId, shownMeta, shownProgress].filter(Boolean).join(' ');
          const interactive = !!onSelect;
          const isSelected = selected === n.id;
          return (
            <g
              key={n.id}
              className={`dag__node tone-${tone}${interactive ? ' dag__node--interactive' : ''}${isSelected ? ' dag__node--selected' : ''}`}
              transform={`translate(${n.x},${n.y})`}
              data-step={n.id}
              data-status={status ?? undefined}
              role={interactive ? 'button' : 'img'}
              tabIndex={interactive ? 0 : undefined}
              aria-pressed={interactive ? isSelected : undefined}
              aria-label={`${shown}${shownId !== n.id ? ` (step ${n.id})` : ''}${needs}`}
              onClick={interactive ? () => onSelect?.(n.id) : undefined}
              onKeyDown={interactive ? onKey(n.id) : undefined}
            >
              {/* A tooltip for pictures only: inside a button its text would be read as part of the button's text */}
              {!interactive && <title>{[n.id, meta, shownProgress].filter(Boolean).join(' — ')}</title>}
              <rect width={n.width} height={n.height} rx="8" ry="8" />
              {/* one text element, so the node's text reads "id kind · status progress" with spaces */}
              <text>
                <tspan className="dag__id" x={TEXT_X} y={shownMeta || shownProgress ? 22 : n.height / 2 + 5}>
                  {shownId}
                </tspan>
                {shownMeta && (
                  <>
                    {' '}
                    <tspan className="dag__meta" x={TEXT_X} y="41">
                      {shownMeta}
                    </tspan>
                  </>
                )}
                {shownProgress && (
                  <>
                    {' '}
                    <tspan className="dag__progress" x={TEXT_X} y="59">
                      {shownProgress}
                    </tspan>
                  </>
                )}
              </text>
              {/* Paths, not rects: the node's rect rules (tone fill, focus stroke) must not paint the bar. */}
              {shownProgress && (
                <g className="dag__bar" aria-hidden="true" data-bar={n.id}>
                  <path className="dag__bar-track" d={barPath(TEXT_X, barY, barWidth)} />
                  {shares && shares.done > 0 && (
                    <path className="dag__bar-done" d={barPath(TEXT_X, barY, shares.done * barWidth)} />
                  )}
                  {shares && shares.failed > 0 && (
                    <path
                      className="dag__bar-failed"
                      d={barPath(TEXT_X + shares.done * barWidth, barY, shares.failed * barWidth)}
                    />
                  )}
                </g>
              )}
            </g>
          );
        })}
      </svg>
      {layout.missing.length > 0 && (
        <p className="muted">Unknown dependencies not drawn: {layout.missing.join(', ')}</p>
      )}
    </div>
  );
}
