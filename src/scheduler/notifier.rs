//! The notifier: tells an operator's endpoint (Slack, a pager, anything that takes a
//! JSON POST) when a run dies, and, when asked, when a schedule's tick fails.
//!
//! # Durability
//!
//! Events are not sent by the worker that sees the death: a worker killed between its
//! commit and the POST would lose the alert, and one that posts first would alert about
//! deaths that roll back. A trigger writes a `notifications` row in the transaction
//! that records the death (the dead letter's insert), and the notifier delivers the
//! rows afterwards ([`crate::store::notifications`]).
//!
//! # Delivery
//!
//! At least once: a pending row is claimed (`for update skip locked`, so any number of
//! notifiers share the work, each row to one of them at a time) with its next attempt
//! moved past the delivery's deadline, POSTed outside any transaction, then marked
//! delivered on a 2xx answer, or due again after an exponential backoff
//! ([`NotifySettings::retry_min`] doubling up to [`NotifySettings::retry_max`]) until
//! [`NotifySettings::max_deliveries`] attempts. A notifier that dies mid-delivery
//! leaves the row to be claimed again once that deadline passed; the receiver may then
//! see it twice, and deduplicates by the `Idempotency-Key` header (the notification's
//! id).
//!
//! # Signing
//!
//! With `CAIRN_NOTIFY_SECRET`, each POST carries `X-Cairn-Timestamp` (Unix seconds)
//! and `X-Cairn-Signature: sha256=<hex HMAC-SHA256(secret, "{timestamp}.{raw body}")>`,
//! the scheme the agent webhook checks ([`crate::delivery::sign`]); the receiver
//! recomputes it over the raw body and refuses stale timestamps.
//!
//! # Egress
//!
//! Deliveries go through the client `http` steps use ([`StepHttp`]): private, loopback
//! and link-local addresses are refused unless `CAIRN_NOTIFY_EGRESS_ALLOW` lists them,
//! at connect time and on every redirect. A refusal is final (`failed`): retrying would
//! be refused again.
//!
//! # Where it runs
//!
//! Beside the schedules in every `cairn scheduler` process and in `cairn dev`. It
//! wakes on `NOTIFY cairn_notifications` (sent by the triggers), when a retry is due,
//! and at least every [`NotifySettings::poll`].

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::Url;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::{Clock, Listener};
use crate::state::NotificationState;
use crate::step::egress::{EgressAllow, EgressError, StepClient, StepHttp, find_egress_error};
use crate::store::StoreError;
use crate::store::notifications::{self as store, NotificationRow};
use crate::telemetry::metrics;

/// The channel the `notifications` triggers notify.
pub use crate::store::notifications::CHANNEL;

/// Notifications claimed per round.
const CLAIM_BATCH: i64 = 32;

/// The longest error text a notification carries (a step's error can be long).
const ERROR_MAX_CHARS: usize = 2000;

#[derive(Debug, thiserror::Error)]
pub enum NotifierError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Egress(#[from] EgressError),
}

/// How the notifier delivers (the `cairn scheduler` flags fill them in; see
/// [`crate::config::NotifyArgs`]).
#[derive(Debug, Clone)]
pub struct NotifySettings {
    /// The cluster's endpoint; a workflow's `[notify] url` takes its place for its runs.
    /// Neither: notifications are marked `skipped`.
    pub url: Option<Url>,
    /// Signs each POST when set.
    pub secret: Option<String>,
    /// Send `schedule.tick_failed` events too (otherwise they are `skipped`).
    pub tick_failures: bool,
    /// Non-public addresses deliveries may reach.
    pub egress_allow: EgressAllow,
    /// The dashboard's address, for the `url` of a run in the event (`{base}/runs/{id}`).
    pub dashboard_url: Option<String>,
    /// One POST's deadline.
    pub timeout: Duration,
    /// The first retry's delay; each next one doubles, up to `retry_max`.
    pub retry_min: Duration,
    pub retry_max: Duration,
    /// Attempts before a notification is given up (`failed`).
    pub max_deliveries: u32,
    /// The longest sleep between looks for due notifications.
    pub poll: Duration,
}

impl Default for NotifySettings {
    fn default() -> Self {
        NotifySettings {
            url: None,
            secret: None,
            tick_failures: false,
            egress_allow: EgressAllow::default(),
            dashboard_url: None,
            timeout: Duration::from_secs(10),
            retry_min: Duration::from_secs(1),
            retry_max: Duration::from_secs(600),
            max_deliveries: 25,
            poll: Duration::from_secs(5),
        }
    }
}

impl NotifySettings {
    /// The delay before attempt `deliveries + 1`, after `deliveries` failed ones.
    pub fn backoff(&self, deliveries: u32) -> Duration {
        let doublings = deliveries.saturating_sub(1).min(30);
        self.retry_min
            .saturating_mul(1u32 << doublings)
            .min(self.retry_max)
    }

    /// How long a claim holds a notification: past one POST's deadline, with room.
    fn hold(&self) -> Duration {
        self.timeout * 2 + Duration::from_secs(5)
    }
}

/// The JSON body of a notification: the event's fields, and `text` for Slack-style
/// incoming webhooks.
pub fn payload(n: &NotificationRow, dashboard_url: Option<&str>) -> Value {
    let error: String = n.error.chars().take(ERROR_MAX_CHARS).collect();
    let link = match (dashboard_url, &n.run_id) {
        (Some(base), Some(run)) => Some(format!("{}/runs/{run}", base.trim_end_matches('/'))),
        _ => None,
    };
    match n.event.as_str() {
        "run.dead" => {
            let run = n.run_id.as_deref().unwrap_or_default();
            let step = n.step_id.as_deref().unwrap_or_default();
            let plural = if n.step_attempts == 1 { "" } else { "s" };
            let mut text = format!(
                "Run {run} of workflow `{}` died at step `{step}` after {} attempt{plural}: {error}",
                n.workflow, n.step_attempts
            );
            if let Some(link) = &link {
                text.push_str(&format!(" <{link}|open>"));
            }
            json!({
                "id": n.id.to_string(),
                "event": n.event,
                "taskId": run,
                "workflow": n.workflow,
                "step": step,
                "error": error,
                "attempts": n.step_attempts,
                "url": link,
                "createdAt": n.created_at,
                "text": text,
            })
        }
        _ => json!({
            "id": n.id.to_string(),
            "event": n.event,
            "scheduleId": n.schedule_id,
            "workflow": n.workflow,
            "error": error,
            "createdAt": n.created_at,
            "text": format!(
                "Schedule {} of workflow `{}` could not start a run: {error}",
                n.schedule_id.as_deref().unwrap_or_default(),
                n.workflow
            ),
        }),
    }
}

/// What one delivery came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Delivered(u16),
    /// Worth another try later.
    Retry {
        status: Option<u16>,
        error: String,
    },
    /// Never worth another try (refused by the egress policy, a bad URL).
    Failed(String),
    /// Nothing to send it to, or this event is not sent.
    Skipped(String),
}

/// Delivers one claimed notification.
pub async fn deliver(
    settings: &NotifySettings,
    client: &StepClient,
    n: &NotificationRow,
    now: DateTime<Utc>,
) -> Outcome {
    if n.event == "schedule.tick_failed" && !settings.tick_failures {
        return Outcome::Skipped(
            "schedule tick failures are not sent (CAIRN_NOTIFY_TICK_FAILURES)".into(),
        );
    }
    let url = match (&n.url, &settings.url) {
        (Some(own), _) => match Url::parse(own) {
            Ok(u) => u,
            Err(e) => return Outcome::Failed(format!("the workflow's [notify] url: {e}")),
        },
        (None, Some(cluster)) => cluster.clone(),
        (None, None) => {
            return Outcome::Skipped(
                "no URL to send to: set CAIRN_NOTIFY_URL or the workflow's [notify] url".into(),
            );
        }
    };
    if let Err(e) = client.rules.check_url(&url) {
        return Outcome::Failed(refused(&e));
    }
    let body = match serde_json::to_vec(&payload(n, settings.dashboard_url.as_deref())) {
        Ok(b) => b,
        Err(e) => return Outcome::Failed(format!("encoding the event: {e}")),
    };
    let mut request = client
        .client
        .post(url)
        .timeout(settings.timeout)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("Idempotency-Key", n.id.to_string())
        .header("X-Cairn-Event", n.event.as_str())
        .header("X-Cairn-Delivery-Attempt", n.deliveries.to_string());
    if let Some(secret) = &settings.secret {
        let timestamp = now.timestamp();
        match crate::delivery::sign(secret, timestamp, &body) {
            Ok(signature) => {
                request = request
                    .header("X-Cairn-Timestamp", timestamp.to_string())
                    .header("X-Cairn-Signature", signature);
            }
            Err(e) => return Outcome::Failed(format!("signing: {e}")),
        }
    }
    match request.body(body).send().await {
        Ok(resp) if resp.status().is_success() => Outcome::Delivered(resp.status().as_u16()),
        Ok(resp) => Outcome::Retry {
            status: Some(resp.status().as_u16()),
            error: format!("the endpoint answered {}", resp.status()),
        },
        Err(e) => match find_egress_error(&e) {
            Some(refusal) if !refusal.is_retryable() => Outcome::Failed(refused(refusal)),
            _ => Outcome::Retry {
                status: None,
                // Without the URL: a webhook URL often carries its credential.
                error: error_chain(&e.without_url()),
            },
        },
    }
}

fn refused(e: &EgressError) -> String {
    format!("{e} (for notifications: CAIRN_NOTIFY_EGRESS_ALLOW, --notify-egress-allow)")
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        text.push_str(": ");
        text.push_str(&s.to_string());
        cur = s.source();
    }
    text
}

/// Records what a delivery came to.
async fn record(
    pool: &PgPool,
    settings: &NotifySettings,
    n: &NotificationRow,
    outcome: &Outcome,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let status = |s: Option<u16>| s.map(i32::from);
    let counted = match outcome {
        Outcome::Delivered(code) => {
            tracing::info!(notification = n.id, event = %n.event, run = ?n.run_id,
                attempt = n.deliveries, "notification delivered");
            store::notification_delivered(pool, n.id, i32::from(*code), now)
                .await
                .map(|()| "delivered")
        }
        Outcome::Retry {
            status: code,
            error,
        } => {
            // Attempts in this round: an operator's resend starts a new one.
            let attempts = u32::try_from(n.deliveries - n.round_start).unwrap_or(u32::MAX);
            let retry_at = (attempts < settings.max_deliveries).then(|| {
                now + chrono::Duration::from_std(settings.backoff(attempts))
                    .unwrap_or(chrono::Duration::MAX)
            });
            if retry_at.is_some() {
                tracing::warn!(notification = n.id, event = %n.event, attempt = n.deliveries,
                    error = %error, "notification not delivered; trying again later");
            } else {
                tracing::error!(notification = n.id, event = %n.event, attempt = n.deliveries,
                    error = %error, "notification not delivered; giving up");
            }
            store::notification_failed(
                pool,
                n.id,
                status(*code),
                error,
                retry_at,
                NotificationState::Failed,
                now,
            )
            .await
            .map(|()| {
                if retry_at.is_some() {
                    "retried"
                } else {
                    "failed"
                }
            })
        }
        Outcome::Failed(error) => {
            tracing::error!(notification = n.id, event = %n.event, error = %error,
                "notification cannot be delivered");
            store::notification_failed(
                pool,
                n.id,
                None,
                error,
                None,
                NotificationState::Failed,
                now,
            )
            .await
            .map(|()| "failed")
        }
        Outcome::Skipped(why) => {
            tracing::debug!(notification = n.id, event = %n.event, why = %why,
                "notification skipped");
            store::notification_failed(pool, n.id, None, why, None, NotificationState::Skipped, now)
                .await
                .map(|()| "skipped")
        }
    };
    // Counted once the outcome is recorded: a notifier that dies before recording it
    // hands the notification to the next one, which counts it.
    metrics::notification_handled(&n.event, counted?);
    Ok(())
}

/// One round: claims the due notifications (a batch at a time) and delivers them, side
/// by side. Returns how many were handled.
pub async fn deliver_due(
    pool: &PgPool,
    settings: &NotifySettings,
    client: &StepClient,
    clock: &dyn Clock,
) -> Result<usize, NotifierError> {
    let mut handled = 0;
    loop {
        let now = clock.now();
        let claimed =
            store::notification_claim_due(pool, now, settings.hold().as_secs_f64(), CLAIM_BATCH)
                .await?;
        let n = claimed.len();
        let outcomes = futures::future::join_all(
            claimed
                .iter()
                .map(|row| deliver(settings, client, row, now)),
        )
        .await;
        for (row, outcome) in claimed.iter().zip(&outcomes) {
            record(pool, settings, row, outcome, clock.now()).await?;
        }
        handled += n;
        if n < CLAIM_BATCH as usize {
            return Ok(handled);
        }
    }
}

/// Delivers notifications until `shutdown` is cancelled (a delivery under way is
/// finished first, bounded by [`NotifySettings::timeout`]).
pub async fn run(
    pool: PgPool,
    settings: NotifySettings,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
) -> Result<(), NotifierError> {
    let client = StepHttp::new(settings.egress_allow.clone()).client(&[])?;
    let mut listener = Listener::open(&pool, CHANNEL, "notifications").await;
    tracing::info!(
        cluster_url = settings.url.is_some(),
        signed = settings.secret.is_some(),
        tick_failures = settings.tick_failures,
        "notifier started"
    );
    while !shutdown.is_cancelled() {
        let mut wait = settings.poll;
        match deliver_due(&pool, &settings, &client, clock.as_ref()).await {
            Ok(_) => {
                if let Ok(Some(at)) = store::notification_next_due(&pool).await {
                    wait = (at - clock.now())
                        .to_std()
                        .unwrap_or(Duration::ZERO)
                        .min(settings.poll);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "delivering notifications failed; trying again");
                wait = wait.min(Duration::from_secs(1));
            }
        }
        // Never spin: a row claimed by another notifier is due "now" until it records.
        let wait = wait.max(Duration::from_millis(50));
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = tokio::time::sleep(wait) => {}
            notified = listener.notification() => {
                if let Err(e) = notified {
                    tracing::warn!(error = %e, "notification wake-ups lost; polling every {:?}", settings.poll);
                }
            }
        }
    }
    listener.close().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let s = NotifySettings {
            retry_min: Duration::from_secs(1),
            retry_max: Duration::from_secs(10),
            ..Default::default()
        };
        let delays: Vec<u64> = (1..=6).map(|n| s.backoff(n).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 10, 10]);
        assert_eq!(s.backoff(u32::MAX), Duration::from_secs(10));
    }
}
