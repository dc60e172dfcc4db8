// One function per Cairn endpoint (docs/API.md), typed with ./types.
import { queryString, request } from './client';
import type {
  BulkFilter,
  BulkResult,
  CreatedToken,
  DeadLetter,
  MeResponse,
  NewPersonalToken,
  Notification,
  NotificationState,
  NewProject,
  NewSchedule,
  NewServiceToken,
  Overview,
  Page,
  PasswordChange,
  Project,
  ProjectSummary,
  ReplayRequest,
  RunStatus,
  Schedule,
  TaskAccepted,
  TaskDetail,
  TaskSummary,
  TokenView,
  User,
  WorkersResponse,
  WorkflowDetail,
  WorkflowSummary,
  Json,
  MapItemsPage,
  RunEvent,
  BackfillRequest,
  BackfillResult,
  NewUser,
  ScheduleChange,
  Usage,
  UserAccount,
  UserChange,
} from './types';

const enc = encodeURIComponent;

// ── auth ────────────────────────────────────────────────────────────────────────────

export function login(email: string, password: string): Promise<{ user: User }> {
  return request('/api/auth/login', { method: 'POST', body: { email, password }, quiet401: true });
}

export function logout(): Promise<void> {
  return request('/api/auth/logout', { method: 'POST', quiet401: true });
}

/** The signed-in user, or `null` when signed out (the API answers 401). */
export async function me(): Promise<User | null> {
  try {
    const res = await request<MeResponse>('/api/auth/me', { quiet401: true });
    return res.user;
  } catch (e) {
    if (e instanceof Error && 'status' in e && (e as { status: number }).status === 401) return null;
    throw e;
  }
}

/**
 * Changes the signed-in user's password (and ends their other sessions). A 401 here means
 * the current password is wrong, not that the session ended, so it does not sign out.
 */
export function changePassword(body: PasswordChange): Promise<void> {
  return request('/api/auth/password', { method: 'POST', body, quiet401: true });
}

// ── tokens ──────────────────────────────────────────────────────────────────────────

/** The caller's own tokens. */
export function listMyTokens(signal?: AbortSignal): Promise<{ items: TokenView[] }> {
  return request('/api/auth/tokens', { signal });
}

/** A token for the caller, with the caller's role. */
export function createMyToken(body: NewPersonalToken): Promise<CreatedToken> {
  return request('/api/auth/token', { method: 'POST', body });
}

/** Revokes one of the caller's own tokens. */
export function revokeMyToken(id: number): Promise<void> {
  return request(`/api/auth/tokens/${enc(String(id))}`, { method: 'DELETE' });
}

/** Every token (admin). */
export function listAllTokens(signal?: AbortSignal): Promise<{ items: TokenView[] }> {
  return request('/api/tokens', { signal });
}

/** A service token with any role (admin). */
export function createServiceToken(body: NewServiceToken): Promise<CreatedToken> {
  return request('/api/tokens', { method: 'POST', body });
}

/** Revokes any token (admin). */
export function revokeToken(id: number): Promise<void> {
  return request(`/api/tokens/${enc(String(id))}`, { method: 'DELETE' });
}

// ── runs ────────────────────────────────────────────────────────────────────────────

export interface TaskListParams {
  status?: RunStatus | '';
  workflow?: string;
  since?: string;
  q?: string;
  limit?: number;
  cursor?: string | null;
}

export function listTasks(params: TaskListParams, signal?: AbortSignal): Promise<Page<TaskSummary>> {
  return request(`/api/tasks${queryString({ ...params })}`, { signal });
}

export function getTask(id: string, signal?: AbortSignal): Promise<TaskDetail> {
  return request(`/api/tasks/${enc(id)}`, { signal });
}

export function getTaskEvents(id: string, after?: number | string): Promise<{ items: RunEvent[] }> {
  return request(`/api/tasks/${enc(id)}/events${queryString({ after })}`);
}

export interface MapItemsParams {
  /** Only items with an index above this one (the previous page's `next`). */
  after?: number;
  /** 1 to 500; the server's default is 100. */
  limit?: number;
}

/** The items of a `map` step, a page at a time; 404 when the step is no map. */
export function listMapItems(
  id: string,
  stepId: string,
  params: MapItemsParams = {},
  signal?: AbortSignal,
): Promise<MapItemsPage> {
  return request(`/api/tasks/${enc(id)}/steps/${enc(stepId)}/items${queryString({ ...params })}`, { signal });
}

export function submitTask(workflow: string, input: Json, idempotencyKey?: string): Promise<TaskAccepted> {
  return request('/api/tasks', {
    method: 'POST',
    body: { workflow, input },
    headers: idempotencyKey ? { 'Idempotency-Key': idempotencyKey } : undefined,
  });
}

export function retryTask(id: string): Promise<TaskAccepted> {
  return request(`/api/tasks/${enc(id)}/retry`, { method: 'POST' });
}

export function replayTask(id: string, body: ReplayRequest): Promise<TaskAccepted> {
  return request(`/api/tasks/${enc(id)}/replay`, { method: 'POST', body });
}

export function cancelTask(id: string): Promise<TaskAccepted> {
  return request(`/api/tasks/${enc(id)}/cancel`, { method: 'POST' });
}

export type TaskBulkVerb = 'retry' | 'cancel' | 'replay';

export function bulkTasks(verb: TaskBulkVerb, filter: BulkFilter, dryRun: boolean): Promise<BulkResult> {
  return request(`/api/tasks/bulk/${verb}`, { method: 'POST', body: { filter, dryRun } });
}

// ── dead letters ────────────────────────────────────────────────────────────────────

export interface DeadLetterListParams {
  workflow?: string;
  since?: string;
  limit?: number;
  cursor?: string | null;
}

export function listDeadLetters(params: DeadLetterListParams, signal?: AbortSignal): Promise<Page<DeadLetter>> {
  return request(`/api/dead-letters${queryString({ ...params })}`, { signal });
}

export function getDeadLetter(id: string | number, signal?: AbortSignal): Promise<DeadLetter> {
  return request(`/api/dead-letters/${enc(String(id))}`, { signal });
}

export function redriveDeadLetter(id: string | number): Promise<TaskAccepted> {
  return request(`/api/dead-letters/${enc(String(id))}/redrive`, { method: 'POST' });
}

export function purgeDeadLetter(id: string | number): Promise<void> {
  return request(`/api/dead-letters/${enc(String(id))}/purge`, { method: 'POST' });
}

export type DeadLetterBulkVerb = 'redrive' | 'purge';

export function bulkDeadLetters(verb: DeadLetterBulkVerb, filter: BulkFilter, dryRun: boolean): Promise<BulkResult> {
  return request(`/api/dead-letters/bulk/${verb}`, { method: 'POST', body: { filter, dryRun } });
}

// ── notifications ───────────────────────────────────────────────────────────────────

export interface NotificationListParams {
  state?: NotificationState | '';
  taskId?: string;
  workflow?: string;
  /** The previous page's `nextCursor`. */
  before?: string | null;
  /** 1 to 500; the server's default is 50. */
  limit?: number;
}

/** The alerts the notifier sends, newest first. */
export function listNotifications(params: NotificationListParams, signal?: AbortSignal): Promise<Page<Notification>> {
  return request(`/api/notifications${queryString({ ...params })}`, { signal });
}

/**
 * Sends a given-up (`failed` or `skipped`) notification again: it answers the
 * notification, `pending` with a fresh round of attempts. 409 for any other state.
 */
export function resendNotification(id: string): Promise<Notification> {
  return request(`/api/notifications/${enc(id)}/resend`, { method: 'POST' });
}

// ── workflows, workers, overview ────────────────────────────────────────────────────

export function listWorkflows(signal?: AbortSignal): Promise<{ items: WorkflowSummary[] }> {
  return request('/api/workflows', { signal });
}

export function getWorkflow(name: string, signal?: AbortSignal): Promise<WorkflowDetail> {
  return request(`/api/workflows/${enc(name)}`, { signal });
}

export function listWorkers(signal?: AbortSignal): Promise<WorkersResponse> {
  return request('/api/workers', { signal });
}

export function getOverview(window: string, signal?: AbortSignal): Promise<Overview> {
  return request(`/api/overview${queryString({ window })}`, { signal });
}

// ── schedules ───────────────────────────────────────────────────────────────────────

export function listSchedules(signal?: AbortSignal): Promise<{ items: Schedule[] }> {
  return request('/api/schedules', { signal });
}

export function createSchedule(body: NewSchedule): Promise<Schedule> {
  return request('/api/schedules', { method: 'POST', body });
}

export type ScheduleVerb = 'pause' | 'resume' | 'trigger';

export function scheduleAction(id: string | number, verb: ScheduleVerb): Promise<unknown> {
  return request(`/api/schedules/${enc(String(id))}/${verb}`, { method: 'POST' });
}

export function updateSchedule(id: string | number, body: ScheduleChange): Promise<Schedule> {
  return request(`/api/schedules/${enc(String(id))}`, { method: 'PATCH', body });
}

export function backfillSchedule(id: string | number, body: BackfillRequest): Promise<BackfillResult> {
  return request(`/api/schedules/${enc(String(id))}/backfill`, { method: 'POST', body });
}

export function deleteSchedule(id: string | number): Promise<void> {
  return request(`/api/schedules/${enc(String(id))}`, { method: 'DELETE' });
}

// ── projects and agents ─────────────────────────────────────────────────────────────

/** `GET /api/projects`; accepts `{ items }` (the API's list convention) or a bare array. */
export async function listProjects(signal?: AbortSignal): Promise<ProjectSummary[]> {
  const res = await request<{ items: ProjectSummary[] } | ProjectSummary[]>('/api/projects', { signal });
  return Array.isArray(res) ? res : (res?.items ?? []);
}

export function getProject(id: string | number, signal?: AbortSignal): Promise<Project> {
  return request(`/api/projects/${enc(String(id))}`, { signal });
}

export function createProject(body: NewProject): Promise<Project> {
  return request('/api/projects', { method: 'POST', body });
}

export type AgentKind = 'analyze' | 'summarize';

export function startAgent(kind: AgentKind, projectId: string | number): Promise<TaskAccepted> {
  return request(`/api/agents/${kind}`, { method: 'POST', body: { projectId } });
}

// ── users (admin) ───────────────────────────────────────────────────────────────────

export function listUsers(signal?: AbortSignal): Promise<{ items: UserAccount[] }> {
  return request('/api/users', { signal });
}

export function createUser(body: NewUser): Promise<UserAccount> {
  return request('/api/users', { method: 'POST', body });
}

export function updateUser(id: number, body: UserChange): Promise<UserAccount> {
  return request(`/api/users/${enc(String(id))}`, { method: 'PATCH', body });
}

export function deleteUser(id: number): Promise<void> {
  return request(`/api/users/${enc(String(id))}`, { method: 'DELETE' });
}

// ── billing ─────────────────────────────────────────────────────────────────────────

/** Use per user, project and workflow from `since` ago (e.g. `30d`) until `until` ago (default now). */
export function getUsage(params: { since?: string; until?: string }, signal?: AbortSignal): Promise<Usage> {
  return request(`/api/billing/usage${queryString(params)}`, { signal });
}
