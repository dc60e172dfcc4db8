-- The runs a worker holds, by owner and in id order: its heartbeat and its hand-back
-- at shutdown lock exactly those, in id order, and had no index to find them by owner
-- (a generic plan made while `runs` was analyzed empty read the whole primary key for
-- every beat). Only running runs are in it, so it stays as small as the work in flight.
create index runs_lease_owner on runs (lease_owner, id) where status = 'running';
