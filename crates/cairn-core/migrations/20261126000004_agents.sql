-- Agent work: the product's projects, who started each run and for which project,
-- child runs of `workflow` steps, and LLM token usage for billing.

create table projects (
    id           bigserial primary key,
    name         text not null,
    description  text not null default '',
    owner_id     bigint references users (id) on delete set null,
    created_at   timestamptz not null default now(),
    updated_at   timestamptz not null default now(),
    constraint projects_name_present check (length(trim(name)) > 0)
);

alter table runs
    add column user_id bigint references users (id) on delete set null,
    add column project_id bigint references projects (id) on delete set null,
    add column parent_run_id text references runs (id) on delete set null,
    add column parent_step_id text;
-- A project's analyses are the runs started for it, newest first.
create index runs_project on runs (project_id, created_at desc) where project_id is not null;
create index runs_parent on runs (parent_run_id) where parent_run_id is not null;
create index runs_user on runs (user_id, created_at) where user_id is not null;

-- A `workflow` step waits for this child run.
alter table steps add column child_run_id text references runs (id) on delete set null;

-- Every LLM call's token counts (failed attempts cost tokens too).
create table llm_usage (
    id                 bigserial primary key,
    run_id             text not null references runs (id) on delete cascade,
    step_id            text not null,
    attempt            integer not null,
    model              text not null,
    prompt_tokens      bigint not null default 0,
    completion_tokens  bigint not null default 0,
    created_at         timestamptz not null default now(),
    constraint llm_usage_nonnegative check (prompt_tokens >= 0 and completion_tokens >= 0)
);
create index llm_usage_run on llm_usage (run_id);
create index llm_usage_created on llm_usage (created_at);

