import { useEffect, useState } from 'react';
import { formatDateTime, formatRelative } from '../lib/format';

/** Re-renders every `ms` milliseconds, for "5s ago" texts. */
export function useNow(ms = 5000): number {
  const [now, setNow] = useState(() => Date.now());
  useEffect(() => {
    const t = setInterval(() => setNow(Date.now()), ms);
    return () => clearInterval(t);
  }, [ms]);
  return now;
}

/** A time shown relative ("3m ago"), with the exact time as tooltip and machine value. */
export function RelativeTime({ iso, now }: { iso: string | null | undefined; now?: number }) {
  if (!iso) return <span className="muted">—</span>;
  return (
    <time dateTime={iso} title={formatDateTime(iso)}>
      {formatRelative(iso, now)}
    </time>
  );
}

export function DateTime({ iso }: { iso: string | null | undefined }) {
  if (!iso) return <span className="muted">—</span>;
  return <time dateTime={iso}>{formatDateTime(iso)}</time>;
}
