-- Fan-out: a `map` step runs a child run for each item of a list only known at run time
-- (`src/engine/map.rs`). The list is written once, in bounded chunks, as one row per
-- item; each item then moves `pending` → `running` (its child run started) → `succeeded`
-- or `failed` (the child's output or error copied here). A crash mid-map re-runs no
-- finished item: the rows say which are done, and a retry of the step starts only the
-- items that did not succeed.
create table map_items (
    run_id       text not null,
    step_id      text not null,
    index        integer not null check (index >= 0),
    item         jsonb not null,
    status       text not null default 'pending'
                 check (status in ('pending', 'running', 'succeeded', 'failed')),
    child_run_id text,
    output       jsonb,
    error        text,
    primary key (run_id, step_id, index),
    -- Deleted with their step, hence with their run (retention, `runs_delete_children`).
    foreign key (run_id, step_id) references steps (run_id, step_id) on delete cascade,
    constraint map_items_running_has_child
        check (status <> 'running' or child_run_id is not null),
    constraint map_items_failed_has_error check (status <> 'failed' or error is not null)
);

-- The items in flight (at most the step's `max_parallel`), read at every wake-up of the
-- parent; and the next ones to start, in item order.
create index map_items_running on map_items (run_id, step_id) where status = 'running';
create index map_items_pending on map_items (run_id, step_id, index) where status = 'pending';

-- The map's progress, kept with the step so that showing it costs nothing: `map_total`
-- is set once every item is written (null before: the list is still being written, or
-- the step is no map), the counts as items start and end.
alter table steps
    add column map_total integer,
    add column map_done integer not null default 0,
    add column map_failed integer not null default 0,
    add column map_running integer not null default 0,
    add constraint steps_map_counts check (
        map_done >= 0 and map_failed >= 0 and map_running >= 0
        and (map_total is null or map_done + map_failed + map_running <= map_total));
