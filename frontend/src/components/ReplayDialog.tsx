import { useMutation } from '@tanstack/react-query';
import { useEffect, useState, type FormEvent } from 'react';
import { replayTask } from '../api/endpoints';
import type { Json, TaskAccepted, TaskDetail } from '../api/types';
import { formatJson } from '../lib/format';
import { parseJsonInput } from '../lib/json';
import { Button, Dialog, Field, InlineError } from '../ui';

/**
 * Replay a run as a new run, from its first step or from a chosen step (earlier steps'
 * checkpoints are reused), with the input as it was or edited.
 */
export function ReplayDialog({
  open,
  run,
  initialStep,
  onClose,
  onReplayed,
}: {
  open: boolean;
  run: TaskDetail;
  initialStep?: string | null;
  onClose: () => void;
  onReplayed: (accepted: TaskAccepted) => void;
}) {
  const [fromStep, setFromStep] = useState('');
  const [input, setInput] = useState('');
  const [latest, setLatest] = useState(false);
  const [inputError, setInputError] = useState<string | null>(null);
  const replay = useMutation({
    mutationFn: (body: { fromStep?: string; input?: Json; latestDefinition?: boolean }) => replayTask(run.id, body),
    onSuccess: onReplayed,
  });
  const { reset } = replay;

  useEffect(() => {
    if (!open) return;
    setFromStep(initialStep ?? '');
    setInput(formatJson(run.input ?? {}));
    setLatest(false);
    setInputError(null);
    reset();
    // Only when the dialog opens: later changes to the run must not wipe the user's edits.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [open]);

  const submit = (e: FormEvent) => {
    e.preventDefault();
    const parsed = parseJsonInput(input);
    if ('error' in parsed) {
      setInputError(parsed.error);
      return;
    }
    setInputError(null);
    const original = formatJson(run.input ?? {});
    const body: { fromStep?: string; input?: Json; latestDefinition?: boolean } = {};
    if (fromStep) body.fromStep = fromStep;
    if (formatJson(parsed.value) !== original) body.input = parsed.value;
    if (latest) body.latestDefinition = true;
    replay.mutate(body);
  };

  return (
    <Dialog
      open={open}
      wide
      title="Replay run"
      description="Starts a new run of the same workflow. Steps before the chosen step keep their recorded outputs."
      onClose={replay.isPending ? () => {} : onClose}
    >
      <form className="stack" onSubmit={submit} aria-label="Replay options">
        <Field label="Start from step">
          {(p) => (
            <select {...p} className="select" value={fromStep} onChange={(e) => setFromStep(e.target.value)} data-autofocus>
              <option value="">The beginning (every step)</option>
              {run.steps.map((s) => (
                <option key={s.id} value={s.id}>
                  {s.id} ({s.status.replace(/_/g, ' ')})
                </option>
              ))}
            </select>
          )}
        </Field>
        <Field label="Input (JSON)" hint="Edit to replay with different input." error={inputError}>
          {(p) => (
            <textarea
              {...p}
              className="textarea"
              rows={10}
              spellCheck={false}
              value={input}
              onChange={(e) => setInput(e.target.value)}
            />
          )}
        </Field>
        <label className="checkbox">
          <input type="checkbox" checked={latest} onChange={(e) => setLatest(e.target.checked)} />
          Use the latest definition of the workflow (not the one this run started with)
        </label>
        {replay.isError && <InlineError error={replay.error} />}
        <div className="row row--end">
          <Button onClick={onClose} disabled={replay.isPending}>
            Cancel
          </Button>
          <Button type="submit" variant="primary" busy={replay.isPending}>
            Replay
          </Button>
        </div>
      </form>
    </Dialog>
  );
}
