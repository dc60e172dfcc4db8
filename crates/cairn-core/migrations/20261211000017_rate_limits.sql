-- Rate limits per key, shared by every worker: a step declaring `rate_limit = { key,
-- per_minute }` starts its attempts at most `per_minute` times a minute, evenly spaced,
-- counted with every step naming the same key (`src/store/rate_limits.rs`).
--
-- One row per key: `next_at`, the earliest time the next call may start (the
-- "theoretical arrival time" of the generic cell rate algorithm). Taking a call moves
-- it one interval on; a provider's `Retry-After` moves it to then. Unlogged: the row
-- is a pacing hint that is rebuilt by the next call, so losing it in a crash costs at
-- most one interval's worth of early calls, and writing it costs no WAL.
create unlogged table rate_limits (
    key      text primary key,
    next_at  timestamptz not null
);
