import { useMutation, useQuery, useQueryClient } from '@tanstack/react-query';
import { useState, type FormEvent } from 'react';
import { Link, useNavigate } from 'react-router';
import { createProject, listProjects } from '../api/endpoints';
import type { ProjectSummary } from '../api/types';
import { RequireRole, useCan } from '../auth/auth';
import { useTitle } from '../lib/useTitle';
import {
  Button,
  Dialog,
  EmptyState,
  ErrorState,
  Field,
  InlineError,
  Loading,
  PageHeader,
  Panel,
  RelativeTime,
  Table,
  useNow,
  useToast,
} from '../ui';

/** The owner as a person reads it, whatever shape the API gives. */
export function ownerLabel(owner: ProjectSummary['owner']): string {
  if (owner === null || owner === undefined) return '—';
  if (typeof owner === 'object') return owner.name ?? owner.email ?? (owner.id !== undefined ? String(owner.id) : '—');
  return String(owner);
}

function NewProjectDialog({ open, onClose }: { open: boolean; onClose: () => void }) {
  const [name, setName] = useState('');
  const [description, setDescription] = useState('');
  const queryClient = useQueryClient();
  const navigate = useNavigate();
  const toast = useToast();
  const create = useMutation({
    mutationFn: () => createProject({ name: name.trim(), description: description.trim() }),
    onSuccess: (p) => {
      void queryClient.invalidateQueries({ queryKey: ['projects'] });
      toast.notify(`Project “${p.name}” created.`);
      onClose();
      navigate(`/projects/${encodeURIComponent(String(p.id))}`);
    },
  });
  const submit = (e: FormEvent) => {
    e.preventDefault();
    if (name.trim()) create.mutate();
  };
  return (
    <Dialog open={open} title="New project" onClose={create.isPending ? () => {} : onClose}>
      <form className="stack" onSubmit={submit} aria-label="New project">
        <Field label="Name">
          {(p) => <input {...p} className="input" required value={name} onChange={(e) => setName(e.target.value)} data-autofocus />}
        </Field>
        <Field label="Description" hint="What the agents should know when they analyse it.">
          {(p) => (
            <textarea
              {...p}
              className="textarea"
              style={{ fontFamily: 'inherit', fontSize: 'inherit' }}
              rows={4}
              value={description}
              onChange={(e) => setDescription(e.target.value)}
            />
          )}
        </Field>
        {create.isError && <InlineError error={create.error} />}
        <div className="row row--end">
          <Button onClick={onClose} disabled={create.isPending}>
            Cancel
          </Button>
          <Button type="submit" variant="primary" busy={create.isPending} disabled={!name.trim()}>
            Create project
          </Button>
        </div>
      </form>
    </Dialog>
  );
}

export function ProjectsPage() {
  useTitle('Projects');
  const now = useNow(30_000);
  const [creating, setCreating] = useState(false);
  const canOperate = useCan('operator');
  const projects = useQuery({ queryKey: ['projects'], queryFn: ({ signal }) => listProjects(signal) });
  return (
    <>
      <PageHeader
        title="Projects"
        actions={
          <RequireRole min="operator">
            <Button variant="primary" onClick={() => setCreating(true)}>
              New project
            </Button>
          </RequireRole>
        }
      />
      <Panel flush>
        {projects.isPending ? (
          <Loading label="Loading projects…" />
        ) : projects.isError ? (
          <ErrorState error={projects.error} onRetry={() => void projects.refetch()} />
        ) : (
          <Table<ProjectSummary>
            caption="Projects"
            rows={projects.data}
            rowKey={(p) => String(p.id)}
            empty={
              <EmptyState
                title="No projects yet."
                action={
                  canOperate ? (
                    <Button variant="primary" onClick={() => setCreating(true)}>
                      Create the first project
                    </Button>
                  ) : undefined
                }
              >
                Projects are what the agents analyse and summarise.
              </EmptyState>
            }
            columns={[
              { key: 'name', header: 'Name', render: (p) => <Link to={`/projects/${encodeURIComponent(String(p.id))}`}>{p.name}</Link> },
              { key: 'desc', header: 'Description', render: (p) => p.description || <span className="muted">—</span> },
              { key: 'owner', header: 'Owner', render: (p) => ownerLabel(p.owner) },
              { key: 'created', header: 'Created', render: (p) => <RelativeTime iso={p.createdAt} now={now} /> },
            ]}
          />
        )}
      </Panel>
      {creating && <NewProjectDialog open onClose={() => setCreating(false)} />}
    </>
  );
}
