// How a `map` step's progress reads and draws: the DAG node and the step panel share it,
// so both say the same thing.
import type { MapProgress, TaskStep } from '../api/types';

/**
 * "37/50 · 5 running · 1 failed": items done of the total (`?` while the list is still
 * being written), then the counts that need attention. Zero counts are left out so the
 * line fits in a DAG node.
 */
export function mapProgressText(map: MapProgress): string {
  const parts = [`${map.done}/${map.total ?? '?'}`];
  if (map.running > 0) parts.push(`${map.running} running`);
  if (map.failed > 0) parts.push(`${map.failed} failed`);
  return parts.join(' · ');
}

/**
 * The shares of the list that succeeded and failed, each 0–1, for a progress bar; null
 * while the total is unknown (or zero), since a share of nothing has no meaning.
 */
export function mapShares(map: MapProgress): { done: number; failed: number } | null {
  if (map.total == null || map.total <= 0) return null;
  const clamp = (n: number) => Math.min(1, Math.max(0, n / map.total!));
  const done = clamp(map.done);
  return { done, failed: Math.min(clamp(map.failed), 1 - done) };
}

/**
 * Whether a `map` step is still working through its items. The parent run records
 * almost no events meanwhile, so this is what tells the run page to keep polling.
 */
export function isMapInProgress(step: Pick<TaskStep, 'status' | 'map'>): boolean {
  return step.map != null && step.status === 'waiting';
}
