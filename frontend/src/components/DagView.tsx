import { useMemo, type KeyboardEvent } from 'react';
import { layoutDag } from '../lib/dag';
import { statusLabel, statusTone } from '../lib/status';

export interface DagStep {
  id: string;
  needs?: readonly string[] | null;
  kind?: string | null;
  status?: string | null;
}

function clip(text: string, max: number): string {
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

/**
 * A workflow's steps drawn as an SVG DAG, left to right, each node coloured by its
 * status and labelled with it. With `onSelect`, nodes are buttons (Tab, Enter, Space).
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
  const layout = useMemo(() => layoutDag(steps), [steps]);
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
              aria-label={`${shownId}${shownMeta ? ` ${shownMeta}` : ''}${shownId !== n.id ? ` (step ${n.id})` : ''}${needs}`}
              onClick={interactive ? () => onSelect?.(n.id) : undefined}
              onKeyDown={interactive ? onKey(n.id) : undefined}
            >
              {/* A tooltip for pictures only: inside a button its text would be read as part of the button's text */}
              {!interactive && <title>{`${n.id}${meta ? ` — ${meta}` : ''}`}</title>}
              <rect width={n.width} height={n.height} rx="8" ry="8" />
              {/* one text element, so the node's text reads "id kind · status" with a space */}
              <text>
                <tspan className="dag__id" x="12" y={shownMeta ? 22 : n.height / 2 + 5}>
                  {shownId}
                </tspan>
                {shownMeta && (
                  <>
                    {' '}
                    <tspan className="dag__meta" x="12" y="41">
                      {shownMeta}
                    </tspan>
                  </>
                )}
              </text>
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
