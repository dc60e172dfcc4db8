-- Operating Cairn: users, sessions and API tokens with roles; replays, cancellation
-- and retries of dead runs.

create table users (
    id             bigserial primary key,
    email          text not null,
    name           text not null default '',
    password_hash  text not null,
    role           text not null,
    created_at     timestamptz not null default now(),
    disabled_at    timestamptz,
    constraint users_role_valid check (role in ('viewer', 'operator', 'admin'))
);
create unique index users_email on users (lower(email));

-- Dashboard sessions; only a hash of the cookie value is stored.
create table sessions (
    token_hash  text primary key,
    user_id     bigint not null references users (id) on delete cascade,
    created_at  timestamptz not null default now(),
    expires_at  timestamptz not null
);
create index sessions_user on sessions (user_id);

-- Bearer tokens for ctl and services; only a hash is stored, the token is shown once.
create table api_tokens (
    id            bigserial primary key,
    name          text not null,
    token_hash    text not null unique,
    role          text not null,
    user_id       bigint references users (id) on delete cascade,
    created_at    timestamptz not null default now(),
    last_used_at  timestamptz,
    revoked_at    timestamptz,
    constraint api_tokens_role_valid check (role in ('viewer', 'operator', 'admin'))
);

alter table runs
    add column replay_of text references runs (id) on delete set null,
    add column cancel_requested_at timestamptz;
create index runs_replay_of on runs (replay_of) where replay_of is not null;

-- Retrying a dead run gives its failed steps a fresh attempt budget: attempts counted
-- toward max_attempts are `attempts - attempt_floor`.
alter table steps add column attempt_floor integer not null default 0;

-- Cancelled runs may be retried like dead ones.
create or replace function runs_check_transition() returns trigger language plpgsql as $$
begin
    if old.status = new.status then
        return new;
    end if;
    if not (
        (old.status = 'queued'    and new.status in ('running', 'cancelled')) or
        (old.status = 'running'   and new.status in ('queued', 'waiting', 'sleeping', 'retrying',
                                                     'succeeded', 'dead', 'cancelled')) or
        (old.status in ('waiting', 'sleeping', 'retrying')
                                  and new.status in ('running', 'queued', 'cancelled')) or
        (old.status in ('dead', 'cancelled') and new.status = 'queued')
    ) then
        raise exception 'run % cannot go from % to %', old.id, old.status, new.status
            using errcode = 'check_violation', constraint = 'runs_transition';
    end if;
    new.updated_at := now();
    return new;
end $$;
