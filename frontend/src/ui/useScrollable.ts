import { useEffect, useState, type RefObject } from 'react';

/**
 * Whether the element scrolls (its content is wider or taller than its box), kept up to
 * date as either changes size. A region that scrolls must be reachable with the
 * keyboard; one that does not should not add a tab stop.
 */
export function useScrollable(ref: RefObject<HTMLElement | null>): boolean {
  const [scrollable, setScrollable] = useState(false);
  useEffect(() => {
    const node = ref.current;
    if (!node) return;
    const check = () =>
      setScrollable(node.scrollWidth > node.clientWidth + 1 || node.scrollHeight > node.clientHeight + 1);
    check();
    if (typeof ResizeObserver === 'undefined') return;
    const observer = new ResizeObserver(check);
    observer.observe(node);
    for (const child of Array.from(node.children)) observer.observe(child);
    return () => observer.disconnect();
  });
  return scrollable;
}
