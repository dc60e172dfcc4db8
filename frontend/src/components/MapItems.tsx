import { useInfiniteQuery, useQueryClient } from '@tanstack/react-query';
import { useEffect, useRef } from 'react';
import { Link } from 'react-router';
import { listMapItems } from '../api/endpoints';
import type { MapProgress, TaskStep } from '../api/types';
import { mapProgressText, mapShares } from '../lib/mapStep';
import { Button, ErrorState, InlineError, Loading, StatusPill, Table } from '../ui';

/** Items per page; "Load more" asks for the next this many. */
export const MAP_ITEMS_PAGE = 100;

export function mapItemsKey(runId: string, stepId: string) {
  return ['map-items', runId, stepId] as const;
}

/** A map step's progress in words, with a bar of the shares that succeeded and failed. */
export function MapProgressLine({ map }: { map: MapProgress }) {
  const shares = mapShares(map);
  return (
    <div className="stack" style={{ gap: 4 }}>
      <p style={{ margin: 0 }}>
        <strong>{mapProgressText(map)}</strong>
        {map.total == null && <span className="muted"> (the list of items is still being written)</span>}
      </p>
      {shares && (
        <div className="meter" aria-hidden="true">
          <span className="meter__part--success" style={{ width: `${shares.done * 100}%` }} />
          <span className="meter__part--danger" style={{ width: `${shares.failed * 100}%` }} />
        </div>
      )}
    </div>
  );
}

/** A map step's items, a page at a time: each item's status, child run and error. */
export function MapItems({ runId, step }: { runId: string; step: TaskStep }) {
  const queryClient = useQueryClient();
  const started = step.map != null;
  const items = useInfiniteQuery({
    queryKey: mapItemsKey(runId, step.id),
    queryFn: ({ pageParam, signal }) => listMapItems(runId, step.id, { after: pageParam, limit: MAP_ITEMS_PAGE }, signal),
    initialPageParam: undefined as number | undefined,
    getNextPageParam: (last) => last.next ?? undefined,
    enabled: started,
  });

  // The items' statuses change as child runs finish, and the run page only learns of it
  // through the step's counts: reload the pages shown whenever those move, not on a timer.
  const m = step.map;
  const progress = m ? `${step.status}:${m.total}:${m.done}:${m.failed}:${m.running}` : step.status;
  const seen = useRef(progress);
  useEffect(() => {
    if (seen.current === progress) return;
    seen.current = progress;
    void queryClient.invalidateQueries({ queryKey: mapItemsKey(runId, step.id) });
  }, [queryClient, runId, step.id, progress]);

  const list = items.data?.pages.flatMap((p) => p.items) ?? [];
  return (
    <div>
      <h3>Items</h3>
      {!m ? (
        <p className="muted">The step has not started its items yet.</p>
      ) : (
        <div className="stack">
          <MapProgressLine map={m} />
          {items.isPending ? (
            <Loading label="Loading items…" />
          ) : items.isError && !items.data ? (
            <ErrorState error={items.error} onRetry={() => void items.refetch()} />
          ) : (
            <>
              <Table
                caption={`Items of step ${step.id}`}
                rows={list}
                rowKey={(i) => String(i.index)}
                empty={<p className="muted">No items yet.</p>}
                columns={[
                  { key: 'index', header: '#', className: 'num', render: (i) => i.index },
                  { key: 'status', header: 'Status', render: (i) => <StatusPill status={i.status} /> },
                  {
                    key: 'run',
                    header: 'Child run',
                    render: (i) =>
                      i.childRunId ? (
                        <Link className="mono" to={`/runs/${encodeURIComponent(i.childRunId)}`}>
                          {i.childRunId}
                        </Link>
                      ) : (
                        <span className="muted">not started</span>
                      ),
                  },
                  {
                    key: 'err',
                    header: 'Error',
                    render: (i) =>
                      i.error ? (
                        <span className="error-cell" title={i.error}>
                          {i.error}
                        </span>
                      ) : null,
                  },
                ]}
              />
              {items.isError && <InlineError error={items.error} />}
              <div className="row">
                <span className="muted" aria-live="polite">
                  {m.total == null
                    ? `Showing ${list.length} item${list.length === 1 ? '' : 's'} so far`
                    : `Showing ${list.length} of ${m.total} item${m.total === 1 ? '' : 's'}`}
                </span>
                {items.hasNextPage && (
                  <Button onClick={() => void items.fetchNextPage()} busy={items.isFetchingNextPage}>
                    Load more
                  </Button>
                )}
              </div>
            </>
          )}
        </div>
      )}
    </div>
  );
}
