import { useEffect } from 'react';

/** Sets the document title to "<title> · Cairn" (screen readers announce it on navigation). */
export function useTitle(title: string): void {
  useEffect(() => {
    document.title = title ? `${title} · Cairn` : 'Cairn';
  }, [title]);
}
