import type { Json } from '../api/types';

/** Parses JSON typed by a person; `{ error }` explains what is wrong with it. */
export function parseJsonInput(text: string): { value: Json } | { error: string } {
  if (!text.trim()) return { error: 'Input is required; use {} for none.' };
  try {
    return { value: JSON.parse(text) as Json };
  } catch (e) {
    return { error: `Not valid JSON: ${(e as Error).message}` };
  }
}
