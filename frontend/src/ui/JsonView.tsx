import { useRef } from 'react';
import { formatJson } from '../lib/format';
import { useScrollable } from './useScrollable';

/** JSON, pretty-printed in a block with an accessible name; keyboard-reachable when it scrolls. */
export function JsonView({ value, label, wrap = true }: { value: unknown; label: string; wrap?: boolean }) {
  const ref = useRef<HTMLPreElement>(null);
  const scrollable = useScrollable(ref);
  if (value === undefined || value === null) return <p className="muted">None</p>;
  const text = typeof value === 'string' ? value : formatJson(value);
  return (
    <pre ref={ref} className={`code${wrap ? ' code--wrap' : ''}`} role="region" aria-label={label} tabIndex={scrollable ? 0 : undefined}>
      {text}
    </pre>
  );
}
