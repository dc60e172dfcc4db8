// The shapes of Cairn's HTTP API, as docs/API.md defines them (camelCase, ISO-8601 times).
// Keep this file a literal transcription of the contract: pages adapt, this does not.

export type Role = 'viewer' | 'operator' | 'admin';

export interface User {
  id: string | number | null;
  email: string | null;
  name: string;
  role: Role;
}

export interface MeResponse {
  user: User;
}

/** An API token as listed (never its secret). `userId` is null for a service token. */
export interface TokenView {
  id: number;
  name: string;
  role: Role;
  userId: number | null;
  createdAt: string;
  lastUsedAt: string | null;
  /** Null: the token never expires. */
  expiresAt: string | null;
  revoked: boolean;
}

/** `POST /api/auth/token`: a token for the caller, with the caller's role. */
export interface NewPersonalToken {
  name: string;
  /** 1–365; the server's default is 90. */
  expiresInDays?: number;
}

/** `POST /api/tokens` (admin): a service token with any role. */
export interface NewServiceToken extends NewPersonalToken {
  role: Role;
}

/** A token just created: the only answer that carries its secret. */
export interface CreatedToken {
  id: number;
  token: string;
  role: Role;
  expiresAt: string | null;
}

export interface PasswordChange {
  currentPassword: string;
  newPassword: string;
}

export const RUN_STATUSES = [
  'queued',
  'running',
  'waiting',
  'sleeping',
  'retrying',
  'succeeded',
  'dead',
  'cancelled',
] as const;
export type RunStatus = (typeof RUN_STATUSES)[number];

/** Runs in these states will not change by themselves. */
export const TERMINAL_RUN_STATUSES: readonly RunStatus[] = ['succeeded', 'dead', 'cancelled'];

export const STEP_STATUSES = [
  'pending',
  'running',
  'retry_scheduled',
  'waiting',
  'succeeded',
  'failed',
  'skipped',
  'cancelled',
] as const;
export type StepStatus = (typeof STEP_STATUSES)[number];

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

export interface TaskSummary {
  id: string;
  workflow: string;
  status: RunStatus;
  error: string | null;
  idempotencyKey: string | null;
  worker: string | null;
  leaseExpiresAt: string | null;
  wakeAt: string | null;
  createdAt: string;
  startedAt: string | null;
  finishedAt: string | null;
  updatedAt: string;
  replayOf?: string | null;
}

export interface Attempt {
  attempt: number;
  status: string;
  worker: string | null;
  startedAt: string;
  finishedAt: string | null;
  durationMs: number | null;
  error: string | null;
  retryDelayMs: number | null;
}

export interface TaskStep {
  id: string;
  kind: string | null;
  needs: string[];
  status: StepStatus;
  attemptCount: number;
  attempts: Attempt[];
  output: Json | null;
  error: string | null;
  nextAttemptAt: string | null;
  wakeAt: string | null;
  startedAt: string | null;
  finishedAt: string | null;
  /** The child run of a `workflow` step; null for other steps and before it starts one. */
  childRunId: string | null;
  /** A `map` step's progress once it started; null for other steps. */
  map: MapProgress | null;
}

/** How far a `map` step got through its list: one child run per item. */
export interface MapProgress {
  /** Null while the step is still writing its list. */
  total: number | null;
  /** Items whose child run succeeded. */
  done: number;
  failed: number;
  running: number;
}

export const MAP_ITEM_STATUSES = ['pending', 'running', 'succeeded', 'failed'] as const;
export type MapItemStatus = (typeof MAP_ITEM_STATUSES)[number];

/** One item of a `map` step, as `GET /api/tasks/{id}/steps/{step}/items` lists it. */
export interface MapItem {
  index: number;
  status: MapItemStatus;
  /** Null until the item's child run was started. */
  childRunId: string | null;
  error: string | null;
}

export interface MapItemsPage {
  /** Items with an index above the request's `after`, in index order. */
  items: MapItem[];
  /** The `after` of the next page; null (or absent) on the last page. */
  next: number | null;
}

export interface RunEvent {
  id: number | string;
  at: string;
  kind: string;
  stepId: string | null;
  data: Json | null;
}

/** What `/api/events` sends: an event plus the run it belongs to. */
export interface LiveEvent extends RunEvent {
  runId: string;
  workflow: string;
}

export interface TaskDeadLetterRef {
  id: string | number;
  stepId: string;
  error: string | null;
  attempts: Json;
  createdAt: string;
}

export interface TaskDetail extends TaskSummary {
  definitionHash: string;
  input: Json;
  output: Json | null;
  steps: TaskStep[];
  events: RunEvent[];
  deadLetter: TaskDeadLetterRef | null;
}

export interface Page<T> {
  items: T[];
  nextCursor: string | null;
}

export interface TaskAccepted {
  taskId: string;
  status: RunStatus;
  workflow?: string;
  replayOf?: string;
}

export interface ReplayRequest {
  fromStep?: string;
  input?: Json;
  latestDefinition?: boolean;
}

/** The filter bulk verbs act on (`/api/tasks/bulk/*`, `/api/dead-letters/bulk/*`). */
export interface BulkFilter {
  status?: RunStatus;
  workflow?: string;
  since?: string;
  until?: string;
}

export interface BulkResult {
  matched: number;
  ids: string[];
  processed: number;
}

export interface DeadLetter {
  id: string | number;
  runId: string;
  workflow: string;
  stepId: string;
  error: string | null;
  attempts: Json;
  input: Json;
  createdAt: string;
}

export interface WorkflowSummary {
  name: string;
  description?: string | null;
  hash: string;
  steps: number;
}

export interface InputField {
  name: string;
  type: string;
  default?: Json;
  enum?: Json[];
  description?: string;
}

export interface RetryPolicy {
  maxAttempts: number;
  initialDelayMs: number;
  maxDelayMs: number;
  multiplier: number;
  jitter: number;
}

export interface WorkflowStepDef {
  id: string;
  kind: string;
  needs: string[];
  condition?: string;
  timeoutMs?: number;
  retry?: RetryPolicy;
  [setting: string]: Json | RetryPolicy | undefined;
}

export interface WorkflowDefinition {
  name: string;
  description?: string;
  input: InputField[];
  output?: Json;
  steps: WorkflowStepDef[];
}

export interface WorkflowDetail {
  name: string;
  hash: string;
  definition: WorkflowDefinition;
  source: string;
}

export interface Worker {
  id: string;
  hostname: string;
  pid: number;
  version: string;
  concurrency: number;
  startedAt: string;
  lastHeartbeatAt: string;
  heartbeatAgeMs: number;
  inFlight: number;
}

export interface StuckRun {
  runId: string;
  workflow: string;
  worker: string | null;
  leaseExpiredAgoMs: number;
}

export interface WorkersResponse {
  items: Worker[];
  stuck: StuckRun[];
}

export interface QueueDepth {
  workflow: string;
  depth: number;
  oldestQueuedAgeMs: number | null;
}

export interface ThroughputPoint {
  at: string;
  succeeded: number;
  dead: number;
}

/** Either a map `{ succeeded: 3 }` or a list `[{ status, count }]`: see `statusCounts`. */
export type RunsByStatus = Partial<Record<RunStatus, number>> | { status: string; count: number }[];

export interface Overview {
  runsByStatus: RunsByStatus;
  queue: QueueDepth[];
  deadLetters: number;
  workersAlive: number;
  throughput: ThroughputPoint[];
  /** Width of one throughput bucket. */
  bucketSeconds?: number;
}

/** Counts per run status, whichever of the two shapes the API answers with. */
export function statusCounts(value: RunsByStatus | null | undefined): Partial<Record<string, number>> {
  if (!value) return {};
  if (Array.isArray(value)) return Object.fromEntries(value.map((c) => [c.status, c.count]));
  return value;
}

export interface Schedule {
  id: string | number;
  name: string;
  workflow: string;
  cron: string;
  timezone: string;
  input: Json;
  enabled: boolean;
  misfirePolicy: string;
  overlapPolicy: string;
  /** How late a tick may start and still be on time, e.g. `1m`. */
  maxLateness?: string;
  nextFireTimes: string[];
  lastFiredAt: string | null;
  /** `file` (a workflow file's `[[schedules]]` entry) or `api`. */
  source?: string;
}

export interface NewSchedule {
  name: string;
  workflow: string;
  cron: string;
  timezone: string;
  input: Json;
  misfirePolicy: string;
  overlapPolicy: string;
  enabled?: boolean;
}

export interface Analysis {
  taskId: string;
  workflow: string;
  status: RunStatus;
  result: Json | null;
  /** Why the run died or was cancelled. */
  error?: string | null;
  createdAt: string;
  finishedAt?: string | null;
}

export interface ProjectSummary {
  id: string | number;
  name: string;
  description: string | null;
  owner: string | number | { id?: string | number; name?: string; email?: string } | null;
  createdAt: string;
}

export interface Project extends ProjectSummary {
  analyses: Analysis[];
}

export interface NewProject {
  name: string;
  description: string;
}

/** An account as `GET /api/users` lists it (admin). */
export interface UserAccount {
  id: number;
  email: string;
  name: string;
  role: Role;
  createdAt: string;
  disabled: boolean;
}

/** `POST /api/users`. */
export interface NewUser {
  email: string;
  name: string;
  password: string;
  role: Role;
}

/** `PATCH /api/users/{id}`: any of these. */
export interface UserChange {
  name?: string;
  role?: Role;
  password?: string;
  disabled?: boolean;
}

/** One line of `GET /api/billing/usage`: a workflow's use by one user in one project. */
export interface UsageLine {
  userId: number | null;
  user: string | null;
  projectId: number | null;
  project: string | null;
  /** `*` on the totals line. */
  workflow: string;
  runs: number;
  steps: number;
  promptTokens: number;
  completionTokens: number;
  /** USD, from the server's model prices; models without a price count as 0 and are listed. */
  estimatedCost: number;
  unpricedModels: string[];
}

export interface Usage {
  from: string;
  to: string;
  items: UsageLine[];
  totals: UsageLine;
}

/** `PATCH /api/schedules/{id}`: any field `POST /api/schedules` takes but the name. */
export type ScheduleChange = Partial<Omit<NewSchedule, 'name'>> & { maxLateness?: string };

/** `POST /api/schedules/{id}/backfill`: start the runs of every tick in [from, to]. */
export interface BackfillRequest {
  from: string;
  to: string;
}

/** What a backfill started: its runs, by id (older servers may add more fields). */
export interface BackfillResult {
  runs?: (string | { taskId?: string; id?: string })[];
  [more: string]: Json | undefined | (string | { taskId?: string; id?: string })[];
}

export const NOTIFICATION_STATES = ['pending', 'delivered', 'skipped', 'failed'] as const;
/** `skipped`: there was no URL to send it to; `failed`: every POST was refused or went unanswered. */
export type NotificationState = (typeof NOTIFICATION_STATES)[number];

export type NotificationEvent = 'run.dead' | 'schedule.tick_failed';

/** An alert the notifier sends (or sent) to a webhook, as `GET /api/notifications` lists it. */
export interface Notification {
  /** Also the `Idempotency-Key` of every POST of it. */
  id: string;
  event: NotificationEvent;
  taskId: string | null;
  workflow: string;
  step: string | null;
  scheduleId: string | null;
  /** The failed step's (or tick's) error: what the alert reports. */
  error: string;
  /** The failed step's attempts. */
  attempts: number;
  /** True when the workflow's own `[notify] url` is the target rather than the cluster's; the URL is never served. */
  workflowUrl: boolean;
  state: NotificationState;
  /** POSTs made so far, over every round. */
  deliveries: number;
  /** Times an operator sent it again (each starts a new round of attempts). */
  resends: number;
  /** Set while pending. */
  nextAttemptAt: string | null;
  lastError: string | null;
  /** The HTTP status of the last answer. */
  lastStatus: number | null;
  createdAt: string;
  deliveredAt: string | null;
  finishedAt: string | null;
}
