-- Concurrency limits on a step: `concurrency = { key = "…", limit = N }` lets at most N
-- attempts of the steps naming the same key run at once, across runs, workflows and
-- workers (`src/store/step_slots.rs`). A step that finds no free slot waits in line,
-- its run parked; a slot's release wakes the first in line.
--
-- A slot is held from an attempt's start to its end. One held by a worker that died is
-- not lost: it expires (the step's timeout and a margin after it was taken), and the
-- next taker clears it.
create table step_slots (
    key        text not null,
    run_id     text not null,
    step_id    text not null,
    expires_at timestamptz not null,
    primary key (run_id, step_id)
);
create index step_slots_key on step_slots (key);

-- The steps waiting for a slot of their key, in the order they asked.
create table step_slot_waiters (
    key     text not null,
    run_id  text not null,
    step_id text not null,
    seq     bigint generated always as identity,
    primary key (run_id, step_id)
);
create index step_slot_waiters_key on step_slot_waiters (key, seq);
