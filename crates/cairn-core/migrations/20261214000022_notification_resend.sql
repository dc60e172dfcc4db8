-- An operator can send a notification that was given up (`failed`) or `skipped` again
-- (`POST /api/notifications/{id}/resend`, `ctl notify resend`): it is pending once more,
-- with a fresh round of attempts. `deliveries` keeps counting every POST; `round_start`
-- is what it was when the current round began, so the notifier gives up after its
-- maximum of attempts in one round. `resends` counts the operator's resends.
alter table notifications
    add column resends integer not null default 0,
    add column round_start integer not null default 0,
    add constraint notifications_round check (round_start between 0 and deliveries);
