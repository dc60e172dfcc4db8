import { useRef, type ReactNode } from 'react';
import { useScrollable } from './useScrollable';

export interface Column<T> {
  key: string;
  header: ReactNode;
  render: (row: T) => ReactNode;
  /** `num` right-aligns with tabular figures. */
  className?: string;
}

/**
 * A data table with a caption (visible or for screen readers only) and real header
 * cells. Empty data renders `empty` in place of the table.
 */
export function Table<T>({
  caption,
  captionVisible = false,
  columns,
  rows,
  rowKey,
  empty,
}: {
  caption: string;
  captionVisible?: boolean;
  columns: Column<T>[];
  rows: T[];
  rowKey: (row: T) => string;
  empty?: ReactNode;
}) {
  const wrap = useRef<HTMLDivElement>(null);
  // A table wider than its panel scrolls sideways inside it, never the page; then the
  // keyboard must reach it too.
  const scrollable = useScrollable(wrap);
  if (rows.length === 0 && empty) return <>{empty}</>;
  return (
    <div
      ref={wrap}
      className="table-wrap"
      tabIndex={scrollable ? 0 : undefined}
      role={scrollable ? 'region' : undefined}
      aria-label={scrollable ? `${caption} (scrolls sideways)` : undefined}
    >
      <table className="table">
        <caption className={captionVisible ? undefined : 'sr-only'}>{caption}</caption>
        <thead>
          <tr>
            {columns.map((c) => (
              <th key={c.key} scope="col" className={c.className}>
                {c.header}
              </th>
            ))}
          </tr>
        </thead>
        <tbody>
          {rows.map((row) => (
            <tr key={rowKey(row)}>
              {columns.map((c) => (
                <td key={c.key} className={c.className}>
                  {c.render(row)}
                </td>
              ))}
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}
