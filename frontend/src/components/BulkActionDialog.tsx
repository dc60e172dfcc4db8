import { useMutation } from '@tanstack/react-query';
import { useEffect, useRef } from 'react';
import type { BulkResult } from '../api/types';
import { formatCount } from '../lib/format';
import { Button, Dialog, InlineError, Loading } from '../ui';

/** "1 run", "3 runs": `noun` is the plural. */
export function countOf(n: number, noun: string): string {
  return `${formatCount(n)} ${n === 1 ? noun.replace(/s$/, '') : noun}`;
}

/**
 * The two-step confirmation of a bulk verb over a filter:
 *   1. on open, a dry run counts what the filter matches (nothing changes),
 *   2. the user confirms with a button that names the count, and only then
 *   3. the real request runs, and the dialog reports how many were processed.
 */
export function BulkActionDialog({
  open,
  verb,
  noun,
  scope,
  danger = false,
  perform,
  onClose,
  onDone,
}: {
  open: boolean;
  /** "Retry", "Cancel", "Redrive", "Purge". */
  verb: string;
  /** Plural noun of the items: "runs", "dead letters". */
  noun: string;
  /** A sentence describing the filter, e.g. "dead runs of workflow “hello”". */
  scope: string;
  danger?: boolean;
  perform: (dryRun: boolean) => Promise<BulkResult>;
  onClose: () => void;
  onDone?: (result: BulkResult) => void;
}) {
  const dry = useMutation({ mutationFn: () => perform(true) });
  const apply = useMutation({
    mutationFn: () => perform(false),
    onSuccess: (result) => onDone?.(result),
  });
  const { mutate: count, reset: resetDry } = dry;
  const { reset: resetApply } = apply;
  const wasOpen = useRef(false);

  useEffect(() => {
    if (open && !wasOpen.current) {
      resetApply();
      resetDry();
      count();
    }
    wasOpen.current = open;
  }, [open, count, resetDry, resetApply]);

  const matched = dry.data?.matched ?? 0;
  const done = apply.isSuccess;
  const lower = verb.toLowerCase();

  let body;
  let footer;
  if (dry.isPending || dry.isIdle) {
    body = <Loading label={`Counting ${noun} that match…`} />;
    footer = <Button onClick={onClose}>Cancel</Button>;
  } else if (dry.isError) {
    body = <InlineError error={dry.error} />;
    footer = (
      <>
        <Button onClick={onClose}>Close</Button>
        <Button variant="primary" onClick={() => count()}>
          Count again
        </Button>
      </>
    );
  } else if (done) {
    body = (
      <p role="status">
        {verb} done: {formatCount(apply.data.processed)} of {countOf(apply.data.matched, noun)} processed.
        {apply.data.processed < apply.data.matched && ' Some changed state since the count and were left as they are.'}
      </p>
    );
    footer = (
      <Button variant="primary" onClick={onClose} data-autofocus>
        Close
      </Button>
    );
  } else if (matched === 0) {
    body = <p role="status">No {noun} match: nothing to {lower}.</p>;
    footer = <Button onClick={onClose}>Close</Button>;
  } else {
    const ids = dry.data?.ids ?? [];
    body = (
      <>
        <p role="status">
          <strong>{countOf(matched, noun)}</strong> {matched === 1 ? 'matches' : 'match'}: {scope}.
        </p>
        {ids.length > 0 && (
          <details>
            <summary>{ids.length === matched ? `Which ${matched === 1 ? 'one' : 'ones'}` : `The first ${countOf(Math.min(ids.length, 100), noun)}`}</summary>
            <ul className="mono">
              {ids.slice(0, 100).map((id) => (
                <li key={id}>{id}</li>
              ))}
            </ul>
          </details>
        )}
        {apply.isError && <InlineError error={apply.error} />}
      </>
    );
    footer = (
      <>
        <Button onClick={onClose} disabled={apply.isPending} data-autofocus>
          Keep them
        </Button>
        <Button variant={danger ? 'danger' : 'primary'} busy={apply.isPending} onClick={() => apply.mutate()}>
          {verb} {countOf(matched, noun)}
        </Button>
      </>
    );
  }

  return (
    <Dialog
      open={open}
      role="alertdialog"
      title={`${verb} ${noun}`}
      description={`${verb} applies to every one of the ${noun} the current filter matches, not only those on screen.`}
      onClose={apply.isPending ? () => {} : onClose}
      footer={footer}
    >
      {body}
    </Dialog>
  );
}
