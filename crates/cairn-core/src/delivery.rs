//! Per-delivery webhook credentials for `wait` steps.
//!
//! An external agent completes a `wait` step by posting its result to
//! `POST /api/webhooks/agent-result`. If every agent signed with the deployment's one
//! `CAIRN_WEBHOOK_SECRET`, every agent could complete any run's step, and a captured
//! delivery could be replayed into a step an operator had re-armed. So each attempt of
//! each `wait` step has a key of its own, derived from the secret:
//!
//! ```text
//! key = hex(HMAC-SHA256(CAIRN_WEBHOOK_SECRET, "cairn-delivery/v1:{run_id}:{step_id}:{attempt}"))
//! ```
//!
//! The worker hands the key to the agent (templates read it as
//! `run.deliveries.<step>.key`); the agent signs `"{timestamp}.{body}"` with it (the key's
//! 64 hex characters, as bytes, are the HMAC key); the API derives the key again from the
//! body's run and step and the step's current attempt, so one key opens one attempt of
//! one step of one run, and nothing else. The agent never holds the secret itself.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::state::StepStatus;

/// Names the derivation, so a key made for deliveries is never valid for anything else
/// the secret might one day key, and a new scheme can change the label.
pub const KEY_LABEL: &str = "cairn-delivery/v1";

/// Errors from deriving keys and checking signatures.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("the key cannot key HMAC-SHA256")]
    Key,
    #[error("the signature does not match")]
    Mismatch,
}

type HmacSha256 = Hmac<Sha256>;

fn mac(key: &[u8]) -> Result<HmacSha256, DeliveryError> {
    HmacSha256::new_from_slice(key).map_err(|_| DeliveryError::Key)
}

/// The delivery key of `attempt` of step `step_id` in run `run_id` (lowercase hex).
pub fn key(
    secret: &str,
    run_id: &str,
    step_id: &str,
    attempt: i32,
) -> Result<String, DeliveryError> {
    let mut m = mac(secret.as_bytes())?;
    m.update(format!("{KEY_LABEL}:{run_id}:{step_id}:{attempt}").as_bytes());
    Ok(hex::encode(m.finalize().into_bytes()))
}

/// The attempt of a `wait` step whose key a delivery must carry, from the step's status
/// and recorded attempts: the attempt that is (or was, for a delivered step) waiting, or,
/// before the step waits again (pending, a retry scheduled, re-armed by an operator), the
/// attempt that will.
pub fn awaited_attempt(status: StepStatus, attempts: i32) -> i32 {
    match status {
        StepStatus::Waiting | StepStatus::Succeeded => attempts,
        _ => attempts + 1,
    }
}

fn signing_mac(key: &str, timestamp: i64, body: &[u8]) -> Result<HmacSha256, DeliveryError> {
    let mut m = mac(key.as_bytes())?;
    m.update(format!("{timestamp}.").as_bytes());
    m.update(body);
    Ok(m)
}

/// The `X-Cairn-Signature` value for `body` sent at `timestamp`, signed with a delivery
/// `key`: `sha256=<hex HMAC-SHA256(key, "{timestamp}.{body}")>`.
pub fn sign(key: &str, timestamp: i64, body: &[u8]) -> Result<String, DeliveryError> {
    let m = signing_mac(key, timestamp, body)?;
    Ok(format!("sha256={}", hex::encode(m.finalize().into_bytes())))
}

/// Checks a signature (the raw MAC bytes) in constant time.
pub fn verify(key: &str, timestamp: i64, body: &[u8], mac: &[u8]) -> Result<(), DeliveryError> {
    signing_mac(key, timestamp, body)?
        .verify_slice(mac)
        .map_err(|_| DeliveryError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(signature: &str) -> Vec<u8> {
        hex::decode(signature.trim_start_matches("sha256=")).unwrap()
    }

    #[test]
    fn keys_differ_per_run_step_and_attempt() {
        let k = key("s3cret", "01RUN", "findings", 1).unwrap();
        assert_eq!(k.len(), 64);
        assert_eq!(k, key("s3cret", "01RUN", "findings", 1).unwrap());
        for other in [
            key("other", "01RUN", "findings", 1),
            key("s3cret", "01RUN2", "findings", 1),
            key("s3cret", "01RUN", "other", 1),
            key("s3cret", "01RUN", "findings", 2),
        ] {
            assert_ne!(k, other.unwrap());
        }
    }

    #[test]
    fn the_key_is_the_documented_hmac() {
        let mut m = HmacSha256::new_from_slice(b"s3cret").unwrap();
        m.update(b"cairn-delivery/v1:01RUN:findings:3");
        assert_eq!(
            key("s3cret", "01RUN", "findings", 3).unwrap(),
            hex::encode(m.finalize().into_bytes())
        );
    }

    #[test]
    fn signatures_verify_only_with_their_key_body_and_time() {
        let k = key("s3cret", "01RUN", "findings", 1).unwrap();
        let body = br#"{"taskId":"01RUN"}"#;
        let sig = raw(&sign(&k, 1000, body).unwrap());
        assert!(verify(&k, 1000, body, &sig).is_ok());
        assert!(verify(&k, 1001, body, &sig).is_err());
        assert!(verify(&k, 1000, b"tampered", &sig).is_err());
        let other = key("s3cret", "01RUN", "findings", 2).unwrap();
        assert!(verify(&other, 1000, body, &sig).is_err());
        assert!(verify("s3cret", 1000, body, &sig).is_err());
    }

    #[test]
    fn the_awaited_attempt_follows_the_step() {
        assert_eq!(awaited_attempt(StepStatus::Pending, 0), 1);
        assert_eq!(awaited_attempt(StepStatus::Waiting, 1), 1);
        assert_eq!(awaited_attempt(StepStatus::Succeeded, 1), 1);
        assert_eq!(awaited_attempt(StepStatus::RetryScheduled, 1), 2);
        // Re-armed by an operator retry: pending again with its attempts kept.
        assert_eq!(awaited_attempt(StepStatus::Pending, 2), 3);
        assert_eq!(awaited_attempt(StepStatus::Failed, 2), 3);
    }
}
