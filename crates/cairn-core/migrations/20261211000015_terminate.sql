-- Terminate: an operator stops a run at once (`POST /api/tasks/{id}/terminate`, `ctl
-- task cancel --now`), where a cancel waits for the running step to finish. The worker
-- advancing the run is told on the channel `cairn_terminate` (and, should it miss that,
-- at its next heartbeat), stops the step's attempt, records it `terminated` and
-- finishes the run `cancelled`. Child runs are terminated with their parent.

-- When the termination was asked for; a terminated run has its cancel asked for too.
alter table runs
    add column terminate_requested_at timestamptz,
    add constraint runs_terminate_is_a_cancel
        check (terminate_requested_at is null or cancel_requested_at is not null);

alter table step_attempts
    drop constraint step_attempts_status_valid,
    add constraint step_attempts_status_valid
        check (status in ('running', 'succeeded', 'failed', 'abandoned', 'terminated')),
    drop constraint step_attempts_failed_has_error,
    add constraint step_attempts_failed_has_error
        check (status not in ('failed', 'abandoned', 'terminated') or error is not null);
