-- Concurrency limits per key. A workflow declaring `[concurrency] key = "…", limit = N`
-- lets at most N of its runs with the same key hold a slot at once; the others wait,
-- `queued`, in submit order, and start as slots free up (`src/store/concurrency.rs`).
--
-- A run holds a slot from its admission until it is finished (succeeded, dead or
-- cancelled): also while it sleeps, retries or waits. A slot held by a run whose worker
-- died is not lost: the run's lease expires, another worker goes on with it, and it
-- frees the slot when it finishes.

-- The key the run's workflow gave it (rendered from its input at submit), the limit its
-- definition said, and whether it holds a slot. A run without a key holds none and is
-- always admitted. `concurrency_seq` orders a key's waiting runs by submission (a batch's
-- runs share their `created_at`).
create sequence runs_concurrency_seq;
alter table runs
    add column concurrency_key text,
    add column concurrency_limit integer,
    add column concurrency_seq bigint,
    add column admitted boolean not null default true,
    add constraint runs_concurrency_complete check (
        (concurrency_key is null) = (concurrency_limit is null)
        and (concurrency_key is null) = (concurrency_seq is null)
        and (concurrency_limit is null or concurrency_limit > 0)
        and (concurrency_key is not null or admitted));

-- The runs of a key that wait for a slot, in submission order.
create index runs_concurrency_waiting on runs (workflow, concurrency_key, concurrency_seq)
    where concurrency_key is not null and not admitted and status = 'queued';
-- The runs of a key that hold a slot.
create index runs_concurrency_holding on runs (workflow, concurrency_key)
    where concurrency_key is not null and admitted
      and status in ('queued', 'running', 'waiting', 'sleeping', 'retrying');
