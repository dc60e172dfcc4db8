import { formatJson } from '../lib/format';

/** JSON, pretty-printed in a scrollable block with an accessible name. */
export function JsonView({ value, label, wrap = true }: { value: unknown; label: string; wrap?: boolean }) {
  if (value === undefined || value === null) return <p className="muted">None</p>;
  const text = typeof value === 'string' ? value : formatJson(value);
  return (
    <pre className={`code${wrap ? ' code--wrap' : ''}`} aria-label={label} tabIndex={0}>
      {text}
    </pre>
  );
}
